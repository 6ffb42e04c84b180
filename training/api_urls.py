from django.urls import include, path
from rest_framework.routers import SimpleRouter

from training import api

research = SimpleRouter()
research.register("runs", api.TrainingRunViewSet, basename="research-run")

urlpatterns = [path("api/research/", include(research.urls))]
