"""Assignment: leases, K, breadth-first order, expiry and reclaim, gold mixing, randomized layouts."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from annotation import errors
from annotation.models import Item, Judgment, Lease
from annotation.services import assignment, rounds, submission
from tests.annotation.builders import annotators, answer_for, catalog_ids, pairwise_round, shown_id, shown_ids

pytestmark = pytest.mark.django_db


def submit(lease, annotator, *, now=None, choice="first"):
    return submission.judgment_submit(
        annotator=annotator, lease_id=lease.lease.id, client_uuid=uuid.uuid4(),
        answer=answer_for(lease, choice), elapsed_ms=1200, now=now,
    )


def test_never_the_same_item_twice_and_never_more_than_k():
    round_ = pairwise_round(n_items=2, k=3)
    people = annotators(5)
    seen = {}
    for person in people:
        while (lease := assignment.item_next_for_annotator(round_=round_, annotator=person)) is not None:
            assert lease.lease.item_id not in seen.setdefault(person.pk, set())
            seen[person.pk].add(lease.lease.item_id)
            submit(lease, person)
    counts = Judgment.objects.values("item").annotate(n=Count("id"))
    assert sorted(row["n"] for row in counts) == [3, 3]
    # Three annotators judged both items; the other two found nothing left.
    assert sorted(len(items) for items in seen.values()) == [2, 2, 2]


def test_unexpired_leases_count_against_k():
    round_ = pairwise_round(n_items=1, k=2)
    first, second, third = annotators(3)
    assert assignment.item_next_for_annotator(round_=round_, annotator=first) is not None
    assert assignment.item_next_for_annotator(round_=round_, annotator=second) is not None
    # Nobody has submitted yet, but both slots are leased.
    assert assignment.item_next_for_annotator(round_=round_, annotator=third) is None


def test_expired_lease_is_reclaimed_and_late_submission_is_refused_once_taken():
    round_ = pairwise_round(n_items=1, k=1)
    slow, fast = annotators(2)
    t0 = timezone.now()
    lease = assignment.item_next_for_annotator(round_=round_, annotator=slow, now=t0)
    later = t0 + timedelta(seconds=round_.lease_ttl_seconds + 1)
    taken = assignment.item_next_for_annotator(round_=round_, annotator=fast, now=later)
    assert taken is not None and taken.lease.item_id == lease.lease.item_id
    assert Lease.objects.get(pk=lease.lease.id).state == Lease.State.EXPIRED
    with pytest.raises(errors.Conflict) as exc:
        submit(lease, slow, now=later)
    assert exc.value.code == "lease_expired"
    submit(taken, fast, now=later)
    assert Judgment.objects.count() == 1


def test_expired_but_unreclaimed_lease_is_still_accepted():
    round_ = pairwise_round(n_items=1, k=1)
    (slow,) = annotators(1)
    t0 = timezone.now()
    lease = assignment.item_next_for_annotator(round_=round_, annotator=slow, now=t0)
    result = submit(lease, slow, now=t0 + timedelta(hours=1))
    assert not result.replayed
    assert Item.objects.get().slots_taken == 1


def test_reclaimed_lease_can_still_submit_while_the_item_has_room():
    round_ = pairwise_round(n_items=1, k=2)
    slow, other = annotators(2)
    t0 = timezone.now()
    lease = assignment.item_next_for_annotator(round_=round_, annotator=slow, now=t0)
    assert assignment.leases_reclaim(round_=round_, now=t0 + timedelta(hours=1)) == 1
    assert Item.objects.get().slots_taken == 0
    submit(lease, slow, now=t0 + timedelta(hours=1))
    assert Item.objects.get().slots_taken == 1
    assert assignment.item_next_for_annotator(round_=round_, annotator=other) is not None


def test_breadth_first_items_closest_to_completion_come_first():
    round_ = pairwise_round(n_items=3, k=3)
    a, b, c = annotators(3)
    first = assignment.item_next_for_annotator(round_=round_, annotator=a)
    submit(first, a)
    # b must get the item a already judged, not a fresh one.
    assert assignment.item_next_for_annotator(round_=round_, annotator=b).lease.item_id == first.lease.item_id
    assert assignment.item_next_for_annotator(round_=round_, annotator=c).lease.item_id == first.lease.item_id


def test_resume_returns_the_held_lease_and_preload_gets_a_second_item():
    round_ = pairwise_round(n_items=4, k=5)
    (person,) = annotators(1)
    current = assignment.item_next_for_annotator(round_=round_, annotator=person)
    assert assignment.item_next_for_annotator(round_=round_, annotator=person).lease.id == current.lease.id
    preloaded = assignment.item_next_for_annotator(round_=round_, annotator=person, exclude=[current.lease.id])
    assert preloaded.lease.item_id != current.lease.item_id
    # A third item releases the oldest held lease: at most two held at a time.
    third = assignment.item_next_for_annotator(round_=round_, annotator=person, exclude=[current.lease.id, preloaded.lease.id])
    held = Lease.objects.filter(annotator=person, state=Lease.State.HELD)
    assert set(held.values_list("pk", flat=True)) == {preloaded.lease.id, third.lease.id}
    assert Item.objects.get(pk=current.lease.item_id).slots_taken == 0


def test_layout_is_random_per_annotator_and_stable_for_one():
    round_ = pairwise_round(n_items=1, k=40)
    people = annotators(40)
    layouts = set()
    for person in people:
        lease = assignment.item_next_for_annotator(round_=round_, annotator=person)
        again = assignment.item_next_for_annotator(round_=round_, annotator=person)
        assert again.lease.layout == lease.lease.layout
        layouts.add(tuple(lease.lease.layout))
    # 40 fair coin flips all landing the same way: probability 2**-39.
    assert len(layouts) == 2


def test_judgment_is_stored_in_image_ids_with_the_layout_shown():
    round_ = pairwise_round(n_items=1, k=1)
    (person,) = annotators(1)
    lease = assignment.item_next_for_annotator(round_=round_, annotator=person, rng=random.Random(3))
    judgment = Judgment.objects.get(pk=submit(lease, person, choice="second").judgment.id)
    assert shown_id(judgment, judgment.winner) == lease.lease.layout[1]
    assert shown_id(judgment, judgment.loser) == lease.lease.layout[0]
    assert judgment.layout == lease.lease.layout


def test_gold_items_are_mixed_in_at_the_round_rate():
    round_ = pairwise_round(n_items=6, k=5, gold_rate=1.0)
    gold = Item.objects.filter(round=round_).order_by("id").first()
    rounds.item_gold_set(item=gold, is_gold=True, gold_answer={"outcome": "win", "winner": catalog_ids(gold)[0]})
    a, b = shown_ids(gold)
    (person,) = annotators(1)
    first = assignment.item_next_for_annotator(round_=round_, annotator=person)
    assert first.lease.item_id == gold.pk  # rate 1.0: the gold item comes first
    result = submission.judgment_submit(
        annotator=person, lease_id=first.lease.id, client_uuid=uuid.uuid4(),
        answer={"outcome": "win", "winner": b}, elapsed_ms=10,
    )
    assert result.judgment.gold_score == 0.0
    # Gold exhausted for this annotator: regular items follow.
    assert assignment.item_next_for_annotator(round_=round_, annotator=person).lease.item_id != gold.pk


def test_gold_answer_is_validated():
    round_ = pairwise_round(n_items=1)
    item = Item.objects.get(round=round_)
    with pytest.raises(errors.InvalidAnswer, match="winner"):
        rounds.item_gold_set(item=item, is_gold=True, gold_answer={"outcome": "win", "winner": "nope"})


def test_closed_round_hands_out_nothing():
    round_ = pairwise_round(n_items=1, status="closed")
    (person,) = annotators(1)
    with pytest.raises(errors.AnnotationNotFound):
        assignment.item_next_for_annotator(round_=round_, annotator=person)


operations = st.lists(
    st.tuples(st.sampled_from(["next", "submit", "expire", "undo"]), st.integers(0, 5)), min_size=1, max_size=40
)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_slot_bookkeeping_holds_under_any_sequence(ops):
    """slots_taken = judgments + held leases <= K, and no annotator judges an item twice."""
    from django.db import transaction

    with transaction.atomic():
        round_ = pairwise_round(n_items=3, k=2, name="prop")
        people = annotators(6)
        clock = timezone.now()
        held: dict[int, list] = {}
        for op, who in ops:
            person = people[who]
            if op == "next":
                lease = assignment.item_next_for_annotator(round_=round_, annotator=person, now=clock, exclude=[
                    lease.lease.id for lease in held.get(who, [])
                ])
                if lease is not None:
                    held.setdefault(who, []).append(lease)
            elif op == "submit" and held.get(who):
                lease = held[who].pop(0)
                try:
                    submit(lease, person, now=clock)
                except errors.Conflict:
                    pass
            elif op == "expire":
                clock += timedelta(seconds=round_.lease_ttl_seconds + 1)
            elif op == "undo":
                last = Judgment.objects.filter(annotator=person, undone_at__isnull=True).order_by("-created_at", "-id").first()
                if last is not None:
                    try:
                        held.setdefault(who, []).append(submission.judgment_undo(annotator=person, client_uuid=last.client_uuid, now=clock))
                    except errors.Conflict:
                        pass
        for item in Item.objects.filter(round=round_):
            judged = Judgment.objects.filter(item=item, undone_at__isnull=True).count()
            holding = Lease.objects.filter(item=item, state=Lease.State.HELD).count()
            assert item.slots_taken == judged + holding
            assert judged <= round_.k
        doubles = Judgment.objects.filter(undone_at__isnull=True).values("item", "annotator").annotate(n=Count("id")).filter(n__gt=1)
        assert not doubles.exists()
        transaction.set_rollback(True)


def test_database_refuses_more_slots_than_k():
    from django.db import IntegrityError, transaction

    round_ = pairwise_round(n_items=1, k=2)
    item = Item.objects.get(round=round_)
    assert item.k == 2
    with pytest.raises(IntegrityError), transaction.atomic():
        Item.objects.filter(pk=item.pk).update(slots_taken=3)


def test_gold_items_are_outside_k_and_stay_gold_once_over_it():
    round_ = pairwise_round(n_items=1, k=1, gold_rate=1.0)
    item = Item.objects.get(round=round_)
    rounds.item_gold_set(item=item, is_gold=True, gold_answer={"outcome": "tie"})
    for person in annotators(3):
        lease = assignment.item_next_for_annotator(round_=round_, annotator=person)
        assert lease.lease.item_id == item.pk
        submit(lease, person)
    item.refresh_from_db()
    assert item.slots_taken == 3
    with pytest.raises(errors.InvalidRoundSpec, match="stays gold"):
        rounds.item_gold_set(item=item, is_gold=False)
