"""Images made by the gpu-queue task from a real (tiny) pipeline: batches and the pool."""

import pytest

from annotation.models import Round
from catalog.models import GenerationJob, Image
from catalog.generation import generation_batch_create, generation_dispatch
from catalog.services import model_register
from catalog.signals import generation_batch_done
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


def test_a_batch_says_once_that_its_last_job_is_done(tiny_unet, eager_tasks, django_capture_on_commit_callbacks):
    base = model_register(path=tiny_unet, name="base")
    other = model_register(path=tiny_unet, name="other")
    prompts = [PromptFactory() for _ in range(2)]
    heard = []

    def listener(sender, *, batch, **kwargs):
        heard.append((batch.pk, batch.jobs.exclude(status=GenerationJob.Status.DONE).count()))

    generation_batch_done.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            batch = generation_batch_create(model_versions=[base, other], prompts=prompts, seed=1, label="two models")
            assert generation_dispatch(batch=batch) == [base.pk, other.pk]
    finally:
        generation_batch_done.disconnect(listener)
    # One task per model; only the second finds the batch over.
    assert heard == [(batch.pk, 0)]
    assert Image.objects.filter(generation_jobs__batch=batch).count() == 4
