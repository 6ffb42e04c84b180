"""Rendering the paper's table as text, CSV, JSON and LaTeX."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from evaluation.report_format import (
    CSV_COLUMNS,
    format_p,
    format_percent,
    render_csv,
    render_json,
    render_latex,
    render_text,
)
from evaluation.stats import (
    ComparisonRow,
    PromptBootstrap,
    compare_alignment,
    paper_table_rows,
    summarize_pairwise,
)


def labels(wins: int, ties: int, losses: int) -> list[str]:
    return ["A"] * wins + ["tie"] * ties + ["B"] * losses


@pytest.fixture(scope="module")
def table() -> list[dict]:
    bootstrap = PromptBootstrap(300)
    # Each prompt's final answers (question -> yes), as aggregation stores them.
    model_a = {f"p{i}": {"q0": True, "q1": i % 3 != 0} for i in range(30)}
    model_b = {f"p{i}": {"q0": i % 2 == 1, "q1": False} for i in range(30)}
    rows = [
        ComparisonRow(
            "sft_pixel", "sft",
            summarize_pairwise(labels(385, 159, 56), bootstrap=bootstrap),
            summarize_pairwise(labels(281, 231, 88), bootstrap=bootstrap),
            compare_alignment(model_a, model_b, bootstrap=bootstrap),
        ),
        ComparisonRow(
            "dpo & 50%", "base", summarize_pairwise(["tie"] * 10, bootstrap=bootstrap), None, None
        ),
    ]
    return paper_table_rows(rows)


def test_formatting_helpers():
    assert format_percent(0.6416666) == "64.2"
    assert format_percent(None) == "–"
    assert format_p(0.04321) == "0.043"
    assert format_p(1e-9) == "<0.001"
    assert format_p(None) == "–"


def test_text_table_shows_percentages_intervals_and_missing_cells(table):
    text = render_text(table)
    lines = text.splitlines()
    assert lines[0].startswith("Model A")
    assert "Visual Flaws: A wins" in lines[0] and "Text alignment: B" in lines[0]
    first = lines[2]
    ci = table[0]["visual_flaws"]["a_wins"]
    assert f"64.2 [{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]" in first
    assert "26.5" in first and "9.3" in first
    second = lines[3]
    assert second.startswith("dpo & 50%") and second.count("–") == 8
    plain = render_text(table, with_ci=False, with_p=False)
    assert "[" not in plain and "p: exact tests" not in plain


def test_csv_round_trips_every_number(table):
    rows = list(csv.DictReader(io.StringIO(render_csv(table))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["visual_flaws_a_wins_count"] == "385"
    assert float(rows[0]["visual_flaws_a_wins_rate"]) == table[0]["visual_flaws"]["a_wins"]["rate"]
    assert float(rows[0]["text_alignment_p_adjusted"]) == table[0]["text_alignment"]["p_adjusted"]
    assert rows[1]["model_a"] == "dpo & 50%"
    assert rows[1]["visual_appeal_a_wins_rate"] == "" and rows[1]["visual_flaws_p_value"] == ""


def test_json_round_trips_and_refuses_nan(table):
    assert json.loads(render_json(table)) == table
    broken = [dict(table[0], model_a=math.nan)]
    with pytest.raises(ValueError):
        render_json(broken)


def test_latex_uses_booktabs_and_escapes_names(table):
    latex = render_latex(table, caption="Human evaluation (n = 600)", label="tab:human")
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){3-6}"):
        assert command in latex
    assert r"\caption{Human evaluation (n = 600)}" in latex and r"\label{tab:human}" in latex
    assert r"sft\_pixel & sft & 64.2\,{\scriptsize[" in latex
    assert r"dpo \& 50\% & base" in latex
    body = [line for line in latex.splitlines() if line.endswith(r"\\") and "Model A" not in line
            and "multicolumn" not in line]
    spec = latex.split(r"\begin{tabular}{")[1].split("}")[0]
    for line in body:
        # Unescaped ampersands separate cells: one fewer than the columns.
        assert line.replace(r"\&", "").count("&") == len(spec) - 1
    assert latex.count("{") == latex.count("}")
    assert "$<$0.001" in latex and "nan" not in latex.lower()
