"""The admin: researchers see rounds, items with their aggregate, judgments; the export action writes a dataset."""

from __future__ import annotations

import pytest
from django.test import Client

from annotation.models import Item, Round
from annotation.simulation import Policy, round_simulate, synthetic_annotators
from tests.annotation.builders import pairwise_round
from tests.factories import ResearcherFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher_client():
    client = Client()
    client.force_login(ResearcherFactory())
    return client


def test_admin_pages_show_rounds_items_aggregates_and_judgments(researcher_client):
    round_ = pairwise_round(n_items=2, k=3)
    round_simulate(round_=round_, annotators=synthetic_annotators(count=3), policy=Policy.parse("random"))
    for url in ("/admin/annotation/round/", "/admin/annotation/item/", "/admin/annotation/judgment/",
                "/admin/annotation/aggregate/", "/admin/annotation/lease/", "/admin/annotation/annotatorprofile/",
                "/admin/annotation/aggregate/?no_majority__exact=1", "/admin/annotation/item/?q=photo"):
        assert researcher_client.get(url).status_code == 200, url
    item = Item.objects.filter(round=round_).first()
    page = researcher_client.get(f"/admin/annotation/item/{item.pk}/change/")
    assert page.status_code == 200
    assert item.aggregate.get_outcome_display().encode() in page.content


def test_export_action(researcher_client, settings, tmp_path):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    round_ = pairwise_round(n_items=2, k=3)
    round_simulate(round_=round_, annotators=synthetic_annotators(count=3), policy=Policy.parse("random"))
    response = researcher_client.post("/admin/annotation/round/", {
        "action": "export_preferences_action", "_selected_action": [round_.pk],
    }, follow=True)
    assert response.status_code == 200
    assert b"synthetic judgments" in response.content
    datasets = list((tmp_path / "artifacts" / "preferences").glob(f"round-{round_.pk}-*"))
    assert len(datasets) == 1 and (datasets[0] / "manifest.jsonl").exists()
    assert Round.objects.count() == 1
