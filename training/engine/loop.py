"""The training loop: SFT, DPO and SimPO with latent and pixel terms, on accelerate.

The loop owns the Accelerator, optimizer, LR schedule, EMA, checkpoints and metrics; the family
adapter owns the model's quirks and ``losses`` owns the objectives.

Determinism. Every random draw of a micro-step (data order, augmentation, caption dropout,
noise, timesteps, pixel crops) comes from a seed derived from ``(seed, micro_step, process)``,
and data order is a per-epoch permutation of ``(seed, epoch)``. Resuming at step k therefore
replays steps k+1…n exactly as an uninterrupted run would (with ``dataloader_num_workers = 0``;
worker processes draw their own augmentation seeds).

Output layout under ``output_dir``::

    checkpoints/checkpoint-<step>/   accelerate state (weights, optimizer, LR schedule, EMA,
                                     step, RNG states per process) + config.json
    metrics.jsonl                    one line per logged step
    progress.json, STOP              progress reports and stop requests (``progress``)
    tensorboard/                     with report_to = "tensorboard"
    model/                           the exported diffusers pipeline
    lora_adapter/                    with export_lora_adapter = true
    train_summary.json
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.engine import losses, progress as run_progress
from training.engine.config import ConfigError, TrainConfig
from training.engine.families import DEFAULT_LORA_TARGETS, FamilyAdapter, load_adapter, load_decoder, unwrap_model

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingError(RuntimeError):
    """The run cannot continue; the message says why and what was kept."""


class NonFiniteLossError(TrainingError):
    """A NaN or infinite loss; the run stops and keeps its last good checkpoint."""


class TrainingCancelled(TrainingError):
    """A stop was requested (``progress.request_stop``); the run saved a checkpoint and stopped."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"cancelled at step {step}; checkpoint {checkpoint} kept for a later resume")
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    model_dir: Path | None
    adapter_dir: Path | None
    metrics_file: Path
    last_metrics: dict = field(default_factory=dict)
    resumed_from: Path | None = None


SUMMARY_FILE = "train_summary.json"


def read_train_summary(output_dir: str | Path) -> TrainResult:
    """A finished run's result, read from the summary its main process wrote (for a launched run)."""
    output_dir = Path(output_dir)
    summary = json.loads((output_dir / SUMMARY_FILE).read_text())
    optional = {key: Path(summary[key]) if summary.get(key) else None for key in ("adapter_dir", "resumed_from")}
    return TrainResult(output_dir=output_dir, global_step=summary["global_step"], model_dir=Path(summary["model_dir"]),
                       metrics_file=output_dir / "metrics.jsonl", last_metrics=summary["last_metrics"], **optional)


# --------------------------------------------------------------------------------------
# Seeds and data order


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes, platforms and Python runs."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Yields this process's batch for each micro-step from ``start`` on.

    Micro-step ``m`` takes global batch ``m mod P`` (P = batches per epoch) of epoch ``m div P``'s
    permutation; process ``r`` gets the r-th slice of it. Incomplete global batches are dropped.
    """

    def __init__(self, size: int, batch_size: int, num_processes: int, rank: int, seed: int, start: int, stop: int):
        global_batch = batch_size * num_processes
        self.per_epoch = size // global_batch
        if self.per_epoch == 0:
            raise TrainingError(
                f"train_data: {size} examples are fewer than one global batch "
                f"(train_batch_size {batch_size} × {num_processes} processes)"
            )
        self.size, self.batch_size, self.num_processes, self.rank = size, batch_size, num_processes, rank
        self.seed, self.start, self.stop = seed, start, stop
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0x5EED))
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=generator)
        return self._perm

    def __iter__(self):
        for micro_step in range(self.start, self.stop):
            epoch, position = divmod(micro_step, self.per_epoch)
            first = (position * self.num_processes + self.rank) * self.batch_size
            yield self._permutation(epoch)[first:first + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.stop - self.start


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------
# The loss of one micro-batch


def random_latent_crop(tensors: list[torch.Tensor], fraction: float, generator: torch.Generator,
                       *, pairs: bool) -> list[torch.Tensor]:
    """Crop the same random square-ish window (side ``fraction`` of the latent) out of each tensor.

    One window per sample, shared by every tensor (target, prediction, reference), and with
    ``pairs`` shared by a winner (``i``) and its loser (``i + B``).
    """
    if fraction >= 1.0:
        return tensors
    n, _, height, width = tensors[0].shape
    crop_h, crop_w = max(1, round(fraction * height)), max(1, round(fraction * width))
    draws = n // 2 if pairs else n
    top = torch.randint(0, height - crop_h + 1, (draws,), generator=generator)
    left = torch.randint(0, width - crop_w + 1, (draws,), generator=generator)
    if pairs:
        top, left = top.repeat(2), left.repeat(2)
    return [
        torch.stack([x[i, :, t:t + crop_h, l:l + crop_w] for i, (t, l) in enumerate(zip(top.tolist(), left.tolist()))])
        for x in tensors
    ]


@dataclass
class LossContext:
    """What computing the loss needs besides the batch: models, config and the run's device/dtypes."""

    adapter: FamilyAdapter
    config: TrainConfig
    device: torch.device
    reference: torch.nn.Module | None = None  # frozen copy (full fine-tuning)
    lora_reference: bool = False  # the reference is the denoiser with its adapters disabled
    decoder: torch.nn.Module | None = None  # the pixel term's decoder when not the pipeline's VAE
    autocast: object = contextlib.nullcontext  # a factory of the autocast context (accelerator.autocast)


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module):
    """The LoRA reference: the same module with its adapters switched off (no second copy)."""
    model.disable_adapters()
    try:
        yield model
    finally:
        model.enable_adapters()


def compute_loss(ctx: LossContext, denoiser: torch.nn.Module, batch: dict, generator: torch.Generator):
    """The loss of one micro-batch and its detached metrics.

    Preference batches stack winners then losers; both halves share caption dropout, noise,
    timestep and pixel crop (each image keeps its own micro-conditioning, for SDXL).
    """
    cfg, adapter, device = ctx.config, ctx.adapter, ctx.device
    preference = cfg.is_preference
    with torch.no_grad():
        if preference:
            if "latents_w" in batch:
                z = torch.cat([batch["latents_w"], batch["latents_l"]]).to(device, torch.float32)
            else:
                z = adapter.encode(torch.cat([batch["pixel_values_w"], batch["pixel_values_l"]]).to(device))
        else:
            z = batch["latents"].to(device, torch.float32) if "latents" in batch else adapter.encode(
                batch["pixel_values"].to(device))
        pairs = len(batch["caption"])
        captions = adapter.drop_captions(list(batch["caption"]), cfg.caption_dropout, generator)
        text = adapter.encode_text(captions, device)
        levels = adapter.sample_noise_levels(pairs, generator, cfg)
        eps = torch.randn((pairs, *z.shape[1:]), generator=generator)
        if preference:
            text = {key: torch.cat([value, value]) for key, value in text.items()}
            levels, eps = levels.repeat(2), torch.cat([eps, eps])
        text.update(adapter.image_conditions(batch, z, preference=preference))
        levels, eps = levels.to(device), eps.to(device)
        z_t = losses.noised_latents(z, eps, levels.a, levels.b)

    prediction = adapter.predict(denoiser, z_t, levels, text)
    eps_hat = prediction.eps
    ref_prediction = ref_eps_hat = None
    if cfg.needs_reference:
        with torch.no_grad(), ctx.autocast():
            if ctx.lora_reference:
                with adapters_disabled(unwrap_model(denoiser)) as base:
                    ref_prediction = adapter.predict(base, z_t, levels, text)
            else:
                ref_prediction = adapter.predict(ctx.reference, z_t, levels, text)
        ref_eps_hat = ref_prediction.eps

    latent_err = ref_latent_err = pixel_err = ref_pixel_err = None
    if cfg.latent_objective != "none":
        latent_err = adapter.latent_error(z, eps, prediction, levels, cfg)
        if cfg.latent_objective == "dpo":
            ref_latent_err = adapter.latent_error(z, eps, ref_prediction, levels, cfg)
    if cfg.pixel_objective != "none":
        if cfg.pixel_decoding == "eps":  # eq. 2: D(z_t) vs D(ẑ_t)
            target = z_t
            predicted = [losses.noised_latents(z, eps_hat, levels.a, levels.b)]
            if ref_eps_hat is not None and cfg.pixel_objective == "dpo":
                predicted.append(losses.noised_latents(z, ref_eps_hat, levels.a, levels.b))
        else:  # eq. 8: D(z) vs D((z_t − b ε̂)/a)
            target = z
            predicted = [losses.predicted_x0(z_t, eps_hat, levels.a, levels.b)]
            if ref_eps_hat is not None and cfg.pixel_objective == "dpo":
                predicted.append(losses.predicted_x0(z_t, ref_eps_hat, levels.a, levels.b))
        target, *predicted = random_latent_crop([target, *predicted], cfg.pixel_crop, generator, pairs=preference)

        def decode(latents):
            return adapter.decode(latents, ctx.decoder)

        with torch.no_grad():
            target_pixels = decode(target)
        pixel_err = losses.pixel_error_against(target_pixels, decode, predicted[0])
        if len(predicted) > 1:
            with torch.no_grad():
                ref_pixel_err = losses.pixel_error_against(target_pixels, decode, predicted[1])

    return losses.combined_loss(
        latent_objective=cfg.latent_objective, latent_beta=cfg.latent_beta,
        pixel_objective=cfg.pixel_objective, pixel_beta=cfg.pixel_beta, pixel_weight=cfg.pixel_weight,
        preference=preference, latent_err=latent_err, pixel_err=pixel_err,
        ref_latent_err=ref_latent_err, ref_pixel_err=ref_pixel_err,
    )


# --------------------------------------------------------------------------------------
# Checkpoints


class _Progress:
    """The step counter, saved with each checkpoint."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(config: TrainConfig) -> Path | None:
    if config.resume_from is None:
        return None
    if config.resume_from == "latest":
        found = list_checkpoints(config.output_dir)
        return found[-1] if found else None
    path = Path(config.resume_from).expanduser()
    if not (path / "training_state.json").is_file():
        raise TrainingError(f"resume_from: {path} is not a checkpoint folder (no training_state.json)")
    return path


def _save_checkpoint(accelerator, config: TrainConfig, step: int) -> Path:
    root = Path(config.output_dir) / "checkpoints"
    final = root / f"checkpoint-{step}"
    staging = root / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        (staging / "training_state.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        existing = list_checkpoints(config.output_dir)
        if config.checkpoints_total_limit is not None:
            for old in existing[:-config.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# --------------------------------------------------------------------------------------
# Metrics


class MetricsWriter:
    """Per-step JSONL (main process only), and TensorBoard scalars when asked."""

    def __init__(self, config: TrainConfig, enabled: bool, resume_step: int):
        self.path = Path(config.output_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._file = None
        self._tensorboard = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            # Drop lines past the resumed step (written by the interrupted run after its checkpoint).
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        self._file = self.path.open("a", encoding="utf-8")
        if config.report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(Path(config.output_dir) / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


# --------------------------------------------------------------------------------------
# Setup


def _load_dataset(config: TrainConfig):
    from training.engine import data

    loader = data.load_preference_dataset if config.is_preference else data.load_sft_dataset
    return loader(config.train_data, resolution=config.resolution, center_crop=config.center_crop,
                  random_flip=config.random_flip, skip_bad_images=config.skip_bad_images)


def _make_optimizer(config: TrainConfig, params):
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                           eps=config.adam_epsilon, weight_decay=config.weight_decay)


def _make_lr_scheduler(config: TrainConfig, optimizer):
    from diffusers.optimization import get_scheduler

    name = config.lr_scheduler
    if name == "constant" and config.lr_warmup_steps:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=config.lr_warmup_steps,
                         num_training_steps=config.max_train_steps)


def _freeze(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module.to(device, dtype)


def parameter_checksum(params) -> float:
    """A float64 fingerprint of parameters: sum of (index-weighted) values, cheap to all-gather."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(params):
        total += (p.detach().double().cpu() * (1.0 + 1e-3 * (i % 97))).sum()
    return float(total)


def train(config: TrainConfig) -> TrainResult:
    """Run one training job described by ``config``; returns where the results are."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from tqdm.auto import tqdm

    output_dir = Path(config.output_dir)
    reset_accelerate_state()
    # A multi-process launch on a machine without GPUs trains on CPUs over gloo.
    cpu_only = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=cpu_only,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        project_config=ProjectConfiguration(project_dir=str(output_dir)),
    )
    device = accelerator.device
    if config.mixed_precision == "fp16" and device.type == "cpu":
        # accelerate runs no fp16 autocast on CPU: fp16 text features would meet an fp32 denoiser.
        raise ConfigError("mixed_precision", "fp16 needs a GPU (accelerate has no fp16 autocast on CPU); use bf16 or no")
    rank, world = accelerator.process_index, accelerator.num_processes
    weight_dtype = _DTYPES[config.mixed_precision]
    reporter = run_progress.ProgressWriter(output_dir, total_steps=config.max_train_steps,
                                           enabled=accelerator.is_main_process)
    reporter.set_phase("loading")
    _seed_everything(derive_seed(config.seed, 0x1A1D))

    adapter = load_adapter(config.pretrained_model, max_sequence_length=config.max_sequence_length, vae=config.vae)
    adapter.check_settings(config)
    dataset = _load_dataset(config)  # validates every image before step 1

    vae_dtype = torch.float32 if config.vae_fp32 else weight_dtype
    _freeze(adapter.vae, device, vae_dtype)
    for encoder in adapter.text_encoders():
        _freeze(encoder, device, weight_dtype)
    decoder = None
    if config.pixel_decoder:
        decoder = _freeze(load_decoder(config.pixel_decoder), device, vae_dtype)
    if config.vae_gradient_checkpointing and config.uses_pixel_term:
        (decoder or adapter.vae).enable_gradient_checkpointing()

    denoiser = adapter.denoiser
    reference = None
    if config.needs_reference and not config.use_lora:
        reference = _freeze(copy.deepcopy(denoiser), device, weight_dtype)
    if config.use_lora:
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        denoiser.requires_grad_(False)
        denoiser.to(device, weight_dtype)  # frozen base in the compute dtype; adapters train in fp32
        denoiser.add_adapter(LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
            target_modules=config.lora_target_modules or DEFAULT_LORA_TARGETS,
        ))
        cast_training_params(denoiser, dtype=torch.float32)
    else:
        denoiser.requires_grad_(True)
        denoiser.to(device)
    denoiser.train()
    if config.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    params = [p for p in denoiser.parameters() if p.requires_grad]

    ema = None
    if config.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay)
        accelerator.register_for_checkpointing(ema)

    if config.cache_latents:
        from training.engine import data

        reporter.set_phase("caching latents")
        with accelerator.main_process_first():
            dataset = data.cache_latents(
                dataset, lambda pixels: adapter.encode(pixels.to(device)).cpu(),
                output_dir / "latent_cache", batch_size=max(1, config.train_batch_size),
                encoder_id=f"{data.vae_fingerprint(adapter.vae)}:posterior-mean",
            )

    optimizer = _make_optimizer(config, params)
    lr_scheduler = _make_lr_scheduler(config, optimizer)
    progress = _Progress()
    accelerator.register_for_checkpointing(lr_scheduler)
    accelerator.register_for_checkpointing(progress)
    denoiser, optimizer = accelerator.prepare(denoiser, optimizer)

    resumed_from = resolve_resume(config)
    if resumed_from is None and config.resume_from is None and list_checkpoints(output_dir):
        raise TrainingError(
            f"output_dir: {output_dir} already holds checkpoints; set resume_from = 'latest' to continue "
            "that run, or choose a new output_dir"
        )
    if resumed_from is not None:
        accelerator.load_state(str(resumed_from))
        logger.info("resumed from %s at step %d", resumed_from, progress.step)
    global_step = progress.step
    accum = config.gradient_accumulation_steps
    reporter.set_phase("training", global_step)
    logger.info("training steps %d to %d of %s on %d process(es)", global_step + 1, config.max_train_steps,
                config.train_data, world)

    sampler = ShardedBatchSampler(len(dataset), config.train_batch_size, world, rank, config.seed,
                                  start=global_step * accum, stop=config.max_train_steps * accum)
    from training.engine.data import collate_fn

    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=config.dataloader_num_workers,
        generator=torch.Generator().manual_seed(derive_seed(config.seed, global_step, rank, 0xDA7A)),
    )
    ctx = LossContext(adapter=adapter, config=config, device=device, reference=reference,
                      lora_reference=config.use_lora and config.needs_reference, decoder=decoder,
                      autocast=accelerator.autocast)
    writer = MetricsWriter(config, accelerator.is_main_process, global_step)
    bar = tqdm(total=config.max_train_steps, initial=global_step, desc="train",
               disable=not accelerator.is_local_main_process)
    last_checkpoint = list_checkpoints(output_dir)[-1] if list_checkpoints(output_dir) else None
    watch = NonFiniteWatch(device)
    last_metrics: dict = {}
    batches = iter(loader)
    try:
        while global_step < config.max_train_steps:
            started = time.perf_counter()
            step_metrics: dict[str, list[torch.Tensor]] = {}
            grad_norm = None
            for micro in range(accum):
                micro_step = global_step * accum + micro
                seed = derive_seed(config.seed, micro_step, rank)
                _seed_everything(seed)  # augmentation inside the dataset draws from torch's RNG
                batch = next(batches)
                generator = torch.Generator().manual_seed(seed)
                with accelerator.accumulate(denoiser):
                    loss, metrics = compute_loss(ctx, denoiser, batch, generator)
                    watch.observe(loss, metrics, global_step + 1)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm or math.inf)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                for key, value in metrics.items():
                    step_metrics.setdefault(key, []).append(value)
            lr = lr_scheduler.get_last_lr()[0]
            lr_scheduler.step()
            if ema is not None:
                ema.step(params)
            global_step += 1
            progress.step = global_step
            bar.update(1)
            logged = None

            if global_step % config.log_every == 0 or global_step == config.max_train_steps:
                watch.check(accelerator, last_checkpoint)
                means = {key: torch.stack(values).mean() for key, values in step_metrics.items()}
                reduced = {key: float(accelerator.reduce(value.to(device), reduction="mean"))
                           for key, value in sorted(means.items())}
                last_metrics = {
                    "step": global_step, **reduced,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "lr": lr, "step_time": time.perf_counter() - started,
                }
                writer.write(last_metrics)
                bar.set_postfix(loss=f"{reduced['loss']:.4g}")
                logged = last_metrics
                logger.info("step %d/%d: %s", global_step, config.max_train_steps, _metrics_line(last_metrics))
            reporter.report(global_step, logged)
            saved = False
            if global_step % config.checkpointing_steps == 0:
                watch.check(accelerator, last_checkpoint)  # never save weights a non-finite loss reached
                last_checkpoint = _save_checkpoint(accelerator, config, global_step)
                saved = True
            if global_step < config.max_train_steps and _stop_agreed(accelerator, output_dir):
                watch.check(accelerator, last_checkpoint)
                if not saved:
                    last_checkpoint = _save_checkpoint(accelerator, config, global_step)
                reporter.set_phase("cancelled", global_step)
                logger.info("stop requested: stopped at step %d, checkpoint %s", global_step, last_checkpoint)
                raise TrainingCancelled(global_step, last_checkpoint)
        watch.check(accelerator, last_checkpoint)  # nor export them
    finally:
        bar.close()
        writer.close()

    # Every replica must end with the same weights; a mismatch means a broken launch.
    checksum = torch.tensor([parameter_checksum(params)], dtype=torch.float64, device=device)
    checksums = [float(c) for c in accelerator.gather(checksum).cpu()]
    if max(checksums) != min(checksums):
        raise TrainingError(f"replicas diverged: parameter checksums {checksums}")

    model_dir = adapter_dir = None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        from training.engine import export

        reporter.set_phase("exporting", global_step)
        trained = accelerator.unwrap_model(denoiser, keep_fp32_wrapper=False)
        if ema is not None:
            ema.copy_to(params)  # export the averaged weights
        model_dir = export.export_pipeline(config.pretrained_model, trained, output_dir / "model")
        if config.export_lora_adapter:
            adapter_dir = export.export_lora_adapter(trained, output_dir / "lora_adapter")
        summary = {
            "global_step": global_step, "model_dir": str(model_dir),
            "adapter_dir": str(adapter_dir) if adapter_dir else None,
            "resumed_from": str(resumed_from) if resumed_from else None,
            "num_processes": world, "mixed_precision": accelerator.mixed_precision,
            "replica_checksums": checksums, "last_metrics": last_metrics,
            "dataset": getattr(getattr(dataset, "report", None), "summary", lambda: None)(),
        }
        tmp = output_dir / f".{SUMMARY_FILE}.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, output_dir / SUMMARY_FILE)
        reporter.set_phase("done", global_step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(output_dir=output_dir, global_step=global_step, model_dir=model_dir, adapter_dir=adapter_dir,
                       metrics_file=output_dir / "metrics.jsonl", last_metrics=last_metrics,
                       resumed_from=resumed_from)


def _stop_agreed(accelerator, output_dir: Path) -> bool:
    """Whether a stop was requested, agreed by every process (so that all stop at the same step)."""
    requested = run_progress.stop_requested(output_dir)
    if accelerator.num_processes == 1:
        return requested
    flag = torch.tensor([1.0 if requested else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def _metrics_line(metrics: dict) -> str:
    shown = []
    for key, value in metrics.items():
        if key == "step" or value is None:
            continue
        shown.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(shown)


def reset_accelerate_state() -> None:
    """Clear accelerate's process-wide settings so that the next Accelerator takes this run's.

    accelerate keeps them in singletons and has no public reset; a long-lived worker that trains
    several runs (say bf16, then fp32) needs them cleared. The process group is kept. This is the
    only call into accelerate's private API; a test checks that it still exists and works.
    """
    import accelerate
    from accelerate.state import AcceleratorState, GradientState

    for singleton in (AcceleratorState, GradientState):
        if not callable(getattr(singleton, "_reset_state", None)):
            raise TrainingError(
                f"accelerate {accelerate.__version__} has no {singleton.__name__}._reset_state; "
                "reset_accelerate_state in training/engine/loop.py needs updating"
            )
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


class NonFiniteWatch:
    """Remembers the first non-finite loss on the device, without waiting for it.

    ``observe`` runs every micro-step and only queues device work; ``check`` (one host sync and
    one gather) runs when the loss is logged, before each checkpoint and before export, and stops
    every process together, naming the step the loss first went bad and that step's terms. Weights
    a non-finite loss reached are therefore never checkpointed or exported.
    """

    def __init__(self, device: torch.device):
        self.first_bad_step = torch.zeros((), dtype=torch.long, device=device)  # 0: every loss finite
        self._keys: list[str] = []
        self._terms: torch.Tensor | None = None  # the metrics of the first bad micro-step

    def observe(self, loss: torch.Tensor, metrics: dict[str, torch.Tensor], step: int) -> None:
        newly_bad = ~torch.isfinite(loss.detach()).all() & (self.first_bad_step == 0)
        self.first_bad_step = torch.where(newly_bad, step, self.first_bad_step)
        if sorted(metrics) != self._keys:  # the first call (a run's terms do not change)
            self._keys, self._terms = sorted(metrics), None
        terms = torch.stack([metrics[key].detach().float().reshape(()) for key in self._keys])
        self._terms = torch.where(newly_bad, terms, self._terms if self._terms is not None else terms)

    def check(self, accelerator, last_checkpoint: Path | None) -> None:
        steps = accelerator.gather(self.first_bad_step.reshape(1))
        bad = steps[steps > 0]
        if bad.numel() == 0:
            return
        step = int(bad.min())
        if int(self.first_bad_step) == step and self._terms is not None:
            terms = ", ".join(f"{key}={value:.4g}" for key, value in zip(self._keys, self._terms.tolist()))
        else:
            terms = "on another process"
        kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved yet"
        raise NonFiniteLossError(
            f"non-finite loss at step {step} ({terms}); stopping, {kept}. "
            "Lower learning_rate or beta, or train in bf16/fp32 instead of fp16."
        )
