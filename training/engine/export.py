"""Export a trained denoiser as a diffusers pipeline directory, and a LoRA adapter on its own.

The exported pipeline is the base pipeline's folder with the denoiser's folder replaced: the
untouched components (VAE, text encoders, tokenizers, scheduler) are hard-linked where the
filesystem allows, copied otherwise, so the export never re-serialises multi-gigabyte text
encoders. Every export is written into a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from training.engine.pipeline_index import read_pipeline_index

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a temporary folder next to ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def has_lora(denoiser: torch.nn.Module) -> bool:
    return bool(getattr(denoiser, "_hf_peft_config_loaded", False))


def merged_copy(denoiser: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy of ``denoiser`` with its LoRA adapters fused into the base weights and removed."""
    merged = copy.deepcopy(denoiser).to("cpu")
    if has_lora(merged):
        merged.fuse_lora()
        merged.unload_lora()
    return merged


def export_pipeline(base_model: str | Path, denoiser: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write ``base_model`` with its denoiser replaced by ``denoiser`` (LoRA merged) to ``out_dir``."""
    index = read_pipeline_index(base_model)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        os.rmdir(tmp)
        shutil.copytree(index.path, tmp, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(index.denoiser))
        merged_copy(denoiser).save_pretrained(tmp / index.denoiser, safe_serialization=True)
    return out_dir


def export_lora_adapter(denoiser: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write the LoRA adapter alone (``pytorch_lora_weights.safetensors`` with its config metadata).

    Load it into the base pipeline's denoiser with ``denoiser.load_lora_adapter(out_dir, prefix=None,
    weight_name="pytorch_lora_weights.safetensors")``.
    """
    if not has_lora(denoiser):
        raise ValueError("the denoiser has no LoRA adapter to export")
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        denoiser.save_lora_adapter(tmp, upcast_before_saving=True, weight_name=LORA_WEIGHT_NAME)
    return out_dir
