"""`manage.py seed_demo`: one open round of each kind on procedural images, and idempotent."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image as PILImage

from annotation.models import Item, Round
from catalog.models import Image, ModelVersion
from tests.factories import AlignmentQuestionFactory, PromptFactory, PromptSetFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dsg_prompts():
    prompt_set = PromptSetFactory(name="DSG-1k")
    prompts = [PromptFactory(prompt_set=prompt_set, text=f"a blue cube and {n} red balls") for n in range(3)]
    for prompt in prompts:
        for order in (1, 2, 3):
            AlignmentQuestionFactory(prompt=prompt, order=order)
    return prompts


def sharpness(image: Image) -> float:
    with image.file.open("rb") as f:
        pixels = np.asarray(PILImage.open(f).convert("L"), dtype=float)
    return float(np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean())


def test_seed_demo_creates_a_round_of_each_kind_once(dsg_prompts):
    call_command("seed_demo", prompts=2, stdout=io.StringIO())
    counts = (ModelVersion.objects.count(), Image.objects.count(), Round.objects.count(), Item.objects.count())
    call_command("seed_demo", prompts=2, stdout=io.StringIO())
    assert (ModelVersion.objects.count(), Image.objects.count(), Round.objects.count(), Item.objects.count()) == counts

    rounds = {(r.kind, r.criterion): r for r in Round.objects.filter(status=Round.Status.OPEN)}
    assert set(rounds) == {("pairwise", "visual_flaws"), ("pairwise", "visual_appeal"), ("best_worst", ""), ("alignment", "")}
    best_worst = rounds[("best_worst", "")].items.first()
    assert best_worst.images.count() == 5 and len({i.model_version_id for i in best_worst.images.all()}) == 1
    assert all(item.prompt.questions.exists() for item in rounds[("alignment", "")].items.all())
    for model in ModelVersion.objects.all():
        assert "placeholder" in model.notes
    # Round names are what researchers see; they must not name the models either way.
    assert not any(m.name in r.name for m in ModelVersion.objects.all() for r in rounds.values())

    image = Image.objects.first()
    assert (image.width, image.height) == (512, 512)
    # Same prompt and seed: the placeholder "pixel" model draws sharper detail than the base.
    base, tuned = ModelVersion.objects.get(name="demo-base"), ModelVersion.objects.get(name="demo-pixel-dpo")
    for seed in (0, 1):
        prompt = dsg_prompts[0]
        crisp = Image.objects.get(prompt=prompt, model_version=tuned, seed=seed)
        soft = Image.objects.get(prompt=prompt, model_version=base, seed=seed)
        assert sharpness(crisp) > 1.3 * sharpness(soft)
        assert crisp.sha256 != soft.sha256


def test_seed_demo_needs_the_dsg_prompts():
    with pytest.raises(CommandError, match="import_prompts --preset dsg1k"):
        call_command("seed_demo")
