"""Celery entry points of the evaluation app."""

from __future__ import annotations

from celery import shared_task

from evaluation.models import EvaluationRound
from evaluation.services import ROUNDS_TASK, evaluation_annotation_create, report_refresh


@shared_task(name=ROUNDS_TASK)
def evaluation_rounds_create(evaluation_id: int) -> str:
    """Create the annotation rounds once generation is over; a second run does nothing."""
    evaluation = EvaluationRound.objects.filter(pk=evaluation_id).first()
    if evaluation is None or evaluation.annotation_rounds.exists():
        return "skipped"
    build = evaluation_annotation_create(evaluation=evaluation, created_by=evaluation.created_by)
    return f"{len(build.rounds)} rounds"


@shared_task(name="evaluation.tasks.evaluation_report_refresh")
def evaluation_report_refresh(evaluation_id: int) -> str:
    """Compute and store an evaluation's report (`default` queue); a current stored report is kept."""
    evaluation = EvaluationRound.objects.select_related("prompt_set").filter(pk=evaluation_id).first()
    if evaluation is None:
        return "skipped"
    stored = report_refresh(evaluation=evaluation)
    return f"report of {stored.judgment_count} judgments"
