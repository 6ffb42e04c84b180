"""Gradient cosines between pixel-term modes, on a tiny pipeline."""

from __future__ import annotations

import pytest
import torch

from training.engine import gradients, loop
from training.engine.config import TrainConfig


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    from training.engine.tiny import build_tiny_pipeline

    return build_tiny_pipeline("unet", tmp_path_factory.mktemp("tiny-unet"))


@pytest.fixture
def tiny_step(tiny_unet, sft_folder, tmp_path):
    """A tiny U-Net pipeline in its adapter, frozen as the loop freezes it, and a batch of two images."""
    from training.engine.data import collate_fn, load_sft_dataset
    from training.engine.families import load_adapter

    config = TrainConfig(
        pretrained_model=str(tiny_unet), output_dir=str(tmp_path / "run"), train_data=str(sft_folder),
        resolution=32, max_sequence_length=16, pixel_objective="sft", pixel_weight=2.0,
    )
    adapter = load_adapter(config.pretrained_model, max_sequence_length=16)
    for module in (adapter.vae, *adapter.text_encoders()):
        module.requires_grad_(False).eval()
    dataset = load_sft_dataset(config.train_data, resolution=32)
    batch = collate_fn([dataset[0], dataset[1]])
    ctx = loop.LossContext(adapter=adapter, config=config, device=torch.device("cpu"))
    return ctx, adapter, batch


def test_decoder_checkpointing_leaves_the_gradient_unchanged(tiny_step):
    ctx, adapter, batch = tiny_step
    plain = gradients.term_gradient(ctx, adapter.denoiser, batch, seed=7)
    adapter.vae.enable_gradient_checkpointing()
    checkpointed = gradients.term_gradient(ctx, adapter.denoiser, batch, seed=7)
    assert gradients.cosine(plain, checkpointed) == pytest.approx(1.0, abs=1e-4)
    assert plain.norm() > 0


def test_another_objective_or_other_noise_turns_the_gradient(tiny_step):
    ctx, adapter, batch = tiny_step
    total = gradients.term_gradient(ctx, adapter.denoiser, batch, seed=7)
    x0 = loop.LossContext(**{**vars(ctx), "config": ctx.config.model_copy(update={"pixel_decoding": "x0"})})
    assert gradients.cosine(total, gradients.term_gradient(x0, adapter.denoiser, batch, seed=7)) < 0.999
    assert gradients.cosine(total, gradients.term_gradient(ctx, adapter.denoiser, batch, seed=8)) < 0.999


def test_the_total_is_the_latent_plus_the_weighted_pixel_gradient(tiny_step):
    ctx, adapter, batch = tiny_step
    total = gradients.term_gradient(ctx, adapter.denoiser, batch, seed=3)
    latent = gradients.term_gradient(ctx, adapter.denoiser, batch, seed=3, term="latent")
    pixel = gradients.term_gradient(ctx, adapter.denoiser, batch, seed=3, term="pixel")
    assert float((total - (latent + pixel)).norm() / total.norm()) < 1e-5  # float32 rounding
    assert gradients.total_cosine(latent, pixel, pixel) == pytest.approx(1.0)
    assert all(p.grad is None for p in adapter.denoiser.parameters())  # .grad is left alone


def test_cosine_on_hand_made_vectors():
    a = torch.tensor([1.0, 0.0])
    assert gradients.cosine(a, torch.tensor([2.0, 0.0])) == pytest.approx(1.0)
    assert gradients.cosine(a, torch.tensor([1.0, 1.0])) == pytest.approx(2 ** -0.5)
    assert gradients.cosine(a, torch.tensor([-3.0, 0.0])) == pytest.approx(-1.0)
