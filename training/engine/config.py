"""The training configuration: one validated dataclass for the CLI, Celery and the web side.

This module imports only the standard library so the web process can validate a run's
configuration without importing torch.

    cfg = load_config("training/configs/sd15_simpo_pixel.toml", ["pixel_crop=0.5"])
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OBJECTIVES = ("sft", "dpo", "simpo", "none")
PREFERENCE_OBJECTIVES = ("dpo", "simpo")
PIXEL_DECODINGS = ("eps", "x0")
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULERS = ("constant", "linear", "cosine")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
REPORTERS = ("jsonl", "tensorboard")


class ConfigError(ValueError):
    """An invalid configuration value. ``field`` names the offending key."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass
class TrainConfig:
    # Inputs and outputs.
    pretrained_model: str
    output_dir: str
    train_data: str
    # Data.
    resolution: int = 512
    center_crop: bool = True
    random_flip: bool = False
    skip_bad_images: bool = False
    cache_latents: bool = False
    caption_dropout: float = 0.0
    # Objectives: L = L_latent + pixel_weight · L_pixel, each term sft | dpo | simpo | none.
    latent_objective: str = "sft"
    pixel_objective: str = "none"
    latent_beta: float = 5000.0
    pixel_beta: float = 5000.0
    pixel_weight: float = 8.0
    pixel_decoding: str = "eps"
    # Cost of the pixel term.
    pixel_crop: float = 1.0
    pixel_decoder: str | None = None
    vae_gradient_checkpointing: bool = False
    # LoRA.
    use_lora: bool = False
    lora_rank: int = 4
    lora_alpha: int = 4
    lora_target_modules: list[str] | None = None
    # Optimisation.
    optimizer: str = "adamw"
    learning_rate: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 5e-6
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    max_train_steps: int = 1000
    mixed_precision: str = "no"
    vae_fp32: bool = True
    gradient_checkpointing: bool = False
    use_ema: bool = False
    ema_decay: float = 0.9999
    seed: int = 0
    # Checkpoints, logging, export.
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    resume_from: str | None = None
    log_every: int = 1
    report_to: str = "jsonl"
    export_lora_adapter: bool = False
    dataloader_num_workers: int = 0
    max_sequence_length: int | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("pretrained_model", "output_dir", "train_data"):
            if not getattr(self, name).strip():
                raise ConfigError(name, "must not be empty")
        _choice(self, "latent_objective", OBJECTIVES)
        _choice(self, "pixel_objective", OBJECTIVES)
        _choice(self, "pixel_decoding", PIXEL_DECODINGS)
        _choice(self, "optimizer", OPTIMIZERS)
        _choice(self, "lr_scheduler", LR_SCHEDULERS)
        _choice(self, "mixed_precision", MIXED_PRECISIONS)
        _choice(self, "report_to", REPORTERS)
        if self.latent_objective == "none" and self.pixel_objective == "none":
            raise ConfigError("latent_objective", "both latent_objective and pixel_objective are 'none'")
        if self.resolution <= 0 or self.resolution % 8:
            raise ConfigError("resolution", f"must be a positive multiple of 8, got {self.resolution}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ConfigError("caption_dropout", f"must be in [0, 1), got {self.caption_dropout}")
        for name in ("latent_beta", "pixel_beta", "learning_rate", "adam_epsilon"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        if self.pixel_weight < 0:
            raise ConfigError("pixel_weight", f"must be >= 0, got {self.pixel_weight}")
        if self.pixel_objective != "none" and self.pixel_weight == 0:
            raise ConfigError("pixel_weight", "is 0 but pixel_objective is set; use pixel_objective = 'none'")
        if not 0.0 < self.pixel_crop <= 1.0:
            raise ConfigError("pixel_crop", f"must be in (0, 1], got {self.pixel_crop}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError("ema_decay", f"must be in (0, 1), got {self.ema_decay}")
        for name in ("lora_rank", "lora_alpha", "train_batch_size", "gradient_accumulation_steps",
                     "max_train_steps", "checkpointing_steps", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("lr_warmup_steps", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError("max_grad_norm", f"must be > 0 (or null to disable), got {self.max_grad_norm}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit <= 0:
            raise ConfigError("checkpoints_total_limit", "must be > 0 (or null to keep every checkpoint)")
        if self.max_sequence_length is not None and self.max_sequence_length <= 0:
            raise ConfigError("max_sequence_length", f"must be > 0, got {self.max_sequence_length}")
        if self.lora_target_modules is not None and not self.lora_target_modules:
            raise ConfigError("lora_target_modules", "must name at least one module (or be null for the default)")
        if self.export_lora_adapter and not self.use_lora:
            raise ConfigError("export_lora_adapter", "needs use_lora = true")
        if self.resume_from is not None and not self.resume_from.strip():
            raise ConfigError("resume_from", "must be a checkpoint path, 'latest' or null")

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        if not isinstance(data, dict):
            raise ConfigError(source, "expected a table/object of settings")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(key, f"unknown setting in {source}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise ConfigError(missing[0], f"required setting missing from {source}")
        return cls(**data)


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) != len(typing.get_args(tp))
    return tp, False


def _check_types(config: TrainConfig) -> None:
    for name, tp in _field_types().items():
        value = getattr(config, name)
        base, optional = _unwrap_optional(tp)
        if value is None:
            if optional:
                continue
            raise ConfigError(name, "must not be null")
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(config, name, float(value))
            continue
        origin = typing.get_origin(base)
        if origin is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(name, f"expected a list of strings, got {value!r}")
            continue
        if origin is dict:
            if not isinstance(value, dict):
                raise ConfigError(name, f"expected a table, got {value!r}")
            continue
        if base is int and isinstance(value, bool) or not isinstance(value, base):
            raise ConfigError(name, f"expected {base.__name__}, got {type(value).__name__} {value!r}")


def _choice(config: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}; got {value!r}")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(name: str, text: str) -> Any:
    """Parse a ``--set`` value by the type of the field ``name``."""
    types_by_name = _field_types()
    if name not in types_by_name:
        raise ConfigError(name, "unknown setting")
    base, optional = _unwrap_optional(types_by_name[name])
    stripped = text.strip()
    if optional and stripped.lower() in ("none", "null", ""):
        return None
    try:
        if base is bool:
            if stripped.lower() in _TRUE:
                return True
            if stripped.lower() in _FALSE:
                return False
            raise ValueError
        if base is int:
            return int(stripped)
        if base is float:
            return float(stripped)
        if typing.get_origin(base) is list:
            if stripped.startswith("["):
                value = json.loads(stripped)
            else:
                value = [part.strip() for part in stripped.split(",") if part.strip()]
            return value
        if typing.get_origin(base) is dict:
            return json.loads(stripped)
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(name, f"cannot parse {text!r} as {getattr(base, '__name__', base)}") from None
    return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (typed by the dataclass field) to a settings dict."""
    merged = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        merged[key] = parse_value(key, value)
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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Build a TrainConfig from an optional file plus ``key=value`` overrides."""
    data = read_config_file(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return TrainConfig.from_dict(data, source=str(path) if path is not None else "overrides")
