"""Leasing an annotator's next item of a round, and reclaiming expired leases.

How K is kept is told in docs/architecture.md ("How K is kept"); the statements are in
``annotation.sql``.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation import sql
from annotation.conf import setting
from annotation.errors import AnnotationNotFound, Conflict, InvalidInput
from annotation.kinds import ItemContext
from annotation.models import AnnotatorProfile, Item, Lease, Round


@dataclass(frozen=True)
class Task:
    """A held lease with what the annotator's page is built from: its round and its item."""

    lease: sql.LeaseRow
    round: Round | sql.RoundRow
    item: ItemContext


def profile_lock(annotator) -> sql.ProfileRow:
    """Lock the annotator's profile row (created on first use): one assignment or submission at a time."""
    profile = sql.profile_lock(annotator_id=annotator.pk)
    if profile is None:
        AnnotatorProfile.objects.get_or_create(user=annotator)
        profile = sql.profile_lock(annotator_id=annotator.pk)
    return profile


def leases_reclaim(*, round_: Round, now: datetime | None = None, limit: int = 500) -> int:
    """Turn a round's expired held leases back into free slots; returns how many were reclaimed.

    Rows another transaction holds are skipped, not waited for, so this never deadlocks
    with assignment or submission; a later call picks them up.
    """
    with transaction.atomic():
        return _leases_reclaim(round_=round_, now=now or timezone.now(), limit=limit)


def _leases_reclaim(*, round_: Round, now: datetime, limit: int) -> int:
    expired = list(
        Lease.objects.filter(round_id=round_.id, state=Lease.State.HELD, expires_at__lte=now)
        .select_for_update(no_key=True, skip_locked=True).values_list("id", "item_id")[:limit]
    )
    if not expired:
        return 0
    locked_items = set(
        Item.objects.filter(pk__in={item_id for _, item_id in expired})
        .select_for_update(no_key=True, skip_locked=True).values_list("pk", flat=True)
    )
    reclaimable = [(lease_id, item_id) for lease_id, item_id in expired if item_id in locked_items]
    Lease.objects.filter(pk__in=[lease_id for lease_id, _ in reclaimable], state=Lease.State.HELD).update(
        state=Lease.State.EXPIRED
    )
    for item_id, n in Counter(item_id for _, item_id in reclaimable).items():
        Item.objects.filter(pk=item_id).update(slots_taken=F("slots_taken") - n)
    return len(reclaimable)


_reclaimed_at: dict[int, float] = {}


def _reclaim_due(round_id: int) -> bool:
    """Reclaim a round's expired leases at most every ANNOTATION_RECLAIM_INTERVAL seconds per process.

    Until reclaimed, an expired lease still counts against K, so a later reclaim only delays
    reuse of a slot; it never lets an item exceed K.
    """
    now = time.monotonic()
    if now - _reclaimed_at.get(round_id, float("-inf")) < setting("ANNOTATION_RECLAIM_INTERVAL"):
        return False
    _reclaimed_at[round_id] = now
    return True


def item_next_for_annotator(
    *, round_: Round, annotator, exclude: list | tuple = (), now: datetime | None = None,
    rng: random.Random | None = None,
) -> Task | None:
    """Lease the annotator's next item of the round, or return their current lease, or None.

    Breadth-first: the item with the most judgments and held leases (below K) comes first.
    A slot is taken by a conditional UPDATE (``slots_taken < K``) under the item's row lock
    (``FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serializes writers), so no item
    is ever leased beyond K, whatever the interleaving.
    """
    now = now or timezone.now()
    if round_.status != Round.Status.OPEN:
        raise AnnotationNotFound(f"round {round_.id} is not open")
    with transaction.atomic():
        profile_lock(annotator)
        return item_next(round_=round_, annotator=annotator, exclude=exclude, now=now, rng=rng or system_random)


def item_next(*, round_: Round | sql.RoundRow, annotator, exclude, now: datetime, rng: random.Random) -> Task | None:
    """The body of ``item_next_for_annotator``; the caller holds the annotator's profile lock.

    What the annotator let go never blocks new work: their expired leases give their slots back
    here, and an item whose lease expired or was released goes to them again only when no item
    they never had is left (and never while its lease is in ``exclude``); a skipped item never.
    """
    exclude = {str(lease_id) for lease_id in exclude}
    if _reclaim_due(round_.id):
        _leases_reclaim(round_=round_, now=now, limit=100)
    held = []
    for lease, item_row in sql.leases_held(round_id=round_.id, annotator_id=annotator.pk):
        if lease.expires_at > now:
            held.append((lease, item_row))
        else:
            sql.lease_release(lease_id=lease.id, item_id=lease.item_id)
    for lease, item_row in held:
        if str(lease.id) not in exclude:
            return Task(lease=lease, round=round_, item=ItemContext.of_row(item_row, round_))
    released = [lease for lease, _ in held[: max(0, len(held) - setting("ANNOTATION_MAX_LEASES") + 1)]]
    for lease in released:
        sql.lease_release(lease_id=lease.id, item_id=lease.item_id)
    skip_items = {lease.item_id for lease in released}

    want_gold = round_.gold_rate > 0 and rng.random() < round_.gold_rate
    row = None
    for fresh in (True, False):
        for gold in ([True, False] if want_gold else [False]):
            row = sql.item_pick(
                round_id=round_.id, annotator_id=annotator.pk, gold=gold, k=round_.k, fresh=fresh,
                skip_items=skip_items, skip_leases=() if fresh else exclude,
            )
            if row is not None:
                break
        if row is not None:
            break
    if row is None:
        return None
    item = ItemContext.of_row(row, round_)
    layout = [image.public_id for image in item.images()]
    rng.shuffle(layout)
    lease = sql.lease_upsert(lease=sql.LeaseRow(
        id=uuid.uuid4(), round_id=round_.id, item_id=item.id, annotator_id=annotator.pk, state=Lease.State.HELD,
        layout=layout, leased_at=now, expires_at=now + timedelta(seconds=round_.lease_ttl_seconds),
    ))
    return Task(lease=lease, round=round_, item=item)


def lease_skip(
    *, annotator, lease_id, reason: str, now: datetime | None = None, next_exclude: list | tuple | None = None,
) -> SkipResult:
    """Decline the annotator's leased item with a reason: its slot goes to another annotator, and
    the item is never offered to this one again. Skipping a skipped lease again changes nothing.

    With ``next_exclude`` the annotator's next task is leased in the same transaction, as in submit.
    """
    now = now or timezone.now()
    if reason not in Lease.SkipReason.values:
        raise InvalidInput(f"must be one of {', '.join(Lease.SkipReason.values)}", field="reason")
    with transaction.atomic():
        found = sql.lease_for_submit(annotator_id=annotator.pk, lease_id=lease_id)
        if found is None:
            raise AnnotationNotFound("no such lease for this annotator")
        lease, round_ = found.lease, found.round
        replayed = lease.state == Lease.State.SKIPPED
        if not replayed:
            if round_.status != Round.Status.OPEN:
                raise Conflict(f"round {round_.id} is {round_.status}: it takes no skips", code="round_closed")
            if lease.state == Lease.State.SUBMITTED:
                raise Conflict("this item is already judged by this annotator", code="already_judged")
            sql.lease_skip(lease_id=lease.id, item_id=lease.item_id, held=lease.state == Lease.State.HELD,
                           reason=reason, at=now)
        next_task = None
        if next_exclude is not None and round_.status == Round.Status.OPEN:
            next_task = item_next(round_=round_, annotator=annotator, exclude=next_exclude, now=now, rng=system_random)
    return SkipResult(lease_id=lease.id, replayed=replayed, next_task=next_task)


@dataclass(frozen=True)
class SkipResult:
    lease_id: uuid.UUID
    replayed: bool
    next_task: Task | None = None


system_random = random.SystemRandom()
