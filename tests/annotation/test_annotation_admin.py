"""The admin: researchers see rounds, items with their aggregate, judgments; the export action writes a dataset."""

from __future__ import annotations

import pytest
from django.test import Client

from annotation.models import Aggregate, Item, Round
from annotation.simulation import Policy, round_simulate, synthetic_annotators
from tests.annotation.builders import gold_round_with_a_failing_annotator, pairwise_round
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


def test_changing_the_gold_threshold_in_the_admin_re_aggregates_the_round(researcher_client):
    round_, regular, _people = gold_round_with_a_failing_annotator()
    assert Aggregate.objects.get(item=regular).n_excluded == 0
    response = researcher_client.post(f"/admin/annotation/round/{round_.pk}/change/", {
        "name": round_.name, "criterion": round_.criterion, "lease_ttl_seconds": round_.lease_ttl_seconds,
        "no_majority_rule": round_.no_majority_rule, "gold_rate": round_.gold_rate, "gold_min_accuracy": "0.5",
        "status": round_.status,
    })
    assert response.status_code == 302, response.content
    assert Round.objects.get(pk=round_.pk).gold_min_accuracy == 0.5
    aggregate = Aggregate.objects.get(item=regular)
    assert (aggregate.n_excluded, aggregate.n_used) == (1, 2)
