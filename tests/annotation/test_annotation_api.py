"""The HTTP API: the contract in docs/annotation-api.md, blinding, roles, CSRF and rate limiting."""

from __future__ import annotations

import json
import uuid

import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from rest_framework.authtoken.models import Token

from annotation.models import Aggregate, Item, Judgment, Lease, Round
from catalog.models import Image
from tests.annotation.builders import (
    alignment_round,
    annotators,
    best_worst_round,
    gold_round_with_a_failing_annotator,
    pairwise_round,
)
from tests.factories import ResearcherFactory

pytestmark = pytest.mark.django_db

SECRETS = ("base-model-secret", "pixel-dpo-secret", "bw-model-secret", "align-model-secret", "/models/", "images/")


class Session:
    """A browser-like client: CSRF checks on, token sent the way the UI sends it."""

    def __init__(self, user):
        self.client = Client(enforce_csrf_checks=True)
        self.client.force_login(user)
        self.token = _get_new_csrf_string()
        self.client.cookies["csrftoken"] = self.token

    def get(self, url):
        return self.client.get(url)

    def post(self, url, body=None, csrf=True):
        headers = {"HTTP_X_CSRFTOKEN": self.token} if csrf else {}
        return self.client.post(url, json.dumps(body or {}), content_type="application/json", **headers)

    def next(self, round_, exclude=()):
        return self.post(f"/api/annotate/rounds/{round_.pk}/next/", {"exclude": [str(e) for e in exclude]})

    def submit(self, task, answer, client_uuid=None, elapsed_ms=1500):
        return self.post("/api/annotate/submit/", {
            "client_uuid": str(client_uuid or uuid.uuid4()), "lease": task["lease"], "elapsed_ms": elapsed_ms,
            "answer": answer,
        })


def answer_of(task):
    ids = [image["id"] for image in task["images"]]
    if task["kind"] == "pairwise":
        return {"outcome": "win", "winner": ids[0]}
    if task["kind"] == "best_worst":
        return {"best": ids[0], "worst": ids[-1]}
    return {"answers": [{"question": q["id"], "answer": "yes"} for q in task["questions"]]}


def assert_blind(payload):
    text = json.dumps(payload)
    for secret in SECRETS:
        assert secret not in text
    for key in ("model", "seed", "path", "file", "sha256", "gold", "counts", "votes"):
        assert f'"{key}' not in text


@pytest.mark.parametrize("make_round", [pairwise_round, best_worst_round, alignment_round])
def test_next_submit_undo_progress_for_each_kind(make_round):
    round_ = make_round(n_items=2)
    (person,) = annotators(1)
    session = Session(person)
    response = session.next(round_)
    assert response.status_code == 200
    task = response.json()["task"]
    assert set(task) == {"lease", "round", "kind", "criterion", "expires_at", "prompt", "images", "choices", "questions"}
    assert_blind(response.json())
    for image in task["images"]:
        assert image["url"] == f"/img/{image['id']}.png"
    if task["kind"] == "pairwise":
        assert task["prompt"] is None and task["choices"] == ["left", "tie", "right"]
    else:
        assert task["prompt"]
    if task["kind"] == "alignment":
        assert [q["parents"] for q in task["questions"]] == [[], [task["questions"][0]["id"]]]

    key = uuid.uuid4()
    created = session.submit(task, answer_of(task), client_uuid=key)
    assert created.status_code == 201, created.content
    assert created.json()["judgment"] == str(key) and created.json()["replayed"] is False
    retried = session.submit(task, answer_of(task), client_uuid=key)
    assert (retried.status_code, retried.json()["replayed"]) == (200, True)
    assert Judgment.objects.count() == 1

    undone = session.post("/api/annotate/undo/", {"judgment": str(key)})
    assert undone.status_code == 200
    assert undone.json()["task"]["lease"] == task["lease"]
    assert [i["id"] for i in undone.json()["task"]["images"]] == [i["id"] for i in task["images"]]

    progress = session.get("/api/annotate/progress/").json()
    assert progress["judged_total"] == 0
    assert progress["rounds"][0]["id"] == round_.pk and progress["rounds"][0]["items_total"] == 2
    assert "name" not in progress["rounds"][0]  # researchers' free text, which may name models
    assert_blind(progress)


@pytest.mark.parametrize("make_round", [pairwise_round, best_worst_round, alignment_round])
def test_submit_with_next_returns_the_next_task(make_round):
    round_ = make_round(n_items=3, k=1)
    (person,) = annotators(1)
    session = Session(person)
    first = session.next(round_).json()["task"]
    preloaded = session.next(round_, exclude=[first["lease"]]).json()["task"]
    body = {"client_uuid": str(uuid.uuid4()), "lease": first["lease"], "elapsed_ms": 10, "answer": answer_of(first),
            "next": True, "exclude": [preloaded["lease"]]}
    response = session.post("/api/annotate/submit/", body)
    assert response.status_code == 201, response.content
    nxt = response.json()["next"]
    assert nxt["lease"] not in (first["lease"], preloaded["lease"])
    assert set(nxt) == {"lease", "round", "kind", "criterion", "expires_at", "prompt", "images", "choices", "questions"}
    assert_blind(response.json())
    leased = Lease.objects.filter(annotator=person, state="held").values_list("item_id", flat=True)
    assert sorted(leased) == sorted(Item.objects.filter(round=round_).exclude(judgments__isnull=False).values_list("id", flat=True))
    # A retry is replayed and hands back the held lease that is not excluded.
    retried = session.post("/api/annotate/submit/", body)
    assert (retried.status_code, retried.json()["replayed"], retried.json()["next"]["lease"]) == (200, True, nxt["lease"])
    # Without "next" the answer has no "next" key; with nothing left, "next" is null.
    plain = session.submit(preloaded, answer_of(preloaded))
    assert plain.status_code == 201 and "next" not in plain.json()
    last = session.post("/api/annotate/submit/", {"client_uuid": str(uuid.uuid4()), "lease": nxt["lease"],
                                                  "elapsed_ms": 10, "answer": answer_of(nxt), "next": True})
    assert last.status_code == 201 and last.json()["next"] is None
    assert Judgment.objects.filter(annotator=person).count() == 3


def test_submission_to_a_closed_round_is_refused():
    round_ = pairwise_round(n_items=1)
    session = Session(annotators(1)[0])
    task = session.next(round_).json()["task"]
    round_.status = "closed"
    round_.save(update_fields=["status"])
    refused = session.submit(task, answer_of(task))
    assert refused.status_code == 409 and refused.json()["code"] == "round_closed"
    assert Judgment.objects.count() == 0


def test_appeal_items_offer_cannot_compare():
    round_ = pairwise_round(n_items=1, criterion="visual_appeal")
    task = Session(annotators(1)[0]).next(round_).json()["task"]
    assert task["choices"] == ["left", "tie", "right", "cannot_compare"]


def test_nothing_left_and_closed_round():
    round_ = pairwise_round(n_items=1, k=1)
    a, b = annotators(2)
    Session(a).next(round_)
    assert Session(b).next(round_).json() == {"task": None, "reason": "no_items_left"}
    closed = pairwise_round(n_items=1, status="closed")
    assert Session(b).next(closed).status_code == 404


def test_errors_name_the_field_and_code():
    round_ = pairwise_round(n_items=1)
    session = Session(annotators(1)[0])
    task = session.next(round_).json()["task"]
    bad = session.submit(task, {"outcome": "win", "winner": "deadbeef"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid" and "answer" in bad.json()
    missing = session.post("/api/annotate/submit/", {"lease": task["lease"]})
    assert missing.status_code == 400 and "client_uuid" in missing.json()
    unknown = session.submit({"lease": str(uuid.uuid4())}, {"outcome": "tie"})
    assert unknown.status_code == 404


def test_annotators_never_see_other_annotators_votes():
    round_ = pairwise_round(n_items=1, k=5)
    first, second = annotators(2)
    one = Session(first)
    task = one.next(round_).json()["task"]
    one.submit(task, answer_of(task))
    two = Session(second)
    responses = [two.next(round_).json(), two.get("/api/annotate/progress/").json()]
    for payload in responses:
        text = json.dumps(payload)
        assert first.username not in text
        assert str(Judgment.objects.get().client_uuid) not in text
        assert_blind(payload)
    assert responses[1]["rounds"][0]["judged_by_me"] == 0


def test_csrf_is_enforced_on_session_posts():
    round_ = pairwise_round(n_items=1)
    session = Session(annotators(1)[0])
    assert session.post(f"/api/annotate/rounds/{round_.pk}/next/", csrf=False).status_code == 403
    task = session.next(round_).json()["task"]
    response = session.post("/api/annotate/submit/", {
        "client_uuid": str(uuid.uuid4()), "lease": task["lease"], "elapsed_ms": 1, "answer": answer_of(task),
    }, csrf=False)
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert not Judgment.objects.exists()


def test_submissions_are_rate_limited(settings):
    settings.ANNOTATION_SUBMIT_RATE = 0.01
    settings.ANNOTATION_SUBMIT_BURST = 1.0
    round_ = pairwise_round(n_items=3)
    session = Session(annotators(1)[0])
    first = session.next(round_).json()["task"]
    assert session.submit(first, answer_of(first)).status_code == 201
    second = session.next(round_).json()["task"]
    throttled = session.submit(second, answer_of(second))
    assert throttled.status_code == 429 and throttled.json()["code"] == "throttled"
    assert int(throttled["Retry-After"]) >= 1
    assert Judgment.objects.count() == 1


def test_annotators_cannot_reach_researcher_endpoints_or_the_admin():
    round_ = pairwise_round(n_items=1)
    session = Session(annotators(1)[0])
    for url in ("/api/research/rounds/", f"/api/research/rounds/{round_.pk}/judgments/",
                f"/api/research/rounds/{round_.pk}/aggregates/", "/api/schema/"):
        assert session.get(url).status_code == 403, url
    assert session.post(f"/api/research/rounds/{round_.pk}/export/").status_code == 403
    for url in ("/admin/", "/admin/annotation/judgment/"):
        response = session.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    anonymous = Client()
    assert anonymous.get("/api/annotate/progress/").status_code == 403
    assert anonymous.get("/api/research/rounds/").status_code in (401, 403)


def test_researcher_without_annotator_role_cannot_annotate():
    round_ = pairwise_round(n_items=1)
    assert Session(ResearcherFactory()).next(round_).status_code == 403


def test_a_role_taken_away_takes_effect_on_the_next_request():
    round_ = pairwise_round(n_items=3)
    (person,) = annotators(1)
    session = Session(person)
    assert session.next(round_).status_code == 200
    person.groups.clear()
    assert session.next(round_).status_code == 403
    assert session.get("/api/annotate/progress/").status_code == 403


class TestImages:
    def test_annotator_sees_only_images_of_items_leased_to_them(self):
        round_ = pairwise_round(n_items=2, k=5)
        a, b = annotators(2)
        session = Session(a)
        task = session.next(round_).json()["task"]
        response = session.get(task["images"][0]["url"])
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png" and "private" in response["Cache-Control"]
        assert b"".join(response.streaming_content).startswith(b"\x89PNG")
        leased_item = Lease.objects.get(pk=task["lease"]).item_id
        unleased = Item.objects.filter(round=round_).exclude(pk=leased_item).get().item_images.first().public_id
        assert Session(b).get(f"/img/{unleased}.png").status_code == 404  # b holds no lease yet
        assert session.get(f"/img/{unleased}.png").status_code == 404
        # The catalog's id of an image the annotator holds opens nothing: annotators know only the item's ids.
        catalog_id = Item.objects.get(pk=leased_item).item_images.first().image.public_id
        assert session.get(f"/img/{catalog_id}.png").status_code == 404
        assert session.get("/img/0123456789abcdef01234567.png").status_code == 404

    def test_login_required_and_researchers_see_all(self):
        round_ = pairwise_round(n_items=1)
        shown = Item.objects.get(round=round_).item_images.first()
        for public_id in (shown.public_id, shown.image.public_id):  # the item's id, and the catalog's
            anonymous = Client().get(f"/img/{public_id}.png")
            assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
            assert Session(ResearcherFactory()).get(f"/img/{public_id}.png").status_code == 200


class TestResearcherAPI:
    def client(self):
        researcher = ResearcherFactory()
        token = Token.objects.create(user=researcher)
        return Client(HTTP_AUTHORIZATION=f"Token {token.key}")

    def test_token_auth_lists_rounds_items_judgments_aggregates(self):
        round_ = pairwise_round(n_items=2, k=1)
        session = Session(annotators(1)[0])
        task = session.next(round_).json()["task"]
        session.submit(task, answer_of(task))
        client = self.client()
        assert client.get("/api/research/rounds/").json()["results"][0]["item_count"] == 2
        items = client.get(f"/api/research/rounds/{round_.pk}/items/").json()["results"]
        assert {image["model"] for image in items[0]["images"]} == {"base-model-secret", "pixel-dpo-secret"}
        judgments = client.get(f"/api/research/rounds/{round_.pk}/judgments/").json()["results"]
        # Exports name images by catalog id, the layout too; the task showed the item's ids.
        catalog = {image["shown_id"]: image["id"] for item in items for image in item["images"]}
        assert judgments[0]["layout"] == [catalog[i["id"]] for i in task["images"]]
        assert judgments[0]["winner"] in judgments[0]["layout"]
        aggregates = client.get(f"/api/research/rounds/{round_.pk}/aggregates/").json()["results"]
        assert sorted(a["n_judgments"] for a in aggregates) == [0, 1]
        summary = client.post(f"/api/research/rounds/{round_.pk}/aggregate/").json()
        assert summary["complete"] == 1 and summary["pairs"] == 1

    def test_create_round_with_items_and_mark_gold(self):
        base = pairwise_round(n_items=1, name="source")
        item = Item.objects.get(round=base)
        ids = [ii.image.public_id for ii in item.item_images.order_by("order")]
        client = self.client()
        created = client.post("/api/research/rounds/", {
            "name": "via api", "kind": "pairwise", "criterion": "visual_appeal", "k": 3,
            "items": [{"prompt": item.prompt_id, "images": ids}],
        }, content_type="application/json")
        assert created.status_code == 201, created.content
        new_item = Item.objects.get(round_id=created.json()["id"])
        patched = client.patch(f"/api/research/items/{new_item.pk}/", {
            "is_gold": True, "gold_answer": {"outcome": "win", "winner": ids[1]},
        }, content_type="application/json")
        assert patched.status_code == 200 and patched.json()["is_gold"] is True
        bad = client.patch(f"/api/research/items/{new_item.pk}/", {
            "is_gold": True, "gold_answer": {"outcome": "win", "winner": "nope"},
        }, content_type="application/json")
        assert bad.status_code == 400 and "gold_answer" in bad.json()
        no_criterion = client.post("/api/research/rounds/", {"name": "x", "kind": "pairwise"}, content_type="application/json")
        assert no_criterion.status_code == 400

    def test_patching_the_gold_threshold_re_aggregates_the_round(self):
        round_, regular, _people = gold_round_with_a_failing_annotator()
        assert Aggregate.objects.get(item=regular).n_excluded == 0  # no threshold yet
        client = self.client()
        patched = client.patch(f"/api/research/rounds/{round_.pk}/", {"gold_min_accuracy": 0.5},
                               content_type="application/json")
        assert patched.status_code == 200 and patched.json()["gold_min_accuracy"] == 0.5
        aggregate = Aggregate.objects.get(item=regular)
        assert (aggregate.n_excluded, aggregate.n_used, aggregate.counts["b"]) == (1, 2, 0)

    def test_patch_refuses_a_bad_setting_with_its_field(self):
        round_ = pairwise_round(n_items=1)
        bad = self.client().patch(f"/api/research/rounds/{round_.pk}/", {"criterion": ""},
                                  content_type="application/json")
        assert bad.status_code == 400 and bad.json()["code"] == "invalid" and "criterion" in bad.json()
        assert Round.objects.get(pk=round_.pk).criterion == "visual_flaws"

    def test_creating_a_round_looks_its_images_up_once_not_per_item(self):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        def image_lookups(n_items):
            source = pairwise_round(n_items=n_items, name=f"source-{n_items}")
            items = [
                {"prompt": item.prompt_id, "images": [ii.image.public_id for ii in item.item_images.order_by("order")]}
                for item in Item.objects.filter(round=source).order_by("id")
            ]
            client = self.client()
            with CaptureQueriesContext(connection) as queries:
                created = client.post("/api/research/rounds/", {
                    "name": f"copy-{n_items}", "kind": "pairwise", "criterion": "visual_flaws", "items": items,
                }, content_type="application/json")
            assert created.status_code == 201, created.content
            lookup = f'"{Image._meta.db_table}"."public_id" IN'
            return sum(lookup in q["sql"] for q in queries.captured_queries)

        assert image_lookups(1) == image_lookups(12) == 1

    def test_a_bad_round_spec_names_its_field(self):
        source = pairwise_round(n_items=1, name="source")
        item = Item.objects.get(round=source)
        ids = [ii.image.public_id for ii in item.item_images.order_by("order")]
        client = self.client()
        three = client.post("/api/research/rounds/", {
            "name": "three", "kind": "pairwise", "criterion": "visual_flaws",
            "items": [{"prompt": item.prompt_id, "images": ids + ids[:1]}],
        }, content_type="application/json")
        assert three.status_code == 400 and three.json()["code"] == "invalid"
        assert "appears twice" in three.json()["items"][0]
        unknown = client.post("/api/research/rounds/", {
            "name": "unknown", "kind": "pairwise", "criterion": "visual_flaws",
            "items": [{"prompt": item.prompt_id, "images": [ids[0], "0" * 24]}],
        }, content_type="application/json")
        assert unknown.status_code == 400 and "unknown images" in unknown.json()["items"][0]
        assert not Round.objects.filter(name__in=["three", "unknown"]).exists()

    def test_refusals_from_any_endpoint_share_one_shape(self):
        # The export of an alignment round is refused by the service; the one exception handler answers.
        round_ = alignment_round(n_items=1)
        refused = self.client().post(f"/api/research/rounds/{round_.pk}/export/")
        assert refused.status_code == 400
        assert refused.json() == {
            "detail": refused.json()["detail"], "code": "invalid", "field": "round", "round": [refused.json()["detail"]],
        }
        # DRF's own exceptions answer the same shape.
        missing = self.client().get("/api/research/rounds/999999/")
        assert missing.status_code == 404 and missing.json() == {"detail": missing.json()["detail"], "code": "not_found"}

    def test_openapi_schema_lists_the_endpoints(self):
        schema = self.client().get("/api/schema/?format=json")
        assert schema.status_code == 200
        paths = json.loads(schema.content)["paths"]
        for path in ("/api/annotate/submit/", "/api/annotate/undo/", "/api/annotate/progress/",
                     "/api/annotate/rounds/{round_id}/next/", "/api/research/rounds/{id}/export/"):
            assert path in paths
