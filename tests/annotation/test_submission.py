"""Submission: idempotency, validation against the lease, undo, rate limit, aggregates and gold."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from annotation import errors, selectors
from annotation.models import Aggregate, AlignmentAnswer, AnnotatorProfile, Item, Judgment, Lease
from annotation.services import aggregation, assignment, rounds, submission
from tests.annotation.builders import (
    alignment_round,
    annotators,
    answer_for,
    best_worst_round,
    catalog_ids,
    gold_round_with_a_failing_annotator,
    pairwise_round,
    shown_ids,
)

pytestmark = pytest.mark.django_db


def lease_for(round_, person, **kwargs):
    lease = assignment.item_next_for_annotator(round_=round_, annotator=person, **kwargs)
    assert lease is not None
    return lease


def submit(lease, person, answer=None, *, client_uuid=None, now=None, elapsed_ms=900):
    return submission.judgment_submit(
        annotator=person, lease_id=lease.lease.id, client_uuid=client_uuid or uuid.uuid4(),
        answer=answer if answer is not None else answer_for(lease), elapsed_ms=elapsed_ms, now=now,
    )


class TestIdempotency:
    def test_retry_with_the_same_uuid_returns_the_same_judgment(self):
        round_ = pairwise_round(n_items=2)
        (person,) = annotators(1)
        lease = lease_for(round_, person)
        key = uuid.uuid4()
        first = submit(lease, person, client_uuid=key)
        again = submit(lease, person, client_uuid=key)
        assert (first.replayed, again.replayed) == (False, True)
        assert again.judgment.id == first.judgment.id
        assert Judgment.objects.count() == 1
        assert Item.objects.get(pk=lease.lease.item_id).slots_taken == 1

    @hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(retries=st.integers(1, 6))
    def test_any_number_of_retries_stores_one_judgment(self, retries):
        from django.db import transaction

        with transaction.atomic():
            round_ = pairwise_round(n_items=1, name="retries")
            (person,) = annotators(1)
            lease = lease_for(round_, person)
            key = uuid.uuid4()
            results = [submit(lease, person, client_uuid=key) for _ in range(retries + 1)]
            assert [r.replayed for r in results] == [False] + [True] * retries
            assert Judgment.objects.filter(item_id=lease.lease.item_id).count() == 1
            transaction.set_rollback(True)

    def test_second_judgment_of_an_item_with_a_new_uuid_is_refused(self):
        round_ = pairwise_round(n_items=1)
        (person,) = annotators(1)
        lease = lease_for(round_, person)
        submit(lease, person)
        with pytest.raises(errors.Conflict) as exc:
            submit(lease, person)
        assert exc.value.code == "already_judged"

    def test_someone_elses_uuid_is_refused(self):
        round_ = pairwise_round(n_items=2)
        a, b = annotators(2)
        key = uuid.uuid4()
        submit(lease_for(round_, a), a, client_uuid=key)
        with pytest.raises(errors.InvalidInput) as exc:
            submit(lease_for(round_, b), b, client_uuid=key)
        assert exc.value.field == "client_uuid"


class TestValidation:
    def test_lease_of_another_annotator_is_not_found(self):
        round_ = pairwise_round(n_items=1)
        a, b = annotators(2)
        lease = lease_for(round_, a)
        with pytest.raises(errors.AnnotationNotFound):
            submit(lease, b, answer_for(lease))

    @pytest.mark.parametrize("answer, message", [
        ({"outcome": "win", "winner": "0" * 24}, "winner"),
        ({"outcome": "left"}, "outcome"),
        ({"outcome": "cannot_compare"}, "visual_appeal"),
        ("left", "JSON object"),
    ])
    def test_bad_pairwise_answers_name_the_problem(self, answer, message):
        round_ = pairwise_round(n_items=1, criterion="visual_flaws")
        (person,) = annotators(1)
        lease = lease_for(round_, person)
        with pytest.raises(errors.InvalidAnswer, match=message):
            submit(lease, person, answer)
        assert not Judgment.objects.exists()

    def test_cannot_compare_is_a_rejection_on_appeal_items(self):
        round_ = pairwise_round(n_items=1, criterion="visual_appeal", k=1)
        (person,) = annotators(1)
        lease = lease_for(round_, person)
        submit(lease, person, {"outcome": "cannot_compare"})
        aggregate = Aggregate.objects.get(item_id=lease.lease.item_id)
        assert (aggregate.n_rejected, aggregate.n_used, aggregate.outcome) == (1, 0, "pending")

    def test_best_and_worst_must_differ(self):
        round_ = best_worst_round(n_items=1)
        (person,) = annotators(1)
        lease = lease_for(round_, person)
        with pytest.raises(errors.InvalidAnswer, match="different"):
            submit(lease, person, {"best": lease.lease.layout[0], "worst": lease.lease.layout[0]})

    def test_every_alignment_question_needs_an_answer(self):
        round_ = alignment_round(n_items=1)
        (person,) = annotators(1)
        lease = lease_for(round_, person)
        first = lease.item.questions()[0]
        with pytest.raises(errors.InvalidAnswer, match="no answer"):
            submit(lease, person, {"answers": [{"question": first.pk, "answer": "yes"}]})
        with pytest.raises(errors.InvalidAnswer, match="'yes' or 'no'"):
            submit(lease, person, {"answers": [{"question": first.pk, "answer": "maybe"}]})

    def test_elapsed_time_is_stored(self):
        round_ = pairwise_round(n_items=1)
        (person,) = annotators(1)
        judgment = submit(lease_for(round_, person), person, elapsed_ms=4321).judgment
        assert Judgment.objects.get(pk=judgment.id).elapsed_ms == 4321


class TestUndo:
    def test_undo_within_the_window_gives_the_item_back(self):
        round_ = pairwise_round(n_items=1, k=1)
        a, b = annotators(2)
        lease = lease_for(round_, a)
        judgment = submit(lease, a).judgment
        again = submission.judgment_undo(annotator=a, client_uuid=judgment.client_uuid)
        assert (again.lease.id, again.lease.state, again.lease.layout) == (lease.lease.id, Lease.State.HELD, lease.lease.layout)
        assert Judgment.objects.get(pk=judgment.id).undone_at is not None
        assert Aggregate.objects.get(item_id=lease.lease.item_id).n_judgments == 0
        # The slot stays with the annotator: nobody else gets the item.
        assert assignment.item_next_for_annotator(round_=round_, annotator=b) is None
        redo = submit(again, a, answer_for(again, "second"))
        assert not redo.replayed and Judgment.objects.filter(undone_at__isnull=True).count() == 1

    def test_undo_after_the_window_is_refused(self, settings):
        settings.ANNOTATION_UNDO_SECONDS = 60
        round_ = pairwise_round(n_items=1)
        (person,) = annotators(1)
        t0 = timezone.now()
        judgment = submit(lease_for(round_, person, now=t0), person, now=t0).judgment
        with pytest.raises(errors.Conflict) as exc:
            submission.judgment_undo(annotator=person, client_uuid=judgment.client_uuid, now=t0 + timedelta(seconds=61))
        assert exc.value.code == "undo_window_passed"

    def test_only_the_latest_judgment_can_be_undone(self):
        round_ = pairwise_round(n_items=2)
        (person,) = annotators(1)
        t0 = timezone.now()
        first = submit(lease_for(round_, person, now=t0), person, now=t0).judgment
        submit(lease_for(round_, person, now=t0), person, now=t0 + timedelta(seconds=1))
        with pytest.raises(errors.Conflict) as exc:
            submission.judgment_undo(annotator=person, client_uuid=first.client_uuid, now=t0 + timedelta(seconds=2))
        assert exc.value.code == "not_latest"

    def test_nobody_undoes_someone_elses_judgment(self):
        round_ = pairwise_round(n_items=1)
        a, b = annotators(2)
        judgment = submit(lease_for(round_, a), a).judgment
        with pytest.raises(errors.AnnotationNotFound):
            submission.judgment_undo(annotator=b, client_uuid=judgment.client_uuid)


class TestRateLimit:
    def test_burst_then_throttled_then_refilled(self, settings):
        settings.ANNOTATION_SUBMIT_RATE = 1.0
        settings.ANNOTATION_SUBMIT_BURST = 2.0
        round_ = pairwise_round(n_items=4)
        (person,) = annotators(1)
        t0 = timezone.now()
        for _ in range(2):
            submit(lease_for(round_, person, now=t0), person, now=t0)
        lease = lease_for(round_, person, now=t0)
        with pytest.raises(errors.RateLimited) as exc:
            submit(lease, person, now=t0)
        assert 0 < exc.value.retry_after <= 1
        # The refusal names the settings behind it and when to come back.
        assert "ANNOTATION_SUBMIT_RATE" in exc.value.detail and "ANNOTATION_SUBMIT_BURST" in exc.value.detail
        assert "at most 1 per second after a burst of 2" in exc.value.detail and "retry in 1.0 s" in exc.value.detail
        assert Judgment.objects.count() == 2
        submit(lease, person, now=t0 + timedelta(seconds=1.5))
        assert Judgment.objects.count() == 3

    def test_a_retry_is_not_throttled(self, settings):
        settings.ANNOTATION_SUBMIT_RATE = 0.001
        settings.ANNOTATION_SUBMIT_BURST = 1.0
        round_ = pairwise_round(n_items=1)
        (person,) = annotators(1)
        lease = lease_for(round_, person)
        key = uuid.uuid4()
        submit(lease, person, client_uuid=key)
        assert submit(lease, person, client_uuid=key).replayed


class TestAggregates:
    def vote(self, round_, people, picks):
        """Each person judges the round's single item; picks are 'a', 'b', 'tie' or 'reject' (canonical order)."""
        item = Item.objects.get(round=round_)
        shown_a, shown_b = shown_ids(item)  # what annotators answer with
        a, b = catalog_ids(item)  # what aggregates name
        for person, pick in zip(people, picks):
            lease = lease_for(round_, person)
            answer = {
                "a": {"outcome": "win", "winner": shown_a}, "b": {"outcome": "win", "winner": shown_b},
                "tie": {"outcome": "tie"}, "reject": {"outcome": "cannot_compare"},
            }[pick]
            submit(lease, person, answer)
        return Aggregate.objects.get(item=item), a, b

    def test_updates_as_judgments_arrive(self):
        round_ = pairwise_round(n_items=1, criterion="visual_appeal")
        people = annotators(5)
        aggregate, a, b = self.vote(round_, people[:3], ["b", "b", "b"])
        assert (aggregate.outcome, aggregate.winner.public_id, aggregate.loser.public_id) == ("winner", b, a)
        assert not aggregate.complete
        aggregate, *_ = self.vote(round_, people[3:], ["a", "reject"])
        assert aggregate.complete and aggregate.counts == {"a": 1, "b": 3, "tie": 0, "reject": 1}
        assert aggregate.margin == pytest.approx(2 / 4)

    def test_two_two_one_follows_the_round_rule(self):
        round_ = pairwise_round(n_items=1, no_majority_rule="mean_score")
        aggregate, a, _ = self.vote(round_, annotators(5), ["a", "a", "b", "tie", "tie"])
        assert (aggregate.outcome, aggregate.no_majority, aggregate.winner.public_id) == ("winner", True, a)

    def test_synthetic_judgments_are_counted(self):
        round_ = pairwise_round(n_items=1)
        people = annotators(5)
        for person in people[:2]:
            AnnotatorProfile.objects.update_or_create(user=person, defaults={"synthetic": True})
        aggregate, *_ = self.vote(round_, people, ["a", "a", "a", "b", "b"])
        assert aggregate.n_synthetic == 2
        assert selectors.round_summary(round_=round_).synthetic_judgments == 2

    def test_alignment_aggregate_applies_the_dsg_rule(self):
        round_ = alignment_round(n_items=1, k=3)
        item = Item.objects.get(round=round_)
        birds, blue = item.prompt.questions.order_by("order")
        votes = [("no", "yes"), ("no", "yes"), ("yes", "yes")]  # raw "blue" is 3/3 yes
        for person, (q1, q2) in zip(annotators(3), votes):
            lease = lease_for(round_, person)
            submit(lease, person, {"answers": [{"question": birds.pk, "answer": q1}, {"question": blue.pk, "answer": q2}]})
        aggregate = Aggregate.objects.get(item=item)
        assert aggregate.question_results == {str(birds.pk): False, str(blue.pk): False}
        assert AlignmentAnswer.objects.filter(question=blue, answer=True).count() == 3  # raw answers are kept

    def test_alignment_aggregate_takes_the_majority_before_the_dsg_rule(self):
        round_ = alignment_round(n_items=1, k=3)
        item = Item.objects.get(round=round_)
        birds, blue = item.prompt.questions.order_by("order")
        # Majority first: birds yes (2/3), blue yes (2/3). The rule per judgment first would
        # have dropped the second "blue: yes" (its "birds" is no) and made blue "no".
        votes = [("yes", "no"), ("no", "yes"), ("yes", "yes")]
        for person, (q1, q2) in zip(annotators(3), votes):
            lease = lease_for(round_, person)
            submit(lease, person, {"answers": [{"question": birds.pk, "answer": q1}, {"question": blue.pk, "answer": q2}]})
        aggregate = Aggregate.objects.get(item=item)
        assert aggregate.question_results == {str(birds.pk): True, str(blue.pk): True}
        assert aggregate.alignment_score == 1.0

    def test_best_worst_aggregate(self):
        round_ = best_worst_round(n_items=1, k=3)
        item = Item.objects.get(round=round_)
        shown, ids = shown_ids(item), catalog_ids(item)
        for person in annotators(3):
            submit(lease_for(round_, person), person, {"best": shown[2], "worst": shown[4]})
        aggregate = Aggregate.objects.get(item=item)
        assert (aggregate.winner.public_id, aggregate.loser.public_id, aggregate.margin) == (ids[2], ids[4], 1.0)
        assert aggregate.counts["best"] == {i: 3 if i == ids[2] else 0 for i in ids}  # researchers' ids

    def test_annotators_below_the_gold_threshold_are_excluded(self):
        round_, regular, people = gold_round_with_a_failing_annotator(gold_min_accuracy=0.5)
        assert selectors.annotators_excluded(round_=round_) == {people[0].pk}
        aggregate = Aggregate.objects.get(item=regular)
        assert (aggregate.n_excluded, aggregate.n_used) == (1, 2)
        assert aggregate.counts["b"] == 0
        summary = aggregation.round_aggregate(round_=round_)
        assert summary.excluded_annotators == [people[0].pk]


def test_a_retry_after_undo_returns_the_undone_judgment():
    round_ = pairwise_round(n_items=1)
    (person,) = annotators(1)
    lease = lease_for(round_, person)
    key = uuid.uuid4()
    submit(lease, person, client_uuid=key)
    submission.judgment_undo(annotator=person, client_uuid=key)
    late = submit(lease, person, client_uuid=key)
    assert late.replayed and late.judgment.undone_at is not None
    assert Judgment.objects.filter(undone_at__isnull=True).count() == 0


def test_reclaim_interval_delays_reuse_but_never_exceeds_k(settings):
    settings.ANNOTATION_RECLAIM_INTERVAL = 3600.0
    round_ = pairwise_round(n_items=1, k=1)
    first, second = annotators(2)
    t0 = timezone.now()
    assignment._reclaimed_at.pop(round_.pk, None)
    lease_for(round_, first, now=t0)  # this call used up the reclaim for the interval
    later = t0 + timedelta(hours=1)
    assert assignment.item_next_for_annotator(round_=round_, annotator=second, now=later) is None
    assert assignment.leases_reclaim(round_=round_, now=later) == 1  # an explicit reclaim still works
    assert assignment.item_next_for_annotator(round_=round_, annotator=second, now=later) is not None
