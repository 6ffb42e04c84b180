"""Training runs (which produce the catalog's model versions) and the workers' heartbeats."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from annotation.kinds.best_worst import MIN_IMAGES as BEST_WORST_MIN_IMAGES


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


class TrainingRound(models.Model):
    """One turn of the loop, from a base model and a prompt set to a trained, registered, evaluated model.

    ``stage`` says where the round is; each stage links what it made (the generation request, the
    best/worst round, the dataset, the run, the evaluation's images). ``training.rounds.training_round_advance``
    moves it on (celery beat, every few seconds); a finished stage is never redone.
    """

    class Stage(models.TextChoices):
        GENERATING = "generating", "generating images"
        ANNOTATING = "annotating", "best/worst round open"
        EXPORTING = "exporting", "exporting pairs"
        TRAINING = "training"
        EVALUATING = "evaluating", "generating evaluation images"
        DONE = "done"
        FAILED = "failed"

    class Method(models.TextChoices):
        SIMPO = "simpo", "SimPO"
        DPO = "dpo", "DPO"
        SFT = "sft", "SFT on the best images"

    name = models.CharField(max_length=200, unique=True, help_text="Also the name of its run and of the model it makes.")
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.GENERATING, db_index=True)
    failed_stage = models.CharField(max_length=20, choices=Stage.choices, blank=True, help_text="Where it failed.")
    error = models.TextField(blank=True, help_text="Why it failed, in one line.")
    # What the round was asked for.
    base_model = models.ForeignKey("catalog.ModelVersion", on_delete=models.PROTECT, related_name="training_rounds")
    prompt_set = models.ForeignKey("catalog.PromptSet", on_delete=models.PROTECT, related_name="training_rounds")
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="A seeded sample of this many prompts.")
    seed = models.BigIntegerField(default=0, help_text="Derives the prompt sample and the image seeds.")
    prompt_ids = models.JSONField(default=list, help_text="The prompts drawn, fixed when the round was launched.")
    images_per_prompt = models.PositiveSmallIntegerField(default=5)
    k = models.PositiveSmallIntegerField(default=5, help_text="Judgments per best/worst item.")
    method = models.CharField(max_length=10, choices=Method.choices)
    pixel_weight = models.FloatField(help_text="μ (preference) or λ (SFT); 0 trains the latent term alone.")
    config = models.JSONField(default=dict, help_text="The engine's TrainConfig (file, method, overrides), as JSON.")
    evaluate_on = models.ForeignKey(
        "catalog.PromptSet", on_delete=models.PROTECT, related_name="evaluating_rounds",
        help_text="The new model is evaluated against the base on this set.",
    )
    evaluate_limit = models.PositiveIntegerField(null=True, blank=True)
    evaluate_seed = models.BigIntegerField(default=0)
    simulated_annotators = models.CharField(
        max_length=200, blank=True,
        help_text="A simulation policy (noisy_oracle, random, prefer_model:NAME): K synthetic annotators judge the "
                  "best/worst round as soon as it opens (demos, toy studies). Blank: people judge it.",
    )
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="next_rounds",
        help_text="The round this one iterates on: its output model is this round's base.",
    )
    # What each stage made.
    annotation_round = models.OneToOneField(
        "annotation.Round", null=True, blank=True, on_delete=models.SET_NULL, related_name="training_round",
    )
    dataset_path = models.CharField(max_length=1000, blank=True, help_text="The exported pairs (or best images, SFT).")
    pairs = models.PositiveIntegerField(null=True, blank=True, help_text="Winner/loser pairs exported.")
    training_run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_round",
    )
    evaluation_batch = models.OneToOneField(
        "catalog.GenerationBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="training_round",
        help_text="The images of the new model's evaluation (the evaluation app records it when it opens one).",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    stage_changed_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(images_per_prompt__gte=BEST_WORST_MIN_IMAGES),
                                   name="training_round_best_worst_images"),
            models.CheckConstraint(condition=models.Q(k__gte=1), name="training_round_k_positive"),
            models.CheckConstraint(condition=models.Q(pixel_weight__gte=0), name="training_round_pixel_weight"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def output_model(self):
        run = self.training_run
        return run.output_model if run is not None else None
