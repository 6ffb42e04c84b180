"""Write-side operations of the outbox: record a task, send what is pending, forget what was sent.

The Celery app is passed in (``config.celery`` passes its own), so this module does not import
the module that imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from outbox.models import OutboxMessage

# Longer than a publish can take (settings.CELERY_TASK_PUBLISH_RETRY_POLICY bounds it to seconds):
# a claim outlives its sender only when the sender died.
CLAIM_TIME = timedelta(seconds=60)
BATCH_SIZE = 200
KEEP_SENT = timedelta(days=7)
ERROR_LENGTH = 2000


@dataclass(frozen=True)
class OutboxSend:
    """What a send did: messages published, messages still pending, and the broker's last error."""

    sent: int
    pending: int
    error: str = ""


def message_create(*, task_name: str, args: Sequence) -> OutboxMessage:
    """Record a task to send, in the caller's transaction: it exists exactly when the caller's rows do."""
    return OutboxMessage.objects.create(task_name=task_name, args=list(args))


def _messages_claim(*, ids: Sequence[int] | None, after: int, limit: int) -> list[OutboxMessage]:
    """Pending messages no other sender holds, claimed for CLAIM_TIME; skips rows another sender is claiming."""
    now = timezone.now()
    with transaction.atomic():
        free = (
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(sent_at=None, pk__gt=after)
            .filter(Q(claimed_until=None) | Q(claimed_until__lt=now))
        )
        if ids is not None:
            free = free.filter(pk__in=ids)
        messages = list(free.order_by("id")[:limit])
        OutboxMessage.objects.filter(pk__in=[m.pk for m in messages]).update(claimed_until=now + CLAIM_TIME)
    return messages


def messages_send(*, app, ids: Sequence[int] | None = None) -> OutboxSend:
    """Publish the pending messages (those of ``ids``, or all of them, oldest first) to the broker.

    Each message is claimed before it is published, so two senders (the one after a commit, a
    beat flush, ``requeue_stuck``, the admin) never publish one twice. The first broker error
    stops the send: the message keeps the error and stays pending with the rest.
    """
    sent, error, after = 0, "", 0
    while not error:
        messages = _messages_claim(ids=ids, after=after, limit=BATCH_SIZE)
        if not messages:
            break
        published: list[int] = []
        try:
            for message in messages:
                task = app.tasks.get(message.task_name)
                if task is None:
                    _message_failed(message, f"no task is registered as {message.task_name!r}")
                    continue
                try:
                    task.apply_async(args=message.args)
                except OperationalError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH]
                    _message_failed(message, error)
                    break
                except Exception:
                    published.append(message.pk)  # task_always_eager: the task ran here, and raised
                    raise
                published.append(message.pk)
        finally:
            OutboxMessage.objects.filter(pk__in=published).update(
                sent_at=timezone.now(), claimed_until=None, attempts=F("attempts") + 1, last_error=""
            )
            OutboxMessage.objects.filter(pk__in=[m.pk for m in messages], sent_at=None).update(claimed_until=None)
        sent += len(published)
        after = messages[-1].pk
    pending = OutboxMessage.objects.filter(sent_at=None)
    if ids is not None:
        pending = pending.filter(pk__in=ids)
    return OutboxSend(sent=sent, pending=pending.count(), error=error)


def _message_failed(message: OutboxMessage, error: str) -> None:
    OutboxMessage.objects.filter(pk=message.pk).update(attempts=F("attempts") + 1, last_error=error[:ERROR_LENGTH])


def messages_prune(*, older_than: timedelta = KEEP_SENT) -> int:
    """Delete the messages sent longer ago than ``older_than``; returns how many."""
    deleted, _ = OutboxMessage.objects.filter(sent_at__lt=timezone.now() - older_than).delete()
    return deleted
