"""Read a local diffusers pipeline directory's JSON metadata, without importing torch.

``model_index.json`` names the pipeline class and its components; the scheduler's
config names the prediction type. Together they decide which model family adapter
trains the pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Pipeline class -> family. The family decides the adapter (text encoding, prediction
# type, output channels) in the trainer.
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "unet",
    "StableDiffusionXLPipeline": "sdxl",
    "PixArtAlphaPipeline": "dit",
    "PixArtSigmaPipeline": "dit",
    "StableDiffusion3Pipeline": "flow",
}

DENOISER_COMPONENT = {"unet": "unet", "sdxl": "unet", "dit": "transformer", "flow": "transformer"}
FAMILIES = tuple(DENOISER_COMPONENT)

FLOW_SCHEDULERS = {"FlowMatchEulerDiscreteScheduler"}


class PipelineIndexError(ValueError):
    """The directory is not a diffusers pipeline this project can train."""


@dataclass(frozen=True)
class PipelineIndex:
    path: Path
    pipeline_class: str
    family: str
    prediction_type: str  # "epsilon", "v_prediction" or "flow"
    scheduler_class: str
    components: dict[str, list] = field(default_factory=dict)
    diffusers_version: str = ""

    @property
    def denoiser(self) -> str:
        return DENOISER_COMPONENT[self.family]


def _read_json(path: Path) -> dict:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise PipelineIndexError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise PipelineIndexError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise PipelineIndexError(f"{path}: JSON nested too deeply") from None
    except OSError as exc:
        raise PipelineIndexError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise PipelineIndexError(f"{path}: expected a JSON object")
    return data


def read_pipeline_index(path: str | Path) -> PipelineIndex:
    """Validate ``path`` as a trainable diffusers pipeline and describe it.

    Raises PipelineIndexError with a one-line message for a missing path, a directory
    without ``model_index.json``, an unsupported pipeline class, or a missing component.
    """
    try:
        root = Path(path).expanduser()
        exists, is_dir = root.exists(), root.is_dir()
        index_file = root / "model_index.json"
        has_index = is_dir and index_file.is_file()
    except (OSError, RuntimeError) as exc:  # a name too long, an unknown ~user
        raise PipelineIndexError(f"{str(path)[:60]}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not exists:
        raise PipelineIndexError(f"{root}: no such directory")
    if not is_dir:
        raise PipelineIndexError(f"{root}: not a directory")
    if not has_index:
        raise PipelineIndexError(f"{root}: not a diffusers pipeline directory (no model_index.json)")
    index = _read_json(index_file)
    pipeline_class = index.get("_class_name")
    if not isinstance(pipeline_class, str):
        raise PipelineIndexError(f"{index_file}: missing field '_class_name'")
    family = PIPELINE_FAMILIES.get(pipeline_class)
    if family is None:
        supported = ", ".join(sorted(PIPELINE_FAMILIES))
        raise PipelineIndexError(
            f"{index_file}: unsupported pipeline class '{pipeline_class}' (supported: {supported})"
        )
    components = {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list)}
    for required in (DENOISER_COMPONENT[family], "vae", "scheduler"):
        if required not in components or not components[required] or components[required][0] is None:
            raise PipelineIndexError(f"{index_file}: component '{required}' is missing")
        if len(components[required]) != 2 or not all(isinstance(part, str) for part in components[required]):
            raise PipelineIndexError(
                f"{index_file}: field '{required}': expected [library, class], got {components[required]!r:.80}"
            )
        if not (root / required).is_dir():
            raise PipelineIndexError(f"{root / required}: component folder is missing")

    scheduler_file = root / "scheduler" / "scheduler_config.json"
    if not scheduler_file.is_file():
        raise PipelineIndexError(f"{scheduler_file}: missing scheduler config")
    scheduler = _read_json(scheduler_file)
    scheduler_class = scheduler.get("_class_name", components["scheduler"][1])
    if not isinstance(scheduler_class, str) or not scheduler_class:
        raise PipelineIndexError(f"{scheduler_file}: field '_class_name': expected the scheduler class name")
    if family == "flow" or scheduler_class in FLOW_SCHEDULERS:
        prediction_type = "flow"
    else:
        prediction_type = scheduler.get("prediction_type", "epsilon")
        if prediction_type not in ("epsilon", "v_prediction"):
            raise PipelineIndexError(
                f"{scheduler_file}: unsupported field 'prediction_type' = {prediction_type!r} "
                "(supported: epsilon, v_prediction)"
            )
    return PipelineIndex(
        path=root,
        pipeline_class=pipeline_class,
        family=family,
        prediction_type=prediction_type,
        scheduler_class=scheduler_class,
        components=components,
        diffusers_version=str(index.get("_diffusers_version", "")),
    )
