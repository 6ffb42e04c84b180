"""Reports from the database: a full flow on PostgreSQL, the four formats, and the edge cases."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.management import call_command

from annotation.models import AnnotatorProfile, Image, Judgment, Round
from evaluation.models import EvaluationRound
from evaluation.reports import evaluation_report_build
from tests.evaluation.builders import annotate_round, annotators, prompt_set_with_images

pytestmark = pytest.mark.django_db

# Per prompt index: the majority each criterion should get ("A" = base, the model listed first).
FLAWS = ["A", "A", "B", "tie", "A", "B"]
APPEAL = ["B", "B", "B", "A", "tie", "B"]


def no_nan(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def _image_order(task):
    """Public ids of the item's images in storage order: Model A's first."""
    return [image.public_id for image in task.item.images()]


def make_choose(truth_by_criterion, prompt_index, pixel_questions_no):
    def choose(task, person):
        round_ = task.round
        index = prompt_index[task.item.prompt_id]
        if round_.kind == Round.Kind.ALIGNMENT:
            (image,) = task.item.images()
            model = Image.objects.get(pk=image.id).model_version.name
            answers = []
            for question in task.item.questions():
                no = model == "pixel" and question.order == 2 and index in pixel_questions_no
                answers.append({"question": question.pk, "answer": "no" if no else "yes"})
            return {"answers": answers}
        truth = truth_by_criterion[round_.criterion][index]
        # The fifth annotator always dissents with a tie (or with B when the truth is a tie).
        if person.username.endswith("dissent"):
            truth = "B" if truth == "tie" else "tie"
        if truth == "tie":
            return {"outcome": "tie"}
        image_a, image_b = _image_order(task)
        return {"outcome": "win", "winner": image_a if truth == "A" else image_b}

    return choose


@pytest.fixture
def flow(postgres):
    prompt_set, versions, prompts = prompt_set_with_images(models=["base", "pixel"], n_prompts=6, with_questions=4)
    call_command(
        "create_evaluation", "--models", "base", "pixel", "--prompts", prompt_set.name, "--from-existing",
        stdout=io.StringIO(),
    )
    evaluation = EvaluationRound.objects.get()
    people = annotators(4) + annotators(1, username="annotator-dissent")
    AnnotatorProfile.objects.update_or_create(user=people[0], defaults={"synthetic": True})
    prompt_index = {p.pk: n for n, p in enumerate(prompts)}
    choose = make_choose({"visual_flaws": FLAWS, "visual_appeal": APPEAL}, prompt_index, pixel_questions_no={0, 1})
    stored = sum(annotate_round(r, people, choose) for r in evaluation.annotation_rounds.all())
    return evaluation, stored


def test_full_flow_counts_match_what_was_submitted(flow):
    evaluation, stored = flow
    assert stored == 5 * (6 + 6 + 4 * 2)
    report = evaluation_report_build(evaluation=evaluation)
    data = report.to_dict()
    (row,) = data["table"]
    assert (row["model_a"], row["model_b"]) == ("base", "pixel")
    for criterion, truth in (("visual_flaws", FLAWS), ("visual_appeal", APPEAL)):
        cells = row[criterion]
        assert cells["n"] == 6
        assert cells["a_wins"]["count"] == truth.count("A")
        assert cells["tie"]["count"] == truth.count("tie")
        assert cells["b_wins"]["count"] == truth.count("B")
        assert cells["a_wins"]["rate"] == pytest.approx(truth.count("A") / 6)
        assert cells["a_wins"]["ci_low"] < cells["a_wins"]["rate"] < cells["a_wins"]["ci_high"]
        assert cells["p_value"] is not None and cells["p_adjusted"] >= cells["p_value"]
        assert cells["no_majority"] == 0
        # Every win vote is counted at one screen position or the other.
        bias = data["comparisons"][0][criterion]["position_bias"]
        wins = Judgment.objects.filter(round__criterion=criterion, outcome="win").count()
        assert bias["left_wins"] + bias["right_wins"] == wins
    # Base answers every question yes; pixel says no to question 2 on prompts 0 and 1 (of 4).
    alignment = row["text_alignment"]
    assert alignment["a"]["rate"] == pytest.approx(1.0)
    assert alignment["b"]["rate"] == pytest.approx((2 * 0.5 + 2 * 1.0) / 4)
    assert alignment["n_prompts"] == 4
    assert [m["summary"]["rate"] for m in data["alignment_by_model"]] == [pytest.approx(1.0), pytest.approx(0.75)]
    assert data["judgments"] == {"total": stored, "synthetic": 20, "human": stored - 20, "skips": 0}
    # Four annotators always agree with the others' majority; the dissenter never does.
    scores = {a["annotator"]: a["majority_agreement"]["rate"] for a in data["annotators"]}
    assert scores["annotator-dissent"] == 0.0
    assert sorted(v for k, v in scores.items() if k != "annotator-dissent") == [1.0] * 4
    # Categories: prompts alternate Animals / Vehicles.
    flaws_by_category = {
        c["category"]: c["summary"] for c in data["categories"] if c["criterion"] == "visual_flaws"
    }
    animals = [FLAWS[i] for i in range(0, 6, 2)]
    assert (flaws_by_category["Animals"]["wins"], flaws_by_category["Animals"]["losses"]) == (
        animals.count("A"), animals.count("B")
    )
    agreement = data["comparisons"][0]["visual_flaws"]["agreement"]
    assert agreement["n_votes"] == 30 and agreement["fleiss_kappa"] is not None
    assert data["leaderboards"] == {}  # two models: no leaderboard


def test_skips_are_counted_per_annotator_and_in_all(flow):
    from django.utils import timezone

    from annotation.models import Item, Lease
    from evaluation.selectors import report_source_state

    evaluation, _ = flow
    before = report_source_state(evaluation=evaluation, n_resamples=10).key
    (skipper,) = annotators(1, username="annotator-skipper")
    now = timezone.now()
    for item in Item.objects.filter(round__in=evaluation.annotation_rounds.all(), is_gold=False)[:3]:
        Lease.objects.create(
            round_id=item.round_id, item=item, annotator=skipper, state=Lease.State.SKIPPED, layout=[],
            leased_at=now, expires_at=now, skip_reason=Lease.SkipReason.CANNOT_JUDGE, skipped_at=now,
        )
    assert report_source_state(evaluation=evaluation, n_resamples=10).key != before  # a skip refreshes the report
    data = evaluation_report_build(evaluation=evaluation).to_dict()
    assert data["judgments"]["skips"] == 3
    (entry,) = [a for a in data["annotators"] if a["annotator"] == "annotator-skipper"]
    assert (entry["judgments"], entry["skips"]) == (0, 3)


def test_table_renders_in_all_four_formats(flow, tmp_path):
    evaluation, _ = flow
    outputs = {}
    for fmt in ("table", "csv", "json", "latex"):
        out = tmp_path / f"report.{fmt}"
        call_command("evaluation_report", str(evaluation.pk), "--format", fmt, "--out", str(out), stderr=io.StringIO())
        outputs[fmt] = out.read_text()
    flaws_a = FLAWS.count("A") / 6
    assert f"{100 * flaws_a:.1f}" in outputs["table"]
    assert "Judgments: 100 (20 synthetic, 80 human)" in outputs["table"]
    (record,) = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert int(record["visual_flaws_a_wins_count"]) == FLAWS.count("A")
    assert int(record["visual_appeal_b_wins_count"]) == APPEAL.count("B")
    data = no_nan(outputs["json"])
    assert data["table"][0]["visual_flaws"]["a_wins"]["count"] == FLAWS.count("A")
    latex = outputs["latex"]
    assert r"\toprule" in latex and r"\midrule" in latex and r"\bottomrule" in latex
    assert latex.count(r"\\") >= 3 and "base & pixel" in latex
    # Standard output and a name work too; the same numbers come out.
    stdout = io.StringIO()
    call_command("evaluation_report", evaluation.name, "--format", "csv", stdout=stdout)
    assert stdout.getvalue() == outputs["csv"]


def test_unknown_round_is_a_clear_error(db):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="EVALUATION: no evaluation round with id or name '999'"):
        call_command("evaluation_report", "999")
