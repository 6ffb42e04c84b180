"""Recipe: train a toy pipeline's denoiser with the project's own engine, on CPU.

    python -m toyworld.recipes.denoiser --layout sd --run-dir var/toyworld/sd --vae var/toyworld/vae/at-freeze
    python -m toyworld.recipes.denoiser --layout sd --run-dir var/toyworld/sd --vae var/toyworld/vae/final \
        --export toyworld/weights/toy-sd

Three steps, each skipped when its output exists, so an interrupted run resumes:
1. render the training set: ``--images`` distinct training-split captions (seeded), as an
   image folder with ``metadata.jsonl``, the engine's SFT format;
2. build the untrained pipeline (``toyworld.pipelines``) around the trained VAE;
3. train with ``training.engine``: latent-only SFT (eq. 1), which from a random denoiser is
   ordinary diffusion training, with the settings in ``toyworld/recipes/<layout>.toml``. The
   engine checkpoints every 500 steps and ``resume_from = "latest"`` picks the run up again.

The denoiser trains on the latents of the VAE as it was when its encoder froze
(``toyworld.recipes.vae``); ``--export`` copies the engine's exported pipeline (EMA weights) in
fp16 to the weights folder with the finished VAE in its place: the same encoder, so the same
latents, and the decoder trained to the end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from toyworld.scenes import render_png, sample_scene
from toyworld.splits import is_train_caption

RECIPES = Path(__file__).parent


def render_training_set(out_dir: Path, *, images: int, seed: int) -> Path:
    """``images`` distinct training captions rendered to ``out_dir`` (written atomically)."""
    if (out_dir / "metadata.jsonl").exists():
        return out_dir
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < images:
        scene = sample_scene(rng)
        caption = scene.caption
        if caption in seen or not is_train_caption(caption):
            continue
        seen.add(caption)
        name = f"{len(rows):06d}.png"
        render_png(scene, tmp / name)
        rows.append({"file_name": name, "text": caption})
    (tmp / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tmp.rename(out_dir)
    return out_dir


def train(args) -> None:
    from toyworld.pipelines import build_untrained, with_order_aware_text
    from training.engine.config import load_config
    from training.engine.loop import train as engine_train

    import torch

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    data = render_training_set(Path(args.data_dir or run_dir / "data"), images=args.images, seed=args.seed)
    if args.render_only:
        return
    if args.start_from and args.order_aware_text:  # the earlier stage's export with a T5 that keeps word order
        base = run_dir / "base"
        if not (base / "model_index.json").exists():
            with_order_aware_text(args.start_from, base)
    elif args.start_from:  # a later stage starts from an earlier stage's export
        base = Path(args.start_from)
    else:
        base = run_dir / "untrained"
        if not (base / "model_index.json").exists():
            build_untrained(args.layout, args.vae, base, seed=args.seed)
    resume = ["resume_from=latest"] if (run_dir / "engine").exists() else []  # an interrupted run goes on
    overrides = [f"pretrained_model={base}", f"output_dir={run_dir / 'engine'}", f"train_data={data}",
                 f"seed={args.seed}", *resume, *args.overrides]
    config = load_config(RECIPES / f"{args.recipe or args.layout}.toml", overrides)
    result = engine_train(config)
    print(f"trained {result.global_step} steps; pipeline in {result.model_dir}")


def export(args) -> None:
    import torch
    from diffusers import AutoencoderKL, DiffusionPipeline

    from toyworld.pipelines import save_pipeline

    model_dir = Path(args.run_dir) / "engine" / "model"
    pipeline = DiffusionPipeline.from_pretrained(model_dir)
    final_vae = AutoencoderKL.from_pretrained(args.vae, torch_dtype=torch.float32)
    if final_vae.config.scaling_factor != pipeline.vae.config.scaling_factor:
        raise SystemExit(f"{args.vae}: its scaling factor differs from the one the denoiser trained with")
    pipeline.register_modules(vae=final_vae)
    save_pipeline(pipeline, args.export, fp16=True)
    print(f"exported {model_dir} with the VAE of {args.vae} to {args.export} (fp16)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("sd", "pixart"), required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--vae",
                        help="the toy VAE (diffusers folder): as its encoder froze to train, finished to export")
    parser.add_argument("--images", type=int, default=20000, help="distinct training captions to render")
    parser.add_argument("--data-dir", help="where the rendered training set goes (default RUN_DIR/data; layouts may share one)")
    parser.add_argument("--recipe", help="engine settings file in toyworld/recipes (default: the layout's)")
    parser.add_argument("--start-from", help="a pipeline folder to train on from (a later stage)")
    parser.add_argument("--order-aware-text", action="store_true",
                        help="with --start-from (PixArt layout): first give its T5 encoder the order-aware position "
                             "bias (toyworld.pipelines.set_order_aware_positions)")
    parser.add_argument("--render-only", action="store_true", help="render the training set and stop")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (two runs side by side: 1 each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an engine setting of the recipe")
    parser.add_argument("--export", help="write the trained pipeline here in fp16 and stop")
    args = parser.parse_args(argv)
    if not args.render_only and not args.vae:
        parser.error("--vae is required")
    if args.order_aware_text and (args.layout != "pixart" or not args.start_from):
        parser.error("--order-aware-text changes the T5 encoder of a PixArt-layout pipeline given by --start-from")
    if args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
