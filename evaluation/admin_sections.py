"""What the evaluation app adds to the catalog's model page and the training run page.

Registered from ``EvaluationConfig.ready()`` into the registries of those pages
(``catalog.admin_sections.lineage_columns``, ``training.run_page.run_page_sections``), so that
neither app imports this one. Numbers come from each evaluation's stored report: no page view
computes a report.
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.urls import reverse

from catalog.models import ModelVersion
from evaluation.reports import CRITERION_TITLES
from evaluation.selectors import evaluations_comparing

# A report's table cells are from Model A's side; these turn them to the other model's side.
PAIRWISE_SIDES = {"win": ("a_wins", "b_wins"), "tie": ("tie", "tie"), "loss": ("b_wins", "a_wins")}


def comparison_results(*, model_version: ModelVersion, other: ModelVersion) -> list[dict[str, Any]]:
    """Each evaluation of ``model_version`` against ``other``: its link, and per criterion the
    win/tie/loss rates (with intervals) of ``model_version``, from the stored report."""
    results = []
    for evaluation, stored in evaluations_comparing(model_version=model_version, other=other):
        entry: dict[str, Any] = {
            "evaluation": evaluation, "url": reverse("evaluation-detail", args=[evaluation.pk]),
            "computed_at": stored.computed_at if stored else None,
            "judgments": stored.judgment_count if stored else 0, "criteria": [], "alignment": None,
        }
        data = (stored.data if stored else None) or {}
        for row in data.get("table", []):
            names = (row.get("model_a"), row.get("model_b"))
            if set(names) != {model_version.name, other.name}:
                continue
            side = 0 if names[0] == model_version.name else 1
            for criterion, title in CRITERION_TITLES.items():
                cells = row.get(criterion)
                if cells:
                    entry["criteria"].append({
                        "title": title, "n": cells.get("n"), "p_adjusted": cells.get("p_adjusted"),
                        **{outcome: cells.get(keys[side]) for outcome, keys in PAIRWISE_SIDES.items()},
                    })
            alignment = row.get("text_alignment")
            if alignment:
                ours, theirs = ("a", "b") if side == 0 else ("b", "a")
                entry["alignment"] = {
                    "n": alignment.get("n_prompts"), "model": alignment.get(ours), "other": alignment.get(theirs),
                }
        results.append(entry)
    return results


def _comparisons_html(*, model_version: ModelVersion, other: ModelVersion) -> str:
    results = comparison_results(model_version=model_version, other=other)
    if not results:
        return ""
    return render_to_string("evaluation/_comparisons.html", {
        "results": results, "model": model_version, "other": other,
    })


def against_parent_html(model_version: ModelVersion) -> str:
    """The lineage cell of a model: its evaluations against its parent."""
    if model_version.parent is None:
        return ""
    return _comparisons_html(model_version=model_version, other=model_version.parent)


def run_evaluation_html(run) -> str:
    """The run page's section: the new model's evaluations against the base model, with report links."""
    if run.output_model is None:
        return ""
    return _comparisons_html(model_version=run.output_model, other=run.base_model) or (
        "No evaluation of this model against its base yet." if (run.follow_up or {}).get("evaluate") is None
        else "The evaluation against the base was asked for; it appears here once it is created."
    )
