"""The noisy_oracle policy judges toy images by their pixels, and refuses other images."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image as PILImage
from PIL import ImageFilter

from annotation.models import Aggregate, Judgment, Round
from annotation.services import rounds
from catalog.models import AlignmentQuestion, Image
from tests.factories import ImageFactory, ModelVersionFactory, PromptFactory
from toyworld.questions import scene_questions
from toyworld.scenes import parse_caption, render, to_uint8

pytestmark = pytest.mark.django_db

CAPTIONS = [
    "a big red striped star on the left and a small blue circle on the right, on a noisy background",
    "a small green checkered square in the center, on a striped background",
    "a big yellow dotted ring at the top and a small purple triangle at the bottom, on a checkered background",
]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _toy_image(prompt, model, seed, blur: float):
    picture = PILImage.fromarray(to_uint8(render(parse_caption(prompt.text))))
    if blur:
        picture = picture.filter(ImageFilter.GaussianBlur(blur))
    data = _png(np.asarray(picture))
    return ImageFactory(prompt=prompt, model_version=model, seed=seed,
                        file=ContentFile(data, name="toy.png"), sha256=hashlib.sha256(data).hexdigest())


def _toy_prompt(caption):
    prompt = PromptFactory(text=caption)
    by_order = {}
    for question in scene_questions(parse_caption(caption)):
        row = AlignmentQuestion.objects.create(prompt=prompt, order=question.order, text=question.text)
        row.parents.set([by_order[p] for p in question.parents])
        by_order[question.order] = row
    return prompt


@pytest.fixture
def toy_gallery():
    sharp, blurry = ModelVersionFactory(name="toy-sharp"), ModelVersionFactory(name="toy-blurry")
    prompts = [_toy_prompt(c) for c in CAPTIONS]
    for prompt in prompts:
        _toy_image(prompt, sharp, 1, blur=0)
        _toy_image(prompt, blurry, 1, blur=1.2)
        for seed in range(2, 6):  # with seed 1, a best/worst pool of 5 whose blur grows with the seed
            _toy_image(prompt, sharp, seed, blur=0.3 * (seed - 1))
    return prompts


def _winners(round_):
    return [Image.objects.get(pk=a.winner_id) for a in Aggregate.objects.filter(round=round_, complete=True)]


@pytest.mark.parametrize("criterion", ["visual_flaws", "visual_appeal"])
def test_pairwise_prefers_the_image_that_keeps_its_texture(toy_gallery, criterion):
    call_command("create_round", "--kind", "pairwise", "--name", "ab", "--models", "toy-sharp", "toy-blurry",
                 "--criterion", criterion, "--k", "3")
    call_command("simulate_annotators", "ab", "--annotators", "3", "--policy", "noisy_oracle", "--noise", "0")
    winners = _winners(Round.objects.get(name="ab"))
    assert len(winners) == 3 and all(w.model_version.name == "toy-sharp" for w in winners)


def test_best_worst_ranks_by_fidelity(toy_gallery):
    call_command("create_round", "--kind", "best_worst", "--name", "bw", "--models", "toy-sharp",
                 "--n", "5", "--k", "3")
    call_command("simulate_annotators", "bw", "--annotators", "3", "--policy", "noisy_oracle", "--noise", "0")
    aggregates = Aggregate.objects.filter(round__name="bw", complete=True)
    assert aggregates.count() == 3
    for aggregate in aggregates:
        assert Image.objects.get(pk=aggregate.winner_id).seed == 1  # the unblurred one
        assert Image.objects.get(pk=aggregate.loser_id).seed == 5  # the most blurred


def test_alignment_answers_come_from_the_pixels(toy_gallery):
    call_command("create_round", "--kind", "alignment", "--name", "al", "--models", "toy-sharp", "--k", "1")
    call_command("simulate_annotators", "al", "--annotators", "1", "--policy", "noisy_oracle", "--noise", "0")
    sharp = Judgment.objects.filter(item__round__name="al", item__images__seed=1)  # the unblurred renders
    answers = [a.answer for j in sharp for a in j.answers.all()]
    assert len(answers) == sum(len(scene_questions(parse_caption(c))) for c in CAPTIONS)
    assert all(answers)
    blurred = Judgment.objects.filter(item__round__name="al", item__images__seed=5)
    assert not all(a.answer for j in blurred for a in j.answers.all())  # textures blurred away


def test_noise_makes_slips(toy_gallery):
    call_command("create_round", "--kind", "alignment", "--name", "al", "--models", "toy-sharp", "--k", "1")
    call_command("simulate_annotators", "al", "--annotators", "1", "--policy", "noisy_oracle", "--noise", "0.5")
    answers = [a.answer for j in Judgment.objects.filter(item__round__name="al") for a in j.answers.all()]
    assert 0 < sum(answers) < len(answers)


def test_images_from_outside_the_toy_world_are_refused_in_one_line(toy_gallery):
    other = ModelVersionFactory(name="photo-model")
    prompt = PromptFactory(text="a photo of a cat")
    images = [ImageFactory(prompt=prompt, model_version=other, seed=s) for s in range(3)]
    rounds.round_create(name="photos", kind="best_worst", k=3,
                          items=[rounds.ItemSpec(prompt_id=prompt.pk, image_ids=tuple(i.pk for i in images))])
    with pytest.raises(CommandError, match="toy-world images only") as excinfo:
        call_command("simulate_annotators", "photos", "--policy", "noisy_oracle")
    assert "\n" not in str(excinfo.value)
    assert not Judgment.objects.filter(item__round__name="photos").exists()


def test_a_second_run_on_another_round_works(toy_gallery):
    for name in ("first", "second"):
        call_command("create_round", "--kind", "pairwise", "--name", name, "--models", "toy-sharp", "toy-blurry",
                     "--criterion", "visual_flaws", "--k", "3")
        call_command("simulate_annotators", name, "--annotators", "3", "--policy", "noisy_oracle")
    assert Judgment.objects.filter(item__round__name="second").count() == 9


def test_bad_noise_is_refused(toy_gallery):
    call_command("create_round", "--kind", "alignment", "--name", "al", "--models", "toy-sharp", "--k", "1")
    with pytest.raises(CommandError, match="--noise"):
        call_command("simulate_annotators", "al", "--policy", "noisy_oracle", "--noise", "1.5")



def test_all_open_works_every_open_round(toy_gallery):
    for name in ("first", "second"):
        call_command("create_round", "--kind", "pairwise", "--name", name, "--models", "toy-sharp", "toy-blurry",
                     "--criterion", "visual_appeal", "--k", "3")
    with pytest.raises(CommandError, match="--all-open"):
        call_command("simulate_annotators", "first", "--all-open")
    call_command("simulate_annotators", "--all-open", "--annotators", "3", "--policy", "noisy_oracle")
    assert Aggregate.objects.filter(round__name__in=["first", "second"], complete=True).count() == 6
