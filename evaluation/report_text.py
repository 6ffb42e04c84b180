"""An evaluation report as files: the paper's table in four formats, plus the report's other sections in text."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluation import report_format
from evaluation.reports import CRITERION_TITLES, closing_line

FORMATS = ("table", "csv", "json", "latex")


def report_render(report: Mapping[str, Any], fmt: str) -> str:
    """The report (``EvaluationReport.to_dict()``, as stored) in ``fmt``: ``table`` (text with every
    section), ``csv``, ``json`` (everything), ``latex``."""
    if fmt == "csv":
        return report_format.render_csv(report["table"])
    if fmt == "latex":
        evaluation = report["evaluation"]
        return report_format.render_latex(
            report["table"],
            caption=(
                f"Human evaluation on {evaluation['prompt_set']}: majority of {evaluation['k']} votes per prompt; "
                "95% intervals in brackets (Wilson; bootstrap over prompts for text alignment); "
                "p-values of exact sign tests (McNemar for text alignment), Holm-adjusted across the table."
            ),
            label=f"tab:evaluation-{evaluation['id']}",
        )
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if fmt == "table":
        return _text(report)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _text(report: dict[str, Any]) -> str:
    pct, p, number = report_format.format_percent, report_format.format_p, report_format.format_number
    evaluation = report["evaluation"]
    title = f"Round {evaluation['round']}" if evaluation.get("round") else f"Evaluation {evaluation['id']}"
    lines = [
        f"{title}: {evaluation['name']}",
        f"Prompts: {evaluation['prompt_set']}; models in order: {', '.join(evaluation['models'])}; K = {evaluation['k']}",
        *_seed_policy_lines(evaluation),
    ]
    for entry in report.get("rounds", []):  # reports stored before rounds were recorded have none
        lines.append(f"  round {entry['name']!r} ({entry['kind']}): {closing_line(entry)}")
    lines += [
        "",
        report_format.render_text(report["table"]).rstrip("\n"),
        "",
    ]
    for comparison in report["comparisons"]:
        lines.append(f"{comparison['model_a']} vs {comparison['model_b']}")
        for criterion, title in CRITERION_TITLES.items():
            entry = comparison.get(criterion)
            if not entry:
                continue
            s = entry["summary"]
            ci = s["net_win_ci"]
            lines.append(
                f"  {title}: n={s['n']} ({s['wins']} / {s['ties']} / {s['losses']}), net win {pct(s['net_win_rate'])}%"
                + (f" [{pct(ci['low'])}, {pct(ci['high'])}]" if ci else "")
                + f", sign test p={p(s['sign_test_p'])}, no majority {s['no_majority']}"
                + (f", prompts needed for 80% power: {s['prompts_needed']}" if s["prompts_needed"] else "")
            )
            bias = entry["position_bias"]
            lines.append(f"    position: left {bias['left_wins']} / right {bias['right_wins']} wins, p={p(bias['p_value'])}")
            agreement = entry["agreement"]
            lines.append(
                f"    agreement: Fleiss κ {number(agreement['fleiss_kappa'])}, Krippendorff α {number(agreement['krippendorff_alpha'])}"
            )
            for message in (s["message"], agreement["message"], bias["message"]):
                if message:
                    lines.append(f"    note: {message}")
        alignment = comparison.get("text_alignment")
        if alignment:
            lines.append(
                f"  Text alignment: {pct(alignment['rate_a'])}% vs {pct(alignment['rate_b'])}%, difference "
                f"{pct(alignment['difference'])} points, McNemar p={p(alignment['mcnemar_p'])}, "
                f"minimal detectable difference {pct(alignment['minimal_detectable_difference'])} points"
            )
            if alignment["message"]:
                lines.append(f"    note: {alignment['message']}")
    if report["categories"]:
        lines += ["", "By prompt category (p adjusted across categories):"]
        for entry in report["categories"]:
            s = entry["summary"]
            lines.append(
                f"  {entry['category']}: {entry['model_a']} vs {entry['model_b']}, {CRITERION_TITLES[entry['criterion']]}: "
                f"n={s['n']}, {pct(s['win_rate'])} / {pct(s['tie_rate'])} / {pct(s['loss_rate'])}%, p={p(entry['p_adjusted'])}"
            )
    for criterion, entries in report["leaderboards"].items():
        lines += ["", f"Bradley–Terry leaderboard, {CRITERION_TITLES[criterion]} (a tie counts half a win):"]
        for entry in entries:
            ci = entry["ci"]
            lines.append(
                f"  {entry['rank']}. {entry['model']}: strength {number(entry['strength'])}"
                + (f" [{number(ci['low'])}, {number(ci['high'])}]" if ci else "")
            )
    if report["annotators"]:
        lines += ["", "Annotators (agreement with the majority of the others; gold accuracy):"]
        for entry in report["annotators"]:
            score = entry["majority_agreement"]
            lines.append(
                f"  {entry['annotator']}{' (synthetic)' if entry['synthetic'] else ''}: {entry['judgments']} judgments, "
                f"{entry.get('skips', 0)} skipped, "
                f"agreement {pct(score['rate']) if score else '–'}%, gold {pct(entry['gold_accuracy'])}%"
            )
    judgments = report["judgments"]
    lines += ["", f"Judgments: {judgments['total']} ({judgments['synthetic']} synthetic, {judgments['human']} human);"
              f" items skipped: {judgments.get('skips', 0)}"]
    for message in report["messages"]:
        lines.append(f"note: {message}")
    return "\n".join(lines) + "\n"




def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _seed_policy_lines(evaluation: dict[str, Any]) -> list[str]:
    # Reports stored before seed policies existed lack the key.
    if "seed_policy" not in evaluation:
        return []
    return [f"Images: seed policy '{evaluation['seed_policy']}', {evaluation['seed_policy_label']}"]
