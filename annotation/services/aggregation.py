"""Majority results: one item's, recomputed inside each submission and undo, or a whole round's on demand."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from annotation import selectors, sql, voting
from annotation.kinds import ItemContext, item_kind
from annotation.models import Aggregate, Item, Round


def item_aggregate(*, item: ItemContext, excluded: set[int] | None = None) -> sql.AggregateRow:
    """Recompute one item's majority result from its current judgments.

    The item is complete with K judgments, or, in a round closed under ``count-partial``, with
    enough counted votes for ``voting.closing_k``.

    The aggregate row is locked before the judgments are read, so that of two concurrent
    submissions to one item the later one counts both. ``excluded``: the annotators left out
    for their gold accuracy (read from the database when not given).
    """
    round_ = item.round
    if not sql.aggregate_lock(item_id=item.id):
        Aggregate.objects.get_or_create(item_id=item.id, defaults={"round_id": round_.id})
        sql.aggregate_lock(item_id=item.id)
    votes = sql.item_votes(item_id=item.id)
    if excluded is None:
        excluded = selectors.annotators_excluded(round_=round_, annotator_ids=[v.annotator_id for v in votes])
    counted = [v for v in votes if v.annotator_id not in excluded]
    kind = item_kind(round_.kind)
    result = kind.aggregate(item=item, votes=counted, k=round_.k)
    complete = len(votes) >= round_.k
    if not complete and round_.status == Round.Status.CLOSED and round_.close_rule == Round.CloseRule.COUNT_PARTIAL:
        # Closed early: decided by the votes it has (as the kind counts them), if it has enough.
        closing = voting.closing_k(k=round_.k, n_votes=len(result.used))
        if closing is not None:
            result, complete = kind.aggregate(item=item, votes=counted, k=closing), True
    aggregate = sql.AggregateRow(
        item_id=item.id, outcome=result.outcome, winner_id=result.winner_id, loser_id=result.loser_id,
        margin=result.margin, no_majority=result.no_majority, counts=result.counts,
        question_results=result.question_results, alignment_score=result.alignment_score,
        n_judgments=len(votes), n_used=len(result.used), n_rejected=result.n_rejected,
        n_excluded=len(votes) - len(counted), n_synthetic=sum(v.synthetic for v in result.used),
        complete=complete, updated_at=timezone.now(),
    )
    sql.aggregate_write(aggregate=aggregate)
    return aggregate


def round_aggregate(*, round_: Round) -> selectors.RoundSummary:
    """Recompute every aggregate of the round (after gold changes, exclusions, or on demand)."""
    excluded = selectors.annotators_excluded(round_=round_)
    for item_id, prompt_id in Item.objects.filter(round=round_).values_list("id", "prompt_id").iterator(chunk_size=500):
        with transaction.atomic():
            item_aggregate(item=ItemContext(id=item_id, prompt_id=prompt_id, round=round_), excluded=excluded)
    return selectors.round_summary(round_=round_)
