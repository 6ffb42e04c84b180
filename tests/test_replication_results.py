"""The replication study's committed outputs (docs/replication/) and the write-up that quotes them.

The study is a long CPU job (bench/replication.py) that CI never reruns; these tests check that
what ships is whole and consistent: every row's evaluation was judged completely, the oracle's
summaries are the means of its per-prompt figures, the summary and tables are what the
summarizer makes of the outputs, and the write-up quotes the tables as they are.
"""

import json
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs/replication"
sys.path.insert(0, str(REPO / "bench"))

import replication  # noqa: E402
import replication_summary  # noqa: E402

SEED_FOLDERS = sorted(p for p in OUT.glob("*/*/seed-*") if p.parent.parent.name in replication.MODELS) + sorted(
    OUT.glob("*/h2h/*/seed-*")
)


def test_the_study_has_shipped_rows_for_both_models():
    for model in replication.MODELS:
        rows = [row.name for row in replication.ROWS if (OUT / model / row.name / "seed-0" / "report.json").exists()]
        assert len(rows) >= 2, f"{model}: only {rows} have outputs"


@pytest.mark.parametrize("folder", SEED_FOLDERS, ids=lambda p: str(p.relative_to(OUT)))
def test_each_evaluation_was_judged_completely_on_the_study_sample(folder):
    report = json.loads((folder / "report.json").read_text())
    assert report["evaluation"]["k"] == replication.K
    assert report["evaluation"]["missing_prompts"] == 0
    for round_ in report["rounds"]:
        assert round_["complete_k"] == round_["items"] > 0, round_["name"]
    row = report["table"][0]
    for criterion in ("visual_flaws", "visual_appeal"):
        cell = row[criterion]
        assert cell["n"] == replication.EVAL_PROMPTS
        assert cell["a_wins"]["count"] + cell["tie"]["count"] + cell["b_wins"]["count"] == cell["n"]
    assert report["judgments"]["human"] == 0 and report["judgments"]["synthetic"] == report["judgments"]["total"]
    assert report["settings"]["p_adjust"] == "holm"


@pytest.mark.parametrize("folder", SEED_FOLDERS, ids=lambda p: str(p.relative_to(OUT)))
def test_the_oracle_figures_are_the_means_of_their_prompts(folder):
    oracle = json.loads((folder / "oracle.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    a, b = report["table"][0]["model_a"], report["table"][0]["model_b"]
    per_prompt = oracle["per_prompt"]
    assert oracle["prompts"] == len(per_prompt) == replication.EVAL_PROMPTS
    for measure in ("fidelity", "alignment"):
        values = [entry[a][measure] for entry in per_prompt.values()]
        low, high = oracle[a][measure]["ci95"]
        assert oracle[a][measure]["mean"] == pytest.approx(statistics.fmean(values))
        assert low <= oracle[a][measure]["mean"] <= high
        difference = [entry[a][measure] - entry[b][measure] for entry in per_prompt.values()]
        assert oracle["difference"][measure]["mean"] == pytest.approx(statistics.fmean(difference))


def test_a_rows_seeds_are_the_ones_its_design_names_and_its_config_is_the_rows():
    for model in replication.MODELS:
        for row in replication.ROWS:
            seeds = sorted(int(p.parent.name.split("-")[1]) for p in (OUT / model / row.name).glob("seed-*/report.json"))
            if not seeds:
                continue
            assert seeds == list(range(len(seeds))), f"{model} {row.name}: seeds {seeds}"
            assert len(seeds) == 1 or not row.first_seed_only
            for seed in seeds:
                folder = OUT / model / row.name / f"seed-{seed}"
                written = (folder / "config.toml").read_text()
                for key, value in row.config(model, seed).items():
                    assert f"{key} = " in written, f"{folder}: {key} missing"
                run = json.loads((folder / "run.json").read_text())
                assert run["steps"] == row.config(model, seed)["max_train_steps"]


def test_the_summary_and_tables_are_what_the_summarizer_makes_of_the_outputs():
    summary = replication_summary.collect(OUT)
    shipped = json.loads((OUT / "summary.json").read_text())
    assert json.loads(json.dumps(summary)) == shipped
    expected = replication_summary.tables(shipped) + "\n" + replication_summary.cost_table(shipped, OUT)
    assert (OUT / "tables.md").read_text() == expected


def test_the_write_up_quotes_the_tables_as_they_are():
    text = (REPO / "docs/toy-replication.md").read_text()
    tables = (OUT / "tables.md").read_text()
    start, end = "<!-- tables:start -->\n", "<!-- tables:end -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0].strip() == tables.strip()
    for image in ("plots/toy-sd-rows.png", "plots/toy-pixart-rows.png", "grids/toy-sd.png", "grids/toy-pixart.png"):
        assert f"replication/{image}" in text and (OUT / image).exists()


def test_every_row_is_run_and_probed_at_seed_0_and_the_cost_table_is_complete():
    for model in replication.MODELS:
        base = json.loads((OUT / model / "base" / "probe.json").read_text())
        for row in replication.ROWS:
            folder = OUT / model / row.name / "seed-0"
            assert (folder / "report.json").exists(), f"{model}/{row.name}: not run"
            probe = json.loads((folder / "probe.json").read_text())
            assert probe["captions"] == base["captions"] == replication.EVAL_PROMPTS
            assert probe["draws"] == replication.PROBE_DRAWS
            assert all(probe[key] > 0 for key in ("latent_mse", "pixel_mse_eps", "pixel_mse_x0")), (model, row.name)
    assert "not run" not in (OUT / "tables.md").read_text()
