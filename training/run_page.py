"""What the admin's page of a training run shows: progress, curves, data, log, outcome.

Everything is read from the run's row (the worker's monitor writes it) and, for the dataset,
the export's own summary; nothing here touches the run's files beyond that. Apps above
training add their part through ``run_page_sections`` (evaluation: the new model's results
against its base), registered from their ``AppConfig.ready()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from annotation.exports import export_summary_read
from catalog.admin_sections import AdminSections
from training.charts import Series, line_chart
from training.models import TrainingRun

# A running run's page reloads itself this often (a meta refresh: no script, nothing for a CSP to block).
REFRESH_SECONDS = 10

run_page_sections = AdminSections("training run page")

# The curves, one chart per group of metric keys; any other numeric key gets a chart of its own.
CURVE_GROUPS = (
    ("Loss", lambda key: key == "loss" or key.endswith("_loss")),
    ("Winner / loser errors", lambda key: "err_" in key),
    ("Implicit accuracy", lambda key: key.endswith("accuracy")),
    ("Learning rate", lambda key: key == "lr"),
    ("Gradient norm", lambda key: key == "grad_norm"),
)
CURVE_TITLES = {"step_time": "Seconds per step"}
# What an export's summary counts, in the order the page lists it.
DATASET_COUNTS = (
    ("pairs", "winner/loser pairs"),
    ("items_complete", "complete items"),
    ("ties", "ties"),
    ("no_majority", "items without a majority"),
    ("ambiguous", "ambiguous items"),
    ("judgments_counted", "judgments counted"),
    ("synthetic_judgments_in_pairs", "synthetic judgments in the pairs"),
    ("excluded_annotators", "annotators left out (gold accuracy)"),
)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_keys(history: list[dict]) -> list[str]:
    """The numeric metrics logged in ``history``, in the order they first appear (``step`` is the x axis)."""
    keys: dict[str, None] = {}
    for point in history:
        if isinstance(point, dict):
            keys.update((key, None) for key, value in point.items() if key != "step" and _number(value))
    return list(keys)


def _curve_order(key: str) -> tuple:
    # the total first; a winner's error before its loser's
    stem, side = (key[:-2], key[-1]) if key.endswith(("_w", "_l")) else (key, "")
    return (key != "loss", stem, side != "w")


def metric_groups(keys: list[str]) -> list[tuple[str, list[str]]]:
    """The charts of these metric keys: (title, keys), one per group of ``CURVE_GROUPS`` present, then one per other key."""
    groups: list[tuple[str, list[str]]] = []
    taken: set[str] = set()
    for title, member in CURVE_GROUPS:
        chosen = sorted((key for key in keys if key not in taken and member(key)), key=_curve_order)
        if chosen:
            groups.append((title, chosen))
            taken.update(chosen)
    return groups + [(CURVE_TITLES.get(key, key), [key]) for key in keys if key not in taken]


def run_curves(history: list[dict]) -> list[SafeString]:
    """One SVG chart per group of logged metrics, one polyline per metric."""
    points = [p for p in history if isinstance(p, dict) and _number(p.get("step"))]
    charts = []
    for title, group in metric_groups(metric_keys(points)):
        series = [Series(key, [(p["step"], p.get(key)) for p in points if key in p]) for key in group]
        charts.append(mark_safe(line_chart(series, title=title)))  # every text in it is escaped
    return charts


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    percent: float | None
    minutes_left: float | None  # from the latest logged step's time; an estimate


def run_progress(run: TrainingRun) -> Progress:
    total = run.total_steps or int((run.config or {}).get("max_train_steps") or 0)
    step = run.step
    percent = min(100.0, 100.0 * step / total) if total else None
    step_time = (run.progress or {}).get("step_time")
    minutes_left = None
    if run.status == TrainingRun.Status.RUNNING and total and _number(step_time) and step_time > 0:
        minutes_left = max(0, total - step) * step_time / 60
    return Progress(step=step, total_steps=total, percent=percent, minutes_left=minutes_left)


def dataset_counts(run: TrainingRun) -> tuple[dict | None, list[tuple[str, object]]]:
    """The export's summary (None for an SFT folder or an unreadable one) and its counts, labelled."""
    summary = export_summary_read(run.dataset_path)
    if summary is None:
        return None, []
    return summary, [(label, summary[key]) for key, label in DATASET_COUNTS if summary.get(key) is not None]


def latest_metrics(run: TrainingRun) -> list[tuple[str, str]]:
    """The latest logged values, in the order of the charts."""
    latest = run.progress or {}
    keys = [key for _, group in metric_groups(metric_keys([latest])) for key in group]
    return [(key, f"{latest[key]:.4g}") for key in keys]


def run_page_context(run: TrainingRun) -> dict:
    """The template context of the run panel (``admin/training/trainingrun/change_form.html``)."""
    summary, counts = dataset_counts(run)
    output = run.output_model
    return {
        "run": run,
        "running": run.status == TrainingRun.Status.RUNNING,
        "refresh_seconds": REFRESH_SECONDS,
        "progress": run_progress(run),
        "latest_metrics": latest_metrics(run),
        "curves": run_curves(run.history or []),
        "config_json": json.dumps(run.config or {}, indent=2, sort_keys=True, ensure_ascii=False),
        "dataset_summary": summary,
        "dataset_counts": counts,
        "base_model_url": reverse("admin:catalog_modelversion_change", args=[run.base_model_id]),
        "output_model_url": reverse("admin:catalog_modelversion_change", args=[output.pk]) if output else "",
        "sections": [s for s in run_page_sections.render(run) if s.html],
    }


def runs_by_output_model(model_ids) -> dict[int, int]:
    """The run that trained each of these models (model id -> run id); base and imported models have none."""
    return dict(
        TrainingRun.objects.filter(output_model_id__in=model_ids).values_list("output_model_id", "id")
    )


def trained_by_html(model_version) -> SafeString | str:
    """The lineage cell of a model: the run that trained it (a link), its steps and data; empty for a base model."""
    run = TrainingRun.objects.filter(output_model=model_version).first()
    if run is None:
        return ""
    steps = (run.metrics or {}).get("steps", run.step)
    return format_html(
        '<a href="{}">{}</a><br><span class="ci">{} steps on {}</span>',
        reverse("admin:training_trainingrun_change", args=[run.pk]), run.name, steps, run.dataset_path,
    )
