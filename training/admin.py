from django.contrib import admin

from training.models import ModelVersion, TrainingRun, WorkerHeartbeat


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "family", "prediction_type", "pipeline_class", "parent", "produced_by", "created_at")
    list_filter = ("family", "prediction_type")
    search_fields = ("name", "local_path", "notes")
    raw_id_fields = ("parent", "produced_by")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("name", "base_model", "status", "worker", "created_at", "started_at", "finished_at")
    list_filter = ("status", "base_model__family")
    search_fields = ("name", "dataset_path", "error")
    raw_id_fields = ("base_model", "created_by")
    readonly_fields = ("created_at", "started_at", "finished_at")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("hostname", "queue", "last_seen")
    list_filter = ("queue",)
    search_fields = ("hostname",)
