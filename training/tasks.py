"""Celery entry points of the training app. GPU tasks import torch inside the task body."""

from __future__ import annotations

from celery import shared_task

from config.celery import GPU_TASK_OPTIONS
from training import rounds, services


@shared_task(name="training.tasks.heartbeat", bind=True)
def heartbeat(self, queue: str = "default") -> str:
    """Record that a worker consuming ``queue`` is alive. Safe to run any number of times."""
    hostname = self.request.hostname or "unknown"
    services.worker_heartbeat_record(hostname=hostname, queue=queue)
    return hostname


@shared_task(name=services.TRAIN_TASK, bind=True, **GPU_TASK_OPTIONS)
def gpu_train_run(self, run_id: int) -> str:
    """Train one run on this GPU worker. Running it again for a finished run does nothing."""
    run, _ = services.training_run_claim(run_id=run_id, worker=self.request.hostname or "unknown")
    if run is None:
        return "skipped"
    model = services.training_run_execute(run=run)  # from the latest checkpoint, if an earlier attempt left one
    return model.name if model is not None else "cancelled"


@shared_task(name="training.tasks.runs_recover")
def runs_recover() -> list[int]:
    """Send again the running runs whose worker went silent (celery beat, every minute)."""
    return services.training_runs_recover()


@shared_task(name="training.tasks.rounds_advance")
def rounds_advance() -> list[int]:
    """Move the training rounds on whose stage's work is done (celery beat, default queue). Safe to run any number of
    times: each transition locks its round and checks the stage."""
    return rounds.training_rounds_advance()


@shared_task(name=services.EXPORT_TASK)
def run_round_export(run_id: int) -> str:
    """Export a queued run's source round on the default queue, then send the run to the gpu queue (research API)."""
    return rounds.run_round_export(run_id=run_id)
