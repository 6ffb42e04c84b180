"""Reports at the paper's scale (Table 1 from counts at n = 600) and the report-level edge cases."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.test import Client
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from annotation.models import Aggregate
from evaluation.report_text import report_render
from evaluation.reports import evaluation_report_build
from evaluation.services import evaluation_start, report_refresh
from tests.evaluation.builders import bulk_prompt_set, prompt_set_with_images, set_pairwise_outcomes
from tests.factories import ResearcherFactory

pytestmark = pytest.mark.django_db


def no_nan(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def all_formats(report):
    outputs = {fmt: report_render(report.to_dict(), fmt) for fmt in ("table", "csv", "json", "latex")}
    for fmt, text in outputs.items():
        assert "nan" not in text.lower().replace("nance", ""), fmt
    return outputs, no_nan(outputs["json"])


def labels(a: int, tie: int, b: int) -> list[str]:
    # Interleaved, so every category gets some of each.
    out = ["A"] * a + ["tie"] * tie + ["B"] * b
    return out[::2] + out[1::2]


def evaluation_of(models, n_prompts, **kwargs):
    prompt_set, versions, prompts = bulk_prompt_set(models=models, n_prompts=n_prompts, **kwargs)
    return evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation


def test_table1_row_from_counts_at_n600():
    evaluation = evaluation_of(["sd-sft", "sd-sft-pixel"], 600)
    set_pairwise_outcomes(evaluation, "visual_flaws", labels(385, 159, 56))
    set_pairwise_outcomes(evaluation, "visual_appeal", labels(281, 231, 88))
    report = evaluation_report_build(evaluation=evaluation)
    outputs, data = all_formats(report)
    (row,) = data["table"]
    flaws, appeal = row["visual_flaws"], row["visual_appeal"]
    assert (flaws["a_wins"]["count"], flaws["tie"]["count"], flaws["b_wins"]["count"]) == (385, 159, 56)
    assert [round(100 * flaws[k]["rate"], 1) for k in ("a_wins", "tie", "b_wins")] == [64.2, 26.5, 9.3]
    for key, count in (("a_wins", 385), ("tie", 159), ("b_wins", 56)):
        low, high = proportion_confint(count, 600, alpha=0.05, method="wilson")
        assert (flaws[key]["ci_low"], flaws[key]["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    p_flaws = binomtest(385, 441, 0.5).pvalue
    p_appeal = binomtest(281, 369, 0.5).pvalue
    assert flaws["p_value"] == pytest.approx(p_flaws)
    assert appeal["p_value"] == pytest.approx(p_appeal)
    # No alignment questions in this set: the family is the two sign tests.
    holm = multipletests([p_flaws, p_appeal], method="holm")[1]
    assert (flaws["p_adjusted"], appeal["p_adjusted"]) == (pytest.approx(holm[0]), pytest.approx(holm[1]))
    assert row["text_alignment"] is None
    assert "64.2 [60.3, 67.9]" in outputs["table"]
    assert "26.5" in outputs["latex"] and "9.3" in outputs["latex"]
    assert any("text alignment is not measured" in m for m in data["messages"])
    # Net win rate (385 − 56)/600 with a bootstrap CI around it.
    net = flaws["net_win_rate"]
    assert net["rate"] == pytest.approx(329 / 600)
    assert net["ci_low"] < net["rate"] < net["ci_high"]


def test_no_judgments_yet_gives_messages_not_nan(client):
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=3)
    evaluation = evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation
    outputs, data = all_formats(evaluation_report_build(evaluation=evaluation))
    assert any("No judgments yet" in m for m in data["messages"])
    (row,) = data["table"]
    assert row["visual_flaws"]["n"] == 0 and row["visual_flaws"]["a_wins"]["rate"] is None
    assert "3 of 3 prompts still need judgments" in row["visual_flaws"]["message"]
    assert row["text_alignment"]["a"]["rate"] is None
    assert "No prompt has alignment questions for both models" in row["text_alignment"]["message"]
    assert "–" in outputs["table"]


def test_all_ties_and_zero_decisive_prompts():
    evaluation = evaluation_of(["base", "pixel"], 8)
    set_pairwise_outcomes(evaluation, "visual_flaws", ["tie"] * 8, no_majority=2)
    set_pairwise_outcomes(evaluation, "visual_appeal", ["reject"] * 8)
    outputs, data = all_formats(evaluation_report_build(evaluation=evaluation))
    flaws, appeal = data["table"][0]["visual_flaws"], data["table"][0]["visual_appeal"]
    assert flaws["tie"]["count"] == 8 and flaws["p_value"] is None and flaws["p_adjusted"] is None
    assert "No decisive prompts (all prompts are ties)" in flaws["message"]
    assert "2 prompts had no majority" in flaws["message"] and flaws["no_majority"] == 2
    assert appeal["n"] == 0 and appeal["p_value"] is None
    assert "8 prompts were rejected by every annotator" in appeal["message"]
    assert "No prompts have a result yet" in appeal["message"]


def test_fewer_than_five_prompts_are_flagged():
    evaluation = evaluation_of(["base", "pixel"], 3)
    set_pairwise_outcomes(evaluation, "visual_flaws", ["A", "A", "B"])
    set_pairwise_outcomes(evaluation, "visual_appeal", ["A", "tie", "A"])
    outputs, data = all_formats(evaluation_report_build(evaluation=evaluation))
    assert "Only 3 prompts (fewer than 5)" in data["table"][0]["visual_flaws"]["message"]
    assert data["table"][0]["visual_flaws"]["prompts_needed"] is not None


def test_three_models_get_every_pair_and_a_leaderboard():
    prompt_set, versions, prompts = bulk_prompt_set(models=["base", "sft", "pixel"], n_prompts=20)
    evaluation = evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation
    # Pixel (listed last, so always Model B) beats both others; sft beats base.
    winner_model = {("base", "sft"): "sft", ("base", "pixel"): "pixel", ("sft", "pixel"): "pixel"}
    for criterion in ("visual_flaws", "visual_appeal"):
        round_ = evaluation.annotation_rounds.get(criterion=criterion)
        for aggregate in Aggregate.objects.filter(round=round_).select_related("item"):
            a, b = [ii.image for ii in aggregate.item.item_images.select_related("image__model_version").order_by("order")]
            pair = (a.model_version.name, b.model_version.name)
            first = a if winner_model[pair] == pair[0] else b
            tie = aggregate.item.prompt.external_id.endswith(("-3", "-7"))
            aggregate.complete = True
            aggregate.outcome = Aggregate.Outcome.TIE if tie else Aggregate.Outcome.WINNER
            aggregate.winner_id = None if tie else first.pk
            aggregate.save()
    data = evaluation_report_build(evaluation=evaluation).to_dict()
    pairs = [(row["model_a"], row["model_b"]) for row in data["table"]]
    assert pairs == [("base", "sft"), ("base", "pixel"), ("sft", "pixel")]
    for row in data["table"]:
        assert row["visual_flaws"]["b_wins"]["count"] == 18 and row["visual_flaws"]["tie"]["count"] == 2
    for criterion in ("visual_flaws", "visual_appeal"):
        ranking = [entry["model"] for entry in data["leaderboards"][criterion]]
        assert ranking == ["pixel", "sft", "base"]
    report_refresh(evaluation=evaluation)
    client = Client()
    client.force_login(ResearcherFactory())
    html = client.get(f"/evaluation/{evaluation.pk}/").content.decode()
    assert "Bradley–Terry leaderboard" in html
    assert html.count("<tr>") >= 3 + 6  # three comparisons in the table, two leaderboards of three
    assert b"sft vs pixel" in client.get(f"/evaluation/{evaluation.pk}/chart.svg").content


def test_a_model_without_answered_alignment_questions(postgres):
    from tests.evaluation.test_reports import make_choose
    from tests.evaluation.builders import annotate_round, annotators

    prompt_set, versions, prompts = prompt_set_with_images(models=["base", "pixel"], n_prompts=3)
    evaluation = evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation
    alignment = evaluation.annotation_rounds.get(kind="alignment")
    choose = make_choose({}, {p.pk: n for n, p in enumerate(prompts)}, pixel_questions_no=set())
    annotate_round(alignment, annotators(5), choose)
    # The pixel model's alignment items are still open (say, its images were added late).
    Aggregate.objects.filter(round=alignment, item__item_images__image__model_version__name="pixel").update(complete=False)
    outputs, data = all_formats(evaluation_report_build(evaluation=evaluation))
    rates = {entry["model"]: entry["summary"]["rate"] for entry in data["alignment_by_model"]}
    assert rates == {"base": 1.0, "pixel": None}
    assert any("pixel: no answered alignment questions" in m for m in data["messages"])
    comparison = data["table"][0]["text_alignment"]
    assert comparison["a"]["rate"] is None and comparison["p_value"] is None
    assert "cannot be compared" in comparison["message"]


def test_report_command_writes_atomically_and_refuses_bad_resamples(tmp_path):
    from django.core.management import CommandError

    evaluation = evaluation_of(["base", "pixel"], 5)
    set_pairwise_outcomes(evaluation, "visual_flaws", ["A", "A", "A", "B", "tie"])
    out = tmp_path / "deep" / "table.tex"
    call_command("evaluation_report", str(evaluation.pk), "--format", "latex", "--out", str(out), stderr=io.StringIO())
    assert out.read_text().startswith(r"\begin{table}")
    assert [p.name for p in out.parent.iterdir()] == ["table.tex"]
    with pytest.raises(CommandError, match="--resamples"):
        call_command("evaluation_report", str(evaluation.pk), "--resamples", "0")
