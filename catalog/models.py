"""The records every other app builds on: prompts, model versions, images, and the jobs that
generate images.

Nothing here knows about annotation rounds, training runs or evaluations; those apps point
down at these records (see docs/architecture.md, "Layers").
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from catalog.images import validate_image_pixels


def new_public_id() -> str:
    """An opaque, random id: it says nothing about the model, path or seed behind an image."""
    return secrets.token_hex(12)


class PromptSet(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=200, blank=True, help_text="Where the prompts came from.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(
        max_length=200, help_text="Stable id within the set (source id, or derived from the text)."
    )
    text = models.TextField()
    category = models.CharField(max_length=200, blank=True, db_index=True)
    challenge = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["prompt_set", "id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt_set", "external_id"], name="unique_prompt_external_id")
        ]

    def __str__(self) -> str:
        return self.text[:80]


class AlignmentQuestion(models.Model):
    """A yes/no question about a prompt. DSG rule: a "no" on a parent makes its children "no"."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="questions")
    order = models.PositiveIntegerField(help_text="Position within the prompt (DSG proposition id).")
    text = models.TextField()
    parents = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="children")
    category = models.CharField(max_length=100, blank=True, help_text="e.g. entity, attribute, relation")
    detail = models.CharField(max_length=100, blank=True, help_text="e.g. color, count, spatial")
    semantic_tuple = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["prompt", "order"]
        constraints = [models.UniqueConstraint(fields=["prompt", "order"], name="unique_question_order")]

    def __str__(self) -> str:
        return self.text


class ModelFamily(models.TextChoices):
    UNET = "unet", "U-Net (Stable Diffusion 1.x/2.x)"
    SDXL = "sdxl", "U-Net XL (Stable Diffusion XL)"
    DIT = "dit", "DiT (PixArt-α/Σ)"
    FLOW = "flow", "Flow matching (Stable Diffusion 3)"


class PredictionType(models.TextChoices):
    EPSILON = "epsilon", "ε-prediction"
    V_PREDICTION = "v_prediction", "v-prediction"
    FLOW = "flow", "flow matching (velocity)"


class ModelVersion(models.Model):
    """A model whose images are compared: a diffusers pipeline (it generates and trains), or an
    external model, known only by the images imported for it (``manage.py import_images``)."""

    class Kind(models.TextChoices):
        PIPELINE = "pipeline", "pipeline (has weights)"
        EXTERNAL = "external", "external (imported images only)"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PIPELINE)
    family = models.CharField(max_length=10, choices=ModelFamily.choices, blank=True)
    prediction_type = models.CharField(
        max_length=20, choices=PredictionType.choices, default=PredictionType.EPSILON, blank=True
    )
    pipeline_class = models.CharField(max_length=100, blank=True)
    local_path = models.CharField(
        max_length=1000, blank=True, help_text="A diffusers pipeline directory (empty for an external model)."
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children",
        help_text="The model this one was post-trained from.",
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(kind="pipeline") & ~models.Q(local_path=""))
                | (models.Q(kind="external") & models.Q(local_path="")),
                name="model_version_path_iff_pipeline",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_external(self) -> bool:
        return self.kind == self.Kind.EXTERNAL


def image_upload_to(instance: Image, filename: str) -> str:
    # The stored name derives from the opaque id alone, never from the model, path or seed.
    return f"images/{instance.public_id[:2]}/{instance.public_id}.png"


class Image(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="images")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="images")
    seed = models.BigIntegerField()
    sampler = models.JSONField(default=dict, blank=True, help_text="Sampler settings: steps, guidance, scheduler.")
    file = models.ImageField(
        upload_to=image_upload_to, width_field="width", height_field="height", validators=[validate_image_pixels]
    )
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["prompt", "model_version"])]

    def __str__(self) -> str:
        return self.public_id


class GenerationBatch(models.Model):
    """Jobs that are finished together: when the last one is done (or failed), ``generation_batch_done``
    is sent. An evaluation round owns one; pool jobs belong to none."""

    label = models.CharField(max_length=200, blank=True, help_text="What the images are for, e.g. an evaluation.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "generation batches"

    def __str__(self) -> str:
        return self.label or f"batch {self.pk}"


class GenerationJob(models.Model):
    """One image to generate: a model, a prompt and a seed (the same seed for every model).

    Jobs of a batch make, e.g., an evaluation's comparison images; jobs without one make a pool
    of images to collect preferences on (e.g. five seeds per prompt for best/worst rounds).
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    batch = models.ForeignKey(GenerationBatch, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="generation_jobs")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="generation_jobs")
    seed = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.PROTECT, related_name="generation_jobs")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "prompt", "model_version"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "model_version", "prompt"], name="unique_generation_job"),
            models.UniqueConstraint(
                fields=["model_version", "prompt", "seed"], condition=models.Q(batch__isnull=True),
                name="unique_pool_generation_job",
            ),
            models.CheckConstraint(
                condition=(models.Q(status="done") & models.Q(image__isnull=False))
                | (~models.Q(status="done") & models.Q(image__isnull=True)),
                name="generation_job_image_iff_done",
            ),
        ]
        indexes = [models.Index(fields=["batch", "status"], name="generation_job_status_idx")]

    def __str__(self) -> str:
        return f"job {self.pk}: {self.model_version} / prompt {self.prompt_id} / seed {self.seed} ({self.status})"


class ImportJob(models.Model):
    """An uploaded prompt file or image archive, imported on the default queue (the research API's imports).

    The request checks what it can at once and stores the upload; the task imports it (all of it,
    or nothing) and records the result or the refusal, ``{detail, code, field, line, file_field}``
    as the API would have answered it. The upload is removed when the job ends."""

    class Kind(models.TextChoices):
        PROMPTS = "prompts"
        IMAGES = "images"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    upload = models.FileField(upload_to="imports/%Y%m%d/", max_length=300, blank=True)
    upload_name = models.CharField(max_length=200, help_text="the uploaded file's own (safe) name")
    params = models.JSONField(default=dict, blank=True, help_text="the import's options, as the request gave them")
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True, help_text="{detail, code, field, line, file_field}")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="catalog_imports"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"import {self.pk}: {self.kind} from {self.upload_name} ({self.status})"
