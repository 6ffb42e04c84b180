"""The admin's page of a training run: progress, curves, data, log and outcome; cancel and resume."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import timezone

from annotation.exports import preferences_export
from annotation.simulation import Policy, round_simulate, synthetic_annotators
from outbox.models import OutboxMessage
from tests.annotation.builders import pairwise_round
from tests.factories import AnnotatorFactory, ResearcherFactory
from tests.training.run_builders import PREFERENCE_KEYS, SFT_KEYS, make_run
from training.charts import Series, line_chart, nice_ticks
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

S = TrainingRun.Status


@pytest.fixture
def researcher() -> Client:
    client = Client()
    client.force_login(ResearcherFactory())
    return client


def page_of(client: Client, run: TrainingRun) -> str:
    response = client.get(f"/admin/training/trainingrun/{run.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def svgs(html: str) -> list[str]:
    return re.findall(r'<svg class="line-chart".*?</svg>', html, re.S)


def polylines(html: str) -> list[str]:
    return re.findall(r'<polyline data-series="([^"]+)"', html)


@pytest.mark.parametrize("status", [S.QUEUED, S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED])
@pytest.mark.parametrize("preference", [False, True], ids=["sft", "preference"])
def test_the_run_page_shows_status_progress_and_one_polyline_per_logged_term(researcher, status, preference):
    run = make_run(status, preference=preference)
    html = page_of(researcher, run)
    assert re.search(rf'id="run-status-badge">{run.get_status_display()}<', html)
    total = run.total_steps or run.config["max_train_steps"]  # before a worker reports, the config's
    assert re.search(rf'<progress id="run-progress" max="{total}" value="{run.step}"', html)
    if status == S.QUEUED:
        assert polylines(html) == [] and "No metrics logged yet." in html and "no report from a worker yet" in html
        return
    expected = PREFERENCE_KEYS if preference else SFT_KEYS
    assert sorted(polylines(html)) == sorted(expected)  # one polyline per term, each once
    assert f"step {run.step} / {run.total_steps} (50 %)" in html
    assert len(svgs(html)) == (6 if preference else 4)
    for chart in svgs(html):
        assert "http" not in chart and "href" not in chart and "<script" not in chart  # nothing leaves the page
    # 300 logged points reach the curve, none dropped
    loss = re.search(r'<polyline data-series="loss" points="([^"]+)"', html).group(1)
    assert len(loss.split()) == 300
    assert "2025-01-01 INFO step 3000/6000" in html  # the log tail
    assert '&quot;latent_objective&quot;: &quot;' in html  # the config, pretty JSON, escaped
    if preference:
        assert "Winner / loser errors" in html and "Implicit accuracy" in html
    else:
        assert "Winner / loser errors" not in html


def test_a_running_run_page_refreshes_itself_and_a_finished_one_does_not(researcher):
    running = make_run(S.RUNNING, progress_at=timezone.now())
    html = page_of(researcher, running)
    assert '<meta http-equiv="refresh" content="10">' in html
    assert "about 20 min left" in html  # 3,000 steps at 0.4 s
    panel = html.split('id="run-page"')[1].split("<fieldset")[0]
    assert "<script" not in panel  # the refresh needs no script
    assert "http-equiv" not in page_of(researcher, make_run(S.SUCCEEDED, n_points=5))
    assert "http-equiv" not in page_of(researcher, make_run(S.QUEUED, name="waiting"))


def test_a_failed_run_shows_its_reason_in_one_line_and_the_traceback_behind_it(researcher):
    run = make_run(S.FAILED, error="out of disk: No space left on device writing /runs/x/checkpoint-4 (OSError)",
                   error_traceback='Traceback (most recent call last):\n  File "loop.py", line 9\nOSError: [Errno 28]')
    html = page_of(researcher, run)
    error = re.search(r'<div class="run-error" id="run-error">(.*?)</div>', html, re.S).group(1)
    line = re.search(r'<p class="error-line">(.*?)</p>', error).group(1)
    assert line == "out of disk: No space left on device writing /runs/x/checkpoint-4 (OSError)"
    details = re.search(r"<details><summary>Traceback</summary>(.*?)</details>", error, re.S).group(1)
    assert "Traceback (most recent call last)" in details and "OSError: [Errno 28]" in details
    assert "Traceback (most recent call last)" not in error.replace(details, "")


def test_a_finished_run_links_its_base_and_output_model(researcher):
    from tests.factories import ModelVersionFactory

    output = ModelVersionFactory(name="tuned-output")
    run = make_run(S.SUCCEEDED, output_model=output, n_points=5)
    html = page_of(researcher, run)
    assert f'<a href="/admin/catalog/modelversion/{output.pk}/change/">tuned-output</a>' in html
    assert f'<a href="/admin/catalog/modelversion/{run.base_model_id}/change/">{run.base_model.name}</a>' in html
    # the evaluation app's section says there is no evaluation of it yet
    assert "No evaluation of this model against its base yet." in html


def test_the_dataset_section_shows_the_exports_vote_counts(researcher, settings, tmp_path):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    round_ = pairwise_round(n_items=3, k=3)
    round_simulate(round_=round_, annotators=synthetic_annotators(count=3), policy=Policy.parse("random"))
    export = preferences_export(round_=round_)
    run = make_run(S.RUNNING, dataset_path=str(export.path / "manifest.jsonl"))
    html = page_of(researcher, run)
    counts = dict(re.findall(r"<tr><th>([^<]+)</th><td>(\d+)</td></tr>", html))
    assert counts["winner/loser pairs"] == str(export.pairs)
    assert counts["ties"] == str(export.ties)
    assert counts["judgments counted"] == str(export.n_judgments)
    assert counts["synthetic judgments in the pairs"] == str(export.n_synthetic_judgments)
    assert f"Export {export.version} of round {round_.pk}" in html
    sft = page_of(researcher, make_run(S.RUNNING, name="sft-folder", dataset_path=str(tmp_path / "images")))
    assert "No preference export summary at this path" in sft


def test_the_running_run_form_is_a_record_and_a_queued_one_can_still_be_edited(researcher):
    html = page_of(researcher, make_run(S.RUNNING))
    assert 'name="dataset_path"' not in html and 'name="history"' not in html
    queued = page_of(researcher, make_run(S.QUEUED))
    assert 'name="dataset_path"' in queued and 'name="config"' in queued and 'name="history"' not in queued


def _action(client, action: str, runs) -> list[str]:
    """The messages the action left on the list page."""
    response = client.post("/admin/training/trainingrun/", {
        "action": action, "_selected_action": [run.pk for run in runs],
    }, follow=True)
    assert response.status_code == 200 and response.redirect_chain == [("/admin/training/trainingrun/", 302)]
    return [f"{m.level_tag}: {m}" for m in response.context["messages"]]


def test_cancel_and_resume_actions_change_runs_and_refuse_the_wrong_state_with_a_message(researcher):
    queued, running = make_run(S.QUEUED), make_run(S.RUNNING)
    succeeded = make_run(S.SUCCEEDED, n_points=5)
    assert _action(researcher, "cancel_runs_action", [queued, running, succeeded]) == [
        f"error: run {succeeded.pk} '{succeeded.name}' is succeeded; only a queued or running run can be cancelled "
        "(not_cancellable)",
        f"success: Cancelled (a running run stops at its next step; its checkpoints stay): {queued.name}, {running.name}",
    ]
    queued.refresh_from_db(), running.refresh_from_db(), succeeded.refresh_from_db()
    assert queued.status == S.CANCELLED and running.status == S.RUNNING and running.cancel_requested_at is not None
    assert succeeded.status == S.SUCCEEDED

    assert _action(researcher, "resume_runs_action", [queued, running]) == [
        f"error: run {running.pk} '{running.name}' is running; only a cancelled or failed run can be resumed (not_resumable)",
        f"success: Queued again (each goes on from its latest checkpoint): {queued.name}",
    ]
    queued.refresh_from_db()
    assert queued.status == S.QUEUED and queued.cancel_requested_at is None
    assert list(OutboxMessage.objects.values_list("task_name", "args")) == [("training.tasks.gpu_train_run", [queued.pk])]


def test_an_annotator_cannot_reach_the_run_or_model_pages():
    run = make_run(S.RUNNING)
    client = Client()
    client.force_login(AnnotatorFactory())
    for url in (f"/admin/training/trainingrun/{run.pk}/change/", f"/admin/catalog/modelversion/{run.base_model_id}/change/",
                "/admin/training/trainingrun/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    response = client.post("/admin/training/trainingrun/", {"action": "cancel_runs_action", "_selected_action": [run.pk]})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested_at is None


def test_line_chart_draws_one_polyline_per_series_and_escapes_names():
    svg = line_chart([Series("loss", [(1, 0.5), (2, float("nan")), (3, 0.25)]), Series("<b>", [(1, 1.0)]),
                      Series("empty", [(1, None)])], title="Loss & co")
    assert svg.count("<polyline") == 2  # a series with no finite point draws nothing
    assert re.search(r'data-series="loss" points="\S+ \S+"', svg)  # the NaN point is left out
    assert "&lt;b&gt;" in svg and "<b>" not in svg and "Loss &amp; co" in svg
    assert "no points yet" in line_chart([], title="empty")
    assert nice_ticks(0.0, 1.0) == [0.0, 0.5, 1.0] and nice_ticks(0.13, 0.71) == pytest.approx([0.2, 0.4, 0.6])
