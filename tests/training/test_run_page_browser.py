"""A running run's admin page in Chromium: the progress bar and the curves show, and the page reloads itself."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.annotation.test_browser import browser, login, open_page, shot, sync_orm_beside_playwright  # noqa: F401
from tests.factories import ModelVersionFactory, ResearcherFactory
from tests.training.run_builders import PREFERENCE_KEYS, make_run
from training import run_page
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_running_runs_page_shows_progress_and_curves_and_follows_the_run(open_page, monkeypatch):
    monkeypatch.setattr(run_page, "REFRESH_SECONDS", 1)  # the live server runs in this process
    base = ModelVersionFactory(name="sd15-base")
    run = make_run(
        TrainingRun.Status.RUNNING, name="sd15-dpo-pixel-round-12", base_model=base, progress_at=timezone.now(),
        log_tail="".join(f"2025-05-02 14:{m:02d}:07 INFO step {10 * m}/6000: loss {0.9 - m / 200:.3f}\n" for m in range(8)),
    )
    researcher = ResearcherFactory()

    page = open_page({"width": 1280, "height": 1500})
    login(page, researcher.username, landing=None)
    page.goto(f"/admin/training/trainingrun/{run.pk}/change/")

    bar = page.locator("#run-progress")
    assert bar.is_visible() and bar.bounding_box()["width"] > 300
    assert page.evaluate("() => document.querySelector('#run-progress').position") == pytest.approx(0.5)
    charts = page.locator("#run-curves svg.line-chart")
    assert charts.count() == 6
    for index in range(charts.count()):
        box = charts.nth(index).bounding_box()
        assert box["width"] > 300 and box["height"] > 150
    drawn = page.eval_on_selector_all(
        "#run-curves polyline", "lines => lines.map(l => [l.dataset.series, l.getBBox().width])"
    )
    assert sorted(name for name, _ in drawn) == sorted(PREFERENCE_KEYS)
    assert all(width > 200 for _, width in drawn)  # every curve spans the plot, not a dot
    shot(page, "admin-run-page", full_page=True)

    # the worker reports a later step: the page shows it without the researcher doing anything
    TrainingRun.objects.filter(pk=run.pk).update(step=4500)
    page.wait_for_function(
        "() => document.querySelector('#run-progress') && document.querySelector('#run-progress').value === 4500",
        timeout=15_000,
    )
    assert "step 4500 / 6000 (75 %)" in page.text_content("#run-status")
    assert not [m for m in page.console_messages if "pageerror" in m]
