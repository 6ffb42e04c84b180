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

from annotation import services
from annotation.models import Item, Judgment, Lease
from tests.annotation.builders import annotators, answer_for, pairwise_round

pytestmark = pytest.mark.django_db


def submit(lease, annotator, *, now=None, choice="first"):
    return services.judgment_submit(
        annotator=annotator, lease_id=lease.pk, client_uuid=uuid.uuid4(),
        answer=answer_for(lease, choice), elapsed_ms=1200, now=now,
    )


def test_never_the_same_item_twice_and_never_more_than_k():
    round_ = pairwise_round(n_items=2, k=3)
    people = annotators(5)
    seen = {}
    for person in people:
        while (lease := services.item_next_for_annotator(round_=round_, annotator=person)) is not None:
            assert lease.item_id not in seen.setdefault(person.pk, set())
            seen[person.pk].add(lease.item_id)
            submit(lease, person)
    counts = Judgment.objects.values("item").annotate(n=Count("id"))
    assert sorted(row["n"] for row in counts) == [3, 3]
    # Three annotators judged both items; the other two found nothing left.
    assert sorted(len(items) for items in seen.values()) == [2, 2, 2]


def test_unexpired_leases_count_against_k():
    round_ = pairwise_round(n_items=1, k=2)
    first, second, third = annotators(3)
    assert services.item_next_for_annotator(round_=round_, annotator=first) is not None
    assert services.item_next_for_annotator(round_=round_, annotator=second) is not None
    # Nobody has submitted yet, but both slots are leased.
    assert services.item_next_for_annotator(round_=round_, annotator=third) is None


def test_expired_lease_is_reclaimed_and_late_submission_is_refused_once_taken():
    round_ = pairwise_round(n_items=1, k=1)
    slow, fast = annotators(2)
    t0 = timezone.now()
    lease = services.item_next_for_annotator(round_=round_, annotator=slow, now=t0)
    later = t0 + timedelta(seconds=round_.lease_ttl_seconds + 1)
    taken = services.item_next_for_annotator(round_=round_, annotator=fast, now=later)
    assert taken is not None and taken.item_id == lease.item_id
    lease.refresh_from_db()
    assert lease.state == Lease.State.EXPIRED
    with pytest.raises(services.Conflict) as exc:
        submit(lease, slow, now=later)
    assert exc.value.code == "lease_expired"
    submit(taken, fast, now=later)
    assert Judgment.objects.count() == 1


def test_expired_but_unreclaimed_lease_is_still_accepted():
    round_ = pairwise_round(n_items=1, k=1)
    (slow,) = annotators(1)
    t0 = timezone.now()
    lease = services.item_next_for_annotator(round_=round_, annotator=slow, now=t0)
    result = submit(lease, slow, now=t0 + timedelta(hours=1))
    assert not result.replayed
    assert Item.objects.get().slots_taken == 1


def test_reclaimed_lease_can_still_submit_while_the_item_has_room():
    round_ = pairwise_round(n_items=1, k=2)
    slow, other = annotators(2)
    t0 = timezone.now()
    lease = services.item_next_for_annotator(round_=round_, annotator=slow, now=t0)
    assert services.leases_reclaim(round_=round_, now=t0 + timedelta(hours=1)) == 1
    assert Item.objects.get().slots_taken == 0
    submit(lease, slow, now=t0 + timedelta(hours=1))
    assert Item.objects.get().slots_taken == 1
    assert services.item_next_for_annotator(round_=round_, annotator=other) is not None


def test_breadth_first_items_closest_to_completion_come_first():
    round_ = pairwise_round(n_items=3, k=3)
    a, b, c = annotators(3)
    first = services.item_next_for_annotator(round_=round_, annotator=a)
    submit(first, a)
    # b must get the item a already judged, not a fresh one.
    assert services.item_next_for_annotator(round_=round_, annotator=b).item_id == first.item_id
    assert services.item_next_for_annotator(round_=round_, annotator=c).item_id == first.item_id


def test_resume_returns_the_held_lease_and_preload_gets_a_second_item():
    round_ = pairwise_round(n_items=4, k=5)
    (person,) = annotators(1)
    current = services.item_next_for_annotator(round_=round_, annotator=person)
    assert services.item_next_for_annotator(round_=round_, annotator=person).pk == current.pk
    preloaded = services.item_next_for_annotator(round_=round_, annotator=person, exclude=[current.pk])
    assert preloaded.item_id != current.item_id
    # A third item releases the oldest held lease: at most two held at a time.
    third = services.item_next_for_annotator(round_=round_, annotator=person, exclude=[current.pk, preloaded.pk])
    held = Lease.objects.filter(annotator=person, state=Lease.State.HELD)
    assert set(held.values_list("pk", flat=True)) == {preloaded.pk, third.pk}
    assert Item.objects.get(pk=current.item_id).slots_taken == 0


def test_layout_is_random_per_annotator_and_stable_for_one():
    round_ = pairwise_round(n_items=1, k=40)
    people = annotators(40)
    layouts = set()
    for person in people:
        lease = services.item_next_for_annotator(round_=round_, annotator=person)
        again = services.item_next_for_annotator(round_=round_, annotator=person)
        assert again.layout == lease.layout
        layouts.add(tuple(lease.layout))
    # 40 fair coin flips all landing the same way: probability 2**-39.
    assert len(layouts) == 2


def test_judgment_is_stored_in_image_ids_with_the_layout_shown():
    round_ = pairwise_round(n_items=1, k=1)
    (person,) = annotators(1)
    lease = services.item_next_for_annotator(round_=round_, annotator=person, rng=random.Random(3))
    judgment = submit(lease, person, choice="second").judgment
    assert judgment.winner.public_id == lease.layout[1]
    assert judgment.loser.public_id == lease.layout[0]
    assert judgment.layout == lease.layout


def test_gold_items_are_mixed_in_at_the_round_rate():
    round_ = pairwise_round(n_items=6, k=5, gold_rate=1.0)
    gold = Item.objects.filter(round=round_).order_by("id").first()
    a, b = [ii.image.public_id for ii in gold.item_images.order_by("order")]
    services.item_gold_set(item=gold, is_gold=True, gold_answer={"outcome": "win", "winner": a})
    (person,) = annotators(1)
    first = services.item_next_for_annotator(round_=round_, annotator=person)
    assert first.item_id == gold.pk  # rate 1.0: the gold item comes first
    result = services.judgment_submit(
        annotator=person, lease_id=first.pk, client_uuid=uuid.uuid4(),
        answer={"outcome": "win", "winner": b}, elapsed_ms=10,
    )
    assert result.judgment.gold_score == 0.0
    # Gold exhausted for this annotator: regular items follow.
    assert services.item_next_for_annotator(round_=round_, annotator=person).item_id != gold.pk


def test_gold_answer_is_validated():
    round_ = pairwise_round(n_items=1)
    item = Item.objects.get(round=round_)
    with pytest.raises(services.InvalidAnswer, match="winner"):
        services.item_gold_set(item=item, is_gold=True, gold_answer={"outcome": "win", "winner": "nope"})


def test_closed_round_hands_out_nothing():
    round_ = pairwise_round(n_items=1, status="closed")
    (person,) = annotators(1)
    with pytest.raises(services.NotFound):
        services.item_next_for_annotator(round_=round_, annotator=person)


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
                lease = services.item_next_for_annotator(round_=round_, annotator=person, now=clock, exclude=[
                    lease.pk for lease in held.get(who, [])
                ])
                if lease is not None:
                    held.setdefault(who, []).append(lease)
            elif op == "submit" and held.get(who):
                lease = held[who].pop(0)
                try:
                    submit(lease, person, now=clock)
                except services.Conflict:
                    pass
            elif op == "expire":
                clock += timedelta(seconds=round_.lease_ttl_seconds + 1)
            elif op == "undo":
                last = Judgment.objects.filter(annotator=person, undone_at__isnull=True).order_by("-created_at", "-id").first()
                if last is not None:
                    try:
                        held.setdefault(who, []).append(services.judgment_undo(annotator=person, client_uuid=last.client_uuid, now=clock))
                    except services.Conflict:
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
    services.item_gold_set(item=item, is_gold=True, gold_answer={"outcome": "tie"})
    for person in annotators(3):
        lease = services.item_next_for_annotator(round_=round_, annotator=person)
        assert lease.item_id == item.pk
        submit(lease, person)
    item.refresh_from_db()
    assert item.slots_taken == 3
    with pytest.raises(services.InvalidAnswer, match="stays gold"):
        services.item_gold_set(item=item, is_gold=False)
