"""From the command line: an evaluation of chosen criteria, K = 5 with one annotator who skips,
``close_round --rule count-partial``, and the report (of the evaluation, and of the round alone)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Round
from evaluation.models import EvaluationRound
from tests.annotation.builders import annotate_votes, best_worst_round
from tests.evaluation.builders import prompt_set_with_images

pytestmark = pytest.mark.django_db

# Per prompt, in order: five votes on the first two; the fifth annotator skips the last two.
VOTES = [["A", "A", "A", "B", "A"], ["B", "B", "A", "B", "B"], ["A", "A", "B", "A"], ["A", "B", "A", "B"]]


def report(*argv) -> dict:
    out = io.StringIO()
    call_command("evaluation_report", *argv, "--format", "json", "--resamples", "50", stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def evaluation():
    prompt_set, _versions, _prompts = prompt_set_with_images(models=["base", "tuned"], n_prompts=4, with_questions=0)
    call_command("create_evaluation", "--models", "base", "tuned", "--prompts", prompt_set.name, "--k", "5",
                 "--criteria", "visual_flaws", "--from-existing", "--name", "holdout", stdout=io.StringIO())
    evaluation = EvaluationRound.objects.get(name="holdout")
    (round_,) = evaluation.annotation_rounds.all()
    annotate_votes(round_, VOTES)
    return evaluation


def test_only_the_chosen_criteria_get_rounds(evaluation):
    assert evaluation.criteria == ["visual_flaws"]
    assert list(evaluation.annotation_rounds.values_list("kind", "criterion")) == [("pairwise", "visual_flaws")]


def test_count_partial_decides_every_item_with_four_votes_and_the_report_says_so(evaluation):
    before = report(str(evaluation.pk))
    assert before["table"][0]["visual_flaws"]["n"] == 2  # the two prompts short of K are left out
    assert before["rounds"][0]["rule"] == "" and before["rounds"][0]["left_out"] == 2

    round_ = evaluation.annotation_rounds.get()
    out = io.StringIO()
    call_command("close_round", round_.name, "--rule", "count-partial", stdout=out)
    assert "2 decided by the votes they have, 0 undecided" in out.getvalue()

    after = report(str(evaluation.pk))
    row = after["table"][0]
    # Every prompt decided: A, B, A (3 of 4), and 2-2 of 4: no majority, a tie by the round's rule.
    assert row["visual_flaws"]["n"] == 4
    assert (row["visual_flaws"]["a_wins"]["count"], row["visual_flaws"]["tie"]["count"],
            row["visual_flaws"]["b_wins"]["count"]) == (2, 1, 1)
    assert row["visual_appeal"] is None and row["text_alignment"] is None
    (closing,) = after["rounds"]
    assert (closing["rule"], closing["complete_k"], closing["decided_short"], closing["left_out"]) == (
        "count-partial", 2, 2, 0
    )
    assert any("closed under count-partial: 2 of 4 items with K = 5 judgments, 2 decided by the majority"
               in message for message in after["messages"])
    assert "2 prompts were decided with fewer than K judgments" in row["visual_flaws"]["message"]
    # Holm over the tests that ran: one sign test, so the adjusted p-value is the raw one.
    assert after["settings"]["p_adjust_tests"] == 1
    assert row["visual_flaws"]["p_adjusted"] == pytest.approx(row["visual_flaws"]["p_value"])
    assert any("holm over the 1 test actually run" in message for message in after["messages"])
    assert any("Text alignment is not among this evaluation's criteria" in message for message in after["messages"])

    text = io.StringIO()
    call_command("evaluation_report", str(evaluation.pk), stdout=text)
    assert "closed under count-partial" in text.getvalue()


def test_drop_partial_leaves_the_short_prompts_out_and_says_why(evaluation):
    call_command("close_round", str(evaluation.annotation_rounds.get().pk), "--rule", "drop-partial",
                 stdout=io.StringIO())
    after = report(str(evaluation.pk))
    cell = after["table"][0]["visual_flaws"]
    assert cell["n"] == 2
    assert "2 of 4 prompts had fewer than K judgments (drop-partial) when the round closed" in cell["message"]
    assert any("closed under drop-partial" in message for message in after["messages"])


def test_a_round_has_a_report_of_its_own(evaluation):
    round_ = evaluation.annotation_rounds.get()
    call_command("close_round", str(round_.pk), "--rule", "count-partial", stdout=io.StringIO())
    alone = report("--round", round_.name)
    assert alone["evaluation"]["round"] == round_.pk and alone["evaluation"]["models"] == ["base", "tuned"]
    assert alone["table"][0]["visual_flaws"]["n"] == 4
    assert alone["rounds"][0]["rule"] == "count-partial"
    text = io.StringIO()
    call_command("evaluation_report", "--round", str(round_.pk), stdout=text)
    assert text.getvalue().startswith(f"Round {round_.pk}: {round_.name}")


@pytest.mark.parametrize("argv, message", [
    (["--round", "nope"], "--round: no annotation round with id or name 'nope'"),
    ([], "EVALUATION: give an evaluation round, or an annotation round with --round (not both)"),
    (["holdout", "--round", "1"], "EVALUATION: give an evaluation round, or an annotation round with --round (not both)"),
])
def test_evaluation_report_bad_input_is_one_line(evaluation, argv, message):
    with pytest.raises(CommandError) as refused:
        call_command("evaluation_report", *argv)
    assert str(refused.value) == message


def test_a_best_worst_round_has_no_report_and_says_why():
    round_ = best_worst_round(n_items=1)
    with pytest.raises(CommandError, match=f"--round: round '{round_.name}' is a best_worst round; reports are made of"):
        call_command("evaluation_report", "--round", round_.name)


@pytest.mark.parametrize("criteria, message", [
    (["visual_flaws", "colour"], "criteria: 'colour' is not one of visual_flaws, visual_appeal, text_alignment"),
    (["visual_flaws", "visual_flaws"], "criteria: a criterion is listed more than once"),
    (["text_alignment"], "criteria: no prompt has alignment questions, and text_alignment is the only criterion"),
])
def test_create_evaluation_refuses_bad_criteria_and_writes_nothing(criteria, message):
    prompt_set, _versions, _prompts = prompt_set_with_images(models=["base", "tuned"], n_prompts=2, with_questions=0)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("create_evaluation", "--models", "base", "tuned", "--prompts", prompt_set.name,
                     "--criteria", *criteria, "--from-existing", stdout=io.StringIO())
    assert not EvaluationRound.objects.exists() and not Round.objects.exists()


def test_an_unused_criterion_no_longer_changes_the_other_criterions_adjusted_p_values():
    # Both criteria decided on every prompt: Holm runs over two tests; with one criterion, over one.
    prompt_set, _versions, _prompts = prompt_set_with_images(models=["base", "tuned"], n_prompts=5, with_questions=0)
    p_adjusted = {}
    for criteria in (["visual_flaws", "visual_appeal"], ["visual_flaws"]):
        name = "+".join(criteria)
        call_command("create_evaluation", "--models", "base", "tuned", "--prompts", prompt_set.name, "--k", "1",
                     "--criteria", *criteria, "--from-existing", "--name", name, "--seed", "0", stdout=io.StringIO())
        evaluation = EvaluationRound.objects.get(name=name)
        for round_ in evaluation.annotation_rounds.all():
            annotate_votes(round_, [["A"]] * 5)
        result = report(str(evaluation.pk))
        p_adjusted[name] = result["table"][0]["visual_flaws"]["p_adjusted"]
        assert result["settings"]["p_adjust_tests"] == len(criteria)
    raw = result["table"][0]["visual_flaws"]["p_value"]
    assert p_adjusted["visual_flaws"] == pytest.approx(raw)
    assert p_adjusted["visual_flaws+visual_appeal"] == pytest.approx(min(1.0, 2 * raw))


def test_the_agreement_note_of_a_round_without_judgments_says_it_has_items():
    prompt_set, _versions, _prompts = prompt_set_with_images(models=["base", "tuned"], n_prompts=3, with_questions=0)
    call_command("create_evaluation", "--models", "base", "tuned", "--prompts", prompt_set.name,
                 "--criteria", "visual_flaws", "--from-existing", "--name", "fresh", stdout=io.StringIO())
    evaluation = EvaluationRound.objects.get(name="fresh")
    agreement = report(str(evaluation.pk))["table"][0]["visual_flaws"]["agreement"]
    assert agreement["message"] == "No judgments yet on its 3 items: agreement is undefined."
    annotate_votes(evaluation.annotation_rounds.get(), [["A", "B"]])
    agreement = report(str(evaluation.pk))["table"][0]["visual_flaws"]["agreement"]
    assert agreement["message"] == "1 of its 3 items have judgments, but not one is complete yet: agreement is undefined."
