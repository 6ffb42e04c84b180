"""Evaluation rounds: jobs with shared seeds, filling from existing images, annotation rounds, the command."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Item, Round
from catalog.generation import generation_jobs_fill_from_existing, prompt_seed
from catalog.models import GenerationBatch, GenerationJob, Image
from evaluation.models import EvaluationRound
from evaluation.services import EvaluationError, evaluation_annotation_create, evaluation_create, evaluation_start
from tests.evaluation.builders import prompt_set_with_images

pytestmark = pytest.mark.django_db


def test_prompt_seed_is_deterministic_and_differs_by_prompt_and_seed():
    assert prompt_seed(seed=7, external_id="p1") == prompt_seed(seed=7, external_id="p1")
    assert prompt_seed(seed=7, external_id="p1") != prompt_seed(seed=7, external_id="p2")
    assert prompt_seed(seed=7, external_id="p1") != prompt_seed(seed=8, external_id="p1")
    assert 0 <= prompt_seed(seed=123456789, external_id="x") < 2**31


def test_one_job_per_prompt_per_model_with_the_same_seed_for_every_model():
    prompt_set, versions, prompts = prompt_set_with_images(models=["base", "pixel"], n_prompts=4, seed=3)
    evaluation = evaluation_create(model_versions=versions, prompt_set=prompt_set, seed=3)
    jobs = list(evaluation.jobs.all())
    assert len(jobs) == 8
    for prompt in prompts:
        seeds = {j.seed for j in jobs if j.prompt_id == prompt.pk}
        assert seeds == {prompt_seed(seed=3, external_id=prompt.external_id)}
    assert {j.status for j in jobs} == {"queued"}
    assert [m.name for m in evaluation.ordered_models()] == ["base", "pixel"]


def test_limit_draws_a_seeded_sample():
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=10)
    first = evaluation_create(model_versions=versions, prompt_set=prompt_set, limit=4, seed=1, name="one")
    again = evaluation_create(model_versions=versions, prompt_set=prompt_set, limit=4, seed=1, name="two")
    other = evaluation_create(model_versions=versions, prompt_set=prompt_set, limit=4, seed=2, name="three")
    prompts_of = lambda e: sorted(set(e.jobs.values_list("prompt_id", flat=True)))  # noqa: E731
    assert len(prompts_of(first)) == 4
    assert prompts_of(first) == prompts_of(again)
    assert prompts_of(first) != prompts_of(other)


def test_bad_input_is_refused_with_the_field_named():
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=2)
    with pytest.raises(EvaluationError, match="models: an evaluation compares at least 2"):
        evaluation_create(model_versions=versions[:1], prompt_set=prompt_set)
    with pytest.raises(EvaluationError, match="models: listed more than once: base"):
        evaluation_create(model_versions=[versions[0], versions[0]], prompt_set=prompt_set)
    with pytest.raises(EvaluationError, match="limit"):
        evaluation_create(model_versions=versions, prompt_set=prompt_set, limit=0)
    assert not EvaluationRound.objects.exists()


def test_fill_from_existing_matches_model_prompt_and_seed():
    prompt_set, versions, prompts = prompt_set_with_images(models=["base", "pixel"], n_prompts=3, seed=5)
    wrong_seed = evaluation_create(model_versions=versions, prompt_set=prompt_set, seed=6, name="other seed")
    assert generation_jobs_fill_from_existing(batch=wrong_seed.generation_batch) == 0
    evaluation = evaluation_create(model_versions=versions, prompt_set=prompt_set, seed=5)
    assert generation_jobs_fill_from_existing(batch=evaluation.generation_batch) == 6
    for job in evaluation.jobs.select_related("image"):
        assert job.status == GenerationJob.Status.DONE
        assert (job.image.model_version_id, job.image.prompt_id, job.image.seed) == (
            job.model_version_id, job.prompt_id, job.seed
        )
    assert generation_jobs_fill_from_existing(batch=evaluation.generation_batch) == 0


def test_annotation_rounds_hold_every_pair_in_model_order_and_report_missing_prompts():
    prompt_set, versions, prompts = prompt_set_with_images(
        models=["base", "sft", "pixel"], n_prompts=4, with_questions=2, skip={(3, "sft")}
    )
    result = evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True)
    build = result.build
    assert build.prompts_used == 3
    assert build.missing == [{"prompt": prompts[3].external_id, "text": prompts[3].text, "models": ["sft"]}]
    assert result.evaluation.missing_prompts == build.missing
    by_kind = {(r.kind, r.criterion): r for r in result.evaluation.annotation_rounds.all()}
    assert set(by_kind) == {("pairwise", "visual_flaws"), ("pairwise", "visual_appeal"), ("alignment", "")}
    model_index = {v.pk: i for i, v in enumerate(versions)}
    for criterion in ("visual_flaws", "visual_appeal"):
        round_ = by_kind[("pairwise", criterion)]
        items = Item.objects.filter(round=round_).prefetch_related("item_images__image")
        assert items.count() == 3 * 3  # 3 prompts x 3 pairs
        pairs = []
        for item in items:
            first, second = [ii.image for ii in item.item_images.order_by("order")]
            assert first.prompt_id == second.prompt_id == item.prompt_id
            assert first.seed == second.seed
            pairs.append((model_index[first.model_version_id], model_index[second.model_version_id]))
        assert sorted(set(pairs)) == [(0, 1), (0, 2), (1, 2)]  # Model A is the one listed first
        assert round_.k == 5
        assert "base" not in round_.name and "pixel" not in round_.name  # annotators see round names
    alignment = by_kind[("alignment", "")]
    assert Item.objects.filter(round=alignment).count() == 2 * 3  # 2 prompts with questions x 3 models
    assert result.evaluation.status == EvaluationRound.Status.ANNOTATING
    with pytest.raises(EvaluationError, match="already has its annotation rounds"):
        evaluation_annotation_create(evaluation=result.evaluation)


def test_from_existing_without_any_image_creates_nothing():
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=2, seed=1)
    with pytest.raises(EvaluationError, match="no existing image"):
        evaluation_start(model_versions=versions, prompt_set=prompt_set, seed=99, from_existing=True)
    assert not EvaluationRound.objects.exists() and not Round.objects.exists()


def test_create_evaluation_command():
    prompt_set, versions, prompts = prompt_set_with_images(models=["base", "pixel"], n_prompts=3, skip={(0, "pixel")})
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_evaluation", "--models", "pixel", "base", "--prompts", prompt_set.name, "--from-existing",
        "--k", "3", stdout=out, stderr=err,
    )
    evaluation = EvaluationRound.objects.get()
    assert [m.name for m in evaluation.ordered_models()] == ["pixel", "base"]
    assert "2 items (visual_flaws)" in out.getvalue()
    assert f"prompt {prompts[0].external_id}: no image from pixel" in err.getvalue()
    assert set(evaluation.annotation_rounds.values_list("k", flat=True)) == {3}
    with pytest.raises(CommandError, match="--models: no model version named 'nope'"):
        call_command("create_evaluation", "--models", "base", "nope", "--prompts", prompt_set.name)
    with pytest.raises(CommandError, match="--prompts: no prompt set named 'missing'"):
        call_command("create_evaluation", "--models", "base", "pixel", "--prompts", "missing")


def test_without_from_existing_jobs_wait_for_generation():
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=2)
    call_command("create_evaluation", "--models", "base", "pixel", "--prompts", prompt_set.name, stdout=io.StringIO())
    evaluation = EvaluationRound.objects.get()
    assert evaluation.status == EvaluationRound.Status.GENERATING
    assert evaluation.jobs.filter(status="queued").count() == 4
    assert not evaluation.annotation_rounds.exists()


def test_deleting_an_evaluation_deletes_its_generation_jobs_but_keeps_the_images():
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=2)
    kept = evaluation_create(model_versions=versions, prompt_set=prompt_set, name="kept")
    gone = evaluation_start(model_versions=versions, prompt_set=prompt_set, name="gone", from_existing=True).evaluation
    images = Image.objects.count()
    gone.delete()
    assert set(GenerationJob.objects.values_list("batch", flat=True)) == {kept.generation_batch_id}
    assert not GenerationBatch.objects.filter(evaluation=None).exists()
    assert Image.objects.count() == images
