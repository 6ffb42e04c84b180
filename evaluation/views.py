"""Researcher pages of evaluation rounds: the list, one report page, its chart and its exports."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_safe

from annotation.roles import is_researcher
from evaluation.charts import CHART_FORMATS, win_tie_loss_chart
from evaluation.models import EvaluationRound
from evaluation.report_text import report_render
from evaluation.reports import CRITERION_TITLES, evaluation_report_build
from evaluation.selectors import evaluation_rounds_list

EXPORTS = {
    "txt": ("table", "text/plain; charset=utf-8"),
    "csv": ("csv", "text/csv; charset=utf-8"),
    "json": ("json", "application/json"),
    "tex": ("latex", "application/x-tex; charset=utf-8"),
}
# The chart shows Wilson intervals only, which need no bootstrap.
CHART_RESAMPLES = 1


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


@require_safe
@researcher_required
def evaluation_detail(request, pk: int):
    evaluation = get_object_or_404(EvaluationRound.objects.select_related("prompt_set"), pk=pk)
    report = evaluation_report_build(evaluation=evaluation).to_dict()
    comparisons = []
    for row, comparison in zip(report["table"], report["comparisons"]):
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
        "report": report,
        "comparisons": comparisons,
        "criteria": CRITERION_TITLES,
        "leaderboards": [(CRITERION_TITLES[k], v) for k, v in report["leaderboards"].items()],
        "position_bias": [(CRITERION_TITLES[k], v) for k, v in report["position_bias"].items()],
        "exports": list(EXPORTS),
    })


@require_safe
@researcher_required
def evaluation_chart(request, pk: int, fmt: str):
    if fmt not in CHART_FORMATS:
        raise Http404("no such chart format")
    evaluation = get_object_or_404(EvaluationRound, pk=pk)
    report = evaluation_report_build(evaluation=evaluation, n_resamples=CHART_RESAMPLES)
    response = HttpResponse(win_tie_loss_chart(report.to_dict()["table"], fmt), content_type=CHART_FORMATS[fmt])
    response["Cache-Control"] = "private, no-cache"
    return response


@require_safe
@researcher_required
def evaluation_export(request, pk: int, ext: str):
    if ext not in EXPORTS:
        raise Http404("no such export format")
    evaluation = get_object_or_404(EvaluationRound, pk=pk)
    fmt, content_type = EXPORTS[ext]
    response = HttpResponse(report_render(evaluation_report_build(evaluation=evaluation), fmt), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="evaluation-{evaluation.pk}.{ext}"'
    return response
