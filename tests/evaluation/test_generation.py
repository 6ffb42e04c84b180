"""Evaluation images made by the gpu-queue task from a real (tiny) pipeline, then the rounds."""

import pytest

from annotation.models import Round
from catalog.models import GenerationJob, Image
from catalog.services import model_register
from evaluation.services import evaluation_start
from tests.factories import AlignmentQuestionFactory, PromptFactory, PromptSetFactory

pytestmark = pytest.mark.django_db


def test_generation_fills_every_job_with_same_seed_images_then_creates_the_rounds(
    tiny_unet, eager_tasks, django_capture_on_commit_callbacks
):
    base = model_register(path=tiny_unet, name="base")
    tuned = model_register(path=tiny_unet, name="tuned", parent=base)
    prompt_set = PromptSetFactory(name="eval-set")
    prompts = [PromptFactory(prompt_set=prompt_set) for _ in range(3)]
    AlignmentQuestionFactory(prompt=prompts[0], order=1)

    with django_capture_on_commit_callbacks(execute=True):
        result = evaluation_start(model_versions=[base, tuned], prompt_set=prompt_set, seed=7)
    evaluation = result.evaluation

    jobs = list(evaluation.jobs.all())
    assert len(jobs) == 6 and all(job.status == GenerationJob.Status.DONE for job in jobs)
    for prompt in prompts:
        seeds = {job.seed for job in jobs if job.prompt_id == prompt.pk}
        assert len(seeds) == 1  # the same seed for every model
    images = Image.objects.filter(generation_jobs__batch=evaluation.generation_batch)
    assert images.count() == 6
    image = images.first()
    assert (image.width, image.height) == (32, 32) and image.sampler["steps"] == 2
    assert image.public_id in image.file.name and "base" not in image.file.name and "tuned" not in image.file.name
    # The tiny pipeline is the same directory for both names: same seed, same prompt, same pixels.
    for prompt in prompts:
        hashes = {i.sha256 for i in images.filter(prompt=prompt)}
        assert len(hashes) == 1

    kinds = sorted((r.kind, r.criterion) for r in evaluation.annotation_rounds.all())
    assert kinds == [("alignment", ""), ("pairwise", "visual_appeal"), ("pairwise", "visual_flaws")]
    assert Round.objects.get(evaluations=evaluation, criterion="visual_flaws").items.count() == 3


def test_a_redelivered_generation_task_changes_nothing(tiny_unet, eager_tasks, django_capture_on_commit_callbacks):
    from catalog.generation import generation_run

    base = model_register(path=tiny_unet, name="base")
    other = model_register(path=tiny_unet, name="other")
    prompt_set = PromptSetFactory(name="eval-set")
    PromptFactory(prompt_set=prompt_set)
    with django_capture_on_commit_callbacks(execute=True):
        evaluation = evaluation_start(model_versions=[base, other], prompt_set=prompt_set).evaluation
    assert generation_run(batch_id=evaluation.generation_batch_id, model_version_id=base.pk) == 0
    assert Image.objects.count() == 2
    assert evaluation.annotation_rounds.count() == 2


def test_a_failed_generation_marks_its_jobs_failed(tiny_unet, eager_tasks, django_capture_on_commit_callbacks, settings):
    base = model_register(path=tiny_unet, name="base")
    other = model_register(path=tiny_unet, name="other")
    prompt_set = PromptSetFactory(name="eval-set")
    PromptFactory(prompt_set=prompt_set)
    settings.EVALUATION_SAMPLER = {"steps": 2, "scheduler": "no-such-scheduler"}
    with pytest.raises(ValueError, match="scheduler"):
        with django_capture_on_commit_callbacks(execute=True):
            evaluation_start(model_versions=[base, other], prompt_set=prompt_set)
    job = GenerationJob.objects.filter(model_version=base).first()
    assert job.status == GenerationJob.Status.FAILED and "scheduler" in job.error
