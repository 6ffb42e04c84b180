"""Evaluations of images made elsewhere: --seed-policy any, external models, and the command-line workflow."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Item, Round
from catalog.models import GenerationJob, Image
from catalog.services import external_model_register
from evaluation.models import EvaluationRound
from evaluation.services import EvaluationError, evaluation_start
from tests.factories import ImageFactory, PromptFactory, PromptSetFactory, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def imported():
    """Two external models with images at their own seeds (not the evaluation's), two of them for one prompt."""
    prompt_set = PromptSetFactory(name="holdout")
    prompts = [PromptFactory(prompt_set=prompt_set, external_id=f"h{n}") for n in range(3)]
    models = [external_model_register(name=name) for name in ("lab-a", "lab-b")]
    for m, model in enumerate(models):
        for n, prompt in enumerate(prompts):
            ImageFactory(prompt=prompt, model_version=model, seed=500 + n, color=(10 + m, 10 * n, 7))
    late = ImageFactory(prompt=prompts[0], model_version=models[0], seed=7, color=(1, 1, 1))
    return prompt_set, prompts, models, late


def test_the_evaluation_policy_finds_no_image_at_other_seeds_and_says_which_policy_would(imported):
    prompt_set, _, models, _ = imported
    with pytest.raises(EvaluationError, match=r"\(model, prompt, seed\) jobs \(for images made with other seeds: --seed-policy any\)"):
        evaluation_start(model_versions=models, prompt_set=prompt_set, from_existing=True)
    assert not EvaluationRound.objects.exists()


def test_any_policy_takes_the_lowest_seed_of_each_model_and_prompt(imported):
    prompt_set, prompts, models, late = imported
    result = evaluation_start(model_versions=models, prompt_set=prompt_set, from_existing=True, seed_policy="any")
    evaluation = result.evaluation
    assert evaluation.seed_policy == "any" and result.filled == 6
    jobs = {(j.model_version_id, j.prompt_id): j for j in evaluation.jobs.select_related("image")}
    assert jobs[(models[0].pk, prompts[0].pk)].image == late  # seed 7 before seed 500
    for job in jobs.values():
        assert job.status == GenerationJob.Status.DONE and job.seed == job.image.seed  # a job's image has its seed
    assert len({j.image_id for j in jobs.values()}) == 6
    assert result.build.prompts_used == 3


def test_any_policy_prefers_an_image_at_the_evaluations_own_seed(imported):
    from catalog.generation import prompt_seed

    prompt_set, prompts, models, _ = imported
    own = ImageFactory(prompt=prompts[1], model_version=models[1], seed=prompt_seed(seed=0, external_id="h1"))
    evaluation = evaluation_start(
        model_versions=models, prompt_set=prompt_set, from_existing=True, seed_policy="any"
    ).evaluation
    assert evaluation.jobs.get(model_version=models[1], prompt=prompts[1]).image == own


def test_external_models_need_from_existing_and_the_policy_needs_it_too(imported):
    prompt_set, _, models, _ = imported
    with pytest.raises(EvaluationError, match="models: model 'lab-a' has no weights: import its images and use --from-existing"):
        evaluation_start(model_versions=models, prompt_set=prompt_set)
    with pytest.raises(CommandError, match="has no weights: import its images and use --from-existing"):
        call_command("create_evaluation", "--models", "lab-a", "lab-b", "--prompts", "holdout")
    with pytest.raises(EvaluationError, match="seed_policy: applies to existing images only"):
        evaluation_start(model_versions=[], prompt_set=prompt_set, seed_policy="any")
    with pytest.raises(EvaluationError, match="seed_policy: expected one of evaluation, any"):
        evaluation_start(model_versions=models, prompt_set=prompt_set, from_existing=True, seed_policy="some")
    assert not EvaluationRound.objects.exists() and not GenerationJob.objects.exists()


def test_holdout_workflow_from_the_command_line(tmp_path, django_capture_on_commit_callbacks):
    """A CSV of (model, prompt id, image path) for two external models, to rounds and a report naming the policy."""
    prompt_set = PromptSetFactory(name="holdout")
    for n in range(4):
        PromptFactory(prompt_set=prompt_set, external_id=f"h{n}")
    lines = ["model,prompt_id,path"]
    for m, model in enumerate(("lab-a", "lab-b")):
        for n in range(4):
            (tmp_path / model).mkdir(exist_ok=True)
            (tmp_path / model / f"h{n}.png").write_bytes(png_bytes((40 * m, 30 * n, 9)))
            lines.append(f"{model},h{n},{model}/h{n}.png")
    manifest = tmp_path / "images.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")

    call_command("import_images", str(manifest), "--prompts", "holdout", "--create-models", stdout=io.StringIO())
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "create_evaluation", "--models", "lab-a", "lab-b", "--prompts", "holdout", "--from-existing",
            "--seed-policy", "any", "--name", "holdout", stdout=out,
        )
    evaluation = EvaluationRound.objects.get(name="holdout")
    assert evaluation.seed_policy == "any" and "8 filled from existing images" in out.getvalue()
    pairwise = evaluation.annotation_rounds.filter(kind=Round.Kind.PAIRWISE)
    assert pairwise.count() == 2
    for round_ in pairwise:
        items = Item.objects.filter(round=round_)
        assert items.count() == 4
        used = set(Image.objects.filter(item_images__item__in=items).values_list("model_version__name", flat=True))
        assert used == {"lab-a", "lab-b"}

    report = io.StringIO()
    call_command("evaluation_report", "holdout", stdout=report)
    assert "Images: seed policy 'any', any seed: any existing image of the (model, prompt)" in report.getvalue()
    data = io.StringIO()
    call_command("evaluation_report", "holdout", "--format", "json", stdout=data)
    assert json.loads(data.getvalue())["evaluation"]["seed_policy"] == "any"


def test_the_admin_creates_an_evaluation_of_imported_images_with_the_any_policy(imported, admin_client):
    prompt_set, _, _, _ = imported
    response = admin_client.post("/admin/evaluation/evaluationround/add/", {
        "models": "lab-a lab-b", "prompt_set": prompt_set.pk, "seed": 0, "k": 5, "from_existing": "on",
        "seed_policy": "any",
    })
    assert response.status_code == 302
    assert EvaluationRound.objects.get().seed_policy == "any"
