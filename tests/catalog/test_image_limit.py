"""One pixel limit (IMAGE_MAX_PIXELS) on every way an image is stored: the admin, the service, generation."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from PIL import Image as PILImage

from catalog.generation import generation_batch_create, generation_dispatch
from catalog.images import ImageRejected, image_size_check
from catalog.models import GenerationJob, Image
from catalog.services import image_create, model_register
from tests.factories import ModelVersionFactory, PromptFactory, ResearcherFactory, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """A real 12000 x 12000 PNG (144 million pixels): 1 bit per pixel, all black, a few KB."""
    buffer = io.BytesIO()
    PILImage.new("1", (12000, 12000)).save(buffer, format="PNG")
    return buffer.getvalue()


def admin_upload(data: bytes, name: str = "upload.png"):
    client = Client()
    client.force_login(ResearcherFactory(is_superuser=True))
    prompt, model = PromptFactory(), ModelVersionFactory()
    upload = io.BytesIO(data)
    upload.name = name
    return client.post("/admin/catalog/image/add/", {
        "prompt": prompt.pk, "model_version": model.pk, "seed": 1, "sampler": "{}", "file": upload,
    })


def test_the_check_reads_the_size_from_the_header(settings, huge_png):
    assert len(huge_png) < 100_000
    settings.IMAGE_MAX_PIXELS = 12000 * 12000
    assert image_size_check(huge_png) == (12000, 12000)
    settings.IMAGE_MAX_PIXELS = 12000 * 12000 - 1
    with pytest.raises(ImageRejected, match=r"^12000x12000 is 144000000 pixels, more than IMAGE_MAX_PIXELS \(143999999\)$"):
        image_size_check(huge_png)
    with pytest.raises(ImageRejected, match="^not an image") as refused:
        image_size_check(b"GIF89a, or so it says")
    assert refused.value.code == "not_an_image"


def test_the_admin_stores_an_image_within_the_limit(settings, media_root):
    settings.IMAGE_MAX_PIXELS = 16 * 16
    response = admin_upload(png_bytes(size=(16, 16)))
    assert response.status_code == 302, response.content.decode()[:2000]
    image = Image.objects.get()
    assert (image.width, image.height) == (16, 16)


def test_the_admin_refuses_an_image_just_over_the_limit(settings, media_root):
    settings.IMAGE_MAX_PIXELS = 16 * 16 - 1
    response = admin_upload(png_bytes(size=(16, 16)))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["file"] == [
        "16x16 is 256 pixels, more than IMAGE_MAX_PIXELS (255)"
    ]
    assert not Image.objects.exists() and not list(media_root.rglob("*.png"))


def test_the_admin_refuses_a_12000_square_png_at_the_default_limit(huge_png, media_root):
    response = admin_upload(huge_png)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["file"] == [
        "12000x12000 is 144000000 pixels, more than IMAGE_MAX_PIXELS (16777216)"
    ]
    assert not Image.objects.exists() and not list(media_root.rglob("*.png"))


def test_image_create_stores_nothing_over_the_limit(settings, media_root):
    settings.IMAGE_MAX_PIXELS = 16 * 16 - 1
    with pytest.raises(ImageRejected, match="more than IMAGE_MAX_PIXELS"):
        image_create(prompt=PromptFactory(), model_version=ModelVersionFactory(), seed=1, sampler={},
                     data=png_bytes(size=(16, 16)))
    assert not Image.objects.exists() and not list(media_root.rglob("*.png"))


def test_generated_images_over_the_limit_fail_their_jobs_with_the_reason(
    settings, tiny_unet, eager_tasks, django_capture_on_commit_callbacks
):
    settings.IMAGE_MAX_PIXELS = 32 * 32 - 1  # the test sampler makes 32 x 32 images
    model = model_register(path=tiny_unet, name="base")
    with django_capture_on_commit_callbacks(execute=True):  # the task runs inline and must not raise
        batch = generation_batch_create(model_versions=[model], prompts=[PromptFactory(), PromptFactory()], seed=1)
        generation_dispatch(batch=batch)
    jobs = list(GenerationJob.objects.filter(batch=batch))
    assert [job.status for job in jobs] == [GenerationJob.Status.FAILED] * 2
    assert {job.error for job in jobs} == {"image: 32x32 is 1024 pixels, more than IMAGE_MAX_PIXELS (1023)"}
    assert not Image.objects.exists()
