"""Celery entry points of the evaluation app."""

from __future__ import annotations

from celery import shared_task

from config.celery import GPU_TASK_OPTIONS


@shared_task(name="evaluation.tasks.gpu_generate_images", **GPU_TASK_OPTIONS)
def gpu_generate_images(evaluation_id: int | None, model_version_id: int) -> int:
    """Generate the queued images of one model for one evaluation (or the pool, for None).

    Jobs already done are left alone, so a re-delivered task is harmless."""
    from evaluation.generation import generation_run

    return generation_run(evaluation_id=evaluation_id, model_version_id=model_version_id)


@shared_task(name="evaluation.tasks.evaluation_rounds_create")
def evaluation_rounds_create(evaluation_id: int) -> str:
    """Create the annotation rounds once generation is over; a second run does nothing."""
    from evaluation.models import EvaluationRound
    from evaluation.services import evaluation_annotation_create

    evaluation = EvaluationRound.objects.filter(pk=evaluation_id).first()
    if evaluation is None or evaluation.annotation_rounds.exists():
        return "skipped"
    build = evaluation_annotation_create(evaluation=evaluation, created_by=evaluation.created_by)
    return f"{len(build.rounds)} rounds"


@shared_task(name="evaluation.tasks.evaluation_report_refresh")
def evaluation_report_refresh(evaluation_id: int) -> str:
    """Compute and store an evaluation's report (`default` queue); a current stored report is kept."""
    from evaluation.models import EvaluationRound
    from evaluation.services import report_refresh

    evaluation = EvaluationRound.objects.select_related("prompt_set").filter(pk=evaluation_id).first()
    if evaluation is None:
        return "skipped"
    stored = report_refresh(evaluation=evaluation)
    return f"report of {stored.judgment_count} judgments"
