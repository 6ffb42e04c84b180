"""`manage.py seed_demo`: the toy pipelines registered, images made by the gpu task, rounds open."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from annotation.models import Round
from catalog.models import GenerationJob, Image, ModelVersion
from evaluation.models import EvaluationRound

pytestmark = pytest.mark.django_db(transaction=True)


def test_seed_demo_generates_through_the_task_and_opens_every_kind_of_round(eager_tasks, settings):
    settings.EVALUATION_SAMPLER = {"steps": 4}  # the real sampler, fewer steps
    out = io.StringIO()
    call_command("seed_demo", best_worst_prompts=2, evaluation_prompts=3, wait=True, timeout=60, stdout=out)

    assert set(ModelVersion.objects.values_list("name", "family")) == {("toy-sd", "unet"), ("toy-pixart", "dit")}
    assert GenerationJob.objects.exclude(status=GenerationJob.Status.DONE).count() == 0
    assert Image.objects.filter(model_version__name="toy-sd").count() == 2 * 5 + 3
    assert Image.objects.filter(model_version__name="toy-pixart").count() == 3
    assert {(i.width, i.height) for i in Image.objects.all()} == {(64, 64)}

    best_worst = Round.objects.get(name="Demo: best and worst")
    assert best_worst.kind == "best_worst" and best_worst.items.count() == 2
    assert all(item.images.count() == 5 for item in best_worst.items.all())
    evaluation = EvaluationRound.objects.get(name="Demo: toy-pixart vs toy-sd")
    kinds = sorted((r.kind, r.criterion) for r in evaluation.annotation_rounds.all())
    assert kinds == [("alignment", ""), ("pairwise", "visual_appeal"), ("pairwise", "visual_flaws")]

    counts = (Image.objects.count(), Round.objects.count(), EvaluationRound.objects.count())
    call_command("seed_demo", best_worst_prompts=2, evaluation_prompts=3, wait=True, timeout=60, stdout=io.StringIO())
    assert (Image.objects.count(), Round.objects.count(), EvaluationRound.objects.count()) == counts
