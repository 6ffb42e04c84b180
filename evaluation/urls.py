from django.urls import path

from evaluation import views

urlpatterns = [
    path("evaluation/", views.evaluation_list, name="evaluation-list"),
    path("evaluation/<int:pk>/", views.evaluation_detail, name="evaluation-detail"),
    path("evaluation/<int:pk>/report/status.json", views.evaluation_report_status, name="evaluation-report-status"),
    path("evaluation/<int:pk>/chart.<str:fmt>", views.evaluation_chart, name="evaluation-chart"),
    path("evaluation/<int:pk>/report.<str:ext>", views.evaluation_export, name="evaluation-export"),
]
