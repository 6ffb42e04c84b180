"""Benchmark one training step: latent-only against latent + pixel, for SFT and SimPO.

A script that prints numbers, not a test. The step is the engine's own: the loop's
``compute_loss`` on the family's adapter, then backward, clipping and AdamW as in
``loop.train``, on a cached-latent batch (SDXL's also carries each image's micro-conditioning,
from the engine's preprocessing of images of several original sizes).

The default preset is SD1.5's architecture (UNet, VAE, CLIP text encoder, and a TAESD-shaped
AutoencoderTiny) with every channel count divided by 4, at 128 px (16×16 latents): the VAE
decoder/UNet MAC ratio stays near SD1.5's at 512 px (3.4 vs 3.7) and a step takes about a
second on 2 CPU cores. ``--preset sd15``, ``sdxl`` and ``pixart`` are the real shapes of SD1.5,
SDXL base (both CLIP encoders, micro-conditioning) and PixArt-α 512 (a T5-XXL-shaped encoder),
random init and built in code, for a GPU (``bench/gpu_train_step.sh``); ``--channel-div N``
scales any of them down by channels (depths stay), which is how they are checked on a CPU.

Timing: every configuration and every floor part is run once per round, in a shuffled order,
and the median over rounds is reported (wall clock, and on CPU also process CPU time), so the
load of other processes on a shared machine falls evenly on all of them. The "floor" of a
pixel configuration is its latent-only step plus the measured decoder forward without grad
(the target) plus the decoder forward+backward (the prediction), on the same latents.

Memory: the peak during a step's forward and backward above what was in use before it, i.e.
activations and temporaries (weights, gradients and AdamW state are the same everywhere). On
CPU each configuration runs again in a fresh process that reads the kernel's peak-RSS mark; on
CUDA, ``max_memory_allocated``.

``--toy toy-sd`` or ``--toy toy-pixart`` loads that shipped toy pipeline (and the toy tiny
decoder, ``toyworld/weights/toy-tiny-decoder``) and trains on real toy data: rendered training
scenes encoded by the toy VAE (SFT), or a scene's render against the render of a perturbed
scene under the same caption (SimPO pairs). The toy runs add ``pixel_crop = 0.25`` and, with
``--cosine-batches N``, the gradient cosine of each cheap mode against the full pixel term
(``training.engine.gradients``) on the same N batches, noise and timesteps: of the total loss
and of the pixel term alone. ``--table DIR`` writes ``DIR/table.md`` from the toy JSON files.

    python bench/train_step.py                       # CPU, scaled-down SD1.5
    python bench/train_step.py --device cuda --preset sd15 --resolution 512 --dtype bf16
    python bench/train_step.py --device cuda --preset sdxl --resolution 1024 --dtype bf16 --batch 1
    python bench/train_step.py --preset sdxl --channel-div 8 --steps 1 --warmup 0   # CPU check
    python bench/train_step.py --toy toy-sd --threads 1 --batch 16 --cosine-batches 50 \
        --json docs/replication/cost/toy-sd.json
    python bench/train_step.py --table docs/replication/cost
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SD15_UNET_CHANNELS = (320, 640, 1280, 1280)
SDXL_UNET_CHANNELS = (320, 640, 1280)
SD_VAE_CHANNELS = (128, 256, 512, 512)
SD15_TEXT_HIDDEN = 768
TAESD_CHANNELS = 64


def _dtypes():
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Setup:
    objective: str  # "sft" or "simpo"
    pixel: bool = False
    pixel_crop: float = 1.0
    pixel_decoder: str = "vae"  # "vae" or "tiny" (AutoencoderTiny)
    vae_checkpointing: bool = False

    @property
    def name(self) -> str:
        if not self.pixel:
            return f"{self.objective} latent"
        parts = [f"{self.objective} latent+pixel"]
        if self.pixel_crop != 1.0:
            parts.append(f"crop {self.pixel_crop:g}")
        if self.pixel_decoder == "tiny":
            parts.append("tiny decoder")
        if self.vae_checkpointing:
            parts.append("decoder ckpt")
        return ", ".join(parts)


VARIANTS = (
    {},
    {"pixel": True},
    {"pixel": True, "pixel_crop": 0.5},
    {"pixel": True, "pixel_decoder": "tiny"},
    {"pixel": True, "vae_checkpointing": True},
)
TOY_VARIANTS = VARIANTS[:3] + ({"pixel": True, "pixel_crop": 0.25},) + VARIANTS[3:]
TOY_WEIGHTS = ROOT / "toyworld" / "weights"
TOY_PIXEL_WEIGHT = {"toy-sd": 2.0, "toy-pixart": 8.0}  # λ (and μ): the paper's for a U-Net and for a DiT
RECOMMENDED_MAX_RATIO = 1.5
RECOMMENDED_MIN_COSINE = 0.9


def setups_for(args) -> list[Setup]:
    """Every configuration a run measures, in a fixed order (the memory workers index into it)."""
    variants = VARIANTS if args.toy is None else TOY_VARIANTS
    return [Setup(objective, **variant) for objective in args.objectives for variant in variants]


def is_full_pixel(setup) -> bool:
    """The uncheapened pixel term: the VAE decoder on the whole latent, no checkpointing."""
    get = setup.get if isinstance(setup, dict) else lambda key: getattr(setup, key)
    return get("pixel") and get("pixel_crop") == 1.0 and get("pixel_decoder") == "vae" and not get("vae_checkpointing")


# --------------------------------------------------------------------------------------
# Models


@dataclass
class Models:
    adapter: object  # the engine's family adapter around an in-memory pipeline
    tiny_decoder: object  # AutoencoderTiny, the cheaper pixel_decoder
    toy: str | None = None  # the shipped toy pipeline, whose batches are rendered scenes


def build_toy_models(name: str, tiny_decoder_dir: Path, device) -> Models:
    """A shipped toy pipeline in the engine's adapter, and the toy tiny decoder, in fp32 as the loop holds them."""
    import torch

    from training.engine.families import load_adapter, load_decoder

    adapter = load_adapter(TOY_WEIGHTS / name)
    tiny_decoder = load_decoder(tiny_decoder_dir)
    for module in (adapter.vae, tiny_decoder, *adapter.text_encoders()):
        module.requires_grad_(False).eval().to(device, torch.float32)
    adapter.denoiser.to(device, torch.float32).requires_grad_(True).train()
    return Models(adapter=adapter, tiny_decoder=tiny_decoder, toy=name)


def toy_batch(models: Models, objective: str, index: int, size: int) -> dict:
    """Batch ``index`` of toy data, as the loop gets it from its latent cache: distinct training scenes.

    SFT: the scenes' renders. SimPO: each scene's render (winner) and the render of a perturbed
    copy (``toyworld.quality.perturb``: some shapes, colours, textures and sizes changed) under
    the same caption (loser).
    """
    import numpy as np
    import torch

    from toyworld.quality import perturb
    from toyworld.scenes import render, sample_scene
    from toyworld.splits import is_train_caption

    rng = np.random.default_rng([0, index])
    scenes = []
    while len(scenes) < size:
        scene = sample_scene(rng)
        if is_train_caption(scene.caption) and scene.caption not in {s.caption for s in scenes}:
            scenes.append(scene)

    def latents(images):
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) * 2.0 - 1.0
        with torch.no_grad():
            return models.adapter.encode(pixels.to(models.adapter.vae.device)).cpu()

    captions = [scene.caption for scene in scenes]
    if objective == "sft":
        return {"latents": latents([render(scene) for scene in scenes]), "caption": captions}
    return {"latents_w": latents([render(scene) for scene in scenes]),
            "latents_l": latents([render(perturb(scene, rng)) for scene in scenes]),
            "caption": captions, "margin": torch.ones(size)}


def _channels(values, div: int) -> tuple[int, ...]:
    return tuple(max(1, v // div) for v in values)


def _sd_vae(resolution: int, div: int, *, scaling_factor: float, force_upcast: bool = False):
    """SD's AutoencoderKL (SD1.5, SDXL and PixArt share its shape), channels divided by ``div``."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        block_out_channels=_channels(SD_VAE_CHANNELS, div),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=_groups(div), sample_size=resolution,
        scaling_factor=scaling_factor, force_upcast=force_upcast,
    )


def _groups(div: int) -> int:
    return 32 if div == 1 else max(1, 32 // div)


def _clip_text_config(hidden: int, layers: int, heads: int, div: int, *, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    hidden = hidden // div
    extra = {"projection_dim": projection_dim // div} if projection_dim else {}
    return CLIPTextConfig(
        hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, heads // div), max_position_embeddings=77, vocab_size=49408,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_act="gelu" if projection_dim else "quick_gelu",
        **extra,
    )


def _clip_tokenizer():
    from training.engine.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()  # generated locally, with the real models' 77-token context
    tokenizer.model_max_length = 77
    return tokenizer


def _sd15_pipeline(resolution: int, div: int):
    """SD1.5: UNet (320, 640, 1280, 1280), CLIP ViT-L/14 text encoder (768 wide, 12 layers)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    text_hidden = SD15_TEXT_HIDDEN // div
    unet = UNet2DConditionModel(
        sample_size=resolution // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=_channels(SD15_UNET_CHANNELS, div),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=text_hidden, attention_head_dim=8, norm_num_groups=_groups(div),
    )
    with torch.device("cpu"):  # schedulers keep their tables on the CPU
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=_sd_vae(resolution, div, scaling_factor=0.18215),
        text_encoder=CLIPTextModel(_clip_text_config(SD15_TEXT_HIDDEN, 12, 12, div)),
        tokenizer=_clip_tokenizer(), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return pipeline, "StableDiffusionPipeline", "unet"


def _sdxl_pipeline(resolution: int, div: int):
    """SDXL base 1.0: UNet (320, 640, 1280) with 1/2/10 transformer layers, CLIP ViT-L and OpenCLIP bigG.

    Cross-attention reads both encoders' penultimate states side by side (768 + 1280); the
    added embedding is bigG's pooled projection (1280) plus six 256-wide micro-conditioning
    embeddings. The VAE is SD's shape with SDXL's scaling factor, and overflows in fp16 as SDXL's does.
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    time_embed_dim = max(1, 256 // div)
    unet = UNet2DConditionModel(
        sample_size=resolution // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=_channels(SDXL_UNET_CHANNELS, div),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
        cross_attention_dim=(768 + 1280) // div, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=1280 // div + 6 * time_embed_dim,
        norm_num_groups=_groups(div),
    )
    with torch.device("cpu"):
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1, timestep_spacing="leading")
    pipeline = StableDiffusionXLPipeline(
        vae=_sd_vae(resolution, div, scaling_factor=0.13025, force_upcast=True),
        text_encoder=CLIPTextModel(_clip_text_config(768, 12, 12, div)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config(1280, 32, 20, div, projection_dim=1280)),
        tokenizer=_clip_tokenizer(), tokenizer_2=_clip_tokenizer(), unet=unet, scheduler=scheduler,
        add_watermarker=False,
    )
    return pipeline, "StableDiffusionXLPipeline", "sdxl"


def _pixart_pipeline(resolution: int, div: int):
    """PixArt-α 512: a 28-layer DiT, 16 heads × 72 (1152 wide), patch 2, on a T5-XXL-shaped encoder."""
    import torch
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from training.engine.tiny import PIXART_ALPHA_BLOCKS, tiny_t5_tokenizer

    heads = max(1, 16 // div)
    transformer = PixArtTransformer2DModel(
        sample_size=resolution // 8, num_layers=28, patch_size=2, attention_head_dim=72, num_attention_heads=heads,
        caption_channels=4096 // div, in_channels=4, cross_attention_dim=72 * heads,
        out_channels=8,  # learned sigma
        **PIXART_ALPHA_BLOCKS,
    )
    tokenizer = tiny_t5_tokenizer()
    tokenizer.model_max_length = 120
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer) + 8, d_model=4096 // div, d_kv=64, d_ff=10240 // div, num_layers=24,
        num_heads=max(1, 64 // div), feed_forward_proj="gated-gelu", is_gated_act=True,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    with torch.device("cpu"):
        scheduler = DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False,
                                  steps_offset=1)
    pipeline = PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=_sd_vae(resolution, div, scaling_factor=0.18215),
        transformer=transformer, scheduler=scheduler,
    )
    return pipeline, "PixArtAlphaPipeline", "dit"


PIPELINE_BUILDERS = {"sd15": _sd15_pipeline, "sdxl": _sdxl_pipeline, "pixart": _pixart_pipeline}


def channel_div(args) -> int:
    """The preset's channel divisor: ``--channel-div``, else 4 for ``scaled`` and 1 (real shapes) for the others."""
    if args.channel_div is not None:
        return args.channel_div
    return 4 if args.preset == "scaled" else 1


def build_models(preset: str, resolution: int, div: int, device, dtype) -> Models:
    """A preset's pipeline (random init, built in code) in the engine's adapter, and a TAESD-shaped AutoencoderTiny.

    ``scaled`` is SD1.5 with every channel count divided by ``div``; ``sd15``, ``sdxl`` and
    ``pixart`` are those architectures, divided by ``div`` when it is above 1 (depths stay).
    """
    import torch
    from diffusers import AutoencoderTiny

    from training.engine.families import ADAPTERS
    from training.engine.pipeline_index import PipelineIndex

    builder = PIPELINE_BUILDERS["sd15" if preset == "scaled" else preset]
    with torch.device(device):
        pipeline, pipeline_class, family = builder(resolution, div)
        tiny_decoder = AutoencoderTiny(  # TAESD and TAESDXL have this shape
            encoder_block_out_channels=(max(1, TAESD_CHANNELS // div),) * 4,
            decoder_block_out_channels=(max(1, TAESD_CHANNELS // div),) * 4,
        )
    index = PipelineIndex(path=Path("in-memory"), pipeline_class=pipeline_class, family=family,
                          prediction_type="epsilon", scheduler_class=type(pipeline.scheduler).__name__)
    adapter = ADAPTERS[family](pipeline, index)
    # As the loop does: frozen VAE, decoder and text encoders in the weight dtype; the denoiser trains.
    for module in (pipeline.vae, tiny_decoder, *adapter.text_encoders()):
        module.requires_grad_(False).eval().to(device, dtype)
    adapter.denoiser.requires_grad_(True).train()
    return Models(adapter=adapter, tiny_decoder=tiny_decoder)


def count_macs(models: Models, resolution: int, device) -> dict:
    """Multiply-accumulates of one forward pass per sample (denoiser, VAE decoder, tiny decoder)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def macs(fn) -> float:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return counter.get_total_flops() / 2

    from training.engine.families import NoiseLevels

    adapter = models.adapter
    h = resolution // 8
    z = torch.randn(1, 4, h, h, device=device)
    with torch.no_grad():
        text = adapter.encode_text(["a photograph of an item on a table"], device)
    text.update(adapter.image_conditions(micro_conditioning(1, resolution), z, preference=False))
    levels = NoiseLevels(torch.tensor([500], device=device), torch.ones(1, device=device), torch.ones(1, device=device))
    denoiser = adapter.denoiser
    dtype = next(denoiser.parameters()).dtype
    text = {key: value.to(dtype) if value.is_floating_point() else value for key, value in text.items()}
    return {
        "denoiser_gmac": macs(lambda: adapter.model_output(denoiser, z.to(dtype), levels, text)) / 1e9,
        "decoder_gmac": macs(lambda: adapter.decode(z)) / 1e9,
        "tiny_decoder_gmac": macs(lambda: adapter.decode(z, models.tiny_decoder)) / 1e9,
    }


# Original sizes (height, width) of the benchmark's images: SDXL's micro-conditioning is computed from them.
ORIGINAL_SIZES = ((1024, 1024), (1536, 1024), (768, 1344), (2048, 2048))


def micro_conditioning(n: int, resolution: int, suffix: str = "") -> dict:
    """``original_size`` and ``crop_top_left`` of ``n`` images through the engine's own preprocessing.

    Images of the sizes in ``ORIGINAL_SIZES``, in turn, resized and centre-cropped to
    ``resolution`` by ``training.engine.data.ImagePreprocess``, as a real SDXL batch records them.
    """
    import torch
    from PIL import Image

    from training.engine.data import ImagePreprocess

    preprocess = ImagePreprocess(resolution)
    done = [preprocess([Image.new("RGB", ORIGINAL_SIZES[i % len(ORIGINAL_SIZES)][::-1])])[0] for i in range(n)]
    return {f"original_size{suffix}": torch.stack([p.original_size for p in done]),
            f"crop_top_left{suffix}": torch.stack([p.crop_top_left for p in done])}


# --------------------------------------------------------------------------------------
# The step


def make_config(setup: Setup, args, output_dir: Path):
    from training.engine.config import TrainConfig

    return TrainConfig(
        pretrained_model="in-memory", output_dir=str(output_dir), train_data="in-memory",
        resolution=args.resolution, train_batch_size=args.batch,
        latent_objective=setup.objective, pixel_objective=setup.objective if setup.pixel else "none",
        pixel_weight=args.pixel_weight, latent_beta=args.beta, pixel_beta=args.beta,  # they do not change the cost
        pixel_crop=setup.pixel_crop, pixel_decoder="in-memory" if setup.pixel_decoder == "tiny" else None,
        vae_gradient_checkpointing=setup.vae_checkpointing,
        mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[args.dtype],
        vae_fp32=args.dtype == "fp32",
    )


def make_batch(setup: Setup, args, models: Models | None = None, index: int = 0) -> dict:
    """A cached-latent batch, as the loop gets it from ``data.cache_latents`` + ``data.collate_fn``."""
    import torch

    if models is not None and models.toy is not None:
        return toy_batch(models, setup.objective, index, args.batch)
    h = args.resolution // 8
    captions = [f"a photograph of item {i} on a table" for i in range(args.batch)]
    sides = ("",) if setup.objective == "sft" else ("_w", "_l")
    batch = {"caption": captions}
    for side in sides:
        batch[f"latents{side}"] = torch.randn(args.batch, 4, h, h)
        if models is not None and models.adapter.family == "sdxl":
            batch |= micro_conditioning(args.batch, args.resolution, side)
    if setup.objective != "sft":
        batch["margin"] = torch.ones(args.batch)
    return batch


def set_decoder_checkpointing(setup: Setup, models: Models) -> None:
    decoder = models.tiny_decoder if setup.pixel_decoder == "tiny" else models.adapter.vae
    for module in (models.tiny_decoder, models.adapter.vae):
        module.disable_gradient_checkpointing()
    if setup.pixel and setup.vae_checkpointing:
        decoder.enable_gradient_checkpointing()


class Bench:
    """The engine's models, accelerator and optimizer, prepared as ``loop.train`` prepares them."""

    def __init__(self, args, models: Models, output_dir: Path):
        from accelerate import Accelerator

        from training.engine import loop

        self.args, self.models, self.output_dir = args, models, output_dir
        self.accelerator = Accelerator(
            mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[args.dtype],
            cpu=args.device == "cpu",
        )
        adapter = models.adapter
        self.params = [p for p in adapter.denoiser.parameters() if p.requires_grad]
        config = make_config(setups_for(args)[0], args, output_dir)
        self.max_grad_norm = config.max_grad_norm
        self.denoiser, self.optimizer = self.accelerator.prepare(
            adapter.denoiser, loop._make_optimizer(config, self.params)
        )
        self.counter = 0
        self.watch = loop.NonFiniteWatch(self.accelerator.device)

    def loss_context(self, setup: Setup):
        from training.engine import loop

        return loop.LossContext(
            adapter=self.models.adapter, config=make_config(setup, self.args, self.output_dir),
            device=self.accelerator.device,
            decoder=self.models.tiny_decoder if setup.pixel_decoder == "tiny" else None,
            autocast=self.accelerator.autocast,
        )

    def step_fn(self, setup: Setup):
        """One optimizer step exactly as ``training.engine.loop.train`` takes it.

        ``loop.compute_loss`` (text encoding, shared noise and timestep, the adapter's ε̂, the
        pixel crop, the chosen decoder, ``losses.combined_loss``), the finiteness watch,
        ``accelerator.backward``, gradient clipping and the AdamW step.
        """
        import torch

        from training.engine import loop

        models, accelerator = self.models, self.accelerator
        ctx = self.loss_context(setup)
        batch = make_batch(setup, self.args, models)

        def forward_backward():
            set_decoder_checkpointing(setup, models)  # configurations share one VAE
            self.counter += 1
            generator = torch.Generator().manual_seed(loop.derive_seed(0, self.counter, 0))
            loss, metrics = loop.compute_loss(ctx, self.denoiser, batch, generator)
            self.watch.observe(loss, metrics, self.counter)
            accelerator.backward(loss)

        def step():
            forward_backward()
            accelerator.clip_grad_norm_(self.params, self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        step.forward_backward = forward_backward
        return step

    def decoder_fns(self, setup: Setup):
        """The floor's parts, through the engine's decode, on exactly the latents the pixel term decodes.

        Returns (forward without grad: the target, forward+backward to the latents: the prediction).
        """
        import torch

        models, args = self.models, self.args
        adapter = models.adapter
        samples = args.batch * (1 if setup.objective == "sft" else 2)
        crop = max(1, round(args.resolution // 8 * setup.pixel_crop))
        z = torch.randn(samples, 4, crop, crop, device=self.accelerator.device)
        decoder = models.tiny_decoder if setup.pixel_decoder == "tiny" else None

        def forward():
            set_decoder_checkpointing(setup, models)
            with torch.no_grad():
                adapter.decode(z, decoder)

        def forward_backward():
            set_decoder_checkpointing(setup, models)
            z_hat = z.detach().requires_grad_(True)
            adapter.decode(z_hat, decoder).float().square().mean().backward()

        return forward, forward_backward


# --------------------------------------------------------------------------------------
# Measuring


def synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    # VmHWM, unlike ru_maxrss, can be reset (see measure_memory).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_times(setups: list[Setup], bench: Bench, args) -> dict[str, dict]:
    """Median wall and CPU seconds per step, configurations interleaved round by round.

    Interleaving (in a shuffled order each round) spreads the load of other processes on a
    shared machine evenly over the configurations, so ratios between them stay meaningful.
    """
    import random

    device = args.device
    jobs = []  # (configuration name, part, callable)
    for setup in setups:
        jobs.append((setup.name, "step", bench.step_fn(setup)))
        if setup.pixel:
            forward, forward_backward = bench.decoder_fns(setup)
            jobs.append((setup.name, "decoder_forward", forward))
            jobs.append((setup.name, "decoder_forward_backward", forward_backward))
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    order = random.Random(0)
    for round_index in range(args.warmup + args.steps):
        order.shuffle(jobs)
        for name, part, fn in jobs:
            synchronize(device)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            if round_index >= args.warmup:
                wall.setdefault((name, part), []).append(time.perf_counter() - start_wall)
                cpu.setdefault((name, part), []).append(time.process_time() - start_cpu)
        print(f"  round {round_index + 1}/{args.warmup + args.steps} done", file=sys.stderr, flush=True)
    bench.watch.check(bench.accelerator, None)  # as the loop does when it logs
    times: dict[str, dict] = {}
    for (name, part), values in wall.items():
        times.setdefault(name, {})[f"{part}_s"] = statistics.median(values)
        times[name][f"{part}_cpu_s"] = statistics.median(cpu[(name, part)])
    return times


def measure_memory(setup: Setup, bench: Bench, args) -> float:
    """Peak memory of a step's forward and backward above what was in use before it, in MiB.

    That is the activation and temporary memory, which the pixel term, ``pixel_crop`` and
    decoder checkpointing change. Weights, gradients (kept allocated here) and the AdamW state
    are excluded: they are the same in every configuration. One full step first allocates them.

    On CPU, in a fresh process whose allocator returns freed blocks to the system: the
    kernel's peak-RSS mark (``VmHWM``, reset through ``/proc/self/clear_refs``) above the RSS
    before. On CUDA: ``max_memory_allocated`` above ``memory_allocated``.
    """
    import gc

    import torch

    step = bench.step_fn(setup)
    step()
    for p in bench.params:
        p.grad = torch.zeros_like(p)
    gc.collect()
    cuda = args.device.startswith("cuda")
    if cuda:
        synchronize(args.device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS mark
        base = rss_bytes()
    for _ in range(2):
        step.forward_backward()
        bench.optimizer.zero_grad(set_to_none=False)
    if cuda:
        synchronize(args.device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return (peak_rss_bytes() - base) / 2**20


def measure_cosines(setups: list[Setup], bench: Bench, args) -> dict[str, dict]:
    """Per cheap pixel mode, the gradient cosine against the full pixel term over ``--cosine-batches`` batches.

    Batch ``i`` is toy batch ``i`` with micro-step ``i``'s seed for every draw (noise, timesteps,
    the crop), the same in every mode (``training.engine.gradients``). Two cosines per batch:
    of the total loss (latent + weighted pixel term) and of the weighted pixel term alone.
    Returns their per-batch values and means with 95 % bootstrap intervals over batches.
    """
    from toyworld.quality import mean_interval
    from training.engine import gradients, loop

    models = bench.models
    found: dict[str, dict] = {}
    for objective in args.cosine_objectives:
        full = next((s for s in setups if s.objective == objective and is_full_pixel(s)), None)
        cheap = [s for s in setups if s.objective == objective and s.pixel and s is not full]
        if full is None or not cheap:
            continue
        values = {s.name: {"total": [], "pixel": []} for s in cheap}
        for index in range(args.cosine_batches):
            batch = make_batch(full, args, models, index)
            seed = loop.derive_seed(0, index, 0)
            set_decoder_checkpointing(full, models)
            latent = gradients.term_gradient(bench.loss_context(full), bench.denoiser, batch, seed, "latent")
            reference = gradients.term_gradient(bench.loss_context(full), bench.denoiser, batch, seed, "pixel")
            for setup in cheap:
                set_decoder_checkpointing(setup, models)
                pixel = gradients.term_gradient(bench.loss_context(setup), bench.denoiser, batch, seed, "pixel")
                values[setup.name]["total"].append(gradients.total_cosine(latent, reference, pixel))
                values[setup.name]["pixel"].append(gradients.cosine(reference, pixel))
            print(f"  cosine batch {index + 1}/{args.cosine_batches} done", file=sys.stderr, flush=True)
        for name, per_batch in values.items():
            found[name] = {f"cosine_{term}": mean_interval(series) | {"per_batch": series}
                           for term, series in per_batch.items()}
    return found


def recommended(result: dict, clock: str = "_cpu") -> bool | None:
    """The rule: a step ≤ 1.5× the latent-only step and a total-gradient cosine ≥ 0.9 (None: not measured)."""
    if "cosine_total" not in result:
        return None
    return (result[f"ratio_to_latent{clock}"] <= RECOMMENDED_MAX_RATIO
            and result["cosine_total"]["mean"] >= RECOMMENDED_MIN_COSINE)


# --------------------------------------------------------------------------------------
# Report


def summarize(results: list[dict]) -> list[dict]:
    """Add the latent step, overhead, ratio and floor to each pixel configuration's result."""
    latent = {r["objective"]: r for r in results if not r["pixel"]}
    full = {r["objective"]: r for r in results if is_full_pixel(r)}
    for r in results:
        base = latent.get(r["objective"])
        if not r["pixel"] or base is None:
            continue
        for clock in ("", "_cpu"):
            step, latent_step = r[f"step{clock}_s"], base[f"step{clock}_s"]
            r[f"ratio_to_latent{clock}"] = step / latent_step
            r[f"overhead{clock}_s"] = step - latent_step
            floor = latent_step + r[f"decoder_forward{clock}_s"] + r[f"decoder_forward_backward{clock}_s"]
            r[f"floor{clock}_s"] = floor
            r[f"ratio_to_floor{clock}"] = step / floor
            reference = full.get(r["objective"])
            if reference is not None and reference is not r:
                r[f"overhead_vs_full{clock}"] = r[f"overhead{clock}_s"] / (reference[f"step{clock}_s"] - latent_step)
                # The same ratio for the decoder's own work alone: what the step's ratio can approach.
                r[f"decoder_work_vs_full{clock}"] = (
                    (r[f"decoder_forward{clock}_s"] + r[f"decoder_forward_backward{clock}_s"])
                    / (reference[f"decoder_forward{clock}_s"] + reference[f"decoder_forward_backward{clock}_s"])
                )
    return results


def format_table(results: list[dict], clock: str) -> str:
    unit = "CPU s" if clock == "_cpu" else "s"
    lines = [
        f"| configuration | step ({unit}) | ×latent | floor ({unit}) | ×floor | overhead ÷ full overhead "
        "| peak mem (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def fmt(value, spec):
        return format(value, spec) if value is not None else "–"

    for r in results:
        lines.append(
            f"| {r['setup']} | {r[f'step{clock}_s']:.3f} | {fmt(r.get(f'ratio_to_latent{clock}'), '.2f')} | "
            f"{fmt(r.get(f'floor{clock}_s'), '.3f')} | {fmt(r.get(f'ratio_to_floor{clock}'), '.3f')} | "
            f"{fmt(r.get(f'overhead_vs_full{clock}'), '.2f')} | {fmt(r.get('peak_mem_mb'), '.0f')} |"
        )
    return "\n".join(lines)


def format_targets(results: list[dict], clock: str) -> str:
    lines = []
    for r in results:
        if is_full_pixel(r):
            value = r[f"ratio_to_floor{clock}"]
            lines.append(f"{r['setup']}: step / floor = {value:.3f} (target ≤ 1.15: {'met' if value <= 1.15 else 'NOT met'})")
        if r["pixel"] and r["pixel_crop"] == 0.5 and f"overhead_vs_full{clock}" in r:
            value = r[f"overhead_vs_full{clock}"]
            lines.append(f"{r['setup']}: pixel overhead / full-image pixel overhead = {value:.3f} "
                         f"(target ≤ 0.35: {'met' if value <= 0.35 else 'NOT met'}; the decoder's own work "
                         f"on the crop is {r[f'decoder_work_vs_full{clock}']:.3f} of the full image's)")
    return "\n".join(lines)


def write_toy_table(directory: Path) -> Path:
    """``directory/table.md`` from the toy runs' JSON files there: one table per toy pipeline and objective."""
    lines = [
        "Step time: median process CPU time of an optimizer step (1 thread). Peak memory: activations and "
        "temporaries of a step's forward and backward. Cosines: mean over batches [95 % bootstrap interval]. "
        f"Recommended: step ≤ {RECOMMENDED_MAX_RATIO}× latent-only and total-gradient cosine ≥ {RECOMMENDED_MIN_COSINE}. "
        "Commands, and why the SimPO ratios mislead on a CPU: docs/benchmarks.md (pixel-term cost on the toy models).",
    ]

    def cell(result, key, measured):
        found = result.get(key)
        if found is None:
            return "1 (reference)" if measured and is_full_pixel(result) else "–"
        return f"{found['mean']:.3f} [{found['ci95'][0]:.3f}, {found['ci95'][1]:.3f}]"

    paths = [directory / f"{name}.json" for name in TOY_PIXEL_WEIGHT if (directory / f"{name}.json").exists()]
    for path in paths:
        run = json.loads(path.read_text())
        for objective in dict.fromkeys(r["objective"] for r in run["results"]):
            rows = [r for r in run["results"] if r["objective"] == objective]
            weight = run["settings"]["pixel_weight"]
            lines += [
                "", f"**{run['settings']['toy']}**, {objective.upper()}, pixel weight {weight:g}, "
                f"batch {run['settings']['batch']}" + (" pairs" if objective != "sft" else "") + ":", "",
                "| mode | step (CPU ms) | × latent-only | peak memory (MB) | gradient cosine, total "
                "| gradient cosine, pixel term | recommended |",
                "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
            ]
            measured = any("cosine_total" in r for r in rows)
            for r in rows:
                ratio = r.get("ratio_to_latent_cpu")
                verdict = recommended(r)
                lines.append(
                    f"| {r['setup']} | {1000 * r['step_cpu_s']:.0f} | {'–' if ratio is None else f'{ratio:.2f}'} "
                    f"| {r.get('peak_mem_mb', float('nan')):.0f} | {cell(r, 'cosine_total', measured)} "
                    f"| {cell(r, 'cosine_pixel', measured)} "
                    f"| {'–' if verdict is None else ('yes' if verdict else 'no')} |"
                )
    out = directory / "table.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", choices=("scaled", *PIPELINE_BUILDERS), default="scaled",
                        help="scaled: SD1.5 with channels / --channel-div (a CPU run); sd15, sdxl, pixart: "
                             "those architectures at their real sizes (a GPU run), unless --channel-div is given")
    parser.add_argument("--channel-div", type=int, default=None,
                        help="divide every channel count by this (default 4 for scaled, 1 for the others)")
    parser.add_argument("--resolution", type=int, default=128, help="(the toy runs: 64)")
    parser.add_argument("--batch", type=int, default=2, help="images (SFT) or pairs (SimPO) per step")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--steps", type=int, default=7, help="timed rounds (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only configurations whose name contains one of these")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory runs")
    parser.add_argument("--in-process", action="store_true",
                        help="measure memory in this process, as on CUDA (default on CPU: a fresh process each)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--toy", choices=tuple(TOY_PIXEL_WEIGHT), default=None,
                        help="the shipped toy pipeline on rendered toy data instead of a random-init preset")
    parser.add_argument("--tiny-decoder", type=Path, default=TOY_WEIGHTS / "toy-tiny-decoder",
                        help="the AutoencoderTiny folder of the toy runs")
    parser.add_argument("--objectives", nargs="+", choices=("sft", "simpo"), default=["sft", "simpo"],
                        help="objectives whose configurations run")
    parser.add_argument("--pixel-weight", type=float, default=None,
                        help="λ (SFT) and μ (SimPO); default 2, for the toys 2 (toy-sd) or 8 (toy-pixart)")
    parser.add_argument("--beta", type=float, default=None,
                        help="β of the SimPO terms (default: the engine's 5000; for the toys 2000, as toy_simpo_pixel.toml)")
    parser.add_argument("--cosine-batches", type=int, default=0,
                        help="toy runs: batches over which to average the gradient cosines (0: none)")
    parser.add_argument("--cosine-objectives", nargs="+", choices=("sft", "simpo"), default=["sft"],
                        help="objectives whose gradient cosines are measured")
    parser.add_argument("--table", type=Path, default=None, help="write DIR/table.md from the toy JSON files in DIR and stop")
    parser.add_argument("--memory-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pixel_weight is None:
        args.pixel_weight = TOY_PIXEL_WEIGHT[args.toy] if args.toy else 2.0
    if args.beta is None:
        args.beta = 2000.0 if args.toy else 5000.0
    if args.toy:
        args.resolution = 64  # the toy pipelines' only size
    return args


def memory_in_subprocess(setup: Setup, args, argv: list[str]) -> float:
    command = [sys.executable, __file__, *argv, "--memory-worker", str(setups_for(args).index(setup))]
    # glibc keeps freed heap memory resident and reuses it, which hides later peaks from RSS;
    # serving every block over 64 KiB by mmap (unmapped on free) makes RSS follow live memory.
    env = {**_worker_env(), "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        raise SystemExit(f"configuration '{setup.name}' failed (exit {done.returncode})")
    return float(done.stdout.strip().splitlines()[-1])


def _worker_env() -> dict:
    # Passive OpenMP waiting: on a shared machine, spinning threads that lose their core to
    # another process turn a 0.5 s step into a 10 s one.
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.table is not None:
        print(f"wrote {write_toy_table(args.table)}")
        return 0
    if args.device == "cpu" and os.environ.get("OMP_WAIT_POLICY") is None:
        # OpenMP reads this at start-up, so re-run this process with it set.
        os.execve(sys.executable, [sys.executable, __file__, *argv], _worker_env())
    import tempfile

    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available on this machine: run this benchmark on a GPU box, "
              "or use --device cpu.", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.toy:
        if args.dtype != "fp32":
            raise SystemExit("the toy runs are fp32")
        models = build_toy_models(args.toy, args.tiny_decoder, device)
    else:
        models = build_models(args.preset, args.resolution, channel_div(args), device, _dtypes()[args.dtype])
    with tempfile.TemporaryDirectory() as output_dir:
        bench = Bench(args, models, Path(output_dir))
        if args.memory_worker is not None:
            print(measure_memory(setups_for(args)[args.memory_worker], bench, args))
            return 0
        return _run(args, argv, models, bench)


def _scaled_note(args) -> str:
    div = channel_div(args)
    if div == 1:
        return " (real shapes, random init)"
    return f" ({'sd15' if args.preset == 'scaled' else args.preset} channels / {div})"


def _shown(path: Path) -> str:
    """A path as the results record it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _run(args, argv, models: Models, bench: Bench) -> int:
    import torch

    setups = [s for s in setups_for(args) if args.only is None or any(key in s.name for key in args.only)]
    cpu_start = time.process_time()
    macs = count_macs(models, args.resolution, bench.accelerator.device)
    model = (f"toy pipeline {args.toy} (toyworld/weights/{args.toy}), tiny decoder {_shown(args.tiny_decoder)}, "
             "rendered training scenes" if args.toy else
             f"preset {args.preset}" + _scaled_note(args))
    header = [
        f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else
                                   f", {args.threads} threads, {os.cpu_count()} cores"),
        model,
        f"{args.resolution} px, batch {args.batch} (SimPO: pairs), {args.dtype}, pixel weight {args.pixel_weight:g}",
        f"median of {args.steps} interleaved rounds after {args.warmup} warm-up",
        f"MACs per sample, forward: denoiser {macs['denoiser_gmac']:.3f} G, VAE decoder {macs['decoder_gmac']:.3f} G "
        f"(×{macs['decoder_gmac'] / macs['denoiser_gmac']:.2f}), tiny decoder {macs['tiny_decoder_gmac']:.3f} G",
        f"load average before: {os.getloadavg()[0]:.2f}",
    ]
    for line in header:
        print(f"# {line}", flush=True)

    times = measure_times(setups, bench, args)
    results = []
    for setup in setups:
        result = {"setup": setup.name, "objective": setup.objective, "pixel": setup.pixel,
                  "pixel_crop": setup.pixel_crop, "pixel_decoder": setup.pixel_decoder,
                  "vae_checkpointing": setup.vae_checkpointing, **times[setup.name]}
        results.append(result)
    load_after_timing = os.getloadavg()[0]
    if not args.no_memory:
        for result, setup in zip(results, setups):
            if args.device.startswith("cuda") or args.in_process:
                result["peak_mem_mb"] = measure_memory(setup, bench, args)
            else:
                result["peak_mem_mb"] = memory_in_subprocess(setup, args, argv)
    summarize(results)
    if args.cosine_batches:
        cosines = measure_cosines(setups, bench, args)
        for result in results:
            result.update(cosines.get(result["setup"], {}))
            if (verdict := recommended(result)) is not None:
                result["recommended"] = verdict
    print(f"# load average after timing: {load_after_timing:.2f}")
    print("\nWall clock:\n")
    print(format_table(results, ""))
    print()
    print(format_targets(results, ""))
    if args.device == "cpu":
        print("\nProcess CPU time (all threads; less sensitive to other processes on the machine):\n")
        print(format_table(results, "_cpu"))
        print()
        print(format_targets(results, "_cpu"))
    if args.cosine_batches:
        print(f"\nGradient cosine against the full pixel term, mean over {args.cosine_batches} batches [95 % interval]:\n")
        for r in results:
            if "cosine_total" in r:
                total, pixel = r["cosine_total"], r["cosine_pixel"]
                print(f"{r['setup']}: total {total['mean']:.4f} [{total['ci95'][0]:.4f}, {total['ci95'][1]:.4f}], "
                      f"pixel term {pixel['mean']:.4f} [{pixel['ci95'][0]:.4f}, {pixel['ci95'][1]:.4f}], "
                      f"recommended: {'yes' if r['recommended'] else 'no'}")
    # This process's CPU time; the memory workers' is not counted.
    cpu_s = time.process_time() - cpu_start
    print(f"# CPU time of this run (main process): {cpu_s:.0f} s")
    if args.json is not None:
        settings = {key: _shown(value) if isinstance(value, Path) else value for key, value in vars(args).items()
                    if key not in ("json", "table", "memory_worker", "only")}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "settings": settings, "macs": macs,
                                         "command": "python bench/train_step.py " + " ".join(argv),
                                         "cpu_s": cpu_s, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
