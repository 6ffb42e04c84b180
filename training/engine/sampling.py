"""Batched, seeded sampling from a local diffusers pipeline, with a record of every setting.

The settings are a ``SampleConfig`` (training/engine/config.py), whose defaults are the paper's
evaluation setting. Each image has its own seed and its own ``torch.Generator``, so an image's
noise depends only on its prompt and seed, never on which batch it landed in. The same settings
give the same bytes; another batch size gives the same image up to rounding: some CPUs sum a
batched matrix product in another order, and a pixel may move by one level.

Flow-matching pipelines (SD3) sample with their own flow-matching Euler scheduler: DDIM
integrates the DDPM noise schedule, which a flow model was not trained on, so ``scheduler =
"ddim"`` means "the pipeline's own scheduler" for them and the record names the scheduler
actually used.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from training.engine.config import SampleConfig
from training.engine.pipeline_index import read_pipeline_index

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _atomic_write_bytes(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sample(
    model_dir: str | Path,
    prompts: list[str],
    seeds: list[int],
    out_dir: str | Path,
    config: SampleConfig = SampleConfig(),
) -> dict:
    """Generate one image per (prompt, seed) pair into ``out_dir``; returns the JSON record.

    ``prompts`` and ``seeds`` pair up one to one. Images are ``00000.png``, ``00001.png``… in
    input order, and ``samples.json`` records the model, every setting and each image's
    prompt and seed.
    """
    import diffusers
    from diffusers import DDIMScheduler, DiffusionPipeline

    if len(prompts) != len(seeds):
        raise ValueError(f"seeds: got {len(seeds)} seeds for {len(prompts)} prompts (one seed per prompt)")
    if not prompts:
        raise ValueError("prompts: nothing to sample")
    index = read_pipeline_index(model_dir)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")

    pipeline = DiffusionPipeline.from_pretrained(index.path, dtype=_DTYPES[config.dtype], local_files_only=True)
    if config.scheduler == "ddim" and index.family != "flow":
        pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)

    extra: dict = {}
    if index.family in ("dit", "flow") and config.max_sequence_length is not None:
        extra["max_sequence_length"] = config.max_sequence_length
    if index.family == "dit":
        extra["use_resolution_binning"] = False  # sample at exactly the requested size
        extra["clean_caption"] = False

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images_record = []
    batch_size = config.batch_size
    for start in range(0, len(prompts), batch_size):
        batch_prompts = prompts[start:start + batch_size]
        batch_seeds = seeds[start:start + batch_size]
        # Generators on the CPU: the same seed gives the same initial noise on any device.
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in batch_seeds]
        if config.negative_prompt is not None:
            extra["negative_prompt"] = [config.negative_prompt] * len(batch_prompts)
        images = pipeline(
            batch_prompts, num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
            generator=generators, height=config.height, width=config.width, **extra,
        ).images
        for offset, (image, prompt, seed) in enumerate(zip(images, batch_prompts, batch_seeds)):
            name = f"{start + offset:05d}.png"
            _atomic_write_bytes(out_dir / name, lambda tmp, image=image: image.save(tmp, format="PNG"))
            images_record.append({"file": name, "prompt": prompt, "seed": int(seed)})

    first = _image_size(out_dir / images_record[0]["file"])
    record = {
        "model_dir": str(index.path),
        "pipeline_class": index.pipeline_class,
        "family": index.family,
        "prediction_type": index.prediction_type,
        "scheduler": type(pipeline.scheduler).__name__,
        "scheduler_requested": config.scheduler,
        "scheduler_config": dict(pipeline.scheduler.config),
        "steps": config.steps,
        "guidance_scale": config.guidance_scale,
        "negative_prompt": config.negative_prompt,
        "height": first[1],
        "width": first[0],
        "batch_size": batch_size,
        "max_sequence_length": config.max_sequence_length,
        "dtype": config.dtype,
        "device": str(device),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "images": images_record,
    }
    text = json.dumps(record, indent=2, default=str)
    _atomic_write_bytes(out_dir / "samples.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return record


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size
