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


def test_a_failed_generation_marks_its_jobs_failed(
    tiny_unet, eager_tasks, django_capture_on_commit_callbacks, monkeypatch
):
    from training.engine import sampling

    base = model_register(path=tiny_unet, name="base")
    other = model_register(path=tiny_unet, name="other")
    prompt_set = PromptSetFactory(name="eval-set")
    PromptFactory(prompt_set=prompt_set)

    def broken(*args, **kwargs):
        raise RuntimeError("the scheduler broke")

    monkeypatch.setattr(sampling, "sample", broken)
    with pytest.raises(RuntimeError, match="scheduler"):
        with django_capture_on_commit_callbacks(execute=True):
            evaluation_start(model_versions=[base, other], prompt_set=prompt_set)
    job = GenerationJob.objects.filter(model_version=base).first()
    assert job.status == GenerationJob.Status.FAILED and "scheduler" in job.error


def test_a_bad_sampler_setting_refuses_the_evaluation_and_keeps_nothing(tiny_unet, eager_tasks, settings):
    from evaluation.models import EvaluationRound
    from evaluation.services import EvaluationError

    base = model_register(path=tiny_unet, name="base")
    other = model_register(path=tiny_unet, name="other")
    prompt_set = PromptSetFactory(name="eval-set")
    PromptFactory(prompt_set=prompt_set)
    settings.EVALUATION_SAMPLER = {"steps": 2, "scheduler": "no-such-scheduler"}
    with pytest.raises(EvaluationError) as caught:
        evaluation_start(model_versions=[base, other], prompt_set=prompt_set)
    assert caught.value.field == "EVALUATION_SAMPLER" and "scheduler" in caught.value.detail
    assert not EvaluationRound.objects.exists() and not GenerationJob.objects.exists()


def test_the_base_model_is_sampled_once_across_evaluations_of_its_checkpoints(
    tiny_unet, eager_tasks, django_capture_on_commit_callbacks, settings
):
    base = model_register(path=tiny_unet, name="base")
    first = model_register(path=tiny_unet, name="first", parent=base)
    second = model_register(path=tiny_unet, name="second", parent=base)
    prompt_set = PromptSetFactory(name="eval-set")
    for _ in range(3):
        PromptFactory(prompt_set=prompt_set)
    with django_capture_on_commit_callbacks(execute=True):
        one = evaluation_start(model_versions=[first, base], prompt_set=prompt_set, seed=7)
    base_images = set(Image.objects.filter(model_version=base).values_list("pk", flat=True))
    assert one.filled == 0 and len(base_images) == 3

    with django_capture_on_commit_callbacks(execute=True):
        two = evaluation_start(model_versions=[second, base], prompt_set=prompt_set, seed=7)
    assert two.filled == 3 and two.jobs == 6
    assert set(two.evaluation.jobs.filter(model_version=base).values_list("image_id", flat=True)) == base_images
    assert Image.objects.filter(model_version=second).count() == 3
    assert Image.objects.count() == 9
    assert two.evaluation.annotation_rounds.count() == 2  # the rounds came once second's images were done

    # Every image exists already: the rounds are created at once, nothing is sent to the gpu queue.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        three = evaluation_start(model_versions=[base, first], prompt_set=prompt_set, seed=7)
    assert three.filled == three.jobs == 6 and three.build is not None and callbacks == []
    assert three.evaluation.annotation_rounds.count() == 2 and Image.objects.count() == 9

    # Another seed, or another sampler, is another image.
    with django_capture_on_commit_callbacks(execute=True):
        assert evaluation_start(model_versions=[base, first], prompt_set=prompt_set, seed=8).filled == 0
    settings.EVALUATION_SAMPLER = {**settings.EVALUATION_SAMPLER, "steps": 3}
    with django_capture_on_commit_callbacks(execute=True):
        four = evaluation_start(model_versions=[base, first], prompt_set=prompt_set, seed=7)
    assert four.filled == 0
    assert Image.objects.filter(model_version=base, sampler__steps=3).count() == 3
