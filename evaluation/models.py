"""Evaluation rounds: which models are compared on which prompts; their images come from a catalog batch."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from annotation.criteria import Criterion

TEXT_ALIGNMENT = "text_alignment"
# What an evaluation can measure: the pairwise criteria, each a round, and text alignment, a round of its own.
CRITERIA = (*(c.value for c in Criterion), TEXT_ALIGNMENT)


def all_criteria() -> list[str]:
    return list(CRITERIA)


class EvaluationRound(models.Model):
    """A comparison of two or more model versions on a prompt set, one image per prompt per model.

    The models are ordered: the first is "Model A" of every comparison it is in, and so on.
    The annotation rounds it created (pairwise visual flaws, pairwise visual appeal, alignment:
    those of its ``criteria``) hold the judgments its report is built from.
    """

    class Status(models.TextChoices):
        GENERATING = "generating", "generating images"
        ANNOTATING = "annotating", "annotation rounds created"
        CLOSED = "closed"

    class SeedPolicy(models.TextChoices):
        EVALUATION = "evaluation", "the evaluation's seed: one per prompt, the same for every model"
        ANY = "any", "any seed: any existing image of the (model, prompt)"

    name = models.CharField(max_length=200, unique=True)
    prompt_set = models.ForeignKey("catalog.PromptSet", on_delete=models.PROTECT, related_name="evaluations")
    limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Prompts drawn from the set (a seeded sample); empty for all of them."
    )
    seed = models.BigIntegerField(default=0, help_text="Derives each prompt's image seed and the prompt sample.")
    k = models.PositiveSmallIntegerField(default=5, help_text="Judgments per item in the annotation rounds.")
    seed_policy = models.CharField(
        max_length=10, choices=SeedPolicy.choices, default=SeedPolicy.EVALUATION,
        help_text="Which existing images may fill the jobs (images imported with their own seeds need 'any').",
    )
    criteria = models.JSONField(
        default=all_criteria, help_text="What is measured, one annotation round each: visual_flaws, visual_appeal, "
        "text_alignment (default: all three).",
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.GENERATING, db_index=True)
    generation_batch = models.OneToOneField(
        "catalog.GenerationBatch", on_delete=models.PROTECT, related_name="evaluation",
        help_text="The generation jobs of this evaluation: one per prompt per model.",
    )
    annotation_rounds = models.ManyToManyField("annotation.Round", blank=True, related_name="evaluations")
    missing_prompts = models.JSONField(
        default=list, blank=True,
        help_text="Prompts left out of the annotation rounds because an image was missing: [{prompt, models}].",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.CheckConstraint(condition=models.Q(k__gte=1), name="evaluation_k_positive")]

    def __str__(self) -> str:
        return self.name

    @property
    def jobs(self):
        """This evaluation's generation jobs: one per prompt per model."""
        return self.generation_batch.jobs

    def ordered_models(self) -> list:
        return [entry.model_version for entry in self.entries.select_related("model_version").order_by("position")]


class EvaluationModel(models.Model):
    """One model under test, at its position in the evaluation's model order (0 = Model A)."""

    evaluation_round = models.ForeignKey(EvaluationRound, on_delete=models.CASCADE, related_name="entries")
    model_version = models.ForeignKey("catalog.ModelVersion", on_delete=models.PROTECT, related_name="evaluation_entries")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["evaluation_round", "position"]
        constraints = [
            models.UniqueConstraint(fields=["evaluation_round", "position"], name="unique_evaluation_position"),
            models.UniqueConstraint(fields=["evaluation_round", "model_version"], name="unique_evaluation_model"),
        ]

    def __str__(self) -> str:
        return f"{self.evaluation_round} #{self.position}: {self.model_version}"


class StoredReport(models.Model):
    """The last computed report of an evaluation, so that no page view computes one.

    ``data`` is ``EvaluationReport.to_dict()`` at the default settings; ``source_state`` says
    what it was computed from (``selectors.report_source_state``). A view that finds the
    evaluation's state moved on asks for a recompute once (``requested_state``) and shows this
    one meanwhile.
    """

    evaluation = models.OneToOneField(
        EvaluationRound, on_delete=models.CASCADE, primary_key=True, related_name="stored_report"
    )
    data = models.JSONField(null=True, blank=True, help_text="The report's numbers; empty until first computed.")
    source_state = models.CharField(max_length=200, blank=True)
    judgment_count = models.PositiveIntegerField(default=0, help_text="Judgments (not undone) when computed.")
    computed_at = models.DateTimeField(null=True, blank=True)
    compute_seconds = models.FloatField(null=True, blank=True)
    requested_state = models.CharField(max_length=200, blank=True, help_text="The state a recompute was asked for.")
    requested_at = models.DateTimeField(null=True, blank=True)
    chart_png = models.BinaryField(null=True, blank=True, help_text="The report's win/tie/loss chart, drawn with it.")
    chart_svg = models.BinaryField(null=True, blank=True, help_text="The same chart as SVG.")

    def __str__(self) -> str:
        return f"report of {self.evaluation_id} ({self.judgment_count} judgments, {self.computed_at})"
