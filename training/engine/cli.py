"""Command line: ``python -m training.engine {train,sample,tiny-pipeline} ...``.

    python -m training.engine train --config training/configs/sd15_simpo_pixel.toml --set pixel_crop=0.5
    accelerate launch --multi_gpu --num_processes 8 -m training.engine train --config cfg.toml
    python -m training.engine sample --model runs/a/model --prompts prompts.txt --seed-start 0 --out samples/
    python -m training.engine tiny-pipeline --family sdxl --out /tmp/tiny-sdxl

Errors in the configuration, the data or the model folder print one line naming the field,
file or line, and exit with status 2; a failed run (for example a NaN loss) exits with 1; a run
stopped by a STOP file in its output_dir (``training.engine.progress``) exits with 3 after saving
a checkpoint. (``accelerate launch`` reports any process's non-zero status as 1; the run's
progress.json then says phase "cancelled".)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

CANCELLED_EXIT = 3  # the run stopped at a STOP request; its checkpoint is kept

def _read_prompts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read prompts file: {exc.strerror}") from exc
    prompts = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from exc
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(f"{path}:{lineno}: field 'prompt' must be a string")
            prompts.append(row["prompt"])
        else:
            prompts.append(line.strip())
    return prompts


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers, got {text!r}") from None


def _add_setting_options(parser: argparse.ArgumentParser, model) -> None:
    """One ``--name`` option per field of ``model``, with its help, allowed values and default."""
    from training.engine.settings_docs import setting_docs

    group = parser.add_argument_group(f"{model.__name__} settings")
    for doc in setting_docs(model):
        group.add_argument(f"--{doc.name.replace('_', '-')}", dest=f"setting_{doc.name}", metavar="VALUE",
                           help=f"{doc.help} Allowed: {doc.allowed}; default {doc.default}."
                           .replace("`", "").replace("%", "%%"))


def _given_settings(args, model) -> list[str]:
    """The ``key=value`` overrides of the setting options that were given."""
    return [f"{name}={getattr(args, f'setting_{name}')}" for name in model.model_fields
            if getattr(args, f"setting_{name}") is not None]


def build_parser() -> argparse.ArgumentParser:
    from training.engine.config import SampleConfig, TrainConfig
    from training.engine.settings_docs import settings_help
    from training.engine.pipeline_index import FAMILIES

    parser = argparse.ArgumentParser(prog="python -m training.engine", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train from a TOML/JSON config plus overrides",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings (in the --config file, or --set KEY=VALUE; null/none clears an optional one):\n"
               + settings_help(TrainConfig).replace("%", "%%"),
    )
    train.add_argument("--config", type=Path, help="a .toml or .json file of TrainConfig settings")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting (repeatable), typed by the setting; the settings are listed below")
    train.add_argument("--exit-with-parent", action="store_true",
                       help="stop when the process that started this one dies (a gpu worker's supervisor sets it, "
                            "so that a killed worker leaves no training behind)")

    sample = commands.add_parser("sample", help="sample images from a diffusers pipeline folder")
    sample.add_argument("--model", required=True, type=Path)
    sample.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    sample.add_argument("--prompts", type=Path, help="a .txt file (one prompt a line) or .jsonl with 'prompt'")
    sample.add_argument("--images-per-prompt", type=int, default=1)
    seeds = sample.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", help="comma-separated seeds, one per image")
    seeds.add_argument("--seed-start", type=int, default=0, help="image i gets seed start + i (default 0)")
    sample.add_argument("--out", required=True, type=Path)
    _add_setting_options(sample, SampleConfig)

    tiny = commands.add_parser("tiny-pipeline", help="build a tiny random-init pipeline offline")
    tiny.add_argument("--family", required=True, choices=FAMILIES)
    tiny.add_argument("--out", required=True, type=Path)
    tiny.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="epsilon")
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def _train(args) -> int:
    from training.engine import progress
    from training.engine.config import load_config
    from training.engine.loop import train

    if args.exit_with_parent:
        progress.die_with_parent_hook()()
    # Progress lines on stderr, once: from the main process of a launch (accelerate sets RANK).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(progress.LOG_FORMAT))
    handler.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    engine_logger = logging.getLogger("training.engine")
    engine_logger.addHandler(handler)
    engine_logger.setLevel(logging.INFO)
    try:
        result = train(load_config(args.config, args.overrides))
    finally:
        engine_logger.removeHandler(handler)
    if result.model_dir is not None:  # the main process reports
        print(json.dumps({"global_step": result.global_step, "model_dir": str(result.model_dir),
                          "adapter_dir": str(result.adapter_dir) if result.adapter_dir else None,
                          "metrics_file": str(result.metrics_file), "last_metrics": result.last_metrics}))
    return 0


def _sample(args) -> int:
    from training.engine.config import SampleConfig, apply_overrides
    from training.engine.sampling import sample

    prompts = list(args.prompt)
    if args.prompts is not None:
        prompts += _read_prompts(args.prompts)
    if not prompts:
        raise ValueError("--prompt/--prompts: no prompts given")
    if args.images_per_prompt <= 0:
        raise ValueError("--images-per-prompt must be positive")
    prompts = [p for p in prompts for _ in range(args.images_per_prompt)]
    seeds = _parse_seeds(args.seeds) if args.seeds else [args.seed_start + i for i in range(len(prompts))]
    config = SampleConfig.from_dict(apply_overrides(SampleConfig, {}, _given_settings(args, SampleConfig)),
                                    source="sample options")
    record = sample(args.model, prompts, seeds, args.out, config)
    print(json.dumps({"out": str(args.out), "images": len(record["images"]), "scheduler": record["scheduler"]}))
    return 0


def _tiny(args) -> int:
    from training.engine.tiny import build_tiny_pipeline

    out = build_tiny_pipeline(args.family, args.out, prediction_type=args.prediction_type, seed=args.seed)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from training.engine.config import ConfigError
    from training.engine.pipeline_index import PipelineIndexError

    handlers = {"train": _train, "sample": _sample, "tiny-pipeline": _tiny}
    try:
        return handlers[args.command](args)
    except (ConfigError, PipelineIndexError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from training.engine.data import DatasetError
        from training.engine.loop import TrainingError

        if isinstance(exc, DatasetError) or (isinstance(exc, ValueError) and args.command == "sample"):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        from training.engine.loop import TrainingCancelled

        if isinstance(exc, TrainingError):
            print(f"{'stopped' if isinstance(exc, TrainingCancelled) else 'error'}: {exc}", file=sys.stderr)
            return CANCELLED_EXIT if isinstance(exc, TrainingCancelled) else 1
        raise
