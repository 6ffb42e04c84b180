"""The toy world's scenes: captions round-trip, renders are deterministic, splits are disjoint."""

import numpy as np
import pytest

from toyworld.prompts import prompt_rows
from toyworld.questions import scene_questions
from toyworld.scenes import CaptionError, parse_caption, render, sample_scene
from toyworld.splits import is_eval_caption


def test_every_sampled_caption_parses_back_to_its_scene():
    rng = np.random.default_rng(0)
    for _ in range(500):
        scene = sample_scene(rng)
        assert parse_caption(scene.caption) == scene


@pytest.mark.parametrize("caption", [
    "a photo of a cat",
    "a big red star in the center",  # no background
    "a big red star in the center, on a shiny background",
    "a big red star on the left, on a plain background",  # one object is always centred
    "a big red star on the left and a small blue star on the right, on a plain background",  # shape twice
    "a huge red star in the center, on a plain background",
])
def test_other_text_is_refused_with_a_reason(caption):
    with pytest.raises(CaptionError):
        parse_caption(caption)


def test_render_is_a_function_of_the_caption():
    caption = "a big red striped star on the left and a small blue ring on the right, on a noisy background"
    first, second = render(parse_caption(caption)), render(parse_caption(caption))
    assert first.shape == (64, 64, 3) and first.dtype == np.float32
    assert np.array_equal(first, second)
    other = render(parse_caption(caption.replace("noisy", "plain")))
    assert not np.array_equal(first, other)


def test_textures_put_detail_under_the_latent_cell():
    """Striped and plain fills of the same scene differ at the 4-pixel period, inside 8×8 cells."""
    plain = render(parse_caption("a big red square in the center, on a plain background"))
    striped = render(parse_caption("a big red striped square in the center, on a plain background"))
    rows = striped[16:48, 32, 0]
    assert np.ptp(rows) > 0.4  # bright and dark rows inside the square
    assert np.ptp(plain[16:48, 32, 0]) < 1e-6


def test_questions_depend_on_their_entity():
    scene = parse_caption("a big red striped star on the left and a small blue ring on the right, on a noisy background")
    questions = scene_questions(scene)
    texts = [q.text for q in questions]
    assert texts[0] == "is there a star?" and questions[0].parents == ()
    star_children = [q for q in questions if q.parents == (1,)]
    assert {q.text for q in star_children} == {
        "is the star red?", "is the star big?", "is the star striped?", "is the star on the left?"}
    assert texts[-1] == "is the background noisy?" and questions[-1].parents == ()


def test_prompt_sets_share_no_caption_and_respect_the_split():
    train = prompt_rows("train", 300)
    evaluation = prompt_rows("eval", 100)
    train_captions = {row["prompt"] for row in train}
    eval_captions = {row["prompt"] for row in evaluation}
    assert len(train_captions) == 300 and len(eval_captions) == 100
    assert not train_captions & eval_captions
    assert all(is_eval_caption(c) for c in eval_captions) and not any(is_eval_caption(c) for c in train_captions)


def test_shipped_prompt_files_are_the_generated_ones():
    import json
    from pathlib import Path

    from toyworld.prompts import SET_SIZES

    folder = Path(__file__).resolve().parents[2] / "data" / "prompts" / "toy"
    for split, count in SET_SIZES.items():
        rows = [json.loads(line) for line in (folder / f"toy-{split}.jsonl").read_text().splitlines()]
        assert rows == prompt_rows(split, count)
