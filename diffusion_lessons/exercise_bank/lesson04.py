"""Lesson 04's coding exercises: one deterministic DDIM step (Song et al. 2021, eq. 12 with eta = 0) and
one ancestral DDPM step from the predicted clean image (Ho et al. 2020, eq. 6-7)."""

from __future__ import annotations

import torch

from ..exercises import CodingExercise
from ..schedules import make_schedule


def ddim_step_by_hand(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float) -> torch.Tensor:
    x0_hat = (x_t - (1 - abar_t) ** 0.5 * eps) / abar_t ** 0.5      # the clean image the noise implies
    return abar_prev ** 0.5 * x0_hat + (1 - abar_prev) ** 0.5 * eps  # re-noised to the earlier level


def ddpm_step_by_hand(x_t: torch.Tensor, x0_hat: torch.Tensor, abar_t: float, abar_prev: float,
                      z: torch.Tensor) -> torch.Tensor:
    beta = 1 - abar_t / abar_prev
    c0 = abar_prev ** 0.5 * beta / (1 - abar_t)
    ct = (1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar_t)
    beta_tilde = (1 - abar_prev) / (1 - abar_t) * beta
    return c0 * x0_hat + ct * x_t + beta_tilde ** 0.5 * z


def _abars(g: torch.Generator) -> tuple[float, float]:
    """alpha_bar at a random t (not the capped last steps) and at a random earlier t_prev, or 1.0 (the last step)."""
    abar = make_schedule("cosine").alphas_cumprod
    t = int(torch.randint(1, 900, (1,), generator=g))
    t_prev = int(torch.randint(-1, t, (1,), generator=g))
    return float(abar[t]), (float(abar[t_prev]) if t_prev >= 0 else 1.0)


def _ddim_inputs(g: torch.Generator) -> tuple:
    shape = (int(torch.randint(1, 5, (1,), generator=g)), 1, 16, 16)
    return (torch.randn(shape, generator=g), torch.randn(shape, generator=g), *_abars(g))


def _ddpm_inputs(g: torch.Generator) -> tuple:
    shape = (int(torch.randint(1, 5, (1,), generator=g)), 1, 16, 16)
    x_t, x0_hat = torch.randn(shape, generator=g), torch.rand(shape, generator=g) * 2 - 1
    return (x_t, x0_hat, *_abars(g), torch.randn(shape, generator=g))


EXERCISES = [
    CodingExercise(
        lesson=4, name="one DDIM step",
        task="take one deterministic DDIM step (eta = 0) from x_t to the earlier timestep: compute the clean image "
             "x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) that the predicted noise eps implies, then "
             "return x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps. abar_t and abar_prev are numbers "
             "(abar_prev = 1.0 on the last step, which lands on x0_hat itself)",
        signature="ddim_step_by_hand(x_t, eps, abar_t, abar_prev)",
        solution=ddim_step_by_hand, make_inputs=_ddim_inputs,
        hint="two lines: first x0_hat, then re-noise it to abar_prev re-using eps as the direction. "
             "Python numbers take ** 0.5 for a square root."),
    CodingExercise(
        lesson=4, name="one DDPM step",
        task="take one ancestral DDPM step from x_t to the earlier timestep, given the predicted clean image x0_hat "
             "and fresh noise z: with beta = 1 - abar_t / abar_prev, return c0 x0_hat + ct x_t + sqrt(beta_tilde) z, "
             "c0 = sqrt(abar_prev) beta / (1 - abar_t), ct = sqrt(1 - beta) (1 - abar_prev) / (1 - abar_t), "
             "beta_tilde = (1 - abar_prev) / (1 - abar_t) beta",
        signature="ddpm_step_by_hand(x_t, x0_hat, abar_t, abar_prev, z)",
        solution=ddpm_step_by_hand, make_inputs=_ddpm_inputs,
        hint="over several skipped timesteps beta is 1 - abar_t / abar_prev, not one step's beta; on the last step "
             "(abar_prev = 1.0) beta_tilde is 0, so no noise is added and the step returns x0_hat."),
]
