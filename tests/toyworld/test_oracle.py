"""The pixel oracle: right on renders, right when the render shows another scene, and a texture
measure that ranks degraded renders below clean ones."""

import dataclasses

import numpy as np
import pytest

from toyworld import oracle
from toyworld.quality import degrade, oracle_figures
from toyworld.scenes import COLOURS, Scene, render, sample_scene, to_uint8


def _scenes(seed, count):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(count)]


def test_oracle_figures_on_held_out_renders():
    """Right on ground-truth renders, and right (often "no") on renders of perturbed scenes."""
    figures = oracle_figures(scenes=150, seed=11)
    assert figures["renders"]["accuracy"] >= 0.99
    perturbed = figures["perturbed"]
    assert perturbed["no_answers"] > 0.25 * perturbed["questions"]  # it really asks questions whose answer is "no"
    assert perturbed["accuracy"] >= 0.97
    assert figures["fidelity"]["blur"]["mean"] < figures["fidelity"]["jpeg"]["mean"] < figures["fidelity"]["clean"]["mean"]


@pytest.mark.parametrize("how", ["blur", "jpeg"])
def test_texture_fidelity_ranks_degraded_renders_below_the_clean_one(how):
    for scene in _scenes(13, 60):
        clean = render(scene)
        assert oracle.texture_fidelity(clean, scene.caption) == pytest.approx(1.0)
        assert oracle.texture_fidelity(degrade(clean, how), scene.caption) < oracle.texture_fidelity(
            to_uint8(clean), scene.caption)


def test_invented_detail_costs_fidelity_too():
    scene = _scenes(14, 1)[0]
    noisy = np.clip(render(scene) + np.random.default_rng(0).normal(0, 0.2, (64, 64, 3)), 0, 1)
    assert oracle.texture_fidelity(noisy, scene.caption) < 0.9


def test_shape_and_colour_check_reads_the_image():
    scene = Scene(objects=_scenes(15, 1)[0].objects[:1], background="plain")
    scene = Scene(objects=(dataclasses.replace(scene.objects[0], position="center"),), background="plain")
    assert oracle.shape_and_colour_correct(render(scene), scene.caption)
    other_colour = next(c for c in COLOURS if c != scene.objects[0].colour)
    wrong = Scene(objects=(dataclasses.replace(scene.objects[0], colour=other_colour),), background="plain")
    assert not oracle.shape_and_colour_correct(render(wrong), scene.caption)


def test_images_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="64×64"):
        oracle.answer_questions(np.zeros((32, 32, 3), np.uint8), _scenes(16, 1)[0].caption)
