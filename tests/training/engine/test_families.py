"""Family adapters: detection, prediction-type conversions, decoding and tiny pipelines."""

from __future__ import annotations

import types

import pytest
import torch

from training.engine import losses
from training.engine.families import NoiseLevels, decode_latents, load_adapter
from training.engine.pipeline_index import read_pipeline_index


@pytest.mark.parametrize(("key", "family", "prediction"), [
    ("unet", "unet", "epsilon"), ("unet_v", "unet", "v_prediction"), ("dit", "dit", "epsilon"), ("flow", "flow", "flow"),
])
def test_tiny_pipelines_are_detected_and_load(tiny_pipelines, key, family, prediction):
    from diffusers import DiffusionPipeline

    index = read_pipeline_index(tiny_pipelines[key])
    assert (index.family, index.prediction_type) == (family, prediction)
    pipeline = DiffusionPipeline.from_pretrained(tiny_pipelines[key])
    denoiser = getattr(pipeline, index.denoiser)
    assert sum(p.numel() for p in denoiser.parameters()) < 500_000


def _levels(alpha_bar):
    alpha_bar = torch.tensor(alpha_bar)
    return NoiseLevels(torch.zeros(len(alpha_bar), dtype=torch.long), alpha_bar.sqrt(), (1 - alpha_bar).sqrt())


def test_v_prediction_recovers_eps(tiny_pipelines):
    adapter = load_adapter(tiny_pipelines["unet_v"])
    torch.manual_seed(0)
    z, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    levels = _levels([0.99, 0.5, 0.02])
    z_t = losses.noised_latents(z, eps, levels.a, levels.b)
    shape = (-1, 1, 1, 1)
    v = levels.a.reshape(shape) * eps - levels.b.reshape(shape) * z
    assert torch.allclose(adapter.eps_from_output(v, z_t, levels), eps, atol=1e-5)


def test_flow_velocity_recovers_eps(tiny_pipelines):
    adapter = load_adapter(tiny_pipelines["flow"])
    levels = adapter.sample_noise_levels(4, torch.Generator().manual_seed(0))
    assert torch.allclose(levels.a + levels.b, torch.ones(4))  # a = 1 − σ, b = σ
    assert torch.allclose(levels.timesteps, levels.b * 1000)
    torch.manual_seed(0)
    z, eps = torch.randn(4, 4, 2, 2), torch.randn(4, 4, 2, 2)
    z_t = losses.noised_latents(z, eps, levels.a, levels.b)
    assert torch.allclose(adapter.eps_from_output(eps - z, z_t, levels), eps, atol=1e-5)


def test_ddpm_noise_levels_follow_alphas_cumprod(tiny_pipelines):
    adapter = load_adapter(tiny_pipelines["unet"])
    levels = adapter.sample_noise_levels(8, torch.Generator().manual_seed(1))
    alpha_bar = adapter.noise_scheduler.alphas_cumprod[levels.timesteps]
    assert torch.allclose(levels.a**2, alpha_bar) and torch.allclose(levels.a**2 + levels.b**2, torch.ones(8))


def test_decode_applies_scaling_and_shift():
    seen = {}

    class FakeVAE:
        config = types.SimpleNamespace(scaling_factor=2.0, shift_factor=0.5)
        dtype = torch.float32

        def decode(self, x, return_dict=False):
            seen["x"] = x
            return (x,)

    z = torch.tensor([[4.0]])
    decode_latents(FakeVAE(), z)
    assert seen["x"].item() == pytest.approx(4.0 / 2.0 + 0.5)


@pytest.mark.parametrize("family", ["unet", "dit", "flow"])
def test_predict_eps_has_latent_shape_and_text_conditions_it(tiny_pipelines, family):
    adapter = load_adapter(tiny_pipelines[family], max_sequence_length=16)
    z = torch.randn(2, 4, 16, 16)
    levels = adapter.sample_noise_levels(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        text_a = adapter.encode_text(["a red cat", "a red cat"], torch.device("cpu"))
        text_b = adapter.encode_text(["a blue dog", ""], torch.device("cpu"))
        z_t = losses.noised_latents(z, torch.randn_like(z), levels.a, levels.b)
        eps_a = adapter.predict_eps(adapter.denoiser, z_t, levels, text_a)
        eps_b = adapter.predict_eps(adapter.denoiser, z_t, levels, text_b)
    assert eps_a.shape == z.shape  # PixArt's learned-sigma channels are dropped
    assert not torch.allclose(eps_a, eps_b)


def test_caption_dropout_is_shared_per_caption_and_seeded():
    from training.engine.families import FamilyAdapter

    captions = [f"caption {i}" for i in range(200)]
    dropped = FamilyAdapter.drop_captions(captions, 0.3, torch.Generator().manual_seed(0))
    again = FamilyAdapter.drop_captions(captions, 0.3, torch.Generator().manual_seed(0))
    assert dropped == again
    empty = sum(c == "" for c in dropped)
    assert 30 < empty < 90
    assert all(c in ("", orig) for c, orig in zip(dropped, captions))


def test_unwrap_model_sees_through_ddp_and_compile_wrappers_in_any_order():
    from training.engine.families import unwrap_model

    inner = torch.nn.Linear(2, 2)
    compiled = types.SimpleNamespace(_orig_mod=inner)  # what torch.compile returns
    ddp_of_compiled = types.SimpleNamespace(module=compiled)  # DistributedDataParallel of a compiled model
    compiled_ddp = types.SimpleNamespace(_orig_mod=types.SimpleNamespace(module=inner))
    assert unwrap_model(inner) is inner
    assert unwrap_model(ddp_of_compiled) is inner
    assert unwrap_model(compiled_ddp) is inner
