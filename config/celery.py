"""The Celery app shared by the `default` (CPU) and `gpu` workers.

Start workers with:
    celery -A config worker -Q default
    celery -A config worker -Q gpu --concurrency 1   # one per GPU
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

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
    """
    from django.db import transaction

    transaction.on_commit(lambda: app.tasks[task_name].delay(*args))
