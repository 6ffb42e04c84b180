"""Cancel and resume a run from the research API and from manage.py cancel_run."""

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import AnnotatorFactory, ModelVersionFactory, ResearcherFactory
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs():
    base = ModelVersionFactory()
    return {status: TrainingRun.objects.create(name=f"run-{status}", base_model=base, dataset_path="d", status=status)
            for status in TrainingRun.Status.values}


@pytest.fixture
def researcher():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=ResearcherFactory()).key}")
    return client


def test_researchers_list_and_read_runs_with_their_progress(researcher, runs):
    TrainingRun.objects.filter(pk=runs["running"].pk).update(
        step=40, total_steps=100, phase="training", history=[{"step": 20, "loss": 0.5}], log_tail="step 40/100")
    listed = researcher.get("/api/research/runs/").json()
    assert {row["name"] for row in listed["results"]} == {f"run-{s}" for s in TrainingRun.Status.values}
    assert "history" not in listed["results"][0]
    detail = researcher.get(f"/api/research/runs/{runs['running'].pk}/").json()
    assert (detail["step"], detail["total_steps"], detail["phase"]) == (40, 100, "training")
    assert detail["history"] == [{"step": 20, "loss": 0.5}] and detail["log_tail"] == "step 40/100"


def test_annotators_cannot_reach_runs(runs):
    client = APIClient()
    client.force_login(AnnotatorFactory())
    assert client.get("/api/research/runs/").status_code == 403
    assert client.post(f"/api/research/runs/{runs['queued'].pk}/cancel/").status_code == 403
    assert TrainingRun.objects.get(pk=runs["queued"].pk).status == "queued"


def test_cancel_and_resume_through_the_api(researcher, runs, django_capture_on_commit_callbacks):
    queued, running, succeeded = runs["queued"], runs["running"], runs["succeeded"]
    answer = researcher.post(f"/api/research/runs/{queued.pk}/cancel/")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    answer = researcher.post(f"/api/research/runs/{running.pk}/cancel/")
    assert answer.status_code == 200 and answer.json()["status"] == "running" and answer.json()["cancel_requested"]
    refused = researcher.post(f"/api/research/runs/{succeeded.pk}/cancel/")
    assert refused.status_code == 409 and refused.json()["code"] == "not_cancellable"
    with django_capture_on_commit_callbacks():
        answer = researcher.post(f"/api/research/runs/{queued.pk}/resume/")
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    refused = researcher.post(f"/api/research/runs/{running.pk}/resume/")
    assert refused.status_code == 409 and refused.json()["code"] == "not_resumable"
    missing = researcher.post("/api/research/runs/999999/cancel/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_cancel_run_command(runs, capsys):
    call_command("cancel_run", str(runs["queued"].pk))
    assert "cancelled (it had not started)" in capsys.readouterr().out
    call_command("cancel_run", "run-running")
    assert "stops it at the next step boundary" in capsys.readouterr().out
    assert TrainingRun.objects.get(pk=runs["running"].pk).cancel_requested_at is not None
    with pytest.raises(CommandError, match="only a queued or running run can be cancelled"):
        call_command("cancel_run", "run-failed")
    with pytest.raises(CommandError, match="no training run with id or name 'nope'"):
        call_command("cancel_run", "nope")
