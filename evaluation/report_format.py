"""Render the paper's table (``evaluation.stats.paper_table_rows``) as text, CSV, JSON or LaTeX.

Pure functions from the plain row dicts to strings; writing files (atomically) is the
caller's job. Rates print as percentages with one decimal, like the seed paper's Table 1;
a missing or undefined number prints as an en dash (CSV: an empty field, JSON: null).
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from annotation.criteria import Criterion

__all__ = [
    "CSV_COLUMNS",
    "format_number",
    "format_p",
    "format_percent",
    "render_csv",
    "render_json",
    "render_latex",
    "render_text",
]

Row = Mapping[str, Any]
MISSING = "–"
CRITERIA = tuple((c.value, c.label.title()) for c in Criterion)  # title case, as in the paper
OUTCOMES = (("a_wins", "A wins"), ("tie", "Tie"), ("b_wins", "B wins"))
ALIGNMENT = (("a", "A"), ("b", "B"))


def _defined(value: Any) -> bool:
    """A number to print. Anything else is undefined: None, and what a template makes of a
    missing lookup (``""`` for ``score.rate`` when the score is None)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def format_percent(rate: float | None) -> str:
    """A rate in [0, 1] (or a difference in [−1, 1]) as a percentage with one decimal."""
    return f"{100 * rate:.1f}" if _defined(rate) else MISSING


def format_p(p: float | None) -> str:
    """A p-value with three decimals, ``<0.001`` below that."""
    if not _defined(p):
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_number(value: float | None, digits: int = 3) -> str:
    """A statistic (κ, α, a strength) with ``digits`` decimals."""
    return f"{value:.{int(digits)}f}" if _defined(value) else MISSING


def _cell(cell: Mapping[str, Any] | None, with_ci: bool) -> str:
    if not cell or cell.get("rate") is None:
        return MISSING
    text = format_percent(cell["rate"])
    if with_ci and cell.get("ci_low") is not None:
        text += f" [{format_percent(cell['ci_low'])}, {format_percent(cell['ci_high'])}]"
    return text


def _columns(rows: Sequence[Row], with_ci: bool, with_p: bool) -> tuple[list[str], list[list[str]]]:
    header = ["Model A", "Model B"]
    for _, title in CRITERIA:
        header += [f"{title}: {name}" for _, name in OUTCOMES]
        if with_p:
            header.append(f"{title}: p")
    header += [f"Text alignment: {name}" for _, name in ALIGNMENT]
    if with_p:
        header.append("Text alignment: p")
    body = []
    for row in rows:
        line = [str(row["model_a"]), str(row["model_b"])]
        for key, _ in CRITERIA:
            criterion = row.get(key) or {}
            line += [_cell(criterion.get(outcome), with_ci) for outcome, _ in OUTCOMES]
            if with_p:
                line.append(format_p(criterion.get("p_adjusted")))
        alignment = row.get("text_alignment") or {}
        line += [_cell(alignment.get(side), with_ci) for side, _ in ALIGNMENT]
        if with_p:
            line.append(format_p(alignment.get("p_adjusted")))
        body.append(line)
    return header, body


def render_text(rows: Sequence[Row], *, with_ci: bool = True, with_p: bool = True) -> str:
    """A fixed-width text table: percentages with 95% CIs, and p-values adjusted for the table."""
    header, body = _columns(rows, with_ci, with_p)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line: list[str]) -> str:
        cells = [
            text.ljust(width) if index < 2 else text.rjust(width)
            for index, (text, width) in enumerate(zip(line, widths))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [render(header), rule, *(render(line) for line in body)]
    if rows and with_p:
        lines.append(f"p: exact tests, adjusted across the table ({rows[0].get('p_adjust', 'holm')}).")
    return "\n".join(lines) + "\n"


def _csv_columns() -> list[str]:
    columns = ["model_a", "model_b"]
    for key, _ in CRITERIA:
        columns.append(f"{key}_n")
        for outcome, _ in OUTCOMES:
            columns += [f"{key}_{outcome}_{field}" for field in ("count", "rate", "ci_low", "ci_high")]
        columns += [f"{key}_net_win_rate", f"{key}_net_win_ci_low", f"{key}_net_win_ci_high",
                    f"{key}_p_value", f"{key}_p_adjusted", f"{key}_prompts_needed",
                    f"{key}_no_majority"]
    columns.append("text_alignment_n_prompts")
    for side, _ in ALIGNMENT:
        columns += [f"text_alignment_{side}_{field}" for field in ("rate", "ci_low", "ci_high")]
    columns += ["text_alignment_difference", "text_alignment_difference_ci_low",
                "text_alignment_difference_ci_high", "text_alignment_p_value",
                "text_alignment_p_adjusted", "text_alignment_within_margin_of_error"]
    return columns


CSV_COLUMNS: tuple[str, ...] = tuple(_csv_columns())


def _csv_record(row: Row) -> dict[str, Any]:
    record: dict[str, Any] = {"model_a": row["model_a"], "model_b": row["model_b"]}
    for key, _ in CRITERIA:
        criterion = row.get(key) or {}
        record[f"{key}_n"] = criterion.get("n")
        for outcome, _ in OUTCOMES:
            cell = criterion.get(outcome) or {}
            for field in ("count", "rate", "ci_low", "ci_high"):
                record[f"{key}_{outcome}_{field}"] = cell.get(field)
        net = criterion.get("net_win_rate") or {}
        record[f"{key}_net_win_rate"] = net.get("rate")
        record[f"{key}_net_win_ci_low"] = net.get("ci_low")
        record[f"{key}_net_win_ci_high"] = net.get("ci_high")
        for field in ("p_value", "p_adjusted", "prompts_needed", "no_majority"):
            record[f"{key}_{field}"] = criterion.get(field)
    alignment = row.get("text_alignment") or {}
    record["text_alignment_n_prompts"] = alignment.get("n_prompts")
    for side, _ in ALIGNMENT:
        cell = alignment.get(side) or {}
        for field in ("rate", "ci_low", "ci_high"):
            record[f"text_alignment_{side}_{field}"] = cell.get(field)
    difference = alignment.get("difference") or {}
    record["text_alignment_difference"] = difference.get("rate")
    record["text_alignment_difference_ci_low"] = difference.get("ci_low")
    record["text_alignment_difference_ci_high"] = difference.get("ci_high")
    for field in ("p_value", "p_adjusted", "within_margin_of_error"):
        record[f"text_alignment_{field}"] = alignment.get(field)
    return record


def render_csv(rows: Sequence[Row]) -> str:
    """One line per comparison with every number at full precision (rates as fractions)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in _csv_record(row).items()})
    return buffer.getvalue()


def render_json(rows: Sequence[Row]) -> str:
    """The rows as JSON; undefined numbers are ``null`` (NaN is refused, never written)."""
    return json.dumps(list(rows), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(character, character) for character in text)


def _latex_cell(cell: Mapping[str, Any] | None, with_ci: bool) -> str:
    if not cell or cell.get("rate") is None:
        return "--"
    text = format_percent(cell["rate"])
    if with_ci and cell.get("ci_low") is not None:
        text += (
            rf"\,{{\scriptsize[{format_percent(cell['ci_low'])}, "
            rf"{format_percent(cell['ci_high'])}]}}"
        )
    return text


def _latex_p(p: float | None) -> str:
    if p is None:
        return "--"
    return r"$<$0.001" if p < 0.001 else f"{p:.3f}"


def render_latex(
    rows: Sequence[Row],
    *,
    with_ci: bool = True,
    with_p: bool = True,
    caption: str | None = None,
    label: str | None = None,
) -> str:
    """A booktabs table in the seed paper's layout, ready to paste (needs ``\\usepackage{booktabs}``).

    Cells are percentages; with ``with_ci`` each carries its 95% interval in small type, with
    ``with_p`` each criterion gets a column of p-values adjusted across the table.
    """
    per_criterion = 3 + int(with_p)
    per_alignment = 2 + int(with_p)
    spec = "ll" + ("r" * per_criterion) * 2 + "r" * per_alignment
    groups = [title for _, title in CRITERIA] + ["Text alignment"]
    widths = [per_criterion, per_criterion, per_alignment]
    top = ["", ""] + [rf"\multicolumn{{{w}}}{{c}}{{{g}}}" for g, w in zip(groups, widths)]
    rules, start = [], 3
    for width in widths:
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    second = ["Model A", "Model B"]
    for _ in CRITERIA:
        second += [name for _, name in OUTCOMES] + ([r"$p$"] if with_p else [])
    second += [name for _, name in ALIGNMENT] + ([r"$p$"] if with_p else [])

    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(top) + r" \\",
        " ".join(rules),
        " & ".join(second) + r" \\",
        r"\midrule",
    ]
    for row in rows:
        cells = [_latex_escape(str(row["model_a"])), _latex_escape(str(row["model_b"]))]
        for key, _ in CRITERIA:
            criterion = row.get(key) or {}
            cells += [_latex_cell(criterion.get(outcome), with_ci) for outcome, _ in OUTCOMES]
            if with_p:
                cells.append(_latex_p(criterion.get("p_adjusted")))
        alignment = row.get("text_alignment") or {}
        cells += [_latex_cell(alignment.get(side), with_ci) for side, _ in ALIGNMENT]
        if with_p:
            cells.append(_latex_p(alignment.get("p_adjusted")))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
