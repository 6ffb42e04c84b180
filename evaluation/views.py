"""Researcher pages of evaluation rounds: the list, one report page, its chart and its exports.

Every page shows the stored report (``services.report_latest``): no request computes one. When
the evaluation has moved on, the last report is shown with a note while a `default` worker
computes the new one, and the page polls ``report/status.json`` until it is there.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_safe

from annotation.roles import is_researcher
from evaluation.charts import CHART_FORMATS
from evaluation.models import EvaluationRound
from evaluation.report_text import report_render
from evaluation.reports import CRITERION_TITLES
from evaluation.selectors import evaluation_rounds_list
from evaluation.services import LatestReport, report_chart, report_latest

EXPORTS = {
    "txt": ("table", "text/plain; charset=utf-8"),
    "csv": ("csv", "text/csv; charset=utf-8"),
    "json": ("json", "application/json"),
    "tex": ("latex", "application/x-tex; charset=utf-8"),
}
# Seconds a client should wait before asking again for a report that is still being computed.
RETRY_AFTER_SECONDS = 5


def researcher_required(view):
    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not is_researcher(request.user):
            raise PermissionDenied("Researchers only.")
        return view(request, *args, **kwargs)

    return wrapper


@require_safe
@researcher_required
def evaluation_list(request):
    return render(request, "evaluation/list.html", {"evaluations": evaluation_rounds_list()})


def _latest(pk: int) -> tuple[EvaluationRound, LatestReport]:
    evaluation = get_object_or_404(EvaluationRound.objects.select_related("prompt_set"), pk=pk)
    return evaluation, report_latest(evaluation=evaluation)


def _not_yet() -> HttpResponse:
    response = HttpResponse(
        "The report is being computed; try again in a few seconds.\n", status=503, content_type="text/plain; charset=utf-8"
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@require_safe
@researcher_required
def evaluation_detail(request, pk: int):
    evaluation, latest = _latest(pk)
    report = latest.data
    comparisons = []
    for row, comparison in zip(report["table"], report["comparisons"]) if report else ():
        comparisons.append({
            "row": row,
            "criteria": [
                {"key": key, "title": title, "cells": row[key], "detail": comparison[key]}
                for key, title in CRITERION_TITLES.items()
            ],
            "alignment": comparison["text_alignment"],
            "model_a": row["model_a"], "model_b": row["model_b"],
        })
    return render(request, "evaluation/detail.html", {
        "evaluation": evaluation,
        "latest": latest,
        "report": report,
        "comparisons": comparisons,
        "criteria": CRITERION_TITLES,
        "leaderboards": [(CRITERION_TITLES[k], v) for k, v in report["leaderboards"].items()] if report else [],
        "position_bias": [(CRITERION_TITLES[k], v) for k, v in report["position_bias"].items()] if report else [],
        "exports": list(EXPORTS),
    })


@require_safe
@researcher_required
def evaluation_report_status(request, pk: int):
    """Whether the stored report is current, for the page to poll (and a recompute asked for if not)."""
    _, latest = _latest(pk)
    stored = latest.stored
    return JsonResponse({
        "fresh": latest.fresh,
        "computed_at": stored.computed_at.isoformat() if stored.computed_at else None,
        "report_judgments": stored.judgment_count if stored.data is not None else None,
        "judgments": latest.judgment_count,
    })


@require_safe
@researcher_required
def evaluation_chart(request, pk: int, fmt: str):
    if fmt not in CHART_FORMATS:
        raise Http404("no such chart format")
    _, latest = _latest(pk)
    if latest.data is None:
        return _not_yet()
    response = HttpResponse(report_chart(stored=latest.stored, fmt=fmt), content_type=CHART_FORMATS[fmt])
    response["Cache-Control"] = "private, no-cache"
    return response


@require_safe
@researcher_required
def evaluation_export(request, pk: int, ext: str):
    if ext not in EXPORTS:
        raise Http404("no such export format")
    evaluation, latest = _latest(pk)
    if latest.data is None:
        return _not_yet()
    fmt, content_type = EXPORTS[ext]
    response = HttpResponse(report_render(latest.data, fmt), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="evaluation-{evaluation.pk}.{ext}"'
    return response
