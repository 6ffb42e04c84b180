"""Pool images (not tied to a batch) made by the gpu-queue task from a real (tiny) pipeline."""

import pytest

from annotation.models import Round
from catalog.models import GenerationJob, Image
from catalog.services import model_register
from tests.factories import PromptFactory, PromptSetFactory

pytestmark = pytest.mark.django_db


def test_generate_images_makes_a_pool_for_best_worst_rounds(tiny_unet, eager_tasks, django_capture_on_commit_callbacks):
    from django.core.management import call_command

    model_register(path=tiny_unet, name="base")
    prompt_set = PromptSetFactory(name="pool-set")
    prompts = [PromptFactory(prompt_set=prompt_set) for _ in range(2)]
    with django_capture_on_commit_callbacks(execute=True):
        call_command("generate_images", "--model", "base", "--prompts", "pool-set", "--images-per-prompt", "3", verbosity=0)
    jobs = GenerationJob.objects.filter(batch=None)
    assert jobs.count() == 6 and not jobs.exclude(status=GenerationJob.Status.DONE).exists()
    for prompt in prompts:
        assert len({i.seed for i in Image.objects.filter(prompt=prompt)}) == 3
    with django_capture_on_commit_callbacks(execute=True):
        call_command("generate_images", "--model", "base", "--prompts", "pool-set", "--images-per-prompt", "3", verbosity=0)
    assert Image.objects.count() == 6  # nothing new

    call_command("create_round", "--kind", "best_worst", "--name", "bw", "--models", "base", "--n", "3", verbosity=0)
    assert Round.objects.get(name="bw").items.count() == 2
