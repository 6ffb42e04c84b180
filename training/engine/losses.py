"""Latent and pixel objectives for SFT, DPO and SimPO post-training.

Notation follows the paper. A clean latent ``z`` and noise ``ε`` give the noisy latent

    z_t = a_t z + b_t ε                    (a_t = √ᾱ_t, b_t = √(1−ᾱ_t) for DDPM models;
                                            a_t = 1−σ,  b_t = σ       for flow matching)

and the denoiser's noise estimate ``ε̂ = ε_θ(z_t, t)`` (see ``training.engine.families`` for
how each prediction type yields ε̂) gives the predicted noisy latent

    ẑ_t = a_t z + b_t ε̂.

Every ``*_error`` function returns *per-sample* errors: the mean over all non-batch elements.
Every ``*_loss`` function returns the batch mean. Preference batches put the winners first and
the losers second along the batch dimension (``torch.cat([winner, loser])``), so the winner and
loser of pair ``i`` sit at ``i`` and ``i + B``; ``split_pairs`` undoes this.

All functions are pure: they take tensors and return tensors, with no model state.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from training.engine.config import OBJECTIVES, PREFERENCE_OBJECTIVES


Decode = Callable[[torch.Tensor], torch.Tensor]


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.float().reshape(x.shape[0], -1).mean(dim=1)


def latent_error(eps: torch.Tensor, eps_hat: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample latent error (eq. 1): ``w · ‖ε − ε_θ(z_t, t)‖²``, a mean over non-batch dims.

    ``weights`` (one per sample, default 1) weight each sample's error: Min-SNR for ε/v models,
    SD3's loss weighting for flow models. The same function gives a flow model's velocity error
    ``w · ‖v − v̂‖²`` when passed ``v`` and ``v̂``.
    """
    errors = _per_sample_mean((eps.float() - eps_hat.float()) ** 2)
    return errors if weights is None else errors * weights.float().reshape(-1)


def min_snr_weights(snr: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ weights of ε-space errors: ``min(SNR_t, γ) / SNR_t`` per sample."""
    return torch.clamp(snr.float(), max=gamma) / snr.float()


def noised_latents(z: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``z_t = a z + b ε``; with ``ε̂`` in place of ``ε`` this is ``ẑ_t``.

    ``a`` and ``b`` hold one value per sample (shape ``[N]``) and broadcast over the rest.
    """
    shape = (-1,) + (1,) * (z.ndim - 1)
    return a.reshape(shape).to(z.dtype) * z + b.reshape(shape).to(z.dtype) * eps


def predicted_x0(z_t: torch.Tensor, eps_hat: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The clean latent implied by ``ε̂`` (eq. 8): ``ẑ_0 = (z_t − b ε̂) / a``.

    For DDPM models this is ``(z_t − √(1−ᾱ) ε̂)/√ᾱ``; for flow matching ``(z_t − σ ε̂)/(1−σ)``.
    """
    shape = (-1,) + (1,) * (z_t.ndim - 1)
    return (z_t - b.reshape(shape).to(z_t.dtype) * eps_hat) / a.reshape(shape).to(z_t.dtype)


def pixel_error(decode: Decode, z_t: torch.Tensor, z_t_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample pixel error (eq. 2): ``‖D(z_t) − D(ẑ_t)‖²``.

    The target ``D(z_t)`` is decoded under ``torch.no_grad``; only ``D(ẑ_t)`` carries a graph,
    through the (frozen) decoder back to ``ε̂``. With an identity decoder this equals
    ``b_t² · mean((ε − ε̂)²)``, i.e. ``(1−ᾱ)·mean((ε−ε̂)²)`` for DDPM models.

    For the "x0 decoding" ablation pass ``z = the clean latent`` and ``predicted_x0(...)``
    instead of ``z_t`` and ``ẑ_t``.
    """
    with torch.no_grad():
        target = decode(z_t)
    return pixel_error_against(target, decode, z_t_hat)


def pixel_error_against(target_pixels: torch.Tensor, decode: Decode, z_t_hat: torch.Tensor) -> torch.Tensor:
    """``‖target − D(ẑ_t)‖²`` per sample, for an already decoded target ``D(z_t)``.

    Lets DPO decode the target once and compare both the model's and the reference's ``ẑ_t``.
    """
    prediction = decode(z_t_hat)
    return _per_sample_mean((target_pixels.detach().float() - prediction.float()) ** 2)


def split_pairs(errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split per-sample errors of a preference batch into (winner, loser) errors."""
    if errors.shape[0] % 2:
        raise ValueError(f"a preference batch needs an even number of samples, got {errors.shape[0]}")
    winner, loser = errors.chunk(2)
    return winner, loser


def sft_loss(errors: torch.Tensor) -> torch.Tensor:
    """SFT (eq. 3, one term): the batch mean of per-sample errors."""
    return errors.mean()


def dpo_loss(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Diffusion-DPO (eq. 4): ``−log σ(−β((m_w − r_w) − (m_l − r_l)))``, batch mean.

    ``m`` is the trained model's per-sample error and ``r`` the frozen reference's. When the
    model equals the reference the loss is ``log 2``.
    """
    margin = (model_err_w - ref_err_w) - (model_err_l - ref_err_l)
    return -F.logsigmoid(-beta * margin).mean()


def simpo_loss(model_err_w: torch.Tensor, model_err_l: torch.Tensor, beta: float) -> torch.Tensor:
    """SimPO for diffusion (eqs. 5–7): ``−log σ(−β(m_w − m_l))``, batch mean, no reference."""
    return -F.logsigmoid(-beta * (model_err_w - model_err_l)).mean()


def dpo_implicit_accuracy(
    model_err_w: torch.Tensor, model_err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor
) -> torch.Tensor:
    """Fraction of pairs where the model improved on the winner more than on the loser,
    relative to the reference: ``(m_w − r_w) < (m_l − r_l)``."""
    return ((model_err_w - ref_err_w) < (model_err_l - ref_err_l)).float().mean()


def simpo_implicit_accuracy(model_err_w: torch.Tensor, model_err_l: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs where the model denoises the winner better than the loser: ``m_w < m_l``."""
    return (model_err_w < model_err_l).float().mean()


def objective_loss(
    objective: str,
    beta: float,
    model_err: torch.Tensor,
    ref_err: torch.Tensor | None = None,
    *,
    preference: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One term of the loss (latent or pixel) under the chosen objective.

    ``preference`` says whether ``model_err`` is a preference batch (winners then losers).
    ``sft`` on a preference batch fits the winners only. Returns the loss and detached metrics:
    the loss and, for preference batches, the mean winner/loser errors and the implicit accuracy.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} (expected one of {', '.join(OBJECTIVES)})")
    if objective == "none":
        raise ValueError("objective 'none' has no loss; skip the term instead")
    if objective in PREFERENCE_OBJECTIVES and not preference:
        raise ValueError(f"objective {objective!r} needs a preference batch (winner/loser pairs)")
    metrics: dict[str, torch.Tensor] = {}
    if not preference:
        loss = sft_loss(model_err)
        metrics["loss"] = loss.detach()
        return loss, metrics
    err_w, err_l = split_pairs(model_err)
    metrics["err_w"] = err_w.detach().mean()
    metrics["err_l"] = err_l.detach().mean()
    if objective == "sft":
        loss = sft_loss(err_w)
    elif objective == "simpo":
        loss = simpo_loss(err_w, err_l, beta)
        metrics["accuracy"] = simpo_implicit_accuracy(err_w.detach(), err_l.detach())
    else:
        if ref_err is None:
            raise ValueError("objective 'dpo' needs the reference model's errors")
        ref_w, ref_l = split_pairs(ref_err)
        loss = dpo_loss(err_w, err_l, ref_w, ref_l, beta)
        metrics["accuracy"] = dpo_implicit_accuracy(err_w.detach(), err_l.detach(), ref_w, ref_l)
        metrics["ref_err_w"] = ref_w.detach().mean()
        metrics["ref_err_l"] = ref_l.detach().mean()
    metrics["loss"] = loss.detach()
    return loss, metrics


def combined_loss(
    *,
    latent_objective: str,
    latent_beta: float,
    pixel_objective: str,
    pixel_beta: float,
    pixel_weight: float,
    preference: bool,
    latent_err: torch.Tensor | None = None,
    pixel_err: torch.Tensor | None = None,
    ref_latent_err: torch.Tensor | None = None,
    ref_pixel_err: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``L = L_latent + w · L_pixel`` (``w`` = λ for SFT, μ for preference objectives).

    Each term's objective is one of ``sft``, ``dpo``, ``simpo`` or ``none`` with its own β, so
    latent-only, pixel-only (latent objective ``none``) and mixed rows are all expressible.
    Metrics are prefixed ``latent_`` and ``pixel_``; ``loss`` is the total.
    """
    if latent_objective == "none" and pixel_objective == "none":
        raise ValueError("both the latent and the pixel objective are 'none': nothing to train")
    total: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor] = {}
    for name, objective, beta, err, ref_err, weight in (
        ("latent", latent_objective, latent_beta, latent_err, ref_latent_err, 1.0),
        ("pixel", pixel_objective, pixel_beta, pixel_err, ref_pixel_err, pixel_weight),
    ):
        if objective == "none":
            continue
        if err is None:
            raise ValueError(f"the {name} objective is {objective!r} but no {name} errors were given")
        loss, term_metrics = objective_loss(objective, beta, err, ref_err, preference=preference)
        metrics.update({f"{name}_{key}": value for key, value in term_metrics.items()})
        total = weight * loss if total is None else total + weight * loss
    assert total is not None
    metrics["loss"] = total.detach()
    return total, metrics
