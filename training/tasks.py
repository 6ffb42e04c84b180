"""Celery entry points of the training app. GPU tasks import torch inside the task body."""

from __future__ import annotations

from celery import shared_task

from training import services


@shared_task(name="training.tasks.heartbeat", bind=True)
def heartbeat(self, queue: str = "default") -> str:
    """Record that a worker consuming ``queue`` is alive. Safe to run any number of times."""
    hostname = self.request.hostname or "unknown"
    services.worker_heartbeat_record(hostname=hostname, queue=queue)
    return hostname
