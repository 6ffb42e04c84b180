"""The annotator pages: who may open them, and what they hand to the page's script."""

from __future__ import annotations

import json
import re

import pytest

from annotation.models import ItemImage
from annotation.services import assignment
from tests.annotation.builders import alignment_round, pairwise_round
from tests.factories import AnnotatorFactory, ResearcherFactory

pytestmark = pytest.mark.django_db


def task_config(response):
    match = re.search(r'<script id="task-config" type="application/json">(.*?)</script>', response.content.decode())
    return json.loads(match.group(1))


def test_annotator_gets_the_page_of_the_round_kind(client):
    round_ = pairwise_round(n_items=1)
    client.force_login(AnnotatorFactory())
    response = client.get(f"/annotate/pairwise/{round_.pk}/")
    assert response.status_code == 200
    assert "annotation/pairwise.html" in [t.name for t in response.templates]
    config = task_config(response)
    assert config == {
        "round": round_.pk,
        "kind": "pairwise",
        "criteria": {
            "visual_flaws": {"label": "Visual flaws", "question": "Which image has fewer visual flaws?"},
            "visual_appeal": {"label": "Visual appeal", "question": "Which image is more visually appealing?"},
        },
        "urls": {
            "next": f"/api/annotate/rounds/{round_.pk}/next/",
            "submit": "/api/annotate/submit/",
            "undo": "/api/annotate/undo/",
            "skip": "/api/annotate/skip/",
            "progress": "/api/annotate/progress/",
        },
        "skip_reasons": [
            {"code": "image_does_not_load", "label": "The image does not load"},
            {"code": "cannot_judge", "label": "I cannot judge this item"},
            {"code": "not_my_expertise", "label": "Not my expertise"},
        ],
    }
    # The round's name is the researchers' and may name the models: the page never carries it.
    assert round_.name not in response.content.decode()


def test_a_page_of_the_wrong_kind_redirects_to_the_right_one(client):
    round_ = alignment_round(n_items=1)
    client.force_login(AnnotatorFactory())
    response = client.get(f"/annotate/pairwise/{round_.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/annotate/alignment/{round_.pk}/"


def test_closed_or_unknown_rounds_are_not_found(client):
    round_ = pairwise_round(n_items=1, status="closed")
    client.force_login(AnnotatorFactory())
    assert client.get(f"/annotate/pairwise/{round_.pk}/").status_code == 404
    assert client.get("/annotate/pairwise/999999/").status_code == 404


def test_only_annotators_open_task_pages(client):
    round_ = pairwise_round(n_items=1)
    assert client.get(f"/annotate/pairwise/{round_.pk}/")["Location"].startswith("/accounts/login/")
    client.force_login(ResearcherFactory())
    assert client.get(f"/annotate/pairwise/{round_.pk}/").status_code == 403


def test_dashboard_and_guidelines(client, settings):
    settings.ANNOTATION_UNDO_SECONDS = 45
    client.force_login(AnnotatorFactory())
    home = client.get("/")
    assert home.status_code == 200 and b'id="dashboard-config"' in home.content
    assert b"Admin" not in home.content  # the researcher links are for researchers
    guidelines = client.get("/guidelines/").content.decode()
    for topic in ("Visual flaws", "Visual appeal", "Photorealistic vs stylized", "Fewest visual flaws decides first", "literally"):
        assert topic in guidelines
    assert "within 45 seconds" in guidelines


def test_an_annotator_removed_from_the_group_cannot_fetch_images_they_had_leased(client):
    round_ = pairwise_round(n_items=1)
    person = AnnotatorFactory()
    task = assignment.item_next_for_annotator(round_=round_, annotator=person)
    url = f"/img/{ItemImage.objects.filter(item_id=task.lease.item_id).first().public_id}.png"
    client.force_login(person)
    assert client.get(url).status_code == 200
    person.groups.clear()
    assert client.get(url).status_code == 404
