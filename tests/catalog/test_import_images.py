"""manage.py import_images: images made elsewhere, checked line by line, stored all at once or not at all."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from PIL import Image as PILImage

from catalog.generation import pool_generation_create
from catalog.models import Image, ModelVersion
from catalog.services import ExternalModelError, external_model_register
from tests.factories import ModelVersionFactory, PromptFactory, PromptSetFactory, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def prompts():
    prompt_set = PromptSetFactory(name="holdout")
    return [
        PromptFactory(prompt_set=prompt_set, external_id=f"p{n}", text=f"a red cube number {n}") for n in range(3)
    ]


def write_png(folder: Path, name: str, color=(200, 30, 30), size=(16, 16)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(png_bytes(color, size))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def media_files(media_root) -> list[Path]:
    return sorted(p for p in Path(media_root).rglob("*") if p.is_file()) if Path(media_root).exists() else []


def run(manifest: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("import_images", str(manifest), *args, stdout=out)
    return out.getvalue()


def refused(manifest: Path, *args: str) -> str:
    with pytest.raises(CommandError) as error:
        run(manifest, *args)
    message = str(error.value)
    assert "\n" not in message and message.endswith("(nothing was imported)")
    return message


@pytest.fixture
def manifest(tmp_path, prompts):
    """Two models, three prompts: a JSONL manifest with relative paths, seeds, sampler settings and one sha256."""
    folder = tmp_path / "export"
    rows = []
    for m, model in enumerate(["lab-a", "lab-b"]):
        for n, prompt in enumerate(prompts):
            path = write_png(folder / model, f"{n}.png", color=(10 + 80 * m, 20 * n, 50))
            rows.append({"model": model, "prompt_id": prompt.external_id, "seed": 1000 + n, "path": f"{model}/{n}.png",
                         "sampler": {"steps": 30, "guidance_scale": 5.0}})
    rows[0]["sha256"] = hashlib.sha256((folder / "lab-a" / "0.png").read_bytes()).hexdigest()
    return write_jsonl(folder / "manifest.jsonl", rows)


def test_import_registers_external_models_and_stores_every_image_under_an_opaque_name(manifest, prompts, media_root):
    out = run(manifest, "--prompts", "holdout", "--create-models")
    assert "6 images imported, 0 already present" in out
    assert "registered external model 'lab-a'" in out
    models = ModelVersion.objects.filter(name__in=["lab-a", "lab-b"])
    assert {(m.kind, m.local_path, m.is_external) for m in models} == {("external", "", True)}
    image = Image.objects.get(model_version__name="lab-b", prompt=prompts[2])
    source = (manifest.parent / "lab-b" / "2.png").read_bytes()
    assert image.seed == 1002 and image.sampler == {"steps": 30, "guidance_scale": 5.0}
    assert image.sha256 == hashlib.sha256(source).hexdigest() and image.file.read() == source
    assert (image.width, image.height) == (16, 16)
    assert image.public_id in image.file.name and "lab-b" not in image.file.name
    assert len(media_files(media_root)) == 6


def test_running_it_again_changes_nothing(manifest, media_root):
    run(manifest, "--prompts", "holdout", "--create-models")
    before = (list(Image.objects.values_list("id", "sha256")), media_files(media_root))
    out = run(manifest, "--prompts", "holdout", "--create-models")
    assert "0 images imported, 6 already present" in out and "registered" not in out
    assert (list(Image.objects.values_list("id", "sha256")), media_files(media_root)) == before
    assert ModelVersion.objects.count() == 2


def test_csv_manifest_with_prompt_text_absolute_paths_and_no_seed(tmp_path, prompts):
    ModelVersionFactory(name="sd15")  # a registered pipeline model takes imported images too
    image = write_png(tmp_path / "elsewhere", "x.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "model,prompt_set,prompt,path,sampler\n"
        f'sd15,holdout,a red cube number 1,{image},"{{""steps"": 20}}"\n', encoding="utf-8",
    )
    assert "1 images imported" in run(manifest)
    stored = Image.objects.get()
    assert (stored.prompt, stored.seed, stored.sampler, stored.model_version.kind) == (prompts[1], 0, {"steps": 20}, "pipeline")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda rows, folder: rows[3].update(model="lab-c"),
         r"manifest.jsonl:4: field 'model': no model named 'lab-c' \(--create-models registers it"),
        (lambda rows, folder: rows[1].update(prompt_id="p99"),
         r"manifest.jsonl:2: field 'prompt_id': no prompt with id 'p99' in 'holdout'"),
        (lambda rows, folder: rows[1].update(prompt_id=None, prompt="no such text"),
         r"manifest.jsonl:2: field 'prompt': no prompt with this text in 'holdout'"),
        (lambda rows, folder: rows[1].update(prompt="a red cube number 1"),
         r"manifest.jsonl:2: field 'prompt_id': give either prompt_id or prompt"),
        (lambda rows, folder: rows[2].update(prompt_set="nope"),
         r"manifest.jsonl:3: field 'prompt_set': no prompt set named 'nope'"),
        (lambda rows, folder: rows[5].update(path="lab-b/missing.png"),
         r"manifest.jsonl:6: field 'path': no such file: .*missing.png"),
        (lambda rows, folder: (folder / "lab-a" / "1.png").write_bytes(b"not an image at all"),
         r"manifest.jsonl:2: field 'path': .*1.png: not an image"),
        (lambda rows, folder: (folder / "lab-a" / "1.png").write_bytes((folder / "lab-a" / "1.png").read_bytes()[:-30]),
         r"manifest.jsonl:2: field 'path': .*1.png: does not decode"),
        (lambda rows, folder: PILImage.new("RGB", (8, 8)).save(folder / "lab-a" / "1.png", format="JPEG"),
         r"manifest.jsonl:2: field 'path': .*1.png: a JPEG file; convert it to PNG"),
        (lambda rows, folder: rows[1].update(sha256="0" * 64),
         r"manifest.jsonl:2: field 'sha256': the file's sha256 is [0-9a-f]{64}, not 0{64}"),
        (lambda rows, folder: rows[1].update(sha256="abc"),
         r"manifest.jsonl:2: field 'sha256': expected 64 hexadecimal digits"),
        (lambda rows, folder: rows[1].update(seed="x"),
         r"manifest.jsonl:2: field 'seed': expected an integer, got 'x'"),
        (lambda rows, folder: rows[1].update(sampler=[1]),
         r"manifest.jsonl:2: field 'sampler': expected a JSON object"),
        (lambda rows, folder: rows[1].update(colour="red"),
         r"manifest.jsonl:2: field 'colour': unknown field"),
        (lambda rows, folder: rows[4].update(prompt_id="p0", seed=1000),
         r"manifest.jsonl:5: field 'seed': same \(model, prompt, seed\) as line 4"),
        (lambda rows, folder: rows[4].update(prompt_id=None, prompt="a red cube number 0", seed=1000),
         r"manifest.jsonl:5: field 'seed': same \(model, prompt, seed\) as line 4"),
    ],
)
def test_a_bad_line_names_file_line_and_field_and_nothing_is_written(manifest, media_root, edit, expected):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    ModelVersionFactory(name="lab-a")
    ModelVersionFactory(name="lab-b")
    edit(rows, manifest.parent)
    write_jsonl(manifest, rows)
    message = refused(manifest, "--prompts", "holdout")
    assert re.search(expected, message), message
    assert not Image.objects.exists() and media_files(media_root) == []


def test_bad_json_and_a_missing_manifest(tmp_path, prompts):
    bad = tmp_path / "m.jsonl"
    bad.write_text('\n{"model": \n', encoding="utf-8")
    assert "m.jsonl:2: invalid JSON" in refused(bad, "--prompts", "holdout")
    assert "nope.jsonl: no such file" in refused(tmp_path / "nope.jsonl")
    text = tmp_path / "m.txt"
    text.write_text("x")
    assert "expected a .jsonl or .csv file" in refused(text)
    empty = tmp_path / "e.csv"
    empty.write_text("model,path\n")
    assert "the manifest lists no images" in refused(empty)


def test_a_pixel_bomb_is_refused_by_the_limit(tmp_path, prompts, settings):
    settings.IMAGE_MAX_PIXELS = 100
    write_png(tmp_path, "big.png", size=(20, 20))
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"model": "x", "prompt_id": "p0", "path": "big.png"}])
    message = refused(manifest, "--prompts", "holdout", "--create-models")
    assert "m.jsonl:1: field 'path': " in message and "more than IMAGE_MAX_PIXELS (100)" in message
    assert not ModelVersion.objects.exists()


def test_the_same_key_with_other_bytes_is_an_error_naming_the_line(manifest, media_root):
    run(manifest, "--prompts", "holdout", "--create-models")
    before = media_files(media_root)
    write_png(manifest.parent / "lab-b", "1.png", color=(1, 2, 3))
    message = refused(manifest, "--prompts", "holdout")
    assert "manifest.jsonl:5: field 'path': model 'lab-b', prompt 'p1', seed 1001 already has a different image" in message
    assert Image.objects.count() == 6 and media_files(media_root) == before


def test_a_failure_while_storing_removes_the_files_already_copied(manifest, media_root, monkeypatch):
    import catalog.services

    real, calls = catalog.services.image_create, []

    def failing(**kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(catalog.services, "image_create", failing)
    with pytest.raises(OSError, match="disk full"):
        call_command("import_images", str(manifest), "--prompts", "holdout", "--create-models")
    assert not Image.objects.exists() and not ModelVersion.objects.exists()
    assert media_files(media_root) == []


def test_external_models_cannot_generate_and_need_an_empty_path(prompts):
    model = external_model_register(name="lab-a")
    with pytest.raises(ExternalModelError, match="model 'lab-a' is external .*cannot be sampled"):
        pool_generation_create(model_version=model, prompts=prompts, images_per_prompt=2)
    with pytest.raises(CommandError, match="--model: model 'lab-a' is external"):
        call_command("generate_images", "--model", "lab-a", "--prompts", "holdout")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(name="bad", kind="external", local_path="/models/x")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(name="bad", kind="pipeline", local_path="")


def test_the_admin_lists_the_kind(admin_client):
    external_model_register(name="lab-a")
    page = admin_client.get("/admin/catalog/modelversion/")
    assert page.status_code == 200 and "external (imported images only)" in page.content.decode()
