"""URLs of the evaluation research API (included from config/urls.py before annotation's catch-all for /api/)."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from evaluation import api

research = SimpleRouter()
research.register("evaluations", api.EvaluationViewSet, basename="research-evaluation")

urlpatterns = [path("api/research/", include(research.urls))]
