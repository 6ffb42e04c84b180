"""Recipe: distil a tiny decoder for the toy VAE, as TAESD is for SD's VAE.

    python -m toyworld.recipes.tiny_decoder --run-dir var/toyworld/tiny-decoder            # resumes
    python -m toyworld.recipes.tiny_decoder --run-dir var/toyworld/tiny-decoder --export toyworld/weights/toy-tiny-decoder
    python -m toyworld.recipes.tiny_decoder --evaluate toyworld/weights/toy-tiny-decoder

An ``AutoencoderTiny`` whose decoder learns to give the toy VAE decoder's output ``D(z)`` for
the latents the pixel term decodes. The engine (``training.engine.families.decode_latents``)
feeds a decoder ``z / scaling_factor + shift_factor`` with the decoder's own factors; this one
keeps AutoencoderTiny's 1 and 0, so it reads diffusion latents (the VAE's latents times its
``scaling_factor``) directly, as TAESD reads SD's.

Data: ``--scenes`` training-split scenes, rendered and encoded once with the frozen toy VAE
(posterior mean, scaled as the engine scales it) into ``RUN_DIR/latents.pt``. The pixel term
decodes noisy latents ``z_t = a z + b ε`` (eq. 2) and the model's ``ẑ_t``, not only clean
ones, so each training sample is ``z_t`` at a uniform DDPM timestep (the toy pipelines'
scaled-linear schedule), a quarter of them clean (t = 0 exactly), and its target is the VAE
decoder's output on that very input, computed on the fly. Loss: MSE to the target plus
``--highpass-weight`` times the L1 of a 3×3 high-pass of the difference (the 2–4 px textures).
AdamW with warm-up and a cosine decay; every draw is seeded by ``(seed, step)``, so a resumed run
takes the same batches as an uninterrupted one. The encoder is the smallest AutoencoderTiny
allows and stays untrained: the engine only decodes with a ``pixel_decoder``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from toyworld.recipes.vae import highpass, learning_rate  # the VAE recipe's high-pass and schedule
from toyworld.scenes import render, sample_scene, to_uint8
from toyworld.splits import is_eval_caption, is_train_caption

WEIGHTS = Path(__file__).parents[1] / "weights"
TOY_VAE = WEIGHTS / "toy-sd" / "vae"  # toy-pixart ships the same file
TINY_DECODER_CONFIG = dict(
    latent_channels=4,
    encoder_block_out_channels=(8, 8, 8, 8),
    num_encoder_blocks=(1, 1, 1, 1),
    decoder_block_out_channels=(32, 32, 32, 32),  # DecoderTiny needs one width; 3 upsamplings = 8×
    num_decoder_blocks=(2, 2, 1, 0),  # the 64×64 stage is one conv and the output conv
)
DEFAULTS = dict(steps=3000, batch_size=16, learning_rate=2e-3, final_learning_rate=1e-4, warmup=100,
                highpass_weight=0.5, clean_fraction=0.25, scenes=4096, seed=0)


def build_tiny_decoder():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(**TINY_DECODER_CONFIG)


def load_vae(path: Path = TOY_VAE):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(path, torch_dtype=torch.float32).requires_grad_(False).eval()


def noise_coefficients():
    """``(√ᾱ_t, √(1−ᾱ_t))`` for every timestep of the toy pipelines' training schedule."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(WEIGHTS / "toy-sd" / "scheduler")
    alpha_bar = scheduler.alphas_cumprod.float()
    return alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()


def render_scenes(count: int, seed: int, keep) -> tuple[list[str], torch.Tensor]:
    """``count`` distinct captions accepted by ``keep`` and their renders ``[N, 3, 64, 64]`` in [-1, 1]."""
    rng = np.random.default_rng(seed)
    captions, images, seen = [], [], set()
    while len(captions) < count:
        scene = sample_scene(rng)
        if scene.caption in seen or not keep(scene.caption):
            continue
        seen.add(scene.caption)
        captions.append(scene.caption)
        images.append(render(scene))
    return captions, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) * 2.0 - 1.0


@torch.no_grad()
def encode(vae, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Diffusion latents of ``pixels``, exactly as the engine encodes them (posterior mean × scaling)."""
    from training.engine.families import encode_pixels

    return torch.cat([encode_pixels(vae, chunk) for chunk in pixels.split(batch_size)])


def latent_cache(run_dir: Path, vae, *, scenes: int, seed: int) -> torch.Tensor:
    """The training latents, rendered and encoded once and kept in ``RUN_DIR/latents.pt``."""
    path = run_dir / "latents.pt"
    if path.exists():
        return torch.load(path)
    _, pixels = render_scenes(scenes, seed, is_train_caption)
    latents = encode(vae, pixels)
    torch.save(latents, path.with_suffix(".pt.tmp"))
    os.replace(path.with_suffix(".pt.tmp"), path)
    return latents


def distillation_loss(prediction: torch.Tensor, target: torch.Tensor, highpass_weight: float) -> torch.Tensor:
    """``mean((ŷ − y)²) + w · mean(|H(ŷ − y)|)`` with ``H`` a 3×3 high-pass."""
    difference = prediction - target
    return difference.square().mean() + highpass_weight * highpass(difference).abs().mean()


def training_inputs(latents: torch.Tensor, step: int, args, coefficients) -> torch.Tensor:
    """The batch of step ``step``: cached latents noised at uniform timesteps, some left clean."""
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    a, b = coefficients
    index = torch.randint(0, len(latents), (args.batch_size,), generator=generator)
    timesteps = torch.randint(0, len(a), (args.batch_size,), generator=generator)
    clean = torch.rand(args.batch_size, generator=generator) < args.clean_fraction
    eps = torch.randn((args.batch_size, *latents.shape[1:]), generator=generator)
    a_t = torch.where(clean, 1.0, a[timesteps]).reshape(-1, 1, 1, 1)
    b_t = torch.where(clean, 0.0, b[timesteps]).reshape(-1, 1, 1, 1)
    return a_t * latents[index] + b_t * eps


def train(args) -> None:
    from training.engine.families import decode_latents

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    vae = load_vae()
    latents = latent_cache(run_dir, vae, scenes=args.scenes, seed=args.seed)
    coefficients = noise_coefficients()
    torch.manual_seed(args.seed)
    tiny = build_tiny_decoder()
    optimizer = torch.optim.AdamW(tiny.decoder.parameters(), lr=args.learning_rate, weight_decay=0.0)
    step, cpu_before = 0, 0.0
    checkpoint = run_dir / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        tiny.load_state_dict(state["tiny"])
        optimizer.load_state_dict(state["optimizer"])
        step, cpu_before = state["step"], state["cpu_s"]
        print(f"resumed at step {step}", flush=True)
    tiny.train()
    cpu_start = time.process_time()
    last = args.steps if args.stop_after is None else min(args.steps, args.stop_after)
    with open(run_dir / "metrics.jsonl", "a") as log:
        while step < last:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, args)
            z = training_inputs(latents, step, args, coefficients)
            with torch.no_grad():
                target = decode_latents(vae, z)
            loss = distillation_loss(decode_latents(tiny, z), target, args.highpass_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tiny.decoder.parameters(), 1.0)
            optimizer.step()
            step += 1
            cpu_s = cpu_before + time.process_time() - cpu_start
            if step % 50 == 0:
                log.write(json.dumps({"step": step, "loss": loss.item(), "cpu_s": cpu_s}) + "\n")
                log.flush()
            if step % args.checkpoint_every == 0 or step == last:
                tmp = checkpoint.with_suffix(".pt.tmp")
                torch.save({"tiny": tiny.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                            "cpu_s": cpu_s, "args": vars(args)}, tmp)
                os.replace(tmp, checkpoint)
                print(f"step {step}: loss {loss.item():.5f}, {cpu_s:.0f} s CPU", flush=True)


def export(args) -> None:
    state = torch.load(Path(args.run_dir) / "checkpoint.pt", weights_only=False)
    tiny = build_tiny_decoder()
    tiny.load_state_dict(state["tiny"])
    tiny.to(torch.float16).save_pretrained(args.export, safe_serialization=True)
    (Path(args.export) / "recipe.json").write_text(json.dumps(
        {"recipe": "python -m toyworld.recipes.tiny_decoder", "steps": state["step"], "cpu_s": round(state["cpu_s"]),
         "args": {k: v for k, v in state["args"].items() if k not in ("run_dir", "export", "evaluate")}}, indent=2) + "\n")
    print(f"exported to {args.export} (fp16, {state['step']} steps, {state['cpu_s']:.0f} s CPU)")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (x.clamp(-1, 1) - y.clamp(-1, 1)).square().flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse)


@torch.no_grad()
def evaluate(decoder_dir: Path, *, scenes: int = 100, seed: int = 2026) -> dict:
    """Reconstruction quality on held-out evaluation-split scenes: the tiny decoder against the VAE's.

    PSNR of its decodes against the VAE decoder's and against the renders, on the clean
    latents; PSNR against the VAE decoder's on noisy latents (uniform timesteps); the oracle's
    texture fidelity of both decoders' images. 95 % bootstrap intervals over scenes.
    """
    from toyworld import oracle
    from toyworld.quality import mean_interval
    from training.engine.families import decode_latents, load_decoder

    vae = load_vae()
    tiny = load_decoder(decoder_dir).float().eval()
    captions, pixels = render_scenes(scenes, seed, is_eval_caption)
    z = encode(vae, pixels)
    by_vae, by_tiny = decode_latents(vae, z), decode_latents(tiny, z)
    a, b = noise_coefficients()
    generator = torch.Generator().manual_seed(seed)
    timesteps = torch.randint(0, len(a), (scenes,), generator=generator)
    z_t = a[timesteps].reshape(-1, 1, 1, 1) * z + b[timesteps].reshape(-1, 1, 1, 1) * torch.randn(z.shape, generator=generator)

    def images(x):
        return [to_uint8((image.clamp(-1, 1).permute(1, 2, 0).numpy() + 1) / 2) for image in x]

    fidelity = {name: [oracle.texture_fidelity(image, caption) for image, caption in zip(images(x), captions)]
                for name, x in (("vae", by_vae), ("tiny", by_tiny))}
    return {
        "scenes": scenes,
        "psnr_tiny_vs_vae_db": mean_interval(psnr(by_tiny, by_vae).numpy()),
        "psnr_tiny_vs_render_db": mean_interval(psnr(by_tiny, pixels).numpy()),
        "psnr_vae_vs_render_db": mean_interval(psnr(by_vae, pixels).numpy()),
        "psnr_tiny_vs_vae_noisy_db": mean_interval(psnr(decode_latents(tiny, z_t), decode_latents(vae, z_t)).numpy()),
        "texture_fidelity_vae": mean_interval(fidelity["vae"]),
        "texture_fidelity_tiny": mean_interval(fidelity["tiny"]),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir")
    parser.add_argument("--export", help="write the trained decoder in diffusers layout (fp16) here and stop")
    parser.add_argument("--evaluate", type=Path, help="print the reconstruction quality of this decoder folder")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--stop-after", type=int, default=None, help="stop at this step, keeping the schedule of --steps")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--final-learning-rate", type=float, default=DEFAULTS["final_learning_rate"])
    parser.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    parser.add_argument("--highpass-weight", type=float, default=DEFAULTS["highpass_weight"])
    parser.add_argument("--clean-fraction", type=float, default=DEFAULTS["clean_fraction"],
                        help="share of each batch decoded from clean latents (the rest noised at a uniform timestep)")
    parser.add_argument("--scenes", type=int, default=DEFAULTS["scenes"], help="training scenes rendered and encoded once")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.evaluate:
        torch.set_num_threads(args.threads)
        print(json.dumps(evaluate(args.evaluate), indent=2))
        return
    if not args.run_dir:
        parser.error("--run-dir is required to train or export")
    if args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
