"""Reports off the request path: pages and downloads show the stored report; new judgments recompute it."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client

from annotation.models import Round
from evaluation.models import StoredReport
from evaluation.services import evaluation_start, report_refresh
from evaluation.tasks import evaluation_report_refresh
from tests.evaluation.builders import annotate_round, annotators, prompt_set_with_images
from tests.factories import ResearcherFactory

pytestmark = pytest.mark.django_db


def choose_a(task, person):
    """Every annotator prefers Model A's image (the item's first) on every pairwise item."""
    return {"outcome": "win", "winner": task.item.images()[0].public_id}


@pytest.fixture
def evaluation():
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=4, with_questions=0)
    return evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation


@pytest.fixture
def researcher() -> Client:
    client = Client()
    client.force_login(ResearcherFactory())
    return client


def test_first_view_asks_a_worker_once_and_shows_the_report_when_it_is_stored(
    evaluation, researcher, eager_tasks, django_capture_on_commit_callbacks
):
    annotate_round(evaluation.annotation_rounds.get(criterion=Round.Criterion.VISUAL_FLAWS), annotators(5), choose_a)
    with django_capture_on_commit_callbacks() as asked:
        page = researcher.get(f"/evaluation/{evaluation.pk}/")
        again = researcher.get(f"/evaluation/{evaluation.pk}/")
    assert page.status_code == again.status_code == 200
    assert "The report is being computed" in page.content.decode()
    assert "Asked for 0\xa0minutes ago" in page.content.decode()
    assert 'id="paper-table"' not in page.content.decode()
    assert len(asked) == 1  # two views of one state send one task
    download = researcher.get(f"/evaluation/{evaluation.pk}/report.csv")
    assert download.status_code == 503 and download["Retry-After"] == "5"
    assert researcher.get(f"/evaluation/{evaluation.pk}/chart.svg").status_code == 503
    assert researcher.get(f"/evaluation/{evaluation.pk}/report/status.json").json()["computed_at"] is None

    asked[0]()  # the task runs (eagerly, as a `default` worker would)
    stored = StoredReport.objects.get(evaluation=evaluation)
    assert stored.judgment_count == 20 and stored.data["table"][0]["visual_flaws"]["a_wins"]["count"] == 4
    with django_capture_on_commit_callbacks() as asked:
        html = researcher.get(f"/evaluation/{evaluation.pk}/").content.decode()
    assert not asked
    assert 'id="paper-table"' in html and "100.0" in html
    assert "Computed 0\xa0minutes ago from 20 judgments." in html
    assert "report_refresh.js" not in html  # nothing to wait for: the page does not poll
    status = researcher.get(f"/evaluation/{evaluation.pk}/report/status.json").json()
    assert status == {
        "fresh": True, "computed_at": stored.computed_at.isoformat(), "report_judgments": 20, "judgments": 20,
    }
    csv_text = researcher.get(f"/evaluation/{evaluation.pk}/report.csv").content.decode()
    assert csv_text.splitlines()[1].startswith("base,pixel,4,")


def test_new_judgments_show_the_stale_report_with_a_note_until_it_is_recomputed(
    evaluation, researcher, eager_tasks, django_capture_on_commit_callbacks
):
    report_refresh(evaluation=evaluation)
    first = StoredReport.objects.get(evaluation=evaluation)
    assert first.judgment_count == 0
    annotate_round(evaluation.annotation_rounds.get(criterion=Round.Criterion.VISUAL_APPEAL), annotators(5), choose_a)

    with django_capture_on_commit_callbacks() as asked:
        html = researcher.get(f"/evaluation/{evaluation.pk}/").content.decode()
        researcher.get(f"/evaluation/{evaluation.pk}/report/status.json")
    assert len(asked) == 1
    assert "from 0 judgments" in html and "20 judgments now" in html and "report_refresh.js" in html
    assert "No judgments yet" in html  # still the old numbers
    status = researcher.get(f"/evaluation/{evaluation.pk}/report/status.json").json()
    assert status["fresh"] is False and status["judgments"] == 20 and status["report_judgments"] == 0
    stale_csv = researcher.get(f"/evaluation/{evaluation.pk}/report.csv")
    assert stale_csv.status_code == 200  # the last report, while the new one is computed

    asked[0]()
    status = researcher.get(f"/evaluation/{evaluation.pk}/report/status.json").json()
    assert status["fresh"] is True and status["computed_at"] != first.computed_at.isoformat()
    data = researcher.get(f"/evaluation/{evaluation.pk}/report.json").json()
    assert data["table"][0]["visual_appeal"]["a_wins"]["count"] == 4
    assert data["judgments"]["total"] == 20


def test_the_task_keeps_a_current_report_and_skips_a_missing_evaluation(evaluation):
    report_refresh(evaluation=evaluation)
    computed_at = StoredReport.objects.get(evaluation=evaluation).computed_at
    assert evaluation_report_refresh(evaluation.pk) == "report of 0 judgments"
    assert StoredReport.objects.get(evaluation=evaluation).computed_at == computed_at
    assert evaluation_report_refresh(999_999) == "skipped"


def test_the_command_prints_the_stored_report_and_stores_it_when_behind(evaluation, researcher):
    annotate_round(evaluation.annotation_rounds.get(criterion=Round.Criterion.VISUAL_FLAWS), annotators(5), choose_a)
    out = io.StringIO()
    call_command("evaluation_report", str(evaluation.pk), "--format", "csv", stdout=out)
    stored = StoredReport.objects.get(evaluation=evaluation)
    assert stored.judgment_count == 20
    assert out.getvalue() == researcher.get(f"/evaluation/{evaluation.pk}/report.csv").content.decode()
    call_command("evaluation_report", str(evaluation.pk), "--format", "csv", stdout=io.StringIO())
    assert StoredReport.objects.get(evaluation=evaluation).computed_at == stored.computed_at
