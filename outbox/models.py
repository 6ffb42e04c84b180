"""Tasks on their way to the broker, written in the same transaction as the rows they are about.

The bottom layer: every app enqueues through it (``config.celery.enqueue_on_commit``), and it
knows no app (see docs/architecture.md, "Tasks and the outbox").
"""

from __future__ import annotations

import json

from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboxMessage(models.Model):
    """One task to send: pending until ``sent_at`` is set.

    A sender claims a message (``claimed_until``) before it publishes it, so two senders never
    send the same message; a claim left by a sender that died runs out and the next flush takes it.
    """

    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True, help_text="Positional arguments of the task (JSON).")
    created_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a sender tried to publish it.")
    last_error = models.TextField(blank=True, help_text="Why the last try failed (the broker's error).")

    class Meta:
        indexes = [models.Index(fields=["id"], condition=Q(sent_at__isnull=True), name="outbox_pending")]

    def __str__(self) -> str:
        return f"{self.task_name}({', '.join(json.dumps(arg) for arg in self.args)})"
