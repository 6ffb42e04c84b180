"""Celery entry points of the catalog. GPU tasks import torch inside the task body."""

from __future__ import annotations

from celery import shared_task

from catalog.generation import GENERATE_TASK, generation_run
from config.celery import GPU_TASK_OPTIONS


@shared_task(name=GENERATE_TASK, **GPU_TASK_OPTIONS)
def gpu_generate_images(batch_id: int | None, model_version_id: int) -> int:
    """Generate the queued images of one model for one batch (or the pool, for None).

    Jobs already done are left alone, so a re-delivered task is harmless."""
    return generation_run(batch_id=batch_id, model_version_id=model_version_id)
