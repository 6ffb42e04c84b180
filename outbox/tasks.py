"""Celery entry points of the outbox."""

from __future__ import annotations

from celery import shared_task

from outbox.services import messages_prune, messages_send

FLUSH_TASK = "outbox.tasks.outbox_flush"


@shared_task(name=FLUSH_TASK, bind=True, ignore_result=True)
def outbox_flush(self) -> str:
    """Send every pending message (celery beat, every minute); claims make a concurrent run harmless."""
    result = messages_send(app=self.app)
    pruned = messages_prune()
    return f"sent {result.sent}, {result.pending} pending, {pruned} old sent messages deleted"
