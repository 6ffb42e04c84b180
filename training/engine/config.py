"""The engine's settings: ``TrainConfig`` for training, ``SampleConfig`` for sampling.

Every setting is a typed field with its help text and allowed values (``Literal`` choices and
range constraints); pydantic validates them, and the CLI help and the reference table in
``docs/training.md`` are generated from the same fields (``training/engine/settings_docs.py``).
This module imports no torch, so the web process can validate a run's configuration.

    cfg = load_config("training/configs/sd15_simpo_pixel.toml", ["pixel_crop=0.5"])
"""

from __future__ import annotations

import contextvars
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

Objective = Literal["sft", "dpo", "simpo", "none"]
OBJECTIVES: tuple[str, ...] = typing.get_args(Objective)
PREFERENCE_OBJECTIVES = ("dpo", "simpo")
Dtype = Literal["fp32", "fp16", "bf16"]


class ConfigError(ValueError):
    """An invalid configuration value. ``field`` names the offending key."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonEmptyText = Annotated[str, AfterValidator(_not_blank)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Pixels = Annotated[int, Field(gt=0, multiple_of=8)]
SEQUENCE_LENGTH_HELP = "Text encoder token length for DiT/flow families (null: the pipeline's default)."


class Settings(BaseModel):
    """Strictly typed settings: ``"512"`` is not an int and ``1`` is not a bool; an int is a float.

    Any invalid value raises ConfigError naming the field.
    """

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True)

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc, _SOURCE.get() or type(self).__name__) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise _config_error(exc, type(self).__name__) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "config"):
        if not isinstance(data, dict):
            raise ConfigError(source, "expected a table/object of settings")
        token = _SOURCE.set(source)  # for __init__'s errors
        try:
            return cls(**data)
        finally:
            _SOURCE.reset(token)


# Where the settings being validated came from (a file, EVALUATION_SAMPLER…), for error messages.
_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("settings_source", default=None)


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    """The first problem as a ConfigError: unknown keys first, then missing ones, then bad values."""
    rank = {"extra_forbidden": 0, "missing": 1}
    error = min(exc.errors(), key=lambda e: rank.get(e["type"], 2))
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # a rule between fields names its own field
        return cause
    name = str(error["loc"][0]) if error["loc"] else source
    if error["type"] == "extra_forbidden":
        return ConfigError(name, f"unknown setting in {source}")
    if error["type"] == "missing":
        return ConfigError(name, f"required setting missing from {source}")
    message = str(cause) if cause is not None else _message(error)
    return ConfigError(name, f"{message}, got {error['input']!r}")


def _message(error: dict) -> str:
    return re.sub(r"^Input should be", "must be", error["msg"])


class TrainConfig(Settings):
    # Inputs and outputs.
    pretrained_model: NonEmptyText = Field(description="Local diffusers pipeline folder to start from.")
    output_dir: NonEmptyText = Field(description="Run folder: checkpoints, metrics, the exported model.")
    train_data: NonEmptyText = Field(
        description="An image folder with metadata.jsonl (SFT), or a JSONL manifest / Pick-a-Pic parquet of "
                    "winner/loser pairs (preference runs).")
    # Data.
    resolution: Pixels = Field(512, description="Training image side in pixels.")
    center_crop: bool = Field(True, description="Crop images at the centre (false: a random crop).")
    random_flip: bool = Field(False, description="Flip images horizontally at random.")
    skip_bad_images: bool = Field(False, description="Skip and count missing or corrupt images instead of stopping.")
    cache_latents: bool = Field(False, description="Encode each image once and train on the cached latents.")
    caption_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Probability of replacing a caption by \"\" (classifier-free guidance).")
    # Objectives: L = L_latent + pixel_weight · L_pixel, each term sft | dpo | simpo | none.
    latent_objective: Objective = Field("sft", description="Objective of the latent term.")
    pixel_objective: Objective = Field("none", description="Objective of the pixel term (decoded by the VAE).")
    latent_beta: PositiveFloat = Field(5000.0, description="β of a DPO/SimPO latent term.")
    pixel_beta: PositiveFloat = Field(5000.0, description="β of a DPO/SimPO pixel term.")
    pixel_weight: float = Field(8.0, ge=0.0, description="Weight of the pixel term: λ (SFT) or μ (preference).")
    pixel_decoding: Literal["eps", "x0"] = Field(
        "eps", description="What the pixel term decodes: `eps` D(z_t) vs D(ẑ_t) (eq. 2), `x0` the clean latents (eq. 8).")
    # The latent term's weighting, and flow models' (SD3's) own training objective.
    snr_gamma: PositiveFloat | None = Field(
        None, description="Min-SNR-γ weighting of the latent term of ε and v models: each sample's error times "
                          "min(SNR, γ)/SNR, through diffusers' compute_snr (5 is usual; null: unweighted; not for flow models).")
    flow_timestep_sampling: Literal["logit_normal", "mode", "uniform"] = Field(
        "logit_normal", description="Flow models (SD3): how training draws σ: `logit_normal` (SD3's recipe), `mode` "
                                    "(with mode_scale) or `uniform` over the shifted schedule.")
    logit_mean: float = Field(0.0, description="Mean of the logit-normal σ draw (flow models).")
    logit_std: PositiveFloat = Field(1.0, description="Standard deviation of the logit-normal σ draw (flow models).")
    mode_scale: float = Field(1.29, description="Scale of the `mode` σ draw (flow models).")
    flow_latent_loss: Literal["velocity", "eps"] = Field(
        "velocity", description="Flow models' latent term: `velocity` the flow-matching loss w(σ)‖v − v̂‖² (SD3's), "
                                "`eps` eq. 1 in ε-space (which weights each σ by (1−σ)² relative to it).")
    flow_loss_weighting: Literal["none", "sigma_sqrt", "cosmap"] = Field(
        "none", description="w(σ) of the velocity loss: `none` (SD3's rectified flow), `sigma_sqrt` σ⁻², "
                            "`cosmap` 2/(π(1−2σ+2σ²)).")
    # Cost of the pixel term.
    pixel_crop: float = Field(
        1.0, gt=0.0, le=1.0, description="Side of the random latent crop the pixel term sees, as a fraction.")
    pixel_decoder: str | None = Field(
        None, description="An AutoencoderTiny folder to decode the pixel term with (null: the pipeline's VAE).")
    vae: str | None = Field(
        None, description="An autoencoder folder that replaces the pipeline's VAE while training, for encoding and "
                          "decoding (for example the SDXL fp16-fix VAE; null: the pipeline's own). The export keeps the pipeline's.")
    vae_gradient_checkpointing: bool = Field(
        False, description="Recompute the decoder's activations in the backward pass (less memory, more time).")
    # LoRA.
    use_lora: bool = Field(False, description="Train LoRA adapters instead of the whole denoiser.")
    lora_rank: PositiveInt = Field(4, description="LoRA rank.")
    lora_alpha: PositiveInt = Field(4, description="LoRA alpha (scale = alpha / rank).")
    lora_target_modules: Annotated[list[str], Field(min_length=1)] | None = Field(
        None, description="Module names that get adapters (null: the family's attention projections).")
    # Optimisation.
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="Optimizer.")
    learning_rate: PositiveFloat = Field(1e-5, description="Peak learning rate.")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam β1.")
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam β2.")
    adam_epsilon: PositiveFloat = Field(1e-8, description="Adam ε.")
    weight_decay: float = Field(5e-6, ge=0.0, description="Weight decay.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after the warm-up.")
    lr_warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    train_batch_size: PositiveInt = Field(1, description="Images or pairs per process per micro-step.")
    gradient_accumulation_steps: PositiveInt = Field(1, description="Micro-steps per optimizer step.")
    max_grad_norm: PositiveFloat | None = Field(1.0, description="Gradient clipping norm (null: no clipping).")
    max_train_steps: PositiveInt = Field(1000, description="Optimizer steps to train for.")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no", description="Compute precision of the denoiser and text encoders.")
    vae_fp32: bool = Field(True, description="Keep the VAE (and pixel decoder) in fp32 under mixed precision.")
    gradient_checkpointing: bool = Field(False, description="Recompute the denoiser's activations in the backward pass.")
    use_ema: bool = Field(False, description="Keep an exponential moving average of the weights and export it.")
    ema_decay: float = Field(0.9999, gt=0.0, lt=1.0, description="EMA decay per step.")
    seed: int = Field(0, description="Seed of every random draw (data order, noise, timesteps, crops).")
    # Checkpoints, logging, export.
    checkpointing_steps: PositiveInt = Field(500, description="Save a checkpoint every this many steps.")
    checkpoints_total_limit: PositiveInt | None = Field(
        3, description="Keep this many latest checkpoints (null: keep every checkpoint).")
    resume_from: NonEmptyText | None = Field(
        None, description="A checkpoint folder or `latest` to continue a run (null: a fresh run).")
    log_every: PositiveInt = Field(
        1, description="Write metrics (and check the loss is finite) every this many steps.")
    report_to: Literal["jsonl", "tensorboard"] = Field(
        "jsonl", description="Metrics sink besides metrics.jsonl: `tensorboard` also writes output_dir/tensorboard.")
    export_lora_adapter: bool = Field(False, description="Also export the LoRA adapter alone (needs use_lora).")
    dataloader_num_workers: int = Field(
        0, ge=0, description="Data loading worker processes (0: exactly reproducible augmentation).")
    max_sequence_length: PositiveInt | None = Field(
        None, description=SEQUENCE_LENGTH_HELP)

    @model_validator(mode="after")
    def _rules_between_fields(self) -> "TrainConfig":
        if self.latent_objective == "none" and self.pixel_objective == "none":
            raise ConfigError("latent_objective", "both latent_objective and pixel_objective are 'none'")
        if self.pixel_objective != "none" and self.pixel_weight == 0:
            raise ConfigError("pixel_weight", "is 0 but pixel_objective is set; use pixel_objective = 'none'")
        if self.flow_loss_weighting != "none" and self.flow_latent_loss != "velocity":
            raise ConfigError("flow_loss_weighting", "weights the velocity loss; set flow_latent_loss = 'velocity'")
        if self.export_lora_adapter and not self.use_lora:
            raise ConfigError("export_lora_adapter", "needs use_lora = true")
        return self

    @property
    def is_preference(self) -> bool:
        """A preference run trains on winner/loser pairs: some term is DPO or SimPO."""
        return self.latent_objective in PREFERENCE_OBJECTIVES or self.pixel_objective in PREFERENCE_OBJECTIVES

    @property
    def needs_reference(self) -> bool:
        """Some term is DPO, which compares against a frozen reference model."""
        return "dpo" in (self.latent_objective, self.pixel_objective)

    @property
    def uses_pixel_term(self) -> bool:
        return self.pixel_objective != "none"


def _accelerate_config_path(value: str) -> str:
    if not Path(value).is_absolute() or Path(value).suffix not in (".yaml", ".yml", ".json"):
        raise ValueError("must be the absolute path of an accelerate config file (.yaml, .yml or .json)")
    return value


class LaunchConfig(Settings):
    """How a training run is launched, beside its TrainConfig in the run's config (not engine settings)."""

    gpus: PositiveInt = Field(
        1, description="Processes (one per GPU) that train the run: 1 trains in the worker's process; more run "
                       "`accelerate launch --num_processes N` (DDP; on a machine without GPUs, CPU processes over gloo).")
    accelerate_config: Annotated[str, AfterValidator(_accelerate_config_path)] | None = Field(
        None, description="An accelerate config file for the launch, e.g. for FSDP (needs gpus > 1; every gpu "
                          "worker must read it at this path).")

    @model_validator(mode="after")
    def _rules_between_fields(self) -> "LaunchConfig":
        if self.accelerate_config is not None and self.gpus == 1:
            raise ConfigError("accelerate_config", "needs gpus > 1 (a one-GPU run trains in the worker's process)")
        return self


def split_launch_settings(data: dict[str, Any], *, source: str = "config") -> tuple[LaunchConfig, dict[str, Any]]:
    """A run's config dict as its LaunchConfig and the rest (the TrainConfig settings)."""
    launch = {key: value for key, value in data.items() if key in LaunchConfig.model_fields}
    rest = {key: value for key, value in data.items() if key not in LaunchConfig.model_fields}
    return LaunchConfig.from_dict(launch, source=source), rest


class SampleConfig(Settings):
    """Sampler settings; the defaults are the paper's evaluation setting (DDIM, 50 steps, CFG 7.5)."""

    model_config = ConfigDict(frozen=True)

    scheduler: Literal["ddim", "default"] = Field(
        "ddim", description="`ddim`, or `default` for the pipeline's own scheduler (flow pipelines always keep theirs).")
    steps: PositiveInt = Field(50, description="Denoising steps.")
    guidance_scale: float = Field(7.5, ge=0.0, description="Classifier-free guidance scale (≤ 1: no guidance).")
    batch_size: PositiveInt = Field(4, description="Images per forward pass (the images do not depend on it).")
    height: Pixels | None = Field(None, description="Image height in pixels (null: the model's default).")
    width: Pixels | None = Field(None, description="Image width in pixels (null: the model's default).")
    negative_prompt: str | None = Field(None, description="Negative prompt for every image.")
    max_sequence_length: PositiveInt | None = Field(
        None, description=SEQUENCE_LENGTH_HELP)
    device: str | None = Field(None, description="Torch device (null: cuda when available, else cpu).")
    dtype: Dtype = Field("fp32", description="Weights' dtype while sampling.")


# --------------------------------------------------------------------------------------
# Files and --set overrides


_NULLS = ("none", "null", "")


def _accepts(annotation: Any, kind: Any) -> bool:
    """Whether ``kind`` (None or list) is one of the types an annotation allows."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_accepts(arg, kind) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is Annotated:
        return _accepts(typing.get_args(annotation)[0], kind)
    return annotation is kind or typing.get_origin(annotation) is kind


def parse_value(model: type[Settings], name: str, text: str) -> Any:
    """Parse a ``--set`` value by the type of the field ``name`` (constraints are checked later)."""
    if name not in model.model_fields:
        raise ConfigError(name, "unknown setting")
    annotation = model.model_fields[name].annotation
    stripped = text.strip()
    if _accepts(annotation, type(None)) and stripped.lower() in _NULLS:
        return None
    value: Any = stripped
    if _accepts(annotation, list):
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                raise ConfigError(name, f"cannot parse {text!r} as a JSON list") from None
        else:
            value = [part.strip() for part in stripped.split(",") if part.strip()]
    try:
        return TypeAdapter(annotation).validate_python(value, strict=False)
    except ValidationError as exc:
        raise ConfigError(name, f"cannot parse {text!r}: {_message(exc.errors()[0])}") from None


def apply_overrides(model: type[Settings] | tuple[type[Settings], ...], data: dict[str, Any],
                    overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (typed by the field of the model, of the models, that has it)."""
    models = model if isinstance(model, tuple) else (model,)
    merged = dict(data)
    for item in overrides:
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(item.strip(), "override must look like key=value")
        key, value = (part.strip() for part in item.split("=", 1))
        owner = next((candidate for candidate in models if key in candidate.model_fields), models[0])
        merged[key] = parse_value(owner, key, value)
    return merged


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML or JSON settings file; errors name the file (and line for syntax errors)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config file: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(str(path), f"invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    elif path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"invalid TOML: {exc}") from exc
    else:
        raise ConfigError(str(path), "config file must end in .toml or .json")
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a table/object of settings")
    return data


class ConfigSettings(NamedTuple):
    values: dict[str, Any]
    left_out: list[str]  # keys of the file that ``leave_out`` dropped


def read_settings(path: str | Path | None = None, overrides: list[str] | None = None, *,
                  leave_out: tuple[str, ...] = (), values: dict[str, Any] | None = None) -> ConfigSettings:
    """A config file's settings, then ``values`` (settings already typed, e.g. a JSON object), then ``key=value``
    overrides, as a dict (not yet validated as a whole).

    ``leave_out`` drops keys that the caller decides itself (a training run sets its own model,
    data and output paths) from the file; ``values`` and overrides are kept, so naming one of them is refused
    where the run is validated. Overrides of a training run's ``LaunchConfig`` settings are typed
    too; TrainConfig itself refuses them.
    """
    data = read_config_file(path) if path is not None else {}
    left_out = sorted(key for key in leave_out if key in data)
    data = {key: value for key, value in data.items() if key not in left_out}
    data.update(values or {})
    return ConfigSettings(apply_overrides((TrainConfig, LaunchConfig), data, overrides or []), left_out)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Build a TrainConfig from an optional file plus ``key=value`` overrides."""
    values, _ = read_settings(path, overrides)
    return TrainConfig.from_dict(values, source=str(path) if path is not None else "overrides")
