from django.urls import include, path
from rest_framework.routers import SimpleRouter

from training import api

research = SimpleRouter()
research.register("runs", api.TrainingRunViewSet, basename="research-run")
research.register("training-rounds", api.TrainingRoundViewSet, basename="research-training-round")

urlpatterns = [path("api/research/", include(research.urls))]
