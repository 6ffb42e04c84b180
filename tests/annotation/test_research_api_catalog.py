"""The research API's catalog resources: models, prompt sets, images, generation requests.

Against PostgreSQL: roles (anonymous and annotators get nothing), bad input (a 400 with code and field,
never a 5xx), and each happy path through the same services the management commands call.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from annotation.models import ItemImage
from catalog.generation import GENERATE_TASK, POOL_REQUEST_TASK
from catalog.tasks import import_run, pool_generation_request_create
from catalog.models import GenerationJob, Image, ImportJob, ModelVersion, Prompt, PromptSet
from catalog.imports import IMPORT_TASK
from outbox.models import OutboxMessage
from tests.annotation.builders import pairwise_round
from tests.catalog.test_register_model import make_pipeline_dir
from tests.factories import (
    AnnotatorFactory, ImageFactory, ModelVersionFactory, PromptFactory, PromptSetFactory, ResearcherFactory, png_bytes,
)
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/api/research/models/"),
    ("get", "/api/research/models/{model}/"),
    ("post", "/api/research/models/"),
    ("get", "/api/research/prompt-sets/"),
    ("get", "/api/research/prompt-sets/{prompt_set}/"),
    ("post", "/api/research/prompt-sets/import/"),
    ("get", "/api/research/images/"),
    ("post", "/api/research/images/import/"),
    ("post", "/api/research/generations/"),
    ("get", "/api/research/generations/progress/"),
    ("get", "/api/research/imports/"),
    ("get", "/api/research/imports/{job}/"),
]


@pytest.fixture
def researcher(postgres):
    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=ResearcherFactory()).key}")


def _refusal(response, status, field):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == "invalid" and body["field"] == field and body[field] and body["detail"]
    return body


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_and_annotators_get_no_data(postgres, method, path):
    model = ModelVersionFactory(name="secret-model")
    prompt_set = PromptSetFactory(name="secret-set")
    ImageFactory(model_version=model, prompt=PromptFactory(prompt_set=prompt_set))
    job = ImportJob.objects.create(kind="prompts", upload_name="secret-file.jsonl", status="failed",
                                   error={"detail": "secret-file.jsonl:1: field 'prompt': empty"})
    path = path.format(model=model.pk, prompt_set=prompt_set.pk, job=job.pk)
    anonymous = getattr(Client(), method)(path)
    assert anonymous.status_code in (401, 403) and anonymous.json()["code"] == "not_authenticated"
    annotator = Client()
    annotator.force_login(AnnotatorFactory())
    refused = getattr(annotator, method)(path)
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
    assert b"secret" not in anonymous.content + refused.content
    wrong_token = getattr(Client(HTTP_AUTHORIZATION="Token " + "0" * 40), method)(path)
    assert wrong_token.status_code == 401 and wrong_token.json()["code"] == "authentication_failed"


# --- models -------------------------------------------------------------------------------------


def test_models_list_and_detail_show_lineage_and_the_run_that_made_each(researcher):
    base = ModelVersionFactory(name="base")
    child = ModelVersionFactory(name="round-1", parent=base)
    grandchild = ModelVersionFactory(name="round-2", parent=child)
    run = TrainingRun.objects.create(name="r2", base_model=child, dataset_path="p.jsonl", output_model=grandchild)
    listed = researcher.get("/api/research/models/?ordering=name").json()
    assert [m["name"] for m in listed["results"]] == ["base", "round-1", "round-2"] and listed["count"] == 3
    assert listed["results"][2]["parent"] == "round-1" and listed["results"][2]["produced_by"] == run.pk
    assert listed["results"][0]["produced_by"] is None
    detail = researcher.get(f"/api/research/models/{grandchild.pk}/").json()
    assert detail["kind"] == "pipeline" and detail["family"] == "unet" and detail["produced_by"] == run.pk
    assert [(m["name"], m["produced_by"]) for m in detail["lineage"]] == [("round-2", run.pk), ("round-1", None), ("base", None)]
    assert [m["name"] for m in researcher.get("/api/research/models/?parent=base").json()["results"]] == ["round-1"]
    assert researcher.get("/api/research/models/?kind=external").json()["count"] == 0


def test_register_a_pipeline_directory_and_an_external_model(researcher, tmp_path):
    base = ModelVersionFactory(name="base")
    folder = make_pipeline_dir(tmp_path / "sd", "StableDiffusionPipeline", "unet", {"_class_name": "DDIMScheduler"})
    made = researcher.post("/api/research/models/", {"name": "mine", "path": str(folder), "parent": "base"},
                           content_type="application/json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["family"] == "unet" and body["parent"] == "base" and body["local_path"] == str(folder.resolve())
    assert [m["name"] for m in body["lineage"]] == ["mine", "base"]
    external = researcher.post("/api/research/models/", {"name": "lab-x", "kind": "external"}, content_type="application/json")
    assert external.status_code == 201 and external.json()["kind"] == "external" and external.json()["local_path"] == ""
    assert ModelVersion.objects.get(name="lab-x").is_external and base.children.get().name == "mine"


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"name": "m", "path": "/no/such/dir"}, "path", "no such directory"),
    ({"name": "m", "path": "{folder}/unet"}, "path", "not a diffusers pipeline directory"),
    ({"name": "m", "path": "a" * 5000}, "path", "cannot read"),
    ({"name": "m", "path": "~nosuchuser__/x"}, "path", "cannot read"),
    ({"name": " ", "path": "{folder}"}, "name", "name: empty"),
    ({"name": "m" * 201, "path": "{folder}"}, "name", "longer than 200 characters"),
    ({"name": "taken", "path": "{folder}"}, "name", "already registered"),
    ({"name": "taken", "kind": "external"}, "name", "already registered"),
    ({"name": "m", "path": "{folder}", "parent": "nobody"}, "parent", "does not exist"),
    ({"name": "m"}, "path", "required for a pipeline"),
    ({"name": "m", "kind": "external", "path": "{folder}"}, "path", "external model has none"),
    ({"name": "m", "kind": "weird"}, "kind", "not a valid choice"),
    ({"name": "m\x00", "kind": "external"}, "name", "Null characters"),
])
def test_register_refusals_name_their_field_and_write_nothing(researcher, tmp_path, body, field, message):
    ModelVersionFactory(name="taken")
    folder = make_pipeline_dir(tmp_path / "sd", "StableDiffusionPipeline", "unet", {"_class_name": "DDIMScheduler"})
    body = {k: v.replace("{folder}", str(folder)) if isinstance(v, str) else v for k, v in body.items()}
    refused = _refusal(researcher.post("/api/research/models/", body, content_type="application/json"), 400, field)
    assert message in refused["detail"] and "\n" not in refused["detail"] and "--" not in refused["detail"][:3]
    assert ModelVersion.objects.count() == 1


# --- prompt sets ----------------------------------------------------------------------------------


def _upload(name, text):
    return SimpleUploadedFile(name, text.encode() if isinstance(text, str) else text)


def _imported(researcher, response):
    """The import a 202 queued, run as the worker runs it, then read back through its url."""
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == body["url"] == f"/api/research/imports/{body['id']}/" and body["status"] == "queued"
    (message,) = OutboxMessage.objects.filter(task_name=IMPORT_TASK, args=[body["id"]])
    assert ImportJob.objects.get(pk=body["id"]).upload  # stored until its task runs
    import_run(body["id"])
    job = ImportJob.objects.get(pk=body["id"])
    assert not job.upload and job.finished_at is not None  # the upload goes once the job ends
    assert import_run(body["id"]) == job.status  # a re-delivered task changes nothing
    read = researcher.get(body["url"])
    assert read.status_code == 200
    return read.json()


def test_prompt_import_of_an_upload_is_the_command_import(researcher):
    lines = [{"id": "a", "prompt": "a red cube", "questions": ["Is there a cube?", "Is it red?"]},
             {"id": "b", "prompt": "a blue ball"}]
    text = "\n".join(json.dumps(line) for line in lines)
    started = researcher.post("/api/research/prompt-sets/import/", {"file": _upload("shapes.jsonl", text), "set": "shapes"})
    assert not PromptSet.objects.exists()  # nothing written within the request
    first = _imported(researcher, started)
    assert first["status"] == "succeeded" and first["kind"] == "prompts" and first["file"] == "shapes.jsonl"
    assert first["result"]["created"] == 2 and first["result"]["questions_created"] == 2 and first["error"] is None
    prompt_set = PromptSet.objects.get(name="shapes")
    assert first["result"]["prompt_set"] == "shapes" and first["result"]["prompt_set_id"] == prompt_set.pk
    assert prompt_set.prompts.get(external_id="a").source == "shapes.jsonl"
    again = _imported(researcher, researcher.post(
        "/api/research/prompt-sets/import/", {"file": _upload("shapes.jsonl", text), "set": "shapes"}
    ))
    assert again["result"]["unchanged"] == 2 and again["result"]["created"] == 0
    detail = researcher.get(f"/api/research/prompt-sets/{prompt_set.pk}/").json()
    assert detail["prompt_count"] == 2 and detail["name"] == "shapes"
    PromptSetFactory(name="another")
    names = [s["name"] for s in researcher.get("/api/research/prompt-sets/?ordering=-name").json()["results"]]
    assert names == ["shapes", "another"]
    listed = researcher.get("/api/research/imports/?kind=prompts&status=succeeded").json()
    assert listed["count"] == 2 and listed["results"][0]["id"] == again["id"]  # newest first
    _refusal(researcher.get("/api/research/imports/?status=done"), 400, "status")
    assert researcher.get("/api/research/imports/999999/").status_code == 404


def test_an_import_that_fails_in_its_task_records_the_refusal_and_writes_nothing(researcher, monkeypatch):
    from catalog import services

    text = json.dumps({"id": "a", "prompt": "ok"})
    started = researcher.post("/api/research/prompt-sets/import/", {"file": _upload("p.jsonl", text), "set": "shapes"})
    # The file changed between the request's check and the task (as a file replaced on disk would): the task's
    # own check refuses it, with the line and field, and the upload is named as uploaded.
    monkeypatch.setattr(services, "_prompt_max_lengths", lambda: {"external_id": 0})
    failed = _imported(researcher, started)
    assert failed["status"] == "failed" and failed["result"] is None
    error = failed["error"]
    assert error["code"] == "invalid" and error["field"] == "file" and error["line"] == 1 and error["file_field"] == "id"
    assert error["detail"].startswith("p.jsonl:1: field 'id'") and "/tmp" not in error["detail"]
    assert not PromptSet.objects.exists()


def test_an_import_that_crashes_fails_with_a_plain_error_and_no_traceback(researcher, monkeypatch):
    from catalog import services

    started = researcher.post("/api/research/prompt-sets/import/", {"file": _upload("p.jsonl", '{"prompt": "x"}'),
                                                                    "set": "s"})

    def broken(**kwargs):
        raise RuntimeError("disk on fire at /srv/secret")

    monkeypatch.setattr(services, "prompts_import", broken)
    failed = _imported(researcher, started)
    assert failed["status"] == "failed" and failed["error"]["code"] == "error"
    assert "RuntimeError" in failed["error"]["detail"] and "/srv/secret" not in json.dumps(failed)


@pytest.mark.parametrize(("name", "text", "field", "detail", "line", "file_field"), [
    ("p.jsonl", '{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": ""}', "file", "p.jsonl:2: field 'prompt'", 2, "prompt"),
    ("p.jsonl", '{"id": "a", "prompt": "ok"}\n{"id": "a", "prompt": "x"}', "file", "p.jsonl:2: field 'id'", 2, "id"),
    ("p.jsonl", b"\xff\xfe\x00bad", "file", "p.jsonl", None, None),
    ("p.txt", "hello", "file", "p.txt: cannot tell the format", None, None),
    ("p.jsonl", '{"id": "a", "prompt": "ok"}', "set", "p.jsonl: field 'set': longer than 200", None, None),
])
def test_prompt_import_refusals_are_the_readers_lines_and_write_nothing(researcher, name, text, field, detail, line, file_field):
    set_name = "s" * 201 if field == "set" else "shapes"
    refused = researcher.post("/api/research/prompt-sets/import/", {"file": _upload(name, text), "set": set_name})
    body = _refusal(refused, 400, field)
    assert body["detail"].startswith(detail) and "/tmp" not in body["detail"]
    assert (body["line"], body["file_field"]) == (line, file_field)
    assert not PromptSet.objects.exists() and not Prompt.objects.exists() and not ImportJob.objects.exists()


def test_prompt_import_without_a_file_or_with_a_bad_format_names_the_field(researcher):
    _refusal(researcher.post("/api/research/prompt-sets/import/", {"set": "s"}), 400, "file")
    _refusal(researcher.post("/api/research/prompt-sets/import/", {"file": _upload("p.jsonl", "{}"), "set": "s",
                                                                     "format": "xml"}), 400, "format")
    _refusal(researcher.get("/api/research/prompt-sets/?ordering=secret"), 400, "ordering")
    as_json = researcher.post("/api/research/prompt-sets/import/", {"set": "s"}, content_type="application/json")
    assert as_json.status_code == 415 and as_json.json()["code"] == "unsupported_media_type"


# --- images ---------------------------------------------------------------------------------------


def test_images_list_filters_by_model_prompt_set_and_seed_and_shows_only_catalog_ids(researcher):
    model_a, model_b = ModelVersionFactory(name="a"), ModelVersionFactory(name="b")
    set_x = PromptSetFactory(name="x")
    prompt = PromptFactory(prompt_set=set_x, external_id="p1")
    ImageFactory(model_version=model_a, prompt=prompt, seed=7)
    ImageFactory(model_version=model_a, prompt=PromptFactory(), seed=8)
    ImageFactory(model_version=model_b, prompt=prompt, seed=7)
    round_ = pairwise_round(n_items=2)  # annotator-facing ids exist for these images too
    blinded = set(ItemImage.objects.values_list("public_id", flat=True))
    everything = researcher.get("/api/research/images/?ordering=seed")
    ids = [i["id"] for i in everything.json()["results"]]
    assert everything.json()["count"] == Image.objects.count() and set(ids) == set(Image.objects.values_list("public_id", flat=True))
    assert not any(pid in everything.content.decode() for pid in blinded) and round_.pk
    only = researcher.get("/api/research/images/?model=a&prompt_set=x&seed=7").json()["results"]
    assert len(only) == 1 and only[0]["model"] == "a" and only[0]["prompt"] == "p1" and only[0]["seed"] == 7
    assert only[0]["url"] == f"/img/{only[0]['id']}.png"
    assert researcher.get("/api/research/images/?seed=7").json()["count"] == 2
    assert researcher.get("/api/research/images/?model=nobody").json()["count"] == 0


def test_generation_progress_refuses_bad_parameters(researcher):
    _refusal(researcher.get("/api/research/generations/progress/?model=nobody&prompt_set=x"), 400, "model")
    ModelVersionFactory(name="base")
    _refusal(researcher.get("/api/research/generations/progress/?model=base&prompt_set=x&seed=-1"), 400, "prompt_set")


@pytest.mark.parametrize(("query", "field"), [
    ("seed=abc", "seed"), ("seed=99999999999999999999", "seed"), ("model=" + "m" * 300, "model"),
    ("model=%00", "model"), ("ordering=file", "ordering"), ("ordering=-seed,bogus", "ordering"), ("ordering=,", "ordering"),
])
def test_images_list_refuses_bad_filters_and_orderings(researcher, query, field):
    _refusal(researcher.get(f"/api/research/images/?{query}"), 400, field)


def _archive(files: dict[str, bytes]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("batch.zip", buffer.getvalue(), content_type="application/zip")


def _manifest(*rows) -> bytes:
    return "\n".join(json.dumps(row) for row in rows).encode()


def test_image_import_of_an_archive_is_the_command_import(researcher):
    prompt = PromptFactory(prompt_set=PromptSetFactory(name="x"), external_id="p1")
    red, blue = png_bytes((200, 0, 0)), png_bytes((0, 0, 200))
    files = {
        "manifest.jsonl": _manifest(
            {"model": "lab-a", "prompt_id": "p1", "seed": 1, "path": "imgs/red.png", "sha256": hashlib.sha256(red).hexdigest()},
            {"model": "lab-a", "prompt_id": "p1", "seed": 2, "path": "imgs/blue.png"},
        ),
        "imgs/red.png": red, "imgs/blue.png": blue,
    }
    started = researcher.post("/api/research/images/import/", {"archive": _archive(files), "prompt_set": "x",
                                                               "create_models": "true"})
    assert not Image.objects.exists()  # nothing written within the request
    made = _imported(researcher, started)
    assert made["status"] == "succeeded" and made["kind"] == "images" and made["file"] == "batch.zip"
    assert made["params"] == {"manifest": "manifest.jsonl", "prompt_set": "x", "create_models": True}
    assert made["result"] == {"created": 2, "present": 0, "models_created": ["lab-a"]}
    assert ModelVersion.objects.get(name="lab-a").is_external and Image.objects.filter(prompt=prompt).count() == 2
    again = _imported(researcher, researcher.post(
        "/api/research/images/import/", {"archive": _archive(files), "prompt_set": "x"}))
    assert again["result"] == {"created": 0, "present": 2, "models_created": []}


@pytest.mark.parametrize(("files", "detail", "line", "file_field"), [
    ({"manifest.jsonl": _manifest({"model": "lab-a", "prompt_id": "p1", "path": "missing.png"})},
     "manifest.jsonl:1: field 'path': no such file: missing.png", 1, "path"),
    ({"manifest.jsonl": _manifest({"model": "lab-a", "prompt_id": "p1", "path": "/etc/hostname"})},
     "manifest.jsonl:1: field 'path': /etc/hostname: not a path inside", 1, "path"),
    ({"manifest.jsonl": _manifest({"model": "lab-a", "prompt_id": "p1", "path": "../../x.png"})},
     "manifest.jsonl:1: field 'path': ../../x.png: not a path inside", 1, "path"),
    ({"manifest.jsonl": _manifest({"model": "nobody", "prompt_id": "p1", "path": "a.png"}), "a.png": png_bytes()},
     "manifest.jsonl:1: field 'model': no model named 'nobody'", 1, "model"),
    ({"sub/manifest.jsonl": _manifest({"model": "m", "prompt_id": "p1", "path": "a.png"}), "m.jsonl": b"{}"},
     "m.jsonl:1: field", 1, None),
])
def test_image_import_failures_in_the_task_name_the_line_and_store_nothing(researcher, files, detail, line, file_field):
    PromptFactory(prompt_set=PromptSetFactory(name="x"), external_id="p1")
    started = researcher.post("/api/research/images/import/", {"archive": _archive(files), "prompt_set": "x"})
    failed = _imported(researcher, started)
    error = failed["error"]
    assert failed["status"] == "failed" and error["code"] == "invalid" and error["field"] == "archive"
    assert error["detail"].startswith(detail) and "/tmp" not in error["detail"] and "import-" not in error["detail"]
    assert error["line"] == line and (file_field is None or error["file_field"] == file_field)
    assert not Image.objects.exists() and not ModelVersion.objects.exists()


@pytest.mark.parametrize(("files", "extra", "detail"), [
    ({"m.jsonl": b"{}", "n.csv": b"model,path"}, {}, "manifest: the archive holds 2"),
    ({"sub/m.jsonl": b"{}"}, {}, "manifest: the archive holds 0"),
    ({"m.jsonl": b"{}"}, {"manifest": "../etc/passwd"}, "manifest: no file"),
    ({"m.jsonl": b"{}"}, {"manifest": "n.jsonl"}, "manifest: no file 'n.jsonl'"),
])
def test_image_import_refuses_a_missing_manifest_within_the_request(researcher, files, extra, detail):
    refused = researcher.post("/api/research/images/import/", {"archive": _archive(files), "prompt_set": "x", **extra})
    body = _refusal(refused, 400, "manifest")
    assert body["detail"].startswith(detail) and not ImportJob.objects.exists()


def test_image_import_with_a_named_manifest_in_a_folder(researcher):
    PromptFactory(prompt_set=PromptSetFactory(name="x"), external_id="p1")
    files = {"batch/m.jsonl": _manifest({"model": "lab-a", "prompt_id": "p1", "path": "a.png"}),
             "batch/a.png": png_bytes(), "other.csv": b"model,path"}
    started = researcher.post("/api/research/images/import/", {"archive": _archive(files), "prompt_set": "x",
                                                               "manifest": "batch/m.jsonl", "create_models": "true"})
    assert _imported(researcher, started)["result"]["created"] == 1


def test_image_import_refuses_what_is_not_a_zip(researcher):
    not_zip = SimpleUploadedFile("batch.zip", b"PK\x03\x04 but not really")
    body = _refusal(researcher.post("/api/research/images/import/", {"archive": not_zip}), 400, "archive")
    assert body["detail"].startswith("archive: not a readable .zip") and not ImportJob.objects.exists()


# --- generation -----------------------------------------------------------------------------------


def test_generation_answers_202_with_a_progress_url_and_its_task_queues_on_the_gpu_queue(researcher):
    model = ModelVersionFactory(name="base")
    prompt_set = PromptSetFactory(name="x")
    for n in range(4):
        PromptFactory(prompt_set=prompt_set, external_id=f"p{n}")
    request = {"model": "base", "prompt_set": "x", "images_per_prompt": 2, "seed": 3, "limit": 3}
    started = researcher.post("/api/research/generations/", request, content_type="application/json")
    assert started.status_code == 202, started.content
    body = started.json()
    assert (body["prompts"], body["images"]) == (3, 6) and started["Location"] == body["progress_url"]
    assert not GenerationJob.objects.exists()  # made by the task, off the request
    before = researcher.get(body["progress_url"]).json()
    assert (before["images"], before["queued"], before["done"]) == (6, 6, 0)
    (message,) = OutboxMessage.objects.filter(task_name=POOL_REQUEST_TASK)
    assert message.args == [model.pk, prompt_set.pk, 2, 3, 3]
    pool_generation_request_create(*message.args)  # as the default worker runs it
    pool_generation_request_create(*message.args)  # a re-delivery makes nothing new
    assert GenerationJob.objects.count() == 6
    assert OutboxMessage.objects.filter(task_name=GENERATE_TASK, args=[None, model.pk]).exists()
    job = GenerationJob.objects.filter(model_version=model).first()
    job.status, job.error = GenerationJob.Status.FAILED, "CUDA out of memory"
    job.save()
    progress = researcher.get(body["progress_url"])
    assert progress.status_code == 200
    assert progress.json() == {"images": 6, "queued": 5, "running": 0, "done": 0, "failed": 1,
                               "errors": ["CUDA out of memory"]}
    # The command's request with the same parameters makes the same jobs: nothing new.
    call_command("generate_images", model="base", prompts="x", images_per_prompt=2, limit=3, seed=3, stdout=io.StringIO())
    assert GenerationJob.objects.count() == 6


@pytest.mark.parametrize(("body", "field", "code"), [
    ({"model": "nobody", "prompt_set": "x"}, "model", "invalid"),
    ({"model": "lab-a", "prompt_set": "x"}, "model", "external_model"),
    ({"model": "base", "prompt_set": "nope"}, "prompt_set", "invalid"),
    ({"model": "base", "prompt_set": "x", "images_per_prompt": 0}, "images_per_prompt", "invalid"),
    ({"model": "base", "prompt_set": "x", "seed": -1}, "seed", "invalid"),
    ({"model": "base", "prompt_set": "x", "limit": 0}, "limit", "invalid"),
    ({"model": "base", "prompt_set": "x", "images_per_prompt": 100, "limit": None}, "limit", "invalid"),
])
def test_generation_refusals_name_their_field_and_queue_nothing(researcher, monkeypatch, body, field, code):
    from annotation import catalog_api

    monkeypatch.setattr(catalog_api, "GENERATION_MAX_IMAGES", 50)
    ModelVersionFactory(name="base")
    ModelVersion.objects.create(name="lab-a", kind=ModelVersion.Kind.EXTERNAL)
    prompt_set = PromptSetFactory(name="x")
    for n in range(2):
        PromptFactory(prompt_set=prompt_set, external_id=f"p{n}")
    refused = researcher.post("/api/research/generations/", body, content_type="application/json")
    assert refused.status_code == 400 and refused.json()["code"] == code and refused.json()["field"] == field
    assert not GenerationJob.objects.exists() and not OutboxMessage.objects.exists()


def test_research_writes_are_rate_limited_with_retry_after(researcher, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"research_write": "2/minute"}}
    for _ in range(2):
        assert researcher.post("/api/research/models/", {"name": "", "kind": "external"},
                               content_type="application/json").status_code == 400
    limited = researcher.post("/api/research/models/", {"name": "x", "kind": "external"}, content_type="application/json")
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert limited.json()["code"] == "throttled" and not ModelVersion.objects.filter(name="x").exists()
    assert researcher.get("/api/research/models/").status_code == 200  # reads are not counted


def test_an_import_whose_worker_died_runs_again_and_a_live_one_is_left_alone(researcher):
    from datetime import timedelta

    from django.utils import timezone

    started = researcher.post("/api/research/prompt-sets/import/", {"file": _upload("p.jsonl", '{"prompt": "x"}'),
                                                                    "set": "s"})
    job_id = started.json()["id"]
    ImportJob.objects.filter(pk=job_id).update(status="running", started_at=timezone.now())
    assert import_run(job_id) == "running" and not PromptSet.objects.exists()  # another worker has it
    ImportJob.objects.filter(pk=job_id).update(started_at=timezone.now() - timedelta(hours=2))
    assert import_run(job_id) == "succeeded" and PromptSet.objects.get(name="s").prompts.count() == 1
    assert import_run(999_999) == "missing"


def test_stale_imports_are_sent_again_by_the_beat_sweep(researcher):
    from datetime import timedelta

    from django.utils import timezone

    from catalog.imports import imports_recover

    def job(status, age_hours, **times):
        made = ImportJob.objects.create(kind="prompts", upload_name="p.jsonl", status=status, **times)
        ImportJob.objects.filter(pk=made.pk).update(created_at=timezone.now() - timedelta(hours=age_hours))
        return made.pk

    now = timezone.now()
    lost_message = job("queued", 2)
    lost_worker = job("running", 2, started_at=now - timedelta(hours=2))
    job("queued", 0)  # just made: its task is on its way
    job("running", 2, started_at=now)  # a long import, still in its first hour
    job("failed", 2)
    assert sorted(imports_recover()) == sorted([lost_message, lost_worker])
    sent = sorted(m.args[0] for m in OutboxMessage.objects.filter(task_name=IMPORT_TASK))
    assert sent == sorted([lost_message, lost_worker])
