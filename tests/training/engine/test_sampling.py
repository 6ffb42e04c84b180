"""Sampling: deterministic per-image seeds, batching, the JSON record, flow scheduler."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from training.engine.config import ConfigError, SampleConfig
from training.engine.sampling import sample


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image).copy()


def test_sampling_is_deterministic_per_seed_and_independent_of_batching(tiny_pipelines, tmp_path):
    prompts, seeds = ["a red cat", "a blue dog", "a red cat"], [11, 12, 13]
    first = sample(tiny_pipelines["unet"], prompts, seeds, tmp_path / "a",
                   SampleConfig(steps=3, batch_size=2, height=32, width=32))
    again = sample(tiny_pipelines["unet"], prompts, seeds, tmp_path / "again",
                   SampleConfig(steps=3, batch_size=2, height=32, width=32))
    second = sample(tiny_pipelines["unet"], prompts, seeds, tmp_path / "b",
                    SampleConfig(steps=3, batch_size=1, height=32, width=32))
    for a, b, c in zip(first["images"], again["images"], second["images"]):
        image = pixels(tmp_path / "a" / a["file"]).astype(int)
        assert np.array_equal(image, pixels(tmp_path / "again" / b["file"]))  # same settings: same bytes
        # Another batch size: the same noise, so the same image up to rounding (some CPUs order a
        # batched product's sums differently, and a pixel moves by a level).
        other = pixels(tmp_path / "b" / c["file"]).astype(int)
        assert np.abs(image - other).max() <= 2 and (image != other).mean() < 0.01
    # Same prompt, different seed: a different image.
    assert not np.array_equal(pixels(tmp_path / "a" / "00000.png"), pixels(tmp_path / "a" / "00002.png"))

    record = json.loads((tmp_path / "a" / "samples.json").read_text())
    assert record["scheduler"] == "DDIMScheduler"
    assert record["steps"] == 3 and record["guidance_scale"] == 7.5 and record["batch_size"] == 2
    assert (record["height"], record["width"]) == (32, 32)
    assert record["images"] == [{"file": f"{i:05d}.png", "prompt": p, "seed": s}
                                for i, (p, s) in enumerate(zip(prompts, seeds))]
    assert record["family"] == "unet" and record["pipeline_class"] == "StableDiffusionPipeline"


@pytest.mark.parametrize(("family", "scheduler"), [("flow", "FlowMatchEulerDiscreteScheduler"),
                                                   ("dit", "DDIMScheduler")])
def test_other_families_sample_with_the_right_scheduler(tiny_pipelines, tmp_path, family, scheduler):
    record = sample(tiny_pipelines[family], ["a red cat"], [5], tmp_path,
                    SampleConfig(steps=2, height=32, width=32, max_sequence_length=16))
    assert record["scheduler"] == scheduler
    assert record["scheduler_requested"] == "ddim"
    assert pixels(tmp_path / "00000.png").shape == (32, 32, 3)


def test_bad_sampling_arguments_are_named(tiny_pipelines, tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        sample(tiny_pipelines["unet"], ["a", "b"], [1], tmp_path)
    with pytest.raises(ConfigError, match="^scheduler: must be 'ddim' or 'default'"):
        SampleConfig(scheduler="euler")
    with pytest.raises(ConfigError, match="^height: must be a multiple of 8"):
        SampleConfig(height=30)
