from django.urls import path

from annotation import views

urlpatterns = [
    path("", views.home, name="home"),
    path("guidelines/", views.guidelines, name="guidelines"),
    path("annotate/pairwise/<int:round_id>/", views.annotate, {"kind": "pairwise"}, name="annotate-pairwise"),
    path("annotate/best-worst/<int:round_id>/", views.annotate, {"kind": "best_worst"}, name="annotate-best-worst"),
    path("annotate/alignment/<int:round_id>/", views.annotate, {"kind": "alignment"}, name="annotate-alignment"),
]
