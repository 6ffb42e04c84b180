"""Closing a round early: count-partial decides items short of K by the votes they have, drop-partial leaves them out.

Annotators answer through the assignment and submission services (``annotate_votes``); one who
declines an item simply stops judging there (its lease held), so that item ends short of K.
"""

from __future__ import annotations

import io
import threading
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from rest_framework.authtoken.models import Token

from annotation import errors, sql
from annotation.models import Aggregate, Item, Judgment, Round
from annotation.services import assignment, rounds, submission
from tests.annotation.builders import annotate_votes, pairwise_round
from tests.factories import AnnotatorFactory, ResearcherFactory

pytestmark = pytest.mark.django_db

def aggregates(round_: Round) -> list[Aggregate]:
    return list(Aggregate.objects.filter(round=round_).select_related("item").order_by("item_id"))


def label(aggregate: Aggregate) -> str | None:
    if aggregate.outcome == Aggregate.Outcome.TIE:
        return "tie"
    if aggregate.outcome != Aggregate.Outcome.WINNER:
        return None
    first = aggregate.item.item_images.get(order=0).image_id
    return "A" if aggregate.winner_id == first else "B"


def test_count_partial_decides_every_item_when_one_of_five_annotators_skips():
    # K = 5, five annotators; the fifth judges only the first item.
    round_ = pairwise_round(n_items=3, k=5)
    annotate_votes(round_, [["A", "A", "A", "B", "A"], ["A", "B", "A", "B"], ["B", "B", "A", "B"]])
    before = aggregates(round_)
    assert [a.complete for a in before] == [True, False, False]

    closing = rounds.round_close(round_=round_, rule="count-partial")

    after = aggregates(round_)
    assert [a.complete for a in after] == [True, True, True]
    # 2-2 of 4 has no majority: a tie by the round's rule; 3 B of 4 is a majority of the 4 votes.
    assert [label(a) for a in after] == ["A", "tie", "B"]
    assert [a.no_majority for a in after] == [False, True, False]
    assert (closing.items, closing.complete_k, closing.decided_short, closing.left_out) == (3, 1, 2, 0)
    round_.refresh_from_db()
    assert (round_.status, round_.close_rule) == ("closed", "count-partial") and round_.closed_at is not None
    assert "2 decided by the votes they have, 0 undecided" in closing.line()


def test_count_partial_leaves_items_with_too_few_counted_votes_undecided():
    # Visual appeal: "cannot compare" is a judgment but no vote, so 4 judgments may hold 3 votes (< 4 of K = 5).
    round_ = pairwise_round(n_items=3, k=5, criterion="visual_appeal")
    annotate_votes(round_, [["A", "A", "B", "A"], ["A", "A", "reject", "B"], ["A", "A", "B"]])
    closing = rounds.round_close(round_=round_, rule="count-partial")
    after = aggregates(round_)
    assert [a.complete for a in after] == [True, False, False]
    assert [a.n_used for a in after] == [4, 3, 3]
    assert label(after[0]) == "A"
    assert (closing.complete_k, closing.decided_short, closing.left_out) == (0, 1, 2)


def test_drop_partial_leaves_items_short_of_k_out():
    round_ = pairwise_round(n_items=2, k=5)
    annotate_votes(round_, [["A", "A", "A", "A", "A"], ["A", "A", "A", "A"]])
    closing = rounds.round_close(round_=round_, rule="drop-partial")
    assert [a.complete for a in aggregates(round_)] == [True, False]
    assert (closing.complete_k, closing.decided_short, closing.left_out) == (1, 0, 1)
    assert "1 short of K left out" in closing.line()


def test_a_closed_round_takes_no_submission_and_cannot_be_closed_twice():
    round_ = pairwise_round(n_items=2, k=3)
    person = AnnotatorFactory()
    task = assignment.item_next_for_annotator(round_=round_, annotator=person)
    rounds.round_close(round_=round_, rule="count-partial")
    with pytest.raises(errors.Conflict) as refused:
        submission.judgment_submit(annotator=person, lease_id=task.lease.id, client_uuid=uuid.uuid4(),
                                   answer={"outcome": "tie"}, elapsed_ms=900)
    assert refused.value.code == "round_closed"
    with pytest.raises(errors.Conflict) as twice:
        rounds.round_close(round_=round_, rule="drop-partial")
    assert twice.value.code == "round_already_closed" and "already closed under count-partial" in twice.value.detail
    assert Round.objects.get(pk=round_.pk).close_rule == "count-partial"


def test_an_unknown_rule_is_refused_and_nothing_changes():
    round_ = pairwise_round(n_items=1, k=3)
    with pytest.raises(errors.InvalidInput) as refused:
        rounds.round_close(round_=round_, rule="count-all")
    assert refused.value.field == "rule" and "count-partial, drop-partial" in refused.value.detail
    assert Round.objects.get(pk=round_.pk).status == "open"


def test_reopening_a_round_closed_under_count_partial_opens_its_short_items_again():
    round_ = pairwise_round(n_items=2, k=5)
    annotate_votes(round_, [["A", "A", "A", "A", "A"], ["B", "B", "B", "B"]])
    rounds.round_close(round_=round_, rule="count-partial")
    assert [a.complete for a in aggregates(round_)] == [True, True]
    rounds.round_update(round_=Round.objects.get(pk=round_.pk), status="open")
    round_.refresh_from_db()
    assert (round_.status, round_.close_rule, round_.closed_at) == ("open", "", None)
    assert [a.complete for a in aggregates(round_)] == [True, False]


def test_closing_by_hand_counts_as_drop_partial():
    round_ = pairwise_round(n_items=1, k=3)
    rounds.round_update(round_=round_, status="closed")
    round_.refresh_from_db()
    assert round_.close_rule == "drop-partial" and round_.closed_at is not None


class TestAPI:
    def client(self):
        token = Token.objects.create(user=ResearcherFactory())
        return Client(HTTP_AUTHORIZATION=f"Token {token.key}")

    def test_close_answers_the_counts_then_409_when_closed_again(self):
        round_ = pairwise_round(n_items=2, k=5)
        annotate_votes(round_, [["A", "A", "A", "A", "A"], ["B", "B", "B", "B"]])
        client = self.client()
        url = f"/api/research/rounds/{round_.pk}/close/"
        answer = client.post(url, {"rule": "count-partial"}, content_type="application/json")
        assert answer.status_code == 200, answer.content
        body = answer.json()
        assert (body["status"], body["rule"], body["items"], body["complete_k"], body["decided_short"],
                body["left_out"]) == ("closed", "count-partial", 2, 1, 1, 0)
        assert client.get(f"/api/research/rounds/{round_.pk}/").json()["close_rule"] == "count-partial"
        again = client.post(url, {"rule": "drop-partial"}, content_type="application/json")
        assert again.status_code == 409 and again.json()["code"] == "round_already_closed"

    @pytest.mark.parametrize("body", [{"rule": "count-all"}, {}, {"rule": 3}, []])
    def test_a_bad_rule_is_400_naming_the_field(self, body):
        round_ = pairwise_round(n_items=1, k=3)
        answer = self.client().post(f"/api/research/rounds/{round_.pk}/close/", body, content_type="application/json")
        assert answer.status_code == 400
        assert answer.json()["code"] == "invalid"
        assert "rule" in answer.json() or "non_field_errors" in answer.json()
        assert Round.objects.get(pk=round_.pk).status == "open"

    def test_annotators_and_unknown_rounds_are_refused(self):
        round_ = pairwise_round(n_items=1, k=3)
        annotator = Client()
        annotator.force_login(AnnotatorFactory())
        url = f"/api/research/rounds/{round_.pk}/close/"
        assert annotator.post(url, {"rule": "drop-partial"}, content_type="application/json").status_code == 403
        missing = self.client().post("/api/research/rounds/999999/close/", {"rule": "drop-partial"},
                                     content_type="application/json")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


class TestCommand:
    def test_close_round_by_name_prints_what_each_rule_touched(self):
        round_ = pairwise_round(n_items=2, k=5, name="holdout flaws")
        annotate_votes(round_, [["A", "A", "A", "A", "A"], ["B", "B", "B", "B"]])
        out = io.StringIO()
        call_command("close_round", "holdout flaws", "--rule", "count-partial", stdout=out)
        assert out.getvalue().strip() == (
            "holdout flaws: closed under count-partial: 1 of 2 items with K judgments, "
            "1 decided by the votes they have, 0 undecided"
        )
        assert Item.objects.filter(round=round_, aggregate__complete=True).count() == 2

    @pytest.mark.parametrize("argv, message", [
        (["nope", "--rule", "count-partial"], "ROUND: no round with id or name 'nope'"),
        (["{id}", "--rule", "count-all"], "--rule: must be one of count-partial, drop-partial, not 'count-all'"),
    ])
    def test_bad_input_is_one_line_and_changes_nothing(self, argv, message):
        round_ = pairwise_round(n_items=1, k=3)
        with pytest.raises(CommandError) as refused:
            call_command("close_round", *[a.format(id=round_.pk) for a in argv])
        assert str(refused.value) == message
        assert Round.objects.get(pk=round_.pk).status == "open"

    def test_closing_a_closed_round_is_refused(self):
        round_ = pairwise_round(n_items=1, k=3)
        call_command("close_round", str(round_.pk), "--rule", "drop-partial", stdout=io.StringIO())
        with pytest.raises(CommandError, match=f"round {round_.pk} is already closed under drop-partial"):
            call_command("close_round", str(round_.pk), "--rule", "count-partial")

    def test_the_rule_is_required(self):
        round_ = pairwise_round(n_items=1, k=3)
        with pytest.raises(CommandError, match="--rule"):
            call_command("close_round", str(round_.pk))


def test_admin_actions_close_the_selected_rounds():
    round_ = pairwise_round(n_items=2, k=5)
    annotate_votes(round_, [["A", "A", "A", "A", "A"], ["B", "B", "B", "B"]])
    client = Client()
    client.force_login(ResearcherFactory())
    response = client.post("/admin/annotation/round/", {
        "action": "close_count_partial_action", "_selected_action": [round_.pk],
    }, follow=True)
    assert response.status_code == 200
    assert b"closed under count-partial: 1 of 2 items with K judgments, 1 decided" in response.content
    again = client.post("/admin/annotation/round/", {
        "action": "close_drop_partial_action", "_selected_action": [round_.pk],
    }, follow=True)
    assert b"already closed under count-partial" in again.content
    assert Round.objects.get(pk=round_.pk).close_rule == "count-partial"


def _in_thread(target, outcome: dict, key: str) -> threading.Thread:
    def run():
        try:
            outcome[key] = target()
        except BaseException as exc:  # noqa: BLE001 - read by the test
            outcome[key] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_submission_in_flight_is_counted_by_the_close_that_waits_for_it(postgres):
    round_ = pairwise_round(n_items=1, k=5)
    annotate_votes(round_, [["A", "A", "A"]])
    person = AnnotatorFactory()
    task = assignment.item_next_for_annotator(round_=round_, annotator=person)
    locked, release, outcome = threading.Event(), threading.Event(), {}

    def submit_slowly():
        with transaction.atomic():
            sql.lease_for_submit(annotator_id=person.pk, lease_id=task.lease.id)  # what a submission locks first
            locked.set()
            release.wait(10)
            return submission.judgment_submit(annotator=person, lease_id=task.lease.id, client_uuid=uuid.uuid4(),
                                              answer={"outcome": "tie"}, elapsed_ms=900)

    submitter = _in_thread(submit_slowly, outcome, "submit")
    assert locked.wait(10)
    closer = _in_thread(lambda: rounds.round_close(round_=round_, rule="count-partial"), outcome, "close")
    closer.join(0.5)
    assert closer.is_alive(), "the close must wait for the submission that holds the round"
    release.set()
    submitter.join(10), closer.join(10)
    assert not isinstance(outcome["submit"], BaseException), outcome["submit"]
    # The close counted the fourth vote: 4 of K = 5 is enough, 3 A of 4 decides.
    assert outcome["close"].decided_short == 1
    (aggregate,) = aggregates(round_)
    assert (aggregate.complete, aggregate.n_judgments, label(aggregate)) == (True, 4, "A")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_submission_that_waits_for_a_close_is_refused(postgres):
    round_ = pairwise_round(n_items=1, k=5)
    person = AnnotatorFactory()
    task = assignment.item_next_for_annotator(round_=round_, annotator=person)
    closed, release, outcome = threading.Event(), threading.Event(), {}

    def close_slowly():
        with transaction.atomic():
            result = rounds.round_close(round_=round_, rule="drop-partial")
            closed.set()
            release.wait(10)
            return result

    closer = _in_thread(close_slowly, outcome, "close")
    assert closed.wait(10)
    submitter = _in_thread(lambda: submission.judgment_submit(
        annotator=person, lease_id=task.lease.id, client_uuid=uuid.uuid4(), answer={"outcome": "tie"}, elapsed_ms=900,
    ), outcome, "submit")
    submitter.join(0.5)
    assert submitter.is_alive(), "the submission must wait for the close"
    release.set()
    closer.join(10), submitter.join(10)
    assert isinstance(outcome["submit"], errors.Conflict) and outcome["submit"].code == "round_closed"
    assert not Judgment.objects.filter(round=round_).exists()
