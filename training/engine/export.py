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


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stored_dtype(folder: str | Path) -> torch.dtype:
    """The floating dtype of a model folder's safetensors weights (float32 when unknown)."""
    from safetensors import safe_open

    for weights in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                dtype = _SAFETENSORS_DTYPES.get(handle.get_slice(key).get_dtype())
                if dtype is not None:
                    return dtype
    return torch.float32


def merged_copy(denoiser: torch.nn.Module, base_dir: str | Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A CPU copy of ``denoiser`` in ``dtype``, with any LoRA adapter fused into the base weights.

    With LoRA the base weights are re-read from ``base_dir`` in float32 and the trained adapter
    fused into them there: training may have kept the frozen base in bf16, and fusing into that
    would round every base weight.
    """
    if not has_lora(denoiser):
        return copy.deepcopy(denoiser).to("cpu", dtype)
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    merged = type(denoiser).from_pretrained(base_dir, dtype=torch.float32)
    merged.add_adapter(copy.deepcopy(denoiser.peft_config["default"]))
    adapter_weights = {k: v.detach().to("cpu", torch.float32) for k, v in get_peft_model_state_dict(denoiser).items()}
    set_peft_model_state_dict(merged, adapter_weights)
    merged.fuse_lora()
    merged.unload_lora()
    return merged.to(dtype)


def export_pipeline(base_model: str | Path, denoiser: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write ``base_model`` with its denoiser replaced by ``denoiser`` (LoRA merged) to ``out_dir``."""
    index = read_pipeline_index(base_model)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        os.rmdir(tmp)
        shutil.copytree(index.path, tmp, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(index.denoiser))
        # Keep the base pipeline's storage dtype so every component loads in the same dtype.
        dtype = stored_dtype(index.path / index.denoiser)
        merged_copy(denoiser, index.path / index.denoiser, dtype).save_pretrained(tmp / index.denoiser, safe_serialization=True)
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
