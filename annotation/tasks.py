"""Celery entry points of the annotation app (default queue): primary keys in, services do the work."""

from __future__ import annotations

from celery import shared_task

from annotation.models import Round


@shared_task(name="annotation.export_preferences")
def export_preferences(round_id: int, out_dir: str | None = None) -> dict:
    from annotation.exports import preferences_export

    # An export is immutable and named after its content: running the task twice is harmless.
    return preferences_export(round_=Round.objects.get(pk=round_id), out_dir=out_dir).as_dict()


@shared_task(name="annotation.recompute_aggregates")
def recompute_aggregates(round_id: int) -> dict:
    from dataclasses import asdict

    from annotation.services.aggregation import round_aggregate

    return asdict(round_aggregate(round_=Round.objects.get(pk=round_id)))
