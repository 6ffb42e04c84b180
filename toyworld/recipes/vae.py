"""Recipe: train the toy world's VAE, an ``AutoencoderKL`` with 8× downsampling like SD's.

    python -m toyworld.recipes.vae --run-dir var/toyworld/vae            # resumes if interrupted
    python -m toyworld.recipes.vae --run-dir var/toyworld/vae --export toyworld/weights/vae

Every batch is freshly rendered from the training split's scene distribution, seeded by
(seed, step), so a resumed run sees the same batches as an uninterrupted one. The loss is L1
on pixels plus L1 on a high-pass of the pixels (so that the decoder learns to paint the 2–4 px
textures, not only their mean colour) plus a small KL term. A checkpoint (weights, optimizer,
step) is written every ``--checkpoint-every`` steps, with a grid of reconstructions beside it.

At ``--freeze-encoder-at`` the encoder (and ``quant_conv``) stops training and only the decoder
goes on, as SD's ft-MSE VAE was fine-tuned: the latent space is final from that step, so the
denoisers can train on it while the decoder improves. The VAE as it is at that step is exported
to ``RUN_DIR/at-freeze`` (its ``scaling_factor`` is the one every later export keeps).

``--export`` writes the diffusers directory, in fp16 safetensors, with ``scaling_factor`` set to
1/std of the latents of 512 training scenes, as SD's VAE has its 0.18215.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toyworld.scenes import RESOLUTION, render, sample_scene, to_uint8
from toyworld.splits import is_train_caption

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(24, 48, 96, 96),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=RESOLUTION,
)
DEFAULTS = dict(steps=2000, batch_size=16, learning_rate=1e-3, final_learning_rate=1e-4, warmup=200,
                kl_weight=1e-6, highpass_weight=1.0, seed=0, freeze_encoder_at=1000)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def training_batch(seed: int, step: int, batch_size: int) -> torch.Tensor:
    """``[B, 3, 64, 64]`` in [-1, 1]: renders of training-split scenes, the same for the same (seed, step)."""
    rng = np.random.default_rng([seed, step])
    images = []
    while len(images) < batch_size:
        scene = sample_scene(rng)
        if is_train_caption(scene.caption):
            images.append(render(scene))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) * 2.0 - 1.0


def highpass(x: torch.Tensor) -> torch.Tensor:
    return x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def vae_loss(vae, x: torch.Tensor, *, kl_weight: float, highpass_weight: float) -> tuple[torch.Tensor, dict]:
    posterior = vae.encode(x).latent_dist
    y = vae.decode(posterior.sample()).sample
    l1 = (y - x).abs().mean()
    hp = (highpass(y) - highpass(x)).abs().mean()
    kl = posterior.kl().mean()
    loss = l1 + highpass_weight * hp + kl_weight * kl
    return loss, {"l1": l1.item(), "highpass": hp.item(), "kl": kl.item()}


def learning_rate(step: int, args) -> float:
    if step < args.warmup:
        return args.learning_rate * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.final_learning_rate + 0.5 * (args.learning_rate - args.final_learning_rate) * (1 + math.cos(math.pi * progress))


def encoder_parameters(vae):
    return [*vae.encoder.parameters(), *(vae.quant_conv.parameters() if vae.quant_conv is not None else [])]


def _freeze_encoder(vae) -> None:
    for parameter in encoder_parameters(vae):
        parameter.requires_grad_(False)
        parameter.grad = None  # AdamW skips a parameter without a gradient


def _save_checkpoint(run_dir: Path, vae, optimizer, step: int, args) -> None:
    tmp = run_dir / "checkpoint.pt.tmp"
    torch.save({"vae": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "args": vars(args)}, tmp)
    os.replace(tmp, run_dir / "checkpoint.pt")


@torch.no_grad()
def reconstruction_grid(vae, x: torch.Tensor) -> np.ndarray:
    y = vae.decode(vae.encode(x).latent_dist.mode()).sample
    pairs = torch.cat([x, y], dim=3).clamp(-1, 1)  # original | reconstruction
    rows = [(p.permute(1, 2, 0).numpy() + 1) / 2 for p in pairs]
    return to_uint8(np.concatenate(rows, axis=0))


def train(args) -> None:
    from PIL import Image

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    vae = build_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.learning_rate, weight_decay=0.0)
    step = 0
    if (run_dir / "checkpoint.pt").exists():
        state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
        vae.load_state_dict(state["vae"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resumed at step {step}", flush=True)
    preview = training_batch(args.seed + 1, 0, 8)
    log = open(run_dir / "metrics.jsonl", "a")
    cpu_start = time.process_time()
    last = args.steps if args.stop_after is None else min(args.steps, args.stop_after)
    while step < last:
        if step >= args.freeze_encoder_at:
            _freeze_encoder(vae)
            if not (run_dir / "at-freeze" / "config.json").exists():
                export_vae(vae, run_dir / "at-freeze", seed=args.seed)
            vae.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        loss, terms = vae_loss(vae, training_batch(args.seed, step, args.batch_size),
                               kl_weight=args.kl_weight, highpass_weight=args.highpass_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 50 == 0:
            log.write(json.dumps({"step": step, "loss": loss.item(), **terms,
                                  "cpu_s": time.process_time() - cpu_start}) + "\n")
            log.flush()
        if step % args.checkpoint_every == 0 or step == last:
            _save_checkpoint(run_dir, vae, optimizer, step, args)
            Image.fromarray(reconstruction_grid(vae.eval(), preview)).save(run_dir / "reconstructions.png")
            vae.train()
            print(f"step {step}: loss {loss.item():.4f} {terms}", flush=True)


@torch.no_grad()
def export_vae(vae, out_dir: Path, *, seed: int, scaling_factor: float | None = None) -> float:
    """Save ``vae`` in diffusers layout, fp16; ``scaling_factor`` from its latents unless given."""
    import copy

    vae = copy.deepcopy(vae).eval()
    if scaling_factor is None:
        latents = torch.cat([vae.encode(training_batch(seed + 2, i, 128)).latent_dist.mode() for i in range(4)])
        scaling_factor = round(float(1.0 / latents.flatten().std()), 5)
    vae.register_to_config(scaling_factor=scaling_factor)
    vae.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    return scaling_factor


def export(args) -> None:
    """The trained VAE with the scaling factor fixed when its encoder froze."""
    import json as json_module

    run_dir = Path(args.run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    vae = build_vae()
    vae.load_state_dict(state["vae"])
    frozen = run_dir / "at-freeze" / "config.json"
    scaling = json_module.loads(frozen.read_text())["scaling_factor"] if frozen.exists() else None
    scaling = export_vae(vae, Path(args.export), seed=args.seed, scaling_factor=scaling)
    print(f"exported to {args.export} (scaling_factor {scaling}, trained {state['step']} steps)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--export", help="write the trained VAE in diffusers layout here and stop")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--final-learning-rate", type=float, default=DEFAULTS["final_learning_rate"])
    parser.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    parser.add_argument("--kl-weight", type=float, default=DEFAULTS["kl_weight"])
    parser.add_argument("--highpass-weight", type=float, default=DEFAULTS["highpass_weight"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--freeze-encoder-at", type=int, default=DEFAULTS["freeze_encoder_at"],
                        help="train only the decoder from this step on")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop at this step, keeping the schedule of --steps (the shipped VAE: 1500 of 2000)")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
