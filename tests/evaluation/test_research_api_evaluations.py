"""The research API's evaluations: create one, read its status, its stored report in four formats and its chart."""

from __future__ import annotations

import io
import json
import time

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from annotation.models import Round
from catalog.models import GenerationBatch, GenerationJob
from evaluation.models import EvaluationRound, StoredReport
from evaluation.services import ROUNDS_TASK, evaluation_start, report_refresh
from evaluation.tasks import evaluation_rounds_create
from outbox.models import OutboxMessage
from tests.evaluation.builders import annotate_round, annotators, prompt_set_with_images
from tests.factories import AnnotatorFactory, ModelVersionFactory, PromptSetFactory

pytestmark = pytest.mark.django_db

REFRESH = "evaluation.tasks.evaluation_report_refresh"


def choose_a(task, person):
    return {"outcome": "win", "winner": task.item.images()[0].public_id}


@pytest.fixture
def researcher(research_api):
    return research_api


@pytest.fixture
def evaluation(postgres):
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=4, with_questions=2)
    return evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation


def command_output(*args) -> str:
    out = io.StringIO()
    call_command("evaluation_report", *args, stdout=out)
    return out.getvalue()


def test_only_researchers_reach_evaluations_and_their_reports(evaluation):
    report_refresh(evaluation=evaluation)
    annotator = APIClient()
    annotator.force_login(AnnotatorFactory())
    base = f"/api/research/evaluations/{evaluation.pk}/"
    for method, path in (("get", "/api/research/evaluations/"), ("post", "/api/research/evaluations/"),
                         ("get", base), ("get", f"{base}report/"), ("get", f"{base}report/?format=csv"),
                         ("get", f"{base}chart/"), ("get", f"{base}chart/?format=svg")):
        for client, expected in ((APIClient(), (401, 403)), (annotator, (403,))):
            answer = getattr(client, method)(path)
            assert answer.status_code in expected, (method, path)
            assert answer["Content-Type"] == "application/json" and set(answer.json()) == {"detail", "code"}
    assert EvaluationRound.objects.count() == 1


def test_an_evaluation_from_existing_images_queues_its_rounds_at_once(researcher, postgres):
    prompt_set_with_images(models=["base", "pixel"], n_prompts=3, set_name="parti")
    answer = researcher.post("/api/research/evaluations/", {"models": ["pixel", "base"], "prompt_set": "parti",
                                                           "from_existing": True, "k": 3}, format="json")
    assert answer.status_code == 202, answer.json()
    body = answer.json()
    evaluation = EvaluationRound.objects.get()
    assert answer["Location"] == body["url"] == f"/api/research/evaluations/{evaluation.pk}/"
    assert (body["models"], body["k"]) == (["pixel", "base"], 3)
    assert body["images"] == {"done": 6, "failed": 0, "total": 6}
    # The request builds no items: the rounds are made on the default queue.
    assert body["annotation_rounds"] == [] and not Round.objects.exists()
    (message,) = OutboxMessage.objects.filter(task_name=ROUNDS_TASK)
    assert message.args == [evaluation.pk]
    assert evaluation_rounds_create(evaluation.pk) == "3 rounds"
    assert evaluation_rounds_create(evaluation.pk) == "skipped"  # a re-delivered task makes none again
    body = researcher.get(body["url"]).json()
    assert body["status"] == "annotating"
    assert sorted(body["annotation_rounds"]) == sorted(evaluation.annotation_rounds.values_list("pk", flat=True))
    assert len(body["annotation_rounds"]) == 3
    assert body["report"] == {"fresh": False, "computed_at": None, "report_judgments": None, "judgments": 0}


def test_existing_images_with_no_prompt_common_to_every_model_are_refused_in_the_request(researcher, postgres):
    prompt_set_with_images(models=["base", "pixel"], n_prompts=2, set_name="parti", skip={(0, "base"), (1, "pixel")})
    answer = researcher.post("/api/research/evaluations/", {"models": ["pixel", "base"], "prompt_set": "parti",
                                                           "from_existing": True}, format="json")
    assert answer.status_code == 400 and answer.json()["field"] == "from_existing", answer.json()
    assert "no prompt has an image from every model" in answer.json()["detail"]
    assert not EvaluationRound.objects.exists() and not OutboxMessage.objects.filter(task_name=ROUNDS_TASK).exists()


def test_an_evaluation_that_generates_queues_its_images(researcher, postgres, django_capture_on_commit_callbacks):
    prompt_set_with_images(models=["base", "pixel"], n_prompts=2, set_name="parti")
    with django_capture_on_commit_callbacks():
        answer = researcher.post("/api/research/evaluations/", {"models": ["pixel", "base"], "prompt_set": "parti",
                                                               "seed": 7, "name": "fresh images"}, format="json")
    assert answer.status_code == 202, answer.json()
    assert answer.json()["status"] == "generating" and answer.json()["name"] == "fresh images"
    assert GenerationJob.objects.filter(batch__evaluation__name="fresh images").count() == 4
    assert OutboxMessage.objects.filter(task_name__startswith="catalog.tasks.gpu_").exists()


BAD_EVALUATIONS = [
    ({"models": ["base", "nope"]}, "models"),
    ({"models": ["base"]}, "models"),
    ({"models": ["base", "base"]}, "models"),
    ({"models": "base"}, "models"),
    ({"prompt_set": "nope"}, "prompt_set"),
    ({"prompt_set": "empty"}, "prompt_set"),
    ({"limit": 0}, "limit"),
    ({"k": 0}, "k"),
    ({"k": 10**6}, "k"),
    ({"criteria": ["sharpness"]}, "criteria"),
    ({"criteria": []}, "criteria"),
    ({"seed_policy": "newest"}, "seed_policy"),
    ({"seed_policy": "any", "from_existing": False}, "seed_policy"),
    ({"name": "taken"}, "name"),
    ({"name": "n\x00"}, "name"),
    ({"models": ["base", "outside"], "from_existing": False}, "models"),
]


@pytest.mark.parametrize(("change", "field"), BAD_EVALUATIONS)
def test_a_bad_evaluation_is_a_400_naming_the_field_and_nothing_is_created(researcher, evaluation, change, field):
    PromptSetFactory(name="empty")
    ModelVersionFactory(name="outside", kind="external", local_path="")
    EvaluationRound.objects.filter(pk=evaluation.pk).update(name="taken")
    before = (EvaluationRound.objects.count(), GenerationBatch.objects.count(), Round.objects.count())
    body = {"models": ["base", "pixel"], "prompt_set": "parti-test", "from_existing": True, **change}
    answer = researcher.post("/api/research/evaluations/", body, format="json")
    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] in ("invalid", "external_model") and field in answer.json(), answer.json()
    assert (EvaluationRound.objects.count(), GenerationBatch.objects.count(), Round.objects.count()) == before


def test_the_report_is_the_stored_one_in_each_format_with_the_commands_numbers(
    researcher, evaluation, eager_tasks, django_capture_on_commit_callbacks
):
    url = f"/api/research/evaluations/{evaluation.pk}/"
    annotate_round(evaluation.annotation_rounds.get(criterion=Round.Criterion.VISUAL_FLAWS), annotators(5), choose_a)
    with django_capture_on_commit_callbacks() as asked:
        pending = researcher.get(f"{url}report/", {"format": "csv"})
    assert pending.status_code == 202 and pending["Retry-After"] == "5"
    assert pending["Content-Type"] == "application/json" and pending.json()["code"] == "report_pending"
    assert researcher.get(f"{url}chart/").status_code == 202
    assert len(asked) == 1  # one recompute asked for
    asked[0]()  # the `default` worker computes it
    assert StoredReport.objects.get(evaluation=evaluation).judgment_count == 20

    as_json = researcher.get(f"{url}report/")
    assert as_json.status_code == 200 and as_json["Content-Type"] == "application/json"
    assert as_json["X-Report-Fresh"] == "true"
    assert as_json.content.decode() == command_output(str(evaluation.pk), "--format", "json")
    assert as_json.json()["table"][0]["visual_flaws"]["a_wins"]["count"] == 4
    for fmt, content_type in (("csv", "text/csv; charset=utf-8"), ("latex", "application/x-tex; charset=utf-8"),
                              ("table", "text/plain; charset=utf-8")):
        by_query = researcher.get(f"{url}report/", {"format": fmt})
        by_accept = researcher.get(f"{url}report/", HTTP_ACCEPT=content_type.split(";")[0])
        assert by_query["Content-Type"] == by_accept["Content-Type"] == content_type
        assert by_query.content == by_accept.content
        assert by_query.content.decode() == command_output(str(evaluation.pk), "--format", fmt)
    for path in ("report/", "chart/"):
        unknown = researcher.get(f"{url}{path}", {"format": "xlsx"})
        assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"

    png = researcher.get(f"{url}chart/")
    assert png["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    svg = researcher.get(f"{url}chart/", {"format": "svg"})
    assert svg["Content-Type"] == "image/svg+xml" and b"<svg" in svg.content

    detail = researcher.get(url).json()
    assert detail["report"]["fresh"] and detail["report"]["report_judgments"] == 20

    # New judgments: the old report is served, marked stale, while a worker computes the new one.
    annotate_round(evaluation.annotation_rounds.get(criterion=Round.Criterion.VISUAL_APPEAL), annotators(5), choose_a)
    with django_capture_on_commit_callbacks() as asked:
        stale = researcher.get(f"{url}report/")
    assert stale.status_code == 200 and stale["X-Report-Fresh"] == "false"
    assert stale.json()["table"][0]["visual_appeal"]["a_wins"]["count"] == 0
    assert len(asked) == 1
    assert not researcher.get(url).json()["report"]["fresh"]


def test_report_and_chart_requests_do_not_compute(researcher, evaluation, monkeypatch):
    """Reading a stored report costs a few queries and a render, not a recompute (timed for docs, not asserted)."""
    from evaluation import services

    stored = report_refresh(evaluation=evaluation)
    assert bytes(stored.chart_png).startswith(b"\x89PNG") and b"<svg" in bytes(stored.chart_svg)

    def no_drawing(*args, **kwargs):
        raise AssertionError("a request drew a chart: charts are drawn with the report, on the default queue")

    monkeypatch.setattr(services, "win_tie_loss_chart", no_drawing)
    url = f"/api/research/evaluations/{evaluation.pk}/"
    assert researcher.get(f"{url}chart/").content == bytes(stored.chart_png)
    assert researcher.get(f"{url}chart/?format=svg").content == bytes(stored.chart_svg)
    assert page_chart(evaluation, "svg") == bytes(stored.chart_svg)
    timings = {}
    for path in ("report/", "report/?format=latex", "chart/", "chart/?format=svg"):
        started = time.perf_counter()
        answer = researcher.get(f"{url}{path}")
        timings[path] = time.perf_counter() - started
        assert answer.status_code == 200
    print(json.dumps({path: round(seconds, 3) for path, seconds in timings.items()}))
    assert not OutboxMessage.objects.filter(task_name=REFRESH).exists()  # the stored report was current


def test_unknown_evaluations_and_bad_filters_answer_json(researcher, postgres):
    for path in ("/api/research/evaluations/999999/", "/api/research/evaluations/999999/report/",
                 "/api/research/evaluations/999999/chart/?format=svg"):
        answer = researcher.get(path)
        assert answer.status_code == 404 and answer["Content-Type"] == "application/json", path
    bad = researcher.get("/api/research/evaluations/", {"batch": "x"})
    assert bad.status_code == 400 and "batch" in bad.json()


def page_chart(evaluation, fmt):
    """The report page's own chart link (the browser's, with a researcher's session)."""
    from django.test import Client
    from django.urls import reverse

    from tests.factories import ResearcherFactory

    client = Client()
    client.force_login(ResearcherFactory())
    answer = client.get(reverse("evaluation-chart", args=[evaluation.pk, fmt]))
    assert answer.status_code == 200, answer.content[:200]
    return answer.content


def test_a_report_stored_without_its_chart_gets_it_drawn_once_and_kept(researcher, evaluation):
    stored = report_refresh(evaluation=evaluation)
    StoredReport.objects.filter(pk=stored.pk).update(chart_png=None, chart_svg=None)  # stored before charts were
    png = researcher.get(f"/api/research/evaluations/{evaluation.pk}/chart/")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    stored.refresh_from_db()
    assert bytes(stored.chart_png) == png.content and stored.chart_svg is None
