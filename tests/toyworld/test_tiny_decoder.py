"""The toy tiny decoder: it ships beside the toy pipelines and decodes their latents as the pixel term needs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from toyworld.recipes.tiny_decoder import TINY_DECODER_CONFIG, WEIGHTS, encode, load_vae, psnr, render_scenes
from toyworld.splits import is_eval_caption

TINY_DECODER = WEIGHTS / "toy-tiny-decoder"


def test_it_ships_small_with_its_recipe():
    from training.engine.families import load_decoder

    decoder = load_decoder(TINY_DECODER)
    assert type(decoder).__name__ == "AutoencoderTiny"
    assert decoder.config.latent_channels == 4
    assert tuple(decoder.config.decoder_block_out_channels) == TINY_DECODER_CONFIG["decoder_block_out_channels"]
    # AutoencoderTiny's own factors: it reads the toy pipelines' diffusion latents as they are.
    assert (decoder.config.scaling_factor, decoder.config.shift_factor) == (1.0, 0.0)
    assert sum(p.numel() for p in decoder.decoder.parameters()) < 250_000
    assert json.loads((TINY_DECODER / "recipe.json").read_text())["args"]["seed"] == 0


def test_it_decodes_held_out_toy_latents_close_to_the_vae_decoder():
    from training.engine.families import decode_latents, load_decoder

    vae = load_vae()
    tiny = load_decoder(TINY_DECODER).float().eval()
    _, pixels = render_scenes(8, 7, is_eval_caption)
    with torch.no_grad():
        z = encode(vae, pixels)
        by_vae, by_tiny = decode_latents(vae, z), decode_latents(tiny, z)
    assert float(psnr(by_tiny, by_vae).mean()) > 25.0
    assert float(psnr(by_tiny, by_vae.roll(1, 0)).mean()) < 20.0  # another scene's decode is far off


@pytest.mark.parametrize("pipeline", ["toy-sd"])
def test_it_trains_as_the_pixel_decoder_of_a_toy_pipeline(pipeline, tmp_path):
    from toyworld.scenes import render_png, sample_scene
    from toyworld.splits import is_train_caption
    from training.engine.config import TrainConfig
    from training.engine.loop import train

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    while len(rows) < 4:
        scene = sample_scene(rng)
        if is_train_caption(scene.caption):
            render_png(scene, data / f"{len(rows)}.png")
            rows.append({"file_name": f"{len(rows)}.png", "text": scene.caption})
    (data / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = dict(pretrained_model=str(WEIGHTS / pipeline), train_data=str(data), resolution=64,
                    train_batch_size=2, max_train_steps=2, learning_rate=1e-4, pixel_objective="sft",
                    pixel_weight=2.0, checkpointing_steps=100)
    with_tiny = train(TrainConfig(**settings, output_dir=str(tmp_path / "tiny"), pixel_decoder=str(TINY_DECODER)))
    with_vae = train(TrainConfig(**settings, output_dir=str(tmp_path / "vae")))
    assert with_tiny.model_dir is not None and with_tiny.global_step == 2

    def first_step(result):
        return json.loads(result.metrics_file.read_text().splitlines()[0])

    tiny_step, vae_step = first_step(with_tiny), first_step(with_vae)
    assert all(np.isfinite(record["loss"]) for record in map(json.loads, with_tiny.metrics_file.read_text().splitlines()))
    # Same batch, noise and timesteps: the same latent term; the pixel term is the tiny decoder's,
    # close to the VAE's but not the same.
    assert tiny_step["latent_loss"] == pytest.approx(vae_step["latent_loss"], rel=1e-6)
    assert tiny_step["pixel_loss"] != vae_step["pixel_loss"]
    assert tiny_step["pixel_loss"] == pytest.approx(vae_step["pixel_loss"], rel=0.5)
