"""Aggregation and reports agree on every vote multiset up to K = 7.

For each K, one two-model evaluation whose prompt n carries the n-th multiset (1 to K votes) of
A, B, tie and "cannot compare": as judgments on its visual-flaws item (no-majority rule
``mean_score``) and on its visual-appeal item (rule ``tie``), and turned into parent/child answers
on Model A's alignment item. The aggregates are recomputed by the aggregation service, the report
is built by the production path, and both must give what the rule says when counted out here by
hand: a label needs more than K/2 votes. Items with fewer than K judgments must stay out.
"""

from __future__ import annotations

import itertools

import pytest

from annotation.models import Aggregate, Round
from annotation.services.aggregation import round_aggregate
from evaluation.reports import evaluation_report_build
from evaluation.services import evaluation_start
from tests.evaluation.builders import annotators, bulk_judgments, bulk_prompt_set

pytestmark = pytest.mark.django_db

LABELS = ("A", "B", "tie", "reject")
# A judgment's (parent, child) alignment answers for each label, so one multiset covers every yes count.
ANSWERS = {"A": (True, True), "B": (True, False), "tie": (False, True), "reject": (False, False)}


def multisets(k: int) -> list[tuple[str, ...]]:
    return [m for n in range(1, k + 1) for m in itertools.combinations_with_replacement(LABELS, n)]


def expected_label(votes: tuple[str, ...], *, k: int, rule: str) -> str | None:
    """The report label of a complete item, counted out by hand (None: every vote was "cannot compare")."""
    if all(v == "reject" for v in votes):
        return None
    for label in ("A", "B", "tie"):
        if 2 * votes.count(label) > k:
            return label
    if rule == "tie":
        return "tie"
    score = votes.count("A") - votes.count("B")
    return "A" if score > 0 else "B" if score < 0 else "tie"


def expected_answers(votes: tuple[str, ...], *, k: int) -> tuple[bool, bool]:
    parent = 2 * sum(ANSWERS[v][0] for v in votes) > k
    child = 2 * sum(ANSWERS[v][1] for v in votes) > k and parent
    return parent, child


@pytest.mark.parametrize("k", range(1, 8))
def test_aggregation_and_report_agree_on_every_vote_multiset(k):
    cases = multisets(k)
    prompt_set, versions, prompts = bulk_prompt_set(
        models=["base", "pixel"], n_prompts=len(cases), set_name=f"multisets-{k}",
        categories=lambda n: f"case-{n:03d}", with_questions=True,
    )
    evaluation = evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True, k=k).evaluation
    votes_by_prompt = {prompt.pk: votes for prompt, votes in zip(prompts, cases)}
    people = annotators(k)
    rules = {"visual_flaws": "mean_score", "visual_appeal": "tie"}
    rounds = {r.criterion or r.kind: r for r in evaluation.annotation_rounds.all()}
    for criterion, rule in rules.items():
        Round.objects.filter(pk=rounds[criterion].pk).update(no_majority_rule=rule)
        rounds[criterion].refresh_from_db()
    for name, round_ in rounds.items():
        items = round_.items.all()
        if name == "alignment":
            items = items.filter(item_images__image__model_version=versions[0])
        as_answers = (lambda votes: [ANSWERS[v] for v in votes]) if name == "alignment" else tuple
        bulk_judgments(round_, {item.pk: as_answers(votes_by_prompt[item.prompt_id]) for item in items}, people)
        round_aggregate(round_=round_)

    # Aggregation: the stored result of every item is the rule's.
    for criterion, rule in rules.items():
        for aggregate in Aggregate.objects.filter(round=rounds[criterion]).select_related("item", "winner"):
            votes = votes_by_prompt[aggregate.item.prompt_id]
            assert aggregate.complete == (len(votes) == k)
            label = {Aggregate.Outcome.TIE: "tie", Aggregate.Outcome.PENDING: None}.get(aggregate.outcome)
            if aggregate.outcome == Aggregate.Outcome.WINNER:
                label = "A" if aggregate.winner.model_version_id == versions[0].pk else "B"
            assert label == expected_label(votes, k=k, rule=rule), (criterion, votes)
    for aggregate in Aggregate.objects.filter(round=rounds["alignment"], n_judgments__gt=0).select_related("item"):
        votes = votes_by_prompt[aggregate.item.prompt_id]
        parent, child = sorted(aggregate.question_results.items(), key=lambda kv: int(kv[0]))
        assert (parent[1], child[1]) == expected_answers(votes, k=k), votes

    # The report: one category per prompt, so each complete prompt's label shows as its own row.
    report = evaluation_report_build(evaluation=evaluation, n_resamples=10).to_dict()
    complete = [votes for votes in cases if len(votes) == k]
    for criterion, rule in rules.items():
        detail = report["comparisons"][0][criterion]
        assert (detail["items"], detail["items_complete"], detail["unresolved"]) == (len(cases), len(complete), 1)
        shown = {
            entry["category"]: entry["summary"] for entry in report["categories"] if entry["criterion"] == criterion
        }
        for n, votes in enumerate(cases):
            label = expected_label(votes, k=k, rule=rule) if len(votes) == k else None
            summary = shown.get(f"case-{n:03d}")
            if label is None:
                assert summary is None, (criterion, votes)
            else:
                assert (summary["wins"], summary["ties"], summary["losses"]) == (
                    int(label == "A"), int(label == "tie"), int(label == "B")
                ), (criterion, votes)
    scores = [sum(expected_answers(votes, k=k)) / 2 for votes in complete]
    rates = {entry["model"]: entry["summary"] for entry in report["alignment_by_model"]}
    assert rates["base"]["n_prompts"] == len(complete)
    assert rates["base"]["rate"] == pytest.approx(sum(scores) / len(scores))
    assert rates["pixel"]["rate"] is None  # Model B's alignment items have no judgments
