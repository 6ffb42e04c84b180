"""The report while judging is under way: every undefined number shows as a dash, on the page and in every download."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from annotation.models import Item
from evaluation.report_format import MISSING
from evaluation.models import StoredReport
from evaluation.services import evaluation_start, report_refresh
from evaluation.views import EXPORTS
from tests.evaluation.builders import annotators, bulk_judgments, bulk_prompt_set
from tests.factories import ResearcherFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def evaluation():
    prompt_set, versions, _ = bulk_prompt_set(models=["base", "tuned"], n_prompts=4, with_questions=True)
    return evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation


def judge_one_item(evaluation, username: str) -> None:
    """One vote on one visual-flaws item: the annotator has judged, no item is complete (K > 1)."""
    assert evaluation.k > 1
    round_ = evaluation.annotation_rounds.get(criterion="visual_flaws")
    item = Item.objects.filter(round=round_).order_by("id").first()
    bulk_judgments(round_, {item.id: ["A"]}, annotators(1, username=username))


def assert_page_and_downloads_render(evaluation) -> str:
    report_refresh(evaluation=evaluation)  # what the `default` worker does
    client = Client()
    client.force_login(ResearcherFactory())
    page = client.get(f"/evaluation/{evaluation.pk}/")
    assert page.status_code == 200
    for ext in EXPORTS:
        download = client.get(f"/evaluation/{evaluation.pk}/report.{ext}")
        assert download.status_code == 200, ext
        assert "None" not in download.content.decode() or ext == "json", ext
    for fmt in ("png", "svg"):
        assert client.get(f"/evaluation/{evaluation.pk}/chart.{fmt}").status_code == 200
    return page.content.decode()


def annotator_row(html: str, username: str) -> str:
    start = html.index(f'<td class="model">{username}')
    return html[start: html.index("</tr>", start)]


def test_report_page_renders_while_an_annotator_has_judged_but_no_item_is_complete(evaluation):
    judge_one_item(evaluation, "early-bird")
    html = assert_page_and_downloads_render(evaluation)
    row = annotator_row(html, "early-bird")
    assert MISSING in row and "None" not in row


def test_report_page_renders_the_excluded_annotators_row(evaluation, monkeypatch):
    judge_one_item(evaluation, "careless")
    careless = get_user_model().objects.get(username="careless")
    monkeypatch.setattr("evaluation.selectors.annotators_excluded", lambda *, round_, **_: {careless.id})
    html = assert_page_and_downloads_render(evaluation)
    row = annotator_row(html, "1 annotators excluded for gold accuracy")
    assert MISSING in row and "None" not in row


def test_report_with_no_judgments_renders(evaluation):
    html = assert_page_and_downloads_render(evaluation)
    assert "Visual Flaws" in html


def _statistics_to_none(value):
    """Every rate, interval bound, p-value and coefficient undefined (counts stay counts)."""
    if isinstance(value, dict):
        return {k: _statistics_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_statistics_to_none(v) for v in value]
    return None if isinstance(value, float) else value


def test_a_report_with_every_statistic_undefined_still_renders(evaluation):
    judge_one_item(evaluation, "early-bird")
    report_refresh(evaluation=evaluation)
    stored = StoredReport.objects.get(evaluation=evaluation)
    stored.data = _statistics_to_none(stored.data) | {"evaluation": stored.data["evaluation"]}
    stored.save(update_fields=["data"])
    client = Client()
    client.force_login(ResearcherFactory())
    page = client.get(f"/evaluation/{evaluation.pk}/")
    assert page.status_code == 200
    assert "None" not in page.content.decode()
    for ext in EXPORTS:
        download = client.get(f"/evaluation/{evaluation.pk}/report.{ext}")
        assert download.status_code == 200, ext
        assert "None" not in download.content.decode(), ext
    for fmt in ("png", "svg"):
        assert client.get(f"/evaluation/{evaluation.pk}/chart.{fmt}").status_code == 200


def test_agreement_intervals_print_as_coefficients_not_percent():
    from evaluation.templatetags.evaluation_report import interval, number_interval

    cell = {"low": 0.333, "high": 1.0}
    assert number_interval(cell) == "[0.333, 1.000]"
    assert interval(cell) != number_interval(cell)
    assert number_interval({"low": None, "high": 1.0}) == ""
