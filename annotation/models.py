"""Prompts, their DSG-style alignment questions, and generated images."""

from __future__ import annotations

import secrets

from django.db import models

ANNOTATORS_GROUP = "annotators"
RESEARCHERS_GROUP = "researchers"


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


def image_upload_to(instance: Image, filename: str) -> str:
    # The stored name derives from the opaque id alone, never from the model, path or seed.
    return f"images/{instance.public_id[:2]}/{instance.public_id}.png"


class Image(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="images")
    model_version = models.ForeignKey("training.ModelVersion", on_delete=models.PROTECT, related_name="images")
    seed = models.BigIntegerField()
    sampler = models.JSONField(default=dict, blank=True, help_text="Sampler settings: steps, guidance, scheduler.")
    file = models.ImageField(upload_to=image_upload_to, width_field="width", height_field="height")
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["prompt", "model_version"])]

    def __str__(self) -> str:
        return self.public_id
