"""Storing a judgment against the annotator's lease, and undoing the latest one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation import sql
from annotation.conf import setting
from annotation.errors import AnnotationNotFound, Conflict, InvalidInput, RateLimited
from annotation.kinds import ItemContext
from annotation.models import AlignmentAnswer, Judgment, Lease, Round
from annotation.services.aggregation import item_aggregate
from annotation.services.answers import answer_parse, gold_score
from annotation.services.assignment import Task, item_next, profile_lock, system_random


@dataclass(frozen=True)
class SubmitResult:
    judgment: sql.JudgmentRow
    replayed: bool
    next_task: Task | None = None  # asked for with ``next_exclude``: the annotator's next task, if any


def _rate_limit_take(profile: sql.ProfileRow, now: datetime) -> None:
    """Token bucket on the profile row (locked by the caller)."""
    rate, burst = setting("ANNOTATION_SUBMIT_RATE"), setting("ANNOTATION_SUBMIT_BURST")
    if rate <= 0:
        return
    tokens = burst
    if profile.submit_tokens_at is not None:
        tokens = min(burst, profile.submit_tokens + max(0.0, (now - profile.submit_tokens_at).total_seconds()) * rate)
    if tokens < 1:
        retry_after = (1 - tokens) / rate
        raise RateLimited(
            f"too many submissions: at most {rate:g} per second after a burst of {burst:g} "
            f"(ANNOTATION_SUBMIT_RATE, ANNOTATION_SUBMIT_BURST); retry in {max(retry_after, 0.1):.1f} s",
            retry_after=retry_after,
        )
    sql.profile_tokens_set(profile_id=profile.id, tokens=tokens - 1, at=now)


def _replay(*, annotator, client_uuid) -> SubmitResult | None:
    existing = sql.judgment_by_client_uuid(client_uuid=client_uuid)
    if existing is None:
        return None
    if existing.annotator_id != annotator.pk:
        raise InvalidInput("this client_uuid was already used", field="client_uuid")
    return SubmitResult(judgment=existing, replayed=True)


def judgment_submit(
    *, annotator, lease_id, client_uuid, answer: dict, elapsed_ms: int, now: datetime | None = None,
    enforce_rate_limit: bool = True, next_exclude: list | tuple | None = None,
) -> SubmitResult:
    """Store one judgment against the annotator's lease; a retry with the same client UUID is a no-op.

    The answer is stored in image ids; the layout the annotator saw comes from the lease.
    The item's aggregate is recomputed in the same transaction. With ``next_exclude`` (the
    leases the client still holds) the annotator's next task of the round is leased in that
    transaction too, as ``item_next_for_annotator`` would: one round trip per judgment.
    A replayed submission leases nothing; the caller asks ``item_next_for_annotator`` then.
    """
    now = now or timezone.now()
    if elapsed_ms is None or elapsed_ms < 0:
        raise InvalidInput("must be a non-negative integer", field="elapsed_ms")
    try:
        with transaction.atomic():
            found = sql.lease_for_submit(annotator_id=annotator.pk, lease_id=lease_id)
            if found is None:
                profile_lock(annotator)
                replay = _replay(annotator=annotator, client_uuid=client_uuid)
                if replay:
                    return replay
                raise AnnotationNotFound("no such lease for this annotator")
            lease, round_ = found.lease, found.round
            if lease.state == Lease.State.SUBMITTED:
                # Most likely a retry. (A retry after an undo finds the UUID taken: see IntegrityError below.)
                replay = _replay(annotator=annotator, client_uuid=client_uuid)
                if replay:
                    return replay
            if round_.status != Round.Status.OPEN:
                raise Conflict(f"round {round_.id} is {round_.status}: it takes no submissions", code="round_closed")
            if enforce_rate_limit:
                _rate_limit_take(found.profile, now)
            if lease.state == Lease.State.SUBMITTED:
                raise Conflict("this item is already judged by this annotator", code="already_judged")
            if lease.state == Lease.State.SKIPPED:
                raise Conflict("this annotator skipped this item", code="skipped")
            item = ItemContext.of_row(found.item, round_)
            parsed = answer_parse(item=item, answer=answer)
            if lease.state == Lease.State.EXPIRED:
                # The slot was reclaimed: take one again if the item still has room.
                if not sql.item_slot_take(item_id=item.id, k=None if item.is_gold else round_.k):
                    raise Conflict("the lease expired and the item was given to others", code="lease_expired")
            judgment = sql.JudgmentRow(
                id=None, client_uuid=client_uuid, round_id=round_.id, item_id=item.id, annotator_id=annotator.pk,
                lease_id=lease.id, outcome=parsed.outcome, winner_id=parsed.winner_id, loser_id=parsed.loser_id,
                layout=lease.layout, elapsed_ms=elapsed_ms, synthetic=found.profile.synthetic,
                gold_score=gold_score(item=item, parsed=parsed), created_at=now,
            )
            judgment_id = sql.judgment_insert(judgment=judgment)
            if parsed.answers is not None:
                AlignmentAnswer.objects.bulk_create(
                    [AlignmentAnswer(judgment_id=judgment_id, question_id=q, answer=a) for q, a in parsed.answers.items()]
                )
            sql.lease_state_set(lease_id=lease.id, state=Lease.State.SUBMITTED)
            item_aggregate(item=item)
            next_task = None
            if next_exclude is not None:
                next_task = item_next(round_=round_, annotator=annotator, exclude=next_exclude, now=now,
                                      rng=system_random)
    except IntegrityError:
        # A concurrent retry with the same UUID won the race, or a second judgment of the item.
        replay = _replay(annotator=annotator, client_uuid=client_uuid)
        if replay:
            return replay
        raise Conflict("this item is already judged by this annotator", code="already_judged") from None
    return SubmitResult(judgment=replace(judgment, id=judgment_id), replayed=False, next_task=next_task)


def judgment_undo(*, annotator, client_uuid, now: datetime | None = None) -> Task:
    """Undo the annotator's latest judgment within the undo window; the item is leased back to them."""
    now = now or timezone.now()
    with transaction.atomic():
        profile_lock(annotator)
        judgment = (
            Judgment.objects.select_for_update(no_key=True, of=("self",)).select_related("round", "item")
            .filter(client_uuid=client_uuid, annotator=annotator).first()
        )
        if judgment is None:
            raise AnnotationNotFound("no such judgment for this annotator")
        if judgment.undone_at is not None:
            raise Conflict("this judgment is already undone", code="already_undone")
        if judgment.round.status != Round.Status.OPEN:
            raise Conflict(f"round {judgment.round_id} is {judgment.round.status}: its judgments are final",
                           code="round_closed")
        latest = Judgment.objects.filter(annotator=annotator, undone_at__isnull=True).order_by("-created_at", "-id").first()
        if latest.pk != judgment.pk:
            raise Conflict("only the latest judgment can be undone", code="not_latest")
        if (now - judgment.created_at).total_seconds() > setting("ANNOTATION_UNDO_SECONDS"):
            raise Conflict("the undo window has passed", code="undo_window_passed")
        judgment.undone_at = now
        judgment.save(update_fields=["undone_at"])
        # The judgment's slot becomes the lease's slot again: slots_taken does not change.
        lease = Lease.objects.select_for_update(no_key=True).get(item=judgment.item, annotator=annotator)
        lease.state, lease.leased_at = Lease.State.HELD, now
        lease.expires_at = now + timedelta(seconds=judgment.round.lease_ttl_seconds)
        lease.save(update_fields=["state", "leased_at", "expires_at"])
        item = ItemContext(id=judgment.item_id, prompt_id=judgment.item.prompt_id, round=judgment.round)
        item_aggregate(item=item)
        return Task(lease=sql.LeaseRow.from_instance(lease), round=judgment.round, item=item)
