"""Training runs in each state, with the metric keys an SFT or a preference run logs."""

from __future__ import annotations

import math

from training.models import TrainingRun
from tests.factories import ModelVersionFactory

SFT_KEYS = ("loss", "latent_loss", "pixel_loss", "grad_norm", "lr", "step_time")
PREFERENCE_KEYS = (
    "loss", "latent_loss", "pixel_loss", "latent_err_w", "latent_err_l", "pixel_err_w", "pixel_err_l",
    "latent_accuracy", "pixel_accuracy", "grad_norm", "lr", "step_time",
)


def history(n_points: int, *, preference: bool, every: int = 10) -> list[dict]:
    """Logged metrics as the engine writes them: a falling loss, a rising accuracy, a warm-up lr."""
    points = []
    for index in range(1, n_points + 1):
        step = index * every
        fall = math.exp(-index / (n_points / 3))
        point = {
            "step": step, "latent_loss": 0.2 + 0.5 * fall, "pixel_loss": 0.1 + 0.3 * fall + 0.02 * math.sin(index),
            "grad_norm": 1.0 + 0.5 * math.cos(index / 7), "lr": 1e-4 * min(1.0, index / 20), "step_time": 0.4,
        }
        point["loss"] = point["latent_loss"] + 2 * point["pixel_loss"]
        if preference:
            point.update({
                "latent_err_w": 0.30 - 0.1 * (1 - fall), "latent_err_l": 0.31, "pixel_err_w": 0.20 - 0.05 * (1 - fall),
                "pixel_err_l": 0.21, "latent_accuracy": 0.5 + 0.4 * (1 - fall), "pixel_accuracy": 0.5 + 0.3 * (1 - fall),
            })
        points.append(point)
    return points


def make_run(status: str = TrainingRun.Status.RUNNING, *, preference: bool = True, n_points: int = 300, **fields) -> TrainingRun:
    base = fields.pop("base_model", None) or ModelVersionFactory()
    points = history(n_points, preference=preference) if status != TrainingRun.Status.QUEUED else []
    total = 10 * max(n_points, 1) * 2
    defaults = {
        "name": f"run-{status}-{'dpo' if preference else 'sft'}", "dataset_path": "/data/none/manifest.jsonl",
        "config": {"latent_objective": "dpo" if preference else "sft", "pixel_objective": "dpo" if preference else "sft",
                   "pixel_weight": 2.0, "max_train_steps": total},
        "status": status, "history": points, "progress": points[-1] if points else {},
        "step": points[-1]["step"] if points else 0, "total_steps": total if status != TrainingRun.Status.QUEUED else 0,
        "phase": {"queued": "", "running": "training", "succeeded": "done", "failed": "failed",
                  "cancelled": "cancelled"}[status],
        "log_tail": "" if status == TrainingRun.Status.QUEUED else "2025-01-01 INFO step 3000/6000: loss 0.42\n",
        "worker": "" if status == TrainingRun.Status.QUEUED else "gpu-worker-1",
    }
    return TrainingRun.objects.create(base_model=base, **{**defaults, **fields})
