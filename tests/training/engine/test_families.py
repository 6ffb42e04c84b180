"""Family adapters: detection, prediction-type conversions, decoding and tiny pipelines."""

from __future__ import annotations

import types

import pytest
import torch

from training.engine import losses
from training.engine.families import NoiseLevels, decode_latents, load_adapter
from training.engine.pipeline_index import read_pipeline_index


@pytest.mark.parametrize(("key", "family", "prediction"), [
    ("unet", "unet", "epsilon"), ("unet_v", "unet", "v_prediction"), ("sdxl", "sdxl", "epsilon"), ("dit", "dit", "epsilon"),
    ("flow", "flow", "flow"),
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


# --- SDXL ------------------------------------------------------------------------------------


def test_sdxl_text_is_both_encoders_penultimate_states_and_the_second_s_pooled_embedding(tiny_pipelines):
    adapter = load_adapter(tiny_pipelines["sdxl"])
    pipe = adapter.pipeline
    with torch.no_grad():
        text = adapter.encode_text(["a red cat", ""], torch.device("cpu"))
        states, pooled = [], None
        for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
            ids = tokenizer(["a red cat", ""], padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            out = encoder(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]  # the second encoder's projected pooled embedding
    assert text["encoder_hidden_states"].shape == (2, 16, 64)  # 16 tokens, 32 + 32 features
    assert text["text_embeds"].shape == (2, 32)
    assert torch.allclose(text["encoder_hidden_states"], torch.cat(states, dim=-1), atol=1e-6)
    assert torch.allclose(text["text_embeds"], pooled, atol=1e-6)
    # A dropped caption is "" for both encoders.
    with torch.no_grad():
        both_empty = pipe.encode_prompt(prompt=[""], prompt_2=[""], device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(text["encoder_hidden_states"][1:], both_empty[0], atol=1e-6)
    assert torch.allclose(text["text_embeds"][1:], both_empty[2], atol=1e-6)


def test_sdxl_time_ids_come_from_each_image_s_preprocessing_and_condition_the_unet(tiny_pipelines):
    from training.engine.families import add_time_ids

    adapter = load_adapter(tiny_pipelines["sdxl"])
    z = torch.randn(2, 4, 16, 16)  # 32 px images with the tiny VAE's factor 2
    batch = {"original_size_w": torch.tensor([[40, 60]]), "crop_top_left_w": torch.tensor([[0, 5]]),
             "original_size_l": torch.tensor([[32, 32]]), "crop_top_left_l": torch.tensor([[0, 0]])}
    time_ids = adapter.image_conditions(batch, z, preference=True)["time_ids"]
    assert time_ids.tolist() == [[40, 60, 0, 5, 32, 32], [32, 32, 0, 0, 32, 32]]
    assert torch.equal(time_ids, add_time_ids(torch.tensor([[40, 60], [32, 32]]), torch.tensor([[0, 5], [0, 0]]), (32, 32)))

    levels = adapter.sample_noise_levels(1, torch.Generator().manual_seed(0)).repeat(2)
    with torch.no_grad():
        text = adapter.encode_text(["a red cat"] * 2, torch.device("cpu"))
        centred = adapter.predict_eps(adapter.denoiser, z, levels, {**text, "time_ids": time_ids})
        cropped = time_ids.clone()
        cropped[0, 3] = 9  # another crop of the same image
        moved = adapter.predict_eps(adapter.denoiser, z, levels, {**text, "time_ids": cropped})
    assert not torch.allclose(centred[0], moved[0])
    assert torch.equal(centred[1], moved[1])
    with pytest.raises(KeyError, match="crop_top_left"):
        adapter.image_conditions({"original_size": torch.tensor([[1, 1]])}, z[:1], preference=False)


# --- SD3's objective, Min-SNR ------------------------------------------------------------------


def _train_config(tmp_path, **settings):
    from training.engine.config import TrainConfig

    return TrainConfig(pretrained_model="m", output_dir=str(tmp_path), train_data="d", **settings)


def test_logit_normal_sigmas_are_diffusers_draws_on_the_shifted_schedule(tiny_pipelines, tmp_path):
    from diffusers.training_utils import compute_density_for_timestep_sampling

    adapter = load_adapter(tiny_pipelines["flow"])
    cfg = _train_config(tmp_path, logit_mean=0.5, logit_std=0.8)
    assert cfg.flow_timestep_sampling == "logit_normal"  # SD3's own recipe is the default
    levels = adapter.sample_noise_levels(64, torch.Generator().manual_seed(7), cfg)
    u = compute_density_for_timestep_sampling("logit_normal", 64, logit_mean=0.5, logit_std=0.8,
                                              generator=torch.Generator().manual_seed(7))
    sigmas = adapter.noise_scheduler.sigmas  # shifted (shift 3), from 1 down to σ_min
    expected = sigmas[(u * 1000).long()]
    assert torch.allclose(levels.b, expected) and torch.allclose(levels.a, 1 - expected)
    assert torch.allclose(levels.timesteps, adapter.noise_scheduler.timesteps[(u * 1000).long()])
    uniform = adapter.sample_noise_levels(64, torch.Generator().manual_seed(7),
                                          _train_config(tmp_path, flow_timestep_sampling="uniform"))
    assert not torch.allclose(uniform.b, levels.b)


def test_velocity_loss_is_the_flow_matching_loss_by_hand(tiny_pipelines, tmp_path):
    from training.engine.families import NoiseLevels, Prediction

    adapter = load_adapter(tiny_pipelines["flow"])
    z = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    eps = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    v_hat = torch.tensor([[0.0, -1.0], [1.0, 1.0]])
    sigma = torch.tensor([0.5, 0.25])
    levels = NoiseLevels(sigma * 1000, 1 - sigma, sigma)
    prediction = Prediction(v_hat, eps_hat := torch.zeros(2, 2))
    # v = ε − z = [[-0.5, -1.5], [1, 2]]; (v − v̂)² = [[0.25, 0.25], [0, 1]], means [0.25, 0.5].
    plain = adapter.latent_error(z, eps, prediction, levels, _train_config(tmp_path))
    assert plain.tolist() == pytest.approx([0.25, 0.5])
    # sigma_sqrt: w = σ⁻² = [4, 16]; cosmap: w = 2 / (π (1 − 2σ + 2σ²)).
    weighted = adapter.latent_error(z, eps, prediction, levels, _train_config(tmp_path, flow_loss_weighting="sigma_sqrt"))
    assert weighted.tolist() == pytest.approx([1.0, 8.0])
    cosmap = adapter.latent_error(z, eps, prediction, levels, _train_config(tmp_path, flow_loss_weighting="cosmap"))
    assert cosmap.tolist() == pytest.approx([0.25 * 2 / (torch.pi * 0.5), 0.5 * 2 / (torch.pi * 0.625)])
    in_eps = adapter.latent_error(z, eps, prediction, levels, _train_config(tmp_path, flow_latent_loss="eps"))
    assert in_eps.tolist() == pytest.approx([0.25, 1.0])  # ‖ε − ε̂‖² with ε̂ = 0
    with pytest.raises(ValueError, match="flow_loss_weighting"):
        _train_config(tmp_path, flow_latent_loss="eps", flow_loss_weighting="cosmap")


def test_velocity_loss_matches_eps_loss_up_to_one_minus_sigma_squared(tiny_pipelines, tmp_path):
    # The docstring's identity: ‖ε − ε̂‖² = (1−σ)² ‖v − v̂‖² for a flow model's own prediction.
    adapter = load_adapter(tiny_pipelines["flow"], max_sequence_length=16)
    torch.manual_seed(0)
    z, eps = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16)
    levels = adapter.sample_noise_levels(3, torch.Generator().manual_seed(1))
    z_t = losses.noised_latents(z, eps, levels.a, levels.b)
    with torch.no_grad():
        prediction = adapter.predict(adapter.denoiser, z_t, levels, adapter.encode_text(["a cat"] * 3, torch.device("cpu")))
    velocity = adapter.latent_error(z, eps, prediction, levels, _train_config(tmp_path))
    in_eps = adapter.latent_error(z, eps, prediction, levels, _train_config(tmp_path, flow_latent_loss="eps"))
    assert torch.allclose(in_eps, levels.a**2 * velocity, rtol=1e-4)


def test_min_snr_weights_are_compute_snr_s_on_a_hand_checked_schedule(tiny_pipelines, tmp_path):
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from training.engine.families import Prediction

    # Two steps with ᾱ = 0.8 and 0.2 (β = 0.2, then 0.75): SNR = ᾱ/(1−ᾱ) = 4 and 0.25.
    scheduler = DDPMScheduler(num_train_timesteps=2, trained_betas=[0.2, 0.75])
    assert compute_snr(scheduler, torch.tensor([0, 1])).tolist() == pytest.approx([4.0, 0.25])
    assert losses.min_snr_weights(torch.tensor([4.0, 0.25]), 1.0).tolist() == pytest.approx([0.25, 1.0])

    for key in ("unet", "unet_v"):
        adapter = load_adapter(tiny_pipelines[key])
        adapter.noise_scheduler = scheduler
        levels = _levels([0.8, 0.2])
        levels.timesteps = torch.tensor([0, 1])
        eps, eps_hat = torch.ones(2, 4), torch.zeros(2, 4)
        prediction = Prediction(eps_hat, eps_hat)
        weighted = adapter.latent_error(torch.zeros(2, 4), eps, prediction, levels, _train_config(tmp_path, snr_gamma=1.0))
        assert weighted.tolist() == pytest.approx([0.25, 1.0])  # min(SNR, 1)/SNR times ‖ε − ε̂‖² = 1
        plain = adapter.latent_error(torch.zeros(2, 4), eps, prediction, levels, _train_config(tmp_path))
        assert plain.tolist() == pytest.approx([1.0, 1.0])
    # For a v model it is diffusers' weighting of the v-space loss, min(SNR, γ)/(SNR+1) ‖v − v̂‖².
    adapter = load_adapter(tiny_pipelines["unet_v"])
    adapter.noise_scheduler = scheduler
    levels = _levels([0.8, 0.2])
    levels.timesteps = torch.tensor([0, 1])
    torch.manual_seed(0)
    z, eps, v_hat = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)
    z_t = losses.noised_latents(z, eps, levels.a, levels.b)
    v = levels.a[:, None] * eps - levels.b[:, None] * z
    prediction = Prediction(v_hat, adapter.eps_from_output(v_hat, z_t, levels))
    ours = adapter.latent_error(z, eps, prediction, levels, _train_config(tmp_path, snr_gamma=1.0))
    snr = compute_snr(scheduler, levels.timesteps)
    diffusers_v = torch.clamp(snr, max=1.0) / (snr + 1) * ((v - v_hat) ** 2).mean(dim=1)
    assert torch.allclose(ours, diffusers_v, rtol=1e-5)


def test_min_snr_is_refused_for_flow_models(tiny_pipelines, tmp_path):
    from training.engine.config import ConfigError

    with pytest.raises(ConfigError, match="snr_gamma"):
        load_adapter(tiny_pipelines["flow"]).check_settings(_train_config(tmp_path, snr_gamma=5.0))
    load_adapter(tiny_pipelines["unet"]).check_settings(_train_config(tmp_path, snr_gamma=5.0))
