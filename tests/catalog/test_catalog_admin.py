"""The catalog's admin pages: researchers see prompts, models, images and generation jobs."""

from __future__ import annotations

import pytest
from django.test import Client

from catalog.selectors import image_url
from evaluation.services import evaluation_create
from tests.evaluation.builders import prompt_set_with_images
from tests.factories import AnnotatorFactory, ImageFactory, ResearcherFactory
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def test_researchers_see_every_catalog_record_under_the_catalog_label():
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "tuned"], n_prompts=2)
    evaluation = evaluation_create(model_versions=versions, prompt_set=prompt_set)
    TrainingRun.objects.create(name="run", base_model=versions[0], dataset_path="/d", output_model=versions[1])
    image = ImageFactory()
    client = Client()
    client.force_login(ResearcherFactory())
    for url in ("/admin/catalog/promptset/", "/admin/catalog/prompt/", "/admin/catalog/alignmentquestion/",
                "/admin/catalog/modelversion/", "/admin/catalog/generationjob/", "/admin/catalog/generationbatch/",
                f"/admin/catalog/generationbatch/{evaluation.generation_batch_id}/change/",
                "/admin/training/trainingrun/", "/admin/evaluation/evaluationround/"):
        assert client.get(url).status_code == 200, url
    images = client.get("/admin/catalog/image/")
    assert images.status_code == 200 and image_url(image.public_id).encode() in images.content
    assert b"0 / 4" in client.get("/admin/catalog/generationbatch/").content  # no job done yet
    assert client.get("/admin/annotation/image/").status_code == 404  # the old label is gone

    client.force_login(AnnotatorFactory())
    assert client.get("/admin/catalog/image/").status_code == 302
