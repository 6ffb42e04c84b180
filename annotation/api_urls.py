"""URLs of the annotation API and of the image files (included from config/urls.py)."""

from django.urls import include, path, re_path
from rest_framework.routers import SimpleRouter

from annotation import api, catalog_api, image_views

research = SimpleRouter()
research.register("rounds", api.RoundViewSet, basename="research-round")
research.register("items", api.ItemViewSet, basename="research-item")
research.register("models", catalog_api.ModelViewSet, basename="research-model")
research.register("prompt-sets", catalog_api.PromptSetViewSet, basename="research-prompt-set")
research.register("images", catalog_api.ImageViewSet, basename="research-image")
research.register("generations", catalog_api.GenerationViewSet, basename="research-generation")
research.register("imports", catalog_api.ImportJobViewSet, basename="research-import")

urlpatterns = [
    path("api/annotate/progress/", api.ProgressView.as_view(), name="annotate-progress"),
    path("api/annotate/rounds/<int:round_id>/next/", api.NextView.as_view(), name="annotate-next"),
    path("api/annotate/submit/", api.SubmitView.as_view(), name="annotate-submit"),
    path("api/annotate/skip/", api.SkipView.as_view(), name="annotate-skip"),
    path("api/annotate/undo/", api.UndoView.as_view(), name="annotate-undo"),
    path("api/research/", include(research.urls)),
    re_path(r"^api/(?P<path>.*)$", api.not_found),  # after every API route: the rest of /api/ answers JSON
    re_path(r"^img/(?P<public_id>[0-9a-f]{8,32})\.png$", image_views.image_file, name="annotation-image"),
]
