"""The loss functions against hand calculations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from training.engine import losses


def test_latent_error_is_per_sample_mean_of_squares():
    eps = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])
    eps_hat = torch.tensor([[[0.0, 0.0]], [[3.0, -1.0]]])
    # sample 0: (1 + 4) / 2; sample 1: (9 + 1) / 2
    assert torch.allclose(losses.latent_error(eps, eps_hat), torch.tensor([2.5, 5.0]))


def test_dpo_equals_log2_when_model_equals_reference():
    err_w = torch.tensor([0.3, 0.1])
    err_l = torch.tensor([0.2, 0.5])
    loss = losses.dpo_loss(err_w, err_l, err_w.clone(), err_l.clone(), beta=5000.0)
    assert loss.item() == pytest.approx(math.log(2.0))


def test_dpo_by_hand():
    m_w, m_l = torch.tensor([0.5]), torch.tensor([0.4])
    r_w, r_l = torch.tensor([0.6]), torch.tensor([0.3])
    beta = 2.0
    margin = (0.5 - 0.6) - (0.4 - 0.3)  # -0.2
    expected = -math.log(1.0 / (1.0 + math.exp(beta * margin)))
    assert losses.dpo_loss(m_w, m_l, r_w, r_l, beta).item() == pytest.approx(expected, rel=1e-6)
    assert losses.dpo_implicit_accuracy(m_w, m_l, r_w, r_l).item() == 1.0


def test_simpo_by_hand_and_gradient_prefers_the_winner():
    m_w = torch.tensor([0.3, 0.2], requires_grad=True)
    m_l = torch.tensor([0.1, 0.4], requires_grad=True)
    beta = 3.0
    loss = losses.simpo_loss(m_w, m_l, beta)
    expected = sum(-math.log(1.0 / (1.0 + math.exp(beta * (w - l)))) for w, l in ((0.3, 0.1), (0.2, 0.4))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # Gradient descent lowers the winner's error and raises the loser's.
    assert (m_w.grad > 0).all()
    assert (m_l.grad < 0).all()
    with torch.no_grad():
        new_w = m_w - 0.1 * m_w.grad
        new_l = m_l - 0.1 * m_l.grad
    assert ((new_w - new_l) < (m_w - m_l)).all()
    assert losses.simpo_implicit_accuracy(m_w.detach(), m_l.detach()).item() == 0.5


def test_simpo_step_on_a_parameter_lowers_winner_error_relative_to_loser():
    torch.manual_seed(0)
    eps_w, eps_l = torch.randn(1, 4), torch.randn(1, 4)
    theta = torch.zeros(1, 4, requires_grad=True)  # the "model": ε̂ = θ for both samples
    before = (losses.latent_error(eps_w, theta) - losses.latent_error(eps_l, theta)).item()
    loss = losses.simpo_loss(losses.latent_error(eps_w, theta), losses.latent_error(eps_l, theta), beta=1.0)
    loss.backward()
    with torch.no_grad():
        theta -= 0.1 * theta.grad
    after = (losses.latent_error(eps_w, theta) - losses.latent_error(eps_l, theta)).item()
    assert after < before


def test_pixel_error_with_identity_decoder_is_scaled_latent_error():
    torch.manual_seed(0)
    z = torch.randn(3, 4, 2, 2)
    eps = torch.randn(3, 4, 2, 2)
    eps_hat = torch.randn(3, 4, 2, 2)
    alpha_bar = torch.tensor([0.9, 0.5, 0.1])
    a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    z_t = losses.noised_latents(z, eps, a, b)
    z_t_hat = losses.noised_latents(z, eps_hat, a, b)
    got = losses.pixel_error(lambda x: x, z_t, z_t_hat)
    expected = (1 - alpha_bar) * ((eps - eps_hat) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(got, expected, atol=1e-6)


def test_x0_decoding_by_hand():
    # One sample, one element: z = 2, ε = 1, ε̂ = 0.5, ᾱ = 0.25 → a = 0.5, b = √0.75.
    z = torch.tensor([[2.0]])
    a, b = torch.tensor([0.5]), torch.tensor([0.75]).sqrt()
    z_t = losses.noised_latents(z, torch.tensor([[1.0]]), a, b)
    x0_hat = losses.predicted_x0(z_t, torch.tensor([[0.5]]), a, b)
    # (z_t − b ε̂)/a = z + (b/a)(ε − ε̂) = 2 + √3 · 0.5
    assert x0_hat.item() == pytest.approx(2.0 + math.sqrt(3.0) * 0.5, rel=1e-6)
    err = losses.pixel_error(lambda x: 3.0 * x, z, x0_hat)
    assert err.item() == pytest.approx(9.0 * 0.75, rel=1e-5)  # (3 · √3/2)²


def test_pixel_error_target_has_no_gradient():
    calls = []

    def decode(x):
        calls.append(x.requires_grad and torch.is_grad_enabled())
        return x * 2

    z_t = torch.randn(2, 3, requires_grad=True)
    z_t_hat = torch.randn(2, 3, requires_grad=True)
    losses.pixel_error(decode, z_t, z_t_hat).sum().backward()
    assert calls == [False, True]
    assert z_t.grad is None
    assert z_t_hat.grad is not None


def test_combined_loss_weights_the_pixel_term_and_reports_each_term():
    latent = torch.tensor([0.2, 0.4, 0.3, 0.1])  # winners 0.2, 0.4; losers 0.3, 0.1
    pixel = torch.tensor([1.0, 2.0, 3.0, 4.0])
    total, metrics = losses.combined_loss(
        latent_objective="simpo", latent_beta=2.0,
        pixel_objective="sft", pixel_beta=0.0, pixel_weight=8.0,
        preference=True, latent_err=latent, pixel_err=pixel,
    )
    simpo = losses.simpo_loss(torch.tensor([0.2, 0.4]), torch.tensor([0.3, 0.1]), 2.0)
    assert total.item() == pytest.approx(simpo.item() + 8.0 * 1.5, rel=1e-6)  # sft on winners: (1+2)/2
    assert metrics["latent_accuracy"].item() == 0.5
    assert metrics["pixel_loss"].item() == pytest.approx(1.5)
    assert "pixel_accuracy" not in metrics


def test_pixel_only_ablation_skips_the_latent_term():
    pixel = torch.tensor([1.0, 3.0])
    total, metrics = losses.combined_loss(
        latent_objective="none", latent_beta=1.0, pixel_objective="sft", pixel_beta=1.0,
        pixel_weight=2.0, preference=False, pixel_err=pixel,
    )
    assert total.item() == pytest.approx(4.0)
    assert not any(key.startswith("latent_") for key in metrics)


def test_dpo_term_needs_reference_and_both_none_is_rejected():
    err = torch.tensor([0.1, 0.2])
    with pytest.raises(ValueError, match="reference"):
        losses.objective_loss("dpo", 1.0, err, None, preference=True)
    with pytest.raises(ValueError, match="preference"):
        losses.objective_loss("simpo", 1.0, err, preference=False)
    with pytest.raises(ValueError, match="nothing to train"):
        losses.combined_loss(latent_objective="none", latent_beta=1.0, pixel_objective="none",
                             pixel_beta=1.0, pixel_weight=1.0, preference=False)
