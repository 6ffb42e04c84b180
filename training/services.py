"""Write-side operations of the training app."""

from __future__ import annotations

import platform
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from catalog.models import ModelVersion
from catalog.services import RegistrationError, model_register, model_weights_check
from config.celery import enqueue_on_commit
from training.models import TrainingRun, WorkerHeartbeat
from training.signals import training_run_succeeded


def worker_heartbeat_record(*, hostname: str, queue: str) -> WorkerHeartbeat:
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        queue=queue,
        defaults={"last_seen": timezone.now(), "details": {"python": platform.python_version()}},
    )
    return heartbeat


# --- Training runs ----------------------------------------------------------------------
# A run is created in the web process (configuration validated without torch), enqueued on the
# `gpu` queue after the transaction commits, claimed by exactly one GPU worker, and finished by
# registering its exported pipeline as a new ModelVersion whose parent is the base model.

MAX_TRAINING_ATTEMPTS = 3
TRAIN_TASK = "training.tasks.gpu_train_run"
# Settings a training run decides itself (model, data and output paths).
RUN_DECIDED = ("pretrained_model", "train_data", "output_dir")


def training_run_output_dir(run: TrainingRun) -> Path:
    from django.conf import settings

    return Path(settings.ARTIFACTS_ROOT) / "runs" / f"{run.pk:05d}-{run.name}"


def training_config_validate(*, base_model: ModelVersion, dataset_path: str, config: dict):
    """The engine's TrainConfig for this run, or ConfigError naming the bad field.

    Paths that the run decides (model, data, output) are filled in here; anything else comes
    from ``config``. Importing the config module does not import torch.
    """
    from training.engine.config import ConfigError, TrainConfig

    clash = sorted(set(RUN_DECIDED) & set(config))
    if clash:
        raise ConfigError(clash[0], "is set by the training run; leave it out of the config")
    return TrainConfig.from_dict(
        {**config, "pretrained_model": base_model.local_path, "train_data": dataset_path, "output_dir": "."},
        source="training run config",
    )


@transaction.atomic
def training_run_create(
    *, name: str, base_model: ModelVersion, dataset_path: str, config: dict, created_by=None,
    source_round=None, follow_up: dict | None = None,
) -> TrainingRun:
    """Create a queued run and send it to a GPU worker once this transaction commits.

    Raises ExternalModelError for a base model without weights.
    """
    model_weights_check(model_version=base_model, purpose="trained")
    training_config_validate(base_model=base_model, dataset_path=dataset_path, config=config)
    if ModelVersion.objects.filter(name=name).exists():
        raise RegistrationError(f"a model named '{name}' exists; the run's checkpoint would take that name")
    run = TrainingRun.objects.create(
        name=name, base_model=base_model, dataset_path=dataset_path, config=config, created_by=created_by,
        source_round=source_round, follow_up=follow_up or {},
    )
    run.output_dir = str(training_run_output_dir(run))
    run.save(update_fields=["output_dir"])
    enqueue_on_commit(TRAIN_TASK, run.pk)
    return run


def training_run_claim(*, run_id: int, worker: str) -> tuple[TrainingRun | None, bool]:
    """Claim a run for this worker. Returns (run, resume) or (None, False) when there is nothing to do.

    The status field makes a re-delivered task harmless: a finished run is left alone; a run
    still marked running was being trained by a worker that died (the broker re-delivers only
    then), so it resumes from its latest checkpoint, up to MAX_TRAINING_ATTEMPTS times.
    """
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
            return None, False
        resume = run.status == TrainingRun.Status.RUNNING
        if run.attempts >= MAX_TRAINING_ATTEMPTS:
            run.status = TrainingRun.Status.FAILED
            run.error = f"gave up after {run.attempts} attempts (the worker died each time)"
            run.finished_at = timezone.now()
            run.save(update_fields=["status", "error", "finished_at"])
            return None, False
        run.status = TrainingRun.Status.RUNNING
        run.attempts += 1
        run.worker = worker
        run.started_at = run.started_at or timezone.now()
        run.save(update_fields=["status", "attempts", "worker", "started_at"])
        return run, resume


def training_run_execute(*, run: TrainingRun, resume: bool) -> ModelVersion:
    """Train (in this GPU worker's process), then register the exported pipeline.

    Imports torch: call it only from a `gpu` queue task.
    """
    from training.engine.loop import train

    config = training_config_validate(base_model=run.base_model, dataset_path=run.dataset_path, config=run.config)
    config.output_dir = run.output_dir
    if resume:
        config.resume_from = "latest"
    try:
        result = train(config)
        if result.model_dir is None:
            raise RuntimeError("the run exported no pipeline")
        return training_run_finish(
            run=run, model_dir=result.model_dir, metrics=result.last_metrics, steps=result.global_step
        )
    except Exception as exc:  # the run records any failure; the worker stays up for the next task
        _training_run_fail(run, f"{type(exc).__name__}: {exc}")
        raise


def _training_run_fail(run: TrainingRun, error: str) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED, error=error[:10_000], finished_at=timezone.now()
    )


@transaction.atomic
def training_run_finish(*, run: TrainingRun, model_dir: str | Path, metrics: dict, steps: int) -> ModelVersion:
    model = model_register(
        path=model_dir,
        name=run.name,
        parent=run.base_model,
        notes=f"Trained by run '{run.name}' for {steps} steps on {run.dataset_path}.",
    )
    run.output_model = model
    run.status = TrainingRun.Status.SUCCEEDED
    run.metrics = {key: value for key, value in metrics.items() if isinstance(value, (int, float, str))}
    run.metrics["steps"] = steps
    run.finished_at = timezone.now()
    run.error = ""
    run.save(update_fields=["output_model", "status", "metrics", "finished_at", "error"])
    transaction.on_commit(lambda: training_run_succeeded.send(sender=TrainingRun, run=run, model=model))
    return model
