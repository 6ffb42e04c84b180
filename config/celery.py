"""The Celery app shared by the `default` (CPU) and `gpu` workers.

Start workers with:
    celery -A config worker -Q default
    celery -A config worker -Q gpu --concurrency 1   # one per GPU
    celery -A config beat                            # one per site: sends what waits in the outbox
"""

import logging
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Options for every GPU task: acknowledge only after the task ran, and hand the task back to
# the broker if its worker dies (OOM, preemption). The task's status field makes a redelivery
# harmless.
GPU_TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True}


def enqueue_on_commit(task_name: str, *args) -> None:
    """Send the task registered as ``task_name`` once the current transaction commits.

    By name, so that a service need not import the tasks module that imports it back. Each app
    imports its tasks module in ``AppConfig.ready``, so the name is registered by then.

    Through the outbox: the message is written in the caller's transaction, and sent right after
    the commit with a short, bounded retry. While the broker is down it waits in the outbox (one
    warning line says so) until the flusher sends it: celery beat every minute, or
    ``manage.py requeue_stuck``.
    """
    from django.db import transaction

    from outbox.services import message_create

    app.tasks[task_name]  # an unknown name fails in the caller, before anything is written
    message = message_create(task_name=task_name, args=args)
    transaction.on_commit(lambda: _send_now(message.pk, task_name))


def _send_now(message_id: int, task_name: str) -> None:
    from outbox.services import messages_send

    result = messages_send(app=app, ids=[message_id])
    if result.pending:
        logger.warning(
            "%s is queued in the outbox (message %s) and will be sent when the broker is back (%s)",
            task_name, message_id, result.error or "not sent",
        )
