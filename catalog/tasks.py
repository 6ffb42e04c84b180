"""Celery entry points of the catalog. GPU tasks import torch inside the task body."""

from __future__ import annotations

from celery import shared_task

from catalog import imports
from catalog.generation import GENERATE_TASK, POOL_REQUEST_TASK, generation_run, pool_generation_request
from catalog.imports import IMPORT_TASK
from config.celery import GPU_TASK_OPTIONS


@shared_task(name=GENERATE_TASK, **GPU_TASK_OPTIONS)
def gpu_generate_images(batch_id: int | None, model_version_id: int) -> int:
    """Generate the queued images of one model for one batch (or the pool, for None).

    Jobs already done are left alone, so a re-delivered task is harmless."""
    return generation_run(batch_id=batch_id, model_version_id=model_version_id)


@shared_task(name=POOL_REQUEST_TASK)
def pool_generation_request_create(
    model_version_id: int, prompt_set_id: int, images_per_prompt: int, seed: int, limit: int | None
) -> list[int]:
    """Make a research API generation request's jobs (default queue) and send them to the gpu queue.

    Jobs already made are left alone, so a re-delivered task is harmless."""
    return list(pool_generation_request(
        model_version_id=model_version_id, prompt_set_id=prompt_set_id, images_per_prompt=images_per_prompt,
        seed=seed, limit=limit,
    ))


@shared_task(name=IMPORT_TASK)
def import_run(job_id: int) -> str:
    """Import an uploaded prompt file or image archive (the research API's imports), all or nothing.

    A job no longer queued is left alone, so a re-delivered task is harmless."""
    return imports.import_run(job_id)


@shared_task(name="catalog.tasks.imports_recover")
def imports_recover() -> list[int]:
    """Send again the imports whose worker or message was lost (celery beat)."""
    return imports.imports_recover()
