"""Recipe: train a toy pipeline's denoiser with the project's own engine, on CPU.

    python -m toyworld.recipes.denoiser --layout sd --run-dir var/toyworld/sd --vae toyworld/weights/vae
    python -m toyworld.recipes.denoiser --layout sd --run-dir var/toyworld/sd --export toyworld/weights/toy-sd

Three steps, each skipped when its output exists, so an interrupted run resumes:
1. render the training set: ``--images`` distinct training-split captions (seeded), as an
   image folder with ``metadata.jsonl``, the engine's SFT format;
2. build the untrained pipeline (``toyworld.pipelines``) around the trained VAE;
3. train with ``training.engine``: latent-only SFT (eq. 1), which from a random denoiser is
   ordinary diffusion training, with the settings in ``toyworld/recipes/<layout>.toml``. The
   engine checkpoints every 500 steps and ``resume_from = "latest"`` picks the run up again.

``--export`` copies the engine's exported pipeline (EMA weights) in fp16 to the weights folder.
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
    from toyworld.pipelines import build_untrained
    from training.engine.config import load_config
    from training.engine.loop import train as engine_train

    run_dir = Path(args.run_dir)
    data = render_training_set(run_dir / "data", images=args.images, seed=args.seed)
    base = run_dir / "untrained"
    if not (base / "model_index.json").exists():
        build_untrained(args.layout, args.vae, base, seed=args.seed)
    overrides = [f"pretrained_model={base}", f"output_dir={run_dir / 'engine'}", f"train_data={data}",
                 f"seed={args.seed}", "resume_from=latest", *args.overrides]
    if not (run_dir / "engine").exists():
        overrides.remove("resume_from=latest")
    config = load_config(RECIPES / f"{args.layout}.toml", overrides)
    result = engine_train(config)
    print(f"trained {result.global_step} steps; pipeline in {result.model_dir}")


def export(args) -> None:
    from diffusers import DiffusionPipeline

    from toyworld.pipelines import save_pipeline

    model_dir = Path(args.run_dir) / "engine" / "model"
    pipeline = DiffusionPipeline.from_pretrained(model_dir)
    save_pipeline(pipeline, args.export, fp16=True)
    print(f"exported {model_dir} to {args.export} (fp16)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("sd", "pixart"), required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--vae", default="toyworld/weights/vae", help="the trained toy VAE (diffusers folder)")
    parser.add_argument("--images", type=int, default=20000, help="distinct training captions to render")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an engine setting of the recipe")
    parser.add_argument("--export", help="write the trained pipeline here in fp16 and stop")
    args = parser.parse_args(argv)
    if args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
