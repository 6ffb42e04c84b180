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
    error = models.TextField(blank=True, help_text="Why the run failed, in one line.")
    error_traceback = models.TextField(blank=True, help_text="The failure's traceback, behind the one-line reason.")
    # Progress, written by the worker's run monitor while the run trains (throttled).
    step = models.PositiveIntegerField(default=0, help_text="Optimizer steps done so far.")
    total_steps = models.PositiveIntegerField(default=0, help_text="Steps the run will take (max_train_steps).")
    phase = models.CharField(
        max_length=40, blank=True, help_text="What the worker is doing: loading, caching latents, training, exporting…",
    )
    progress = models.JSONField(
        default=dict, blank=True,
        help_text="The latest logged metrics: each loss term, implicit accuracy, grad norm, lr, step time.",
    )
    history = models.JSONField(
        default=list, blank=True, help_text="Logged metrics over the run (thinned to at most 1,000 points), for the curves.",
    )
    log_tail = models.TextField(blank=True, help_text="The last lines of the run's log.")
    progress_at = models.DateTimeField(
        null=True, blank=True,
        help_text="The worker's last report on this run; a running run silent for long is taken over by another worker.",
    )
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="Set by a cancel; the worker stops at the next step boundary.",
    )
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
