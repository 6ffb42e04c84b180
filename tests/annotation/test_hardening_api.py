"""Bad input to the annotation API: always a 4xx with a machine-readable ``code`` and the field, never a 500."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from annotation.models import Item, Judgment, Round
from annotation.services import rounds
from tests.annotation.builders import alignment_round, annotators, best_worst_round, pairwise_round
from tests.annotation.test_annotation_api import Session, answer_of
from tests.factories import ResearcherFactory

pytestmark = pytest.mark.django_db


def researcher_client():
    token = Token.objects.create(user=ResearcherFactory())
    return Client(HTTP_AUTHORIZATION=f"Token {token.key}")


def patch(client, url, body):
    return client.patch(url, body, content_type="application/json")


def assert_refused(response, field, status=400, code="invalid"):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code and body["detail"], body
    if field:
        assert field in body, body


def image_ids(item):
    return [ii.image.public_id for ii in item.item_images.order_by("order")]


# --- 1: an answer value of the wrong type ---------------------------------------------------


def _wrong_types(task):
    ids = [image["id"] for image in task["images"]]
    if task["kind"] == "pairwise":
        return [{"outcome": "win", "winner": [ids[0]]}, {"outcome": "win", "winner": {"id": ids[0]}},
                {"outcome": ["win"], "winner": ids[0]}, {"outcome": "win", "winner": 7}]
    if task["kind"] == "best_worst":
        return [{"best": [ids[0]], "worst": ids[-1]}, {"best": ids[0], "worst": {"id": ids[-1]}},
                {"best": None, "worst": ids[-1]}]
    first, *rest = task["questions"]
    others = [{"question": q["id"], "answer": "yes"} for q in rest]
    return [
        {"answers": [{"question": [first["id"]], "answer": "yes"}, *others]},
        {"answers": [{"question": {"id": first["id"]}, "answer": "yes"}, *others]},
        {"answers": [{"question": float(first["id"]), "answer": "yes"}, *others]},  # 3.0 is not the id 3
        {"answers": [{"question": first["id"], "answer": ["yes"]}, *others]},
        {"answers": [{"question": True, "answer": "yes"}, *others]},
    ]


@pytest.mark.parametrize("make_round", [pairwise_round, best_worst_round, alignment_round])
def test_an_answer_value_of_the_wrong_type_is_refused_with_its_field(make_round):
    round_ = make_round(n_items=1)
    session = Session(annotators(1)[0])
    task = session.next(round_).json()["task"]
    for answer in _wrong_types(task):
        assert_refused(session.submit(task, answer), "answer")
    assert not Judgment.objects.exists()
    assert session.submit(task, answer_of(task)).status_code == 201


@pytest.mark.parametrize("make_round", [pairwise_round, best_worst_round, alignment_round])
def test_a_gold_answer_of_the_wrong_type_is_refused_with_its_field(make_round):
    round_ = make_round(n_items=1)
    item = Item.objects.get(round=round_)
    ids = image_ids(item)
    bad = {
        "pairwise": {"outcome": "win", "winner": [ids[0]]},
        "best_worst": {"best": {"id": ids[0]}, "worst": ids[-1]},
        "alignment": {"answers": [{"question": [1], "answer": "yes"}]},
    }[round_.kind]
    response = patch(researcher_client(), f"/api/research/items/{item.pk}/", {"is_gold": True, "gold_answer": bad})
    assert_refused(response, "gold_answer")
    assert Item.objects.get(pk=item.pk).is_gold is False


# --- 2: progress counts do not tell gold items apart ------------------------------------------


def test_progress_counts_change_the_same_whether_the_leased_item_is_gold_or_not():
    round_ = pairwise_round(n_items=2, gold_rate=1.0)
    gold, regular = Item.objects.filter(round=round_).order_by("id")
    rounds.item_gold_set(item=gold, is_gold=True, gold_answer={"outcome": "win", "winner": image_ids(gold)[0]})
    session = Session(annotators(1)[0])

    def counts():
        (row,) = session.get("/api/annotate/progress/").json()["rounds"]
        return row["items_total"], row["available_to_me"]

    assert counts() == (2, 2)
    first = session.next(round_).json()["task"]  # gold rate 1.0: the gold item first
    assert Item.objects.get(leases__id=first["lease"]).is_gold
    assert counts() == (2, 1)
    session.submit(first, answer_of(first))
    second = session.next(round_).json()["task"]
    assert Item.objects.get(leases__id=second["lease"]) == regular
    assert counts() == (2, 0)


# --- 3: undo after the round is closed ---------------------------------------------------------


def test_undo_after_the_round_is_closed_is_refused():
    round_ = pairwise_round(n_items=1)
    session = Session(annotators(1)[0])
    task = session.next(round_).json()["task"]
    judgment = session.submit(task, answer_of(task)).json()["judgment"]
    Round.objects.filter(pk=round_.pk).update(status=Round.Status.CLOSED)
    undo = session.post("/api/annotate/undo/", {"judgment": judgment})
    assert_refused(undo, None, status=409, code="round_closed")
    assert Judgment.objects.get(client_uuid=judgment).undone_at is None


# --- 4: a round created with a gold item -------------------------------------------------------


def test_a_round_created_through_the_api_with_a_gold_item():
    source = Item.objects.get(round=pairwise_round(n_items=1, name="source"))
    ids = image_ids(source)
    client = researcher_client()

    def create(name, **gold):
        return client.post("/api/research/rounds/", {
            "name": name, "kind": "pairwise", "criterion": "visual_flaws", "gold_rate": 0.2,
            "items": [{"prompt": source.prompt_id, "images": ids, "is_gold": True, **gold}],
        }, content_type="application/json")

    created = create("with gold", gold_answer={"outcome": "win", "winner": ids[1]})
    assert created.status_code == 201, created.content
    item = Item.objects.get(round_id=created.json()["id"])
    assert item.is_gold and item.gold_answer == {"outcome": "win", "winner": ids[1]}
    assert_refused(create("no answer"), "gold_answer")
    assert_refused(create("bad answer", gold_answer={"outcome": "win", "winner": [ids[1]]}), "gold_answer")
    assert not Round.objects.filter(name__in=["no answer", "bad answer"]).exists()


# --- 5: PATCH of a round validates every field as POST does -------------------------------------


BAD_SETTINGS = [
    ("gold_rate", 2), ("gold_rate", -0.5), ("gold_rate", "lots"), ("criterion", ""), ("criterion", "beauty"),
    ("gold_min_accuracy", 1.5), ("gold_min_accuracy", -1), ("lease_ttl_seconds", 0), ("lease_ttl_seconds", -5),
    ("lease_ttl_seconds", 10**12), ("no_majority_rule", "coin"), ("status", "paused"), ("name", ""),
    ("name", "x" * 201), ("name", "taken"),
]


@pytest.mark.parametrize(("field", "value"), BAD_SETTINGS)
def test_patching_a_round_refuses_a_bad_setting_with_its_field(field, value):
    pairwise_round(n_items=1, name="taken")
    round_ = pairwise_round(n_items=1, name="mine")
    before = Round.objects.filter(pk=round_.pk).values().get()
    response = patch(researcher_client(), f"/api/research/rounds/{round_.pk}/", {field: value})
    assert_refused(response, field)
    assert Round.objects.filter(pk=round_.pk).values().get() == before


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, v in BAD_SETTINGS if f != "status"] + [("k", 0)])
def test_creating_a_round_refuses_the_same_settings_with_their_field(field, value):
    pairwise_round(n_items=1, name="taken")
    body = {"name": "new", "kind": "pairwise", "criterion": "visual_flaws", field: value}
    response = researcher_client().post("/api/research/rounds/", body, content_type="application/json")
    assert_refused(response, field)
    assert not Round.objects.filter(name="new").exists()


def test_the_fixed_settings_of_a_round_do_not_change_on_patch():
    round_ = pairwise_round(n_items=1, k=3)
    response = patch(researcher_client(), f"/api/research/rounds/{round_.pk}/", {"k": 0, "kind": "alignment"})
    assert response.status_code == 200
    assert Round.objects.values_list("k", "kind").get(pk=round_.pk) == (3, "pairwise")


# --- 6: a non-numeric item id --------------------------------------------------------------


def test_a_non_numeric_item_id_is_not_found():
    client = researcher_client()
    assert_refused(patch(client, "/api/research/items/abc/", {"is_gold": False}), None, status=404, code="not_found")
    assert_refused(client.get("/api/research/items/abc/"), None, status=404, code="not_found")
    assert_refused(client.get("/api/research/rounds/abc/"), None, status=404, code="not_found")


# --- 12: every error body carries a code -------------------------------------------------------


def test_every_refusal_carries_a_code_and_the_field():
    round_ = pairwise_round(n_items=1)
    session = Session(annotators(1)[0])
    task = session.next(round_).json()["task"]
    assert_refused(session.post("/api/annotate/submit/", {"lease": task["lease"]}), "client_uuid")
    assert_refused(session.post("/api/annotate/submit/", csrf=False), None, status=403, code="csrf_failed")
    malformed = session.client.post("/api/annotate/submit/", "{not json", content_type="application/json",
                                    HTTP_X_CSRFTOKEN=session.token)
    assert_refused(malformed, None, code="parse_error")
    not_an_object = session.client.post("/api/annotate/undo/", "[1]", content_type="application/json",
                                        HTTP_X_CSRFTOKEN=session.token)
    assert_refused(not_an_object, "non_field_errors")
    assert_refused(Client().get("/api/annotate/progress/"), None, status=403, code="not_authenticated")
    bad_token = Client(HTTP_AUTHORIZATION="Token not-a-token").get("/api/research/rounds/")
    assert_refused(bad_token, None, status=401, code="authentication_failed")
    assert_refused(session.get("/api/research/rounds/"), None, status=403, code="permission_denied")
    assert_refused(researcher_client().get("/api/research/rounds/999999/"), None, status=404, code="not_found")
    assert_refused(researcher_client().delete(f"/api/research/rounds/{round_.pk}/"), None, status=405,
                   code="method_not_allowed")


def test_uuids_must_be_strings_and_question_ids_integers():
    round_ = pairwise_round(n_items=2)
    session = Session(annotators(1)[0])
    task = session.next(round_).json()["task"]
    body = {"client_uuid": 12345, "lease": task["lease"], "elapsed_ms": 1, "answer": answer_of(task)}
    assert_refused(session.post("/api/annotate/submit/", body), "client_uuid")
    assert_refused(session.post("/api/annotate/submit/", {**body, "client_uuid": str(uuid.uuid4()), "lease": 7}),
                   "lease")
    assert_refused(session.post(f"/api/annotate/rounds/{round_.pk}/next/", {"exclude": [3]}), "exclude")
    assert_refused(session.post("/api/annotate/undo/", {"judgment": 3}), "judgment")
    assert not Judgment.objects.exists()


def test_the_schema_says_every_error_has_a_code_and_a_400_names_its_field():
    paths = json.loads(researcher_client().get("/api/schema/?format=json").content)["paths"]
    for path, method in [("/api/annotate/submit/", "post"), ("/api/research/rounds/{id}/", "patch"),
                         ("/api/research/items/{id}/", "patch"), ("/api/research/rounds/", "post"),
                         ("/api/research/models/", "post"), ("/api/research/images/", "get"),
                         ("/api/research/prompt-sets/import/", "post"), ("/api/research/generations/", "post")]:
        responses = paths[path][method]["responses"]
        invalid = responses["400"]["content"]["application/json"]["schema"]
        assert invalid["required"] == ["detail", "code", "field"] and "additionalProperties" in invalid, path
        assert {"403", "404"} <= responses.keys(), path


def test_assorted_bad_bodies_are_refused_with_a_code_never_a_500():
    round_ = pairwise_round(n_items=2)
    item = Item.objects.filter(round=round_).first()
    session = Session(annotators(1)[0])
    task = session.next(round_).json()["task"]
    submit = {"client_uuid": str(uuid.uuid4()), "lease": task["lease"], "elapsed_ms": 1, "answer": answer_of(task)}
    annotator_posts = [
        ("/api/annotate/submit/", {**submit, "elapsed_ms": [1]}), ("/api/annotate/submit/", {**submit, "elapsed_ms": -1}),
        ("/api/annotate/submit/", {**submit, "answer": "win"}), ("/api/annotate/submit/", {**submit, "answer": None}),
        ("/api/annotate/submit/", {**submit, "next": "maybe"}), ("/api/annotate/submit/", {**submit, "exclude": "x"}),
        ("/api/annotate/submit/", {**submit, "lease": None}),
        (f"/api/annotate/rounds/{round_.pk}/next/", {"exclude": [str(uuid.uuid4())] * 21}),
        (f"/api/annotate/rounds/{round_.pk}/next/", {"exclude": {"a": 1}}),
        ("/api/annotate/undo/", {"judgment": None}), ("/api/annotate/undo/", {"judgment": str(uuid.uuid4())}),
    ]
    for url, body in annotator_posts:
        response = session.post(url, body)
        assert 400 <= response.status_code < 500 and response.json()["code"], (url, body, response.content)
    client = researcher_client()
    ids = image_ids(item)
    researcher_requests = [
        ("post", "/api/research/rounds/", {"name": "a", "kind": "pairwise", "criterion": "visual_flaws", "items": {}}),
        ("post", "/api/research/rounds/", {"name": "b", "kind": "pairwise", "criterion": "visual_flaws",
                                           "items": [{"prompt": "abc", "images": ids}]}),
        ("post", "/api/research/rounds/", {"name": "c", "kind": "pairwise", "criterion": "visual_flaws",
                                           "items": [{"prompt": item.prompt_id, "images": [1, 2]}]}),
        ("post", "/api/research/rounds/", {"name": "d", "kind": "pairwise", "criterion": "visual_flaws",
                                           "items": [{"prompt": 10**9, "images": ids}]}),
        ("post", "/api/research/rounds/", {"name": "e", "kind": "nope"}),
        ("post", "/api/research/rounds/", [1, 2]),
        ("patch", f"/api/research/items/{item.pk}/", {"is_gold": [True]}),
        ("patch", f"/api/research/items/{item.pk}/", {"is_gold": True}),
        ("patch", f"/api/research/items/{item.pk}/", {"is_gold": True, "gold_answer": "win"}),
        ("patch", f"/api/research/items/{10**12}/", {"is_gold": False}),
        ("patch", f"/api/research/rounds/{round_.pk}/", {"gold_min_accuracy": "high"}),
        ("patch", f"/api/research/rounds/{round_.pk}/", [1]),
    ]
    for method, url, body in researcher_requests:
        response = getattr(client, method)(url, body, content_type="application/json")
        assert 400 <= response.status_code < 500 and response.json()["code"], (url, body, response.content)


# --- found by the schema fuzz (tests/annotation/test_api_fuzz.py) --------------------------------


def test_an_id_no_api_route_matches_is_a_json_not_found():
    client = researcher_client()
    for url in ("/api/research/rounds/1.5/items/", "/api/research/rounds/-9e-144/aggregates/", "/api/nowhere/"):
        assert_refused(client.get(url), None, status=404, code="not_found")
    session = Session(annotators(1)[0])
    assert_refused(session.post("/api/annotate/rounds/abc/next/", {}), None, status=404, code="not_found")
