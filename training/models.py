"""Training runs (which produce the catalog's model versions) and the workers' heartbeats."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    name = models.CharField(max_length=200, unique=True)
    base_model = models.ForeignKey("catalog.ModelVersion", on_delete=models.PROTECT, related_name="training_runs")
    dataset_path = models.CharField(max_length=1000, help_text="Preference manifest or SFT image folder.")
    config = models.JSONField(default=dict, help_text="The engine's TrainConfig, as JSON.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    output_dir = models.CharField(max_length=1000, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Final metrics of the run.")
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Deliveries to a GPU worker so far.")
    output_model = models.OneToOneField(
        "catalog.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by",
        help_text="The checkpoint this run produced, registered as a model version.",
    )
    source_round = models.ForeignKey(
        "annotation.Round", null=True, blank=True, on_delete=models.SET_NULL, related_name="training_runs",
        help_text="The annotation round whose winner/loser pairs this run trained on.",
    )
    follow_up = models.JSONField(
        default=dict, blank=True,
        help_text='What to do with the checkpoint, e.g. {"evaluate": {"prompt_set": "PartiPrompts", "limit": 300}}.',
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class WorkerHeartbeat(models.Model):
    """Last sign of life of each Celery worker, by queue; shown to researchers in the admin."""

    hostname = models.CharField(max_length=200)
    queue = models.CharField(max_length=50)
    last_seen = models.DateTimeField()
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [models.UniqueConstraint(fields=["hostname", "queue"], name="unique_worker_queue")]

    def __str__(self) -> str:
        return f"{self.hostname} ({self.queue})"
