"""How closely a cheaper pixel term steers the denoiser as the full one does.

``pixel_crop``, a ``pixel_decoder`` and decoder checkpointing make the pixel term cheaper; what
they may change is the direction of the gradient. ``term_gradient`` is the gradient of one
micro-batch's loss, or of one of its terms, with respect to the denoiser's trainable
parameters, computed by the loop's own ``compute_loss`` with every draw (caption dropout,
noise, timesteps, pixel crop) taken from a generator seeded by ``seed``, as the loop seeds a
micro-step. Two contexts given the same batch and seed therefore see the same noise and
timesteps; their gradients differ only by what the contexts change.

The loss is linear in its terms, ``L = L_latent + w · L_pixel``, and the latent term does not
depend on how the pixel term is decoded, so the gradient of the total in a pixel mode is the
latent gradient (computed once) plus that mode's pixel gradient (``total_cosine``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from training.engine import loop

Term = Literal["total", "latent", "pixel"]


def _term_config(config, term: Term):
    if term == "latent":
        return config.model_copy(update={"pixel_objective": "none"})
    if term == "pixel":
        return config.model_copy(update={"latent_objective": "none"})
    return config


def term_gradient(ctx: loop.LossContext, denoiser: torch.nn.Module, batch: dict, seed: int,
                  term: Term = "total") -> torch.Tensor:
    """∇θ of the loss (``"total"``), of its latent term, or of its weighted pixel term ``w · L_pixel``.

    Flattened into one float64 vector over the denoiser's trainable parameters (a parameter the
    term does not reach contributes zeros). ``denoiser``'s ``.grad`` fields are left untouched.
    """
    if term != "total" and getattr(ctx.config, f"{term}_objective") == "none":
        raise ValueError(f"the {term} term is 'none' in this configuration")
    params = [p for p in denoiser.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(seed)
    context = dataclasses.replace(ctx, config=_term_config(ctx.config, term))
    loss, _ = loop.compute_loss(context, denoiser, batch, generator)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                      for g, p in zip(grads, params)])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """``⟨a, b⟩ / (‖a‖ ‖b‖)`` in float64."""
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def total_cosine(latent: torch.Tensor, pixel_reference: torch.Tensor, pixel_candidate: torch.Tensor) -> float:
    """The cosine between the totals ``latent + pixel`` of two pixel modes sharing the latent gradient."""
    return cosine(latent + pixel_reference, latent + pixel_candidate)
