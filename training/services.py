"""Write-side operations of the training app."""

from __future__ import annotations

import platform
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from training.engine.pipeline_index import PipelineIndexError, read_pipeline_index
from training.models import ModelVersion, TrainingRun, WorkerHeartbeat


class RegistrationError(ValueError):
    """A model directory cannot be registered; the message is one line for the user."""


@transaction.atomic
def model_register(
    *,
    path: str | Path,
    name: str,
    parent: ModelVersion | None = None,
    produced_by: TrainingRun | None = None,
    notes: str = "",
) -> ModelVersion:
    """Register a local diffusers pipeline directory as a ModelVersion.

    Reads only JSON metadata (no torch). The family comes from the pipeline class and the
    prediction type from the scheduler config.
    """
    try:
        index = read_pipeline_index(path)
    except PipelineIndexError as exc:
        raise RegistrationError(str(exc)) from exc
    if ModelVersion.objects.filter(name=name).exists():
        raise RegistrationError(f"a model named '{name}' is already registered")
    return ModelVersion.objects.create(
        name=name,
        family=index.family,
        prediction_type=index.prediction_type,
        pipeline_class=index.pipeline_class,
        local_path=str(index.path.resolve()),
        parent=parent,
        produced_by=produced_by,
        notes=notes,
    )


def worker_heartbeat_record(*, hostname: str, queue: str) -> WorkerHeartbeat:
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        queue=queue,
        defaults={"last_seen": timezone.now(), "details": {"python": platform.python_version()}},
    )
    return heartbeat
