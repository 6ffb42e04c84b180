"""Model family adapters: each owns one family's quirks so the loop and losses stay generic.

An adapter loads a local diffusers pipeline, encodes captions (with classifier-free-guidance
caption dropout), samples shared noise levels, builds ``z_t = a z + b ε``, turns the raw
denoiser output into a noise estimate ``ε̂``, and decodes latents to pixels with the VAE's own
scaling (and shift) factor.

Noise coefficients per family (``a``, ``b`` per sample):

- DDPM families (SD 1.x/2.x and SDXL U-Nets, PixArt DiT): ``a = √ᾱ_t``, ``b = √(1−ᾱ_t)``, with
  ``a² + b² = 1``.
- Flow matching (SD3): ``z_t = (1−σ) z + σ ε``, so ``a = 1−σ``, ``b = σ``.

From the model output to ``ε̂`` (documented per method in ``eps_from_output``):

- ε-prediction: the output is ``ε̂``.
- v-prediction (SD 2.x 768-v): ``v = a ε − b z``. With ``z_t = a z + b ε`` and ``a² + b² = 1``,
  ``b z_t + a v = ab z + b² ε + a² ε − ab z = ε``, so ``ε̂ = b z_t + a v̂``.
- Flow matching: the model predicts ``v = ε − z``. Then
  ``z_t + (1−σ) v = (1−σ) z + σ ε + (1−σ) ε − (1−σ) z = ε``, so ``ε̂ = z_t + (1−σ) v̂ = z_t + a v̂``.

In every family ``ẑ_t = a z + b ε̂`` (``losses.noised_latents``), so the pixel term is the same
code for all of them.

The latent term (``FamilyAdapter.latent_error``): ε and v models use eq. 1 in ε-space,
``‖ε − ε̂‖²``, optionally Min-SNR-γ weighted (``snr_gamma``); flow models by default use their
own flow-matching loss ``w(σ) ‖v − v̂‖²`` over logit-normal σ (``flow_latent_loss``,
``flow_timestep_sampling``, ``flow_loss_weighting``), the recipe SD3 was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from training.engine import losses
from training.engine.config import ConfigError, TrainConfig
from training.engine.pipeline_index import PipelineIndex, read_pipeline_index

DEFAULT_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class NoiseLevels:
    """Per-sample noise levels: the denoiser's timestep input and the coefficients of z_t."""

    timesteps: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor

    def repeat(self, times: int) -> "NoiseLevels":
        """Repeat for the winner/loser halves of a preference batch (shared noise level)."""
        return NoiseLevels(self.timesteps.repeat(times), self.a.repeat(times), self.b.repeat(times))

    def to(self, device) -> "NoiseLevels":
        return NoiseLevels(self.timesteps.to(device), self.a.to(device), self.b.to(device))


@dataclass
class Prediction:
    """The denoiser's raw output (float32) and the noise estimate ``ε̂`` derived from it."""

    output: torch.Tensor
    eps: torch.Tensor


def _setting(config: TrainConfig | None, name: str):
    """A TrainConfig setting, or its default when no config is given (tests, benchmarks)."""
    return getattr(config, name) if config is not None else TrainConfig.model_fields[name].default


def _latent_scale(vae) -> tuple[float, float]:
    config = vae.config
    scaling = float(getattr(config, "scaling_factor", None) or 1.0)
    shift = float(getattr(config, "shift_factor", None) or 0.0)
    return scaling, shift


def decode_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """D(z): undo the latent scaling (and shift), then decode with ``vae`` to pixels in ~[-1, 1].

    Diffusion latents are ``(E(x) − shift) · scaling``; so ``D(z) = decoder(z / scaling + shift)``
    with the decoder's own factors (an AutoencoderTiny has scaling 1 and reads them directly).
    """
    scaling, shift = _latent_scale(vae)
    return vae.decode((z / scaling + shift).to(vae.dtype), return_dict=False)[0]


def encode_pixels(vae, pixels: torch.Tensor) -> torch.Tensor:
    """E(x): the VAE posterior mean, shifted and scaled into diffusion latent space.

    The mean (not a sample) keeps encoding deterministic, and identical with or without the
    latent cache.
    """
    scaling, shift = _latent_scale(vae)
    posterior = vae.encode(pixels.to(vae.dtype)).latent_dist
    return ((posterior.mean.float() - shift) * scaling)


def load_decoder(path: str | Path, *, dtype=None):
    """Load a standalone decoder (for example an AutoencoderTiny) from a diffusers model folder."""
    import diffusers

    path = Path(path).expanduser()
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: not a diffusers model folder (no config.json)")
    class_name = json.loads(config_file.read_text(encoding="utf-8")).get("_class_name")
    model_class = getattr(diffusers, str(class_name), None)
    if model_class is None or not hasattr(model_class, "decode"):
        raise ValueError(f"{config_file}: '_class_name' = {class_name!r} is not a diffusers autoencoder")
    return model_class.from_pretrained(path, dtype=dtype)


class FamilyAdapter:
    """Shared behaviour; subclasses set the family's text encoding and denoiser call."""

    family: str = ""
    default_max_sequence_length: int | None = None

    def __init__(self, pipeline, index: PipelineIndex, *, max_sequence_length: int | None = None):
        self.pipeline = pipeline
        self.index = index
        self.prediction_type = index.prediction_type
        self.max_sequence_length = max_sequence_length or self.default_max_sequence_length
        self.noise_scheduler = self._training_scheduler()

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, max_sequence_length: int | None = None,
             vae: str | Path | None = None) -> "FamilyAdapter":
        """Load a local diffusers pipeline (never from a hub) and wrap it in its family's adapter.

        ``vae`` replaces the pipeline's VAE (encoding and decoding) by another autoencoder folder
        of the same latent space, for example the SDXL fp16-fix VAE.
        """
        from diffusers import DiffusionPipeline

        index = read_pipeline_index(path)
        extra = {"vae": load_decoder(vae)} if vae else {}
        pipeline = DiffusionPipeline.from_pretrained(index.path, local_files_only=True, **extra)
        adapter_class = ADAPTERS[index.family]
        return adapter_class(pipeline, index, max_sequence_length=max_sequence_length)

    def check_settings(self, config: TrainConfig) -> None:
        """Refuse settings that do not apply to this family (before any work is done)."""
        if config.snr_gamma is not None and self.prediction_type == "flow":
            raise ConfigError("snr_gamma", "Min-SNR weighting applies to ε and v models; "
                              f"{self.index.pipeline_class} is a flow model (see flow_loss_weighting)")

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipeline, self.index.denoiser)

    @denoiser.setter
    def denoiser(self, module: torch.nn.Module) -> None:
        self.pipeline.register_modules(**{self.index.denoiser: module})

    @property
    def vae(self):
        return self.pipeline.vae

    def text_encoders(self) -> list[torch.nn.Module]:
        return [getattr(self.pipeline, name) for name in ("text_encoder", "text_encoder_2", "text_encoder_3")
                if getattr(self.pipeline, name, None) is not None]

    # -- captions --------------------------------------------------------------------------
    @staticmethod
    def drop_captions(captions: list[str], probability: float, generator: torch.Generator) -> list[str]:
        """Classifier-free-guidance dropout: replace each caption by "" with ``probability``.

        One draw per caption, so a winner and its loser (which share a caption) are dropped together.
        """
        if probability <= 0:
            return list(captions)
        draws = torch.rand(len(captions), generator=generator)
        return ["" if draw < probability else caption for caption, draw in zip(captions, draws.tolist())]

    def encode_text(self, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def image_conditions(self, batch: dict, z: torch.Tensor, *, preference: bool) -> dict[str, torch.Tensor]:
        """Per-image conditioning besides the text (SDXL's micro-conditioning); none by default."""
        return {}

    # -- noise -----------------------------------------------------------------------------
    def _training_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.pipeline.scheduler.config)

    def sample_noise_levels(self, n: int, generator: torch.Generator, config: TrainConfig | None = None) -> NoiseLevels:
        """DDPM: ``t ~ U{0, …, T−1}``, ``a = √ᾱ_t``, ``b = √(1−ᾱ_t)`` (on CPU; move with ``.to``)."""
        num_train = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_train, (n,), generator=generator)
        alpha_bar = self.noise_scheduler.alphas_cumprod[timesteps].float()
        return NoiseLevels(timesteps, alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt())

    def eps_from_output(self, output: torch.Tensor, z_t: torch.Tensor, levels: NoiseLevels) -> torch.Tensor:
        """ε-prediction: ``ε̂ = output``. v-prediction (``v = a ε − b z``): ``ε̂ = b z_t + a v̂``."""
        output = output.float()
        if self.prediction_type == "epsilon":
            return output
        if self.prediction_type == "v_prediction":
            shape = (-1,) + (1,) * (z_t.ndim - 1)
            return levels.b.reshape(shape) * z_t.float() + levels.a.reshape(shape) * output
        raise ValueError(f"unsupported prediction type {self.prediction_type!r} for family {self.family}")

    def model_output(self, denoiser, z_t: torch.Tensor, levels: NoiseLevels, text: dict) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, denoiser, z_t: torch.Tensor, levels: NoiseLevels, text: dict) -> Prediction:
        """The raw output and ``ε̂ = ε_θ(z_t, t)``, in float32, whatever the family's prediction type."""
        output = self.model_output(denoiser, z_t, levels, text).float()
        return Prediction(output, self.eps_from_output(output, z_t, levels))

    def predict_eps(self, denoiser, z_t: torch.Tensor, levels: NoiseLevels, text: dict) -> torch.Tensor:
        """ε̂ = ε_θ(z_t, t) in float32, whatever the family's prediction type."""
        return self.predict(denoiser, z_t, levels, text).eps

    def latent_error(self, z: torch.Tensor, eps: torch.Tensor, prediction: Prediction, levels: NoiseLevels,
                     config: TrainConfig | None = None) -> torch.Tensor:
        """Per-sample latent error (eq. 1) ``‖ε − ε̂‖²``, times ``min(SNR, γ)/SNR`` with ``snr_gamma``.

        Min-SNR-γ (Hang et al. 2023) through diffusers' ``compute_snr``. In ε-space the weight is
        ``min(SNR, γ)/SNR`` for ε *and* v models: for v models ``ε − ε̂ = √ᾱ (v − v̂)`` and
        ``ᾱ = SNR/(SNR+1)``, so the weighted ε error is ``min(SNR, γ)/(SNR+1) ‖v − v̂‖²``,
        diffusers' v-prediction weighting of the v-space loss.
        """
        gamma = _setting(config, "snr_gamma")
        weights = None
        if gamma is not None:
            from diffusers.training_utils import compute_snr

            snr = compute_snr(self.noise_scheduler, levels.timesteps)
            weights = losses.min_snr_weights(snr, gamma)
        return losses.latent_error(eps, prediction.eps, weights)

    # -- latents ---------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, decoder=None) -> torch.Tensor:
        """D(z) with the pipeline's VAE, or with ``decoder`` (a cheaper stand-in) when given."""
        return decode_latents(decoder if decoder is not None else self.vae, z)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return encode_pixels(self.vae, pixels)


def add_time_ids(original_size: torch.Tensor, crop_top_left: torch.Tensor, target_size: tuple[int, int]) -> torch.Tensor:
    """SDXL's micro-conditioning per image: ``(orig_h, orig_w, crop_top, crop_left, target_h, target_w)``.

    ``original_size`` and ``crop_top_left`` are ``[N, 2]`` as the preprocessing recorded them
    (the image's size before resizing; the crop's corner in the resized image).
    """
    target = torch.tensor(target_size, dtype=torch.float32).expand(original_size.shape[0], 2)
    return torch.cat([original_size.float(), crop_top_left.float(), target], dim=1)


class UNetAdapter(FamilyAdapter):
    """Stable Diffusion 1.x/2.x: UNet2DConditionModel with a CLIP text encoder; ε or v."""

    family = "unet"

    def encode_text(self, captions, device):
        embeds, _ = self.pipeline.encode_prompt(captions, device, 1, False)
        return {"encoder_hidden_states": embeds}

    def model_output(self, denoiser, z_t, levels, text):
        return denoiser(z_t, levels.timesteps, encoder_hidden_states=text["encoder_hidden_states"],
                        return_dict=False)[0]


class SDXLAdapter(FamilyAdapter):
    """Stable Diffusion XL: a UNet2DConditionModel with two CLIP text encoders and micro-conditioning.

    Text: the penultimate hidden states of both encoders, concatenated along the feature axis
    (``encoder_hidden_states``), and the second encoder's pooled, projected embedding
    (``text_embeds``), via the pipeline's own ``encode_prompt``. Both encoders read the same
    caption, so caption dropout drops both prompts together. ``time_ids`` (``add_time_ids``) come
    from each image's own preprocessing: original size, crop corner and target size; a winner
    and its loser keep their own. ε or v from the scheduler config.

    The SDXL VAE overflows in fp16: keep ``vae_fp32 = true`` (the default) or give the fp16-fix
    VAE as ``vae`` (or as ``pixel_decoder`` for the pixel term alone).
    """

    family = "sdxl"

    def encode_text(self, captions, device):
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=captions, prompt_2=None, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False,
        )
        return {"encoder_hidden_states": embeds, "text_embeds": pooled}

    def image_conditions(self, batch, z, *, preference):
        sides = ("_w", "_l") if preference else ("",)
        missing = [f"{name}{side}" for name in ("original_size", "crop_top_left") for side in sides
                   if f"{name}{side}" not in batch]
        if missing:
            raise KeyError(f"SDXL needs each image's {', '.join(missing)} from the preprocessing")
        original = torch.cat([batch[f"original_size{side}"] for side in sides])
        crop = torch.cat([batch[f"crop_top_left{side}"] for side in sides])
        scale = self.pipeline.vae_scale_factor
        target = (z.shape[-2] * scale, z.shape[-1] * scale)
        return {"time_ids": add_time_ids(original, crop, target).to(z.device)}

    def model_output(self, denoiser, z_t, levels, text):
        added = {"text_embeds": text["text_embeds"], "time_ids": text["time_ids"].to(text["text_embeds"].dtype)}
        return denoiser(z_t, levels.timesteps, encoder_hidden_states=text["encoder_hidden_states"],
                        added_cond_kwargs=added, return_dict=False)[0]


class PixArtAdapter(FamilyAdapter):
    """PixArt-α/Σ: a DiT with T5 cross-attention (masked), AdaLN-single timestep conditioning.

    The transformer outputs ``2C`` channels (ε and a learned variance) when trained with learned
    sigma; only the first ``C`` are the noise (or v) prediction.
    """

    family = "dit"
    default_max_sequence_length = 120  # PixArt-α; PixArt-Σ uses 300

    def __init__(self, pipeline, index, *, max_sequence_length=None):
        if max_sequence_length is None and index.pipeline_class == "PixArtSigmaPipeline":
            max_sequence_length = 300
        super().__init__(pipeline, index, max_sequence_length=max_sequence_length)

    def encode_text(self, captions, device):
        embeds, mask, _, _ = self.pipeline.encode_prompt(
            captions, do_classifier_free_guidance=False, device=device, clean_caption=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def model_output(self, denoiser, z_t, levels, text):
        config = unwrap_model(denoiser).config
        added_cond_kwargs = {"resolution": None, "aspect_ratio": None}
        if getattr(unwrap_model(denoiser), "use_additional_conditions", False):
            # PixArt-α 1024 conditions on the image size and aspect ratio (in pixels).
            scale = self.pipeline.vae_scale_factor
            height, width = z_t.shape[-2] * scale, z_t.shape[-1] * scale
            n = z_t.shape[0]
            added_cond_kwargs = {
                "resolution": torch.tensor([[height, width]], dtype=z_t.dtype, device=z_t.device).repeat(n, 1),
                "aspect_ratio": torch.tensor([[height / width]], dtype=z_t.dtype, device=z_t.device).repeat(n, 1),
            }
        output = denoiser(
            z_t,
            encoder_hidden_states=text["encoder_hidden_states"],
            encoder_attention_mask=text["encoder_attention_mask"],
            timestep=levels.timesteps,
            added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
        )[0]
        if config.out_channels == 2 * z_t.shape[1]:
            output = output.chunk(2, dim=1)[0]  # drop the learned-sigma channels
        return output


class SD3Adapter(FamilyAdapter):
    """Stable Diffusion 3: SD3Transformer2DModel trained by flow matching.

    ``z_t = (1−σ) z + σ ε`` with σ from the scheduler's shifted schedule; the model predicts
    ``v = ε − z`` and ``ε̂ = z_t + (1−σ) v̂``. Text comes from two CLIP encoders (token features
    and pooled projections) and T5, via the pipeline's own ``encode_prompt``.

    Training objective (``latent_error``, ``sample_noise_levels``). By default SD3's own recipe:
    σ drawn logit-normally (``flow_timestep_sampling``) and the flow-matching loss
    ``w(σ) ‖v − v̂‖²`` with ``v = ε − z`` (``flow_latent_loss = "velocity"``, ``w`` from
    ``flow_loss_weighting``), via diffusers' ``compute_density_for_timestep_sampling`` and
    ``compute_loss_weighting_for_sd3``. ``flow_latent_loss = "eps"`` is eq. 1 in ε-space instead:
    ``ε − ε̂ = (1−σ)(v − v̂)``, so ``‖ε − ε̂‖² = (1−σ)² ‖v − v̂‖²``, which weights each noise
    level by ``(1−σ)²`` relative to the flow-matching loss. DPO and SimPO compare these
    per-sample errors, whichever is chosen.

    The pixel term stays eq. 2 on ``ẑ_t = (1−σ) z + σ ε̂`` with ``ε̂ = z_t + (1−σ) v̂``; equivalently
    ``ẑ_t = z_t + σ(1−σ)(v̂ − v)``.
    """

    family = "flow"
    default_max_sequence_length = 256

    def _training_scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.pipeline.scheduler.config)

    def sample_noise_levels(self, n, generator, config=None):
        """σ from the scheduler's (shifted) training sigmas at ``u · T``; timestep = σ · T.

        ``u ∈ [0, 1)`` comes from diffusers' ``compute_density_for_timestep_sampling``: uniform,
        logit-normal (``sigmoid(N(logit_mean, logit_std))``) or mode (``mode_scale``), exactly as
        diffusers' SD3 training scripts draw it.
        """
        from diffusers.training_utils import compute_density_for_timestep_sampling

        sigmas = self.noise_scheduler.sigmas.float()
        u = compute_density_for_timestep_sampling(
            _setting(config, "flow_timestep_sampling"), n, logit_mean=_setting(config, "logit_mean"),
            logit_std=_setting(config, "logit_std"), mode_scale=_setting(config, "mode_scale"), generator=generator,
        )
        index = (u * len(sigmas)).long().clamp(0, len(sigmas) - 1)
        sigma = sigmas[index]
        timesteps = sigma * self.noise_scheduler.config.num_train_timesteps
        return NoiseLevels(timesteps, 1.0 - sigma, sigma)

    def eps_from_output(self, output, z_t, levels):
        """Flow matching: ``v = ε − z`` ⇒ ``ε̂ = z_t + (1−σ) v̂ = z_t + a v̂``."""
        shape = (-1,) + (1,) * (z_t.ndim - 1)
        return z_t.float() + levels.a.reshape(shape) * output.float()

    def latent_error(self, z, eps, prediction, levels, config=None):
        """``flow_latent_loss = "velocity"``: ``w(σ) ‖v − v̂‖²``, ``v = ε − z``; ``"eps"``: ``‖ε − ε̂‖²``."""
        if _setting(config, "flow_latent_loss") == "eps":
            return losses.latent_error(eps, prediction.eps)
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        weights = compute_loss_weighting_for_sd3(_setting(config, "flow_loss_weighting"), sigmas=levels.b.float())
        return losses.latent_error(eps - z, prediction.output, weights)

    def encode_text(self, captions, device):
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=captions, prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def model_output(self, denoiser, z_t, levels, text):
        return denoiser(
            hidden_states=z_t,
            timestep=levels.timesteps,
            encoder_hidden_states=text["encoder_hidden_states"],
            pooled_projections=text["pooled_projections"],
            return_dict=False,
        )[0]


def unwrap_model(module):
    """The model inside DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if hasattr(module, "module"):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


ADAPTERS: dict[str, type[FamilyAdapter]] = {
    "unet": UNetAdapter, "sdxl": SDXLAdapter, "dit": PixArtAdapter, "flow": SD3Adapter,
}


def load_adapter(path: str | Path, *, max_sequence_length: int | None = None,
                 vae: str | Path | None = None) -> FamilyAdapter:
    """Detect the family from ``model_index.json`` and load the pipeline into its adapter."""
    return FamilyAdapter.load(path, max_sequence_length=max_sequence_length, vae=vae)
