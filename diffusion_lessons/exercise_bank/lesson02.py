"""Lesson 02's coding exercises: the closed-form forward noising q(x_t | x_0), the variance-exploding
noise level sigma_t, and the clean image that a noise prediction implies (Tweedie's formula)."""

from __future__ import annotations

import torch

from ..exercises import CodingExercise
from ..schedules import make_schedule


def noisy_image(x0: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor, t: int) -> torch.Tensor:
    abar = alphas_cumprod[t]
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def ve_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def predicted_x0(x_t: torch.Tensor, eps_hat: torch.Tensor, alphas_cumprod: torch.Tensor, t: int) -> torch.Tensor:
    abar = alphas_cumprod[t]
    return (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()


def _random_schedule(g: torch.Generator):
    kind = ["linear", "cosine", "scaled_linear"][int(torch.randint(0, 3, (1,), generator=g))]
    return make_schedule(kind)


def _inputs(g: torch.Generator) -> tuple:
    schedule = _random_schedule(g)
    shape = (int(torch.randint(1, 4, (1,), generator=g)), 3, 8, 8)
    return (torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g),
            schedule.alphas_cumprod, int(torch.randint(0, 1000, (1,), generator=g)))


def _sigma_inputs(g: torch.Generator) -> tuple:
    return (_random_schedule(g).alphas_cumprod,)


def _x0_inputs(g: torch.Generator) -> tuple:
    schedule = _random_schedule(g)
    shape = (int(torch.randint(1, 4, (1,), generator=g)), 3, 8, 8)
    t = int(torch.randint(0, 900, (1,), generator=g))  # not the very last steps, where sqrt(alpha_bar) is ~0
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g), schedule.alphas_cumprod, t


EXERCISES = [
    CodingExercise(
        lesson=2, name="closed-form noising",
        task="return x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, the noisy image at timestep t "
             "in one jump (alphas_cumprod[t] is alpha_bar_t; t is 0-based)",
        signature="noisy_image(x0, eps, alphas_cumprod, t)",
        solution=noisy_image, make_inputs=_inputs,
        hint="alphas_cumprod[t] is a 0-d tensor: .sqrt() works on it, and so does (1 - it).sqrt()."),
    CodingExercise(
        lesson=2, name="noise level sigma",
        task="return the variance-exploding noise levels sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for every "
             "timestep at once: a tensor of the same shape as alphas_cumprod",
        signature="ve_sigmas(alphas_cumprod)",
        solution=ve_sigmas, make_inputs=_sigma_inputs,
        hint="tensor arithmetic works elementwise: no loop is needed. sigma_t is also 1 / sqrt(SNR_t)."),
    CodingExercise(
        lesson=2, name="predicted x0",
        task="given a noisy image x_t at timestep t and a prediction eps_hat of the noise in it, return the clean "
             "image they imply, (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t): the closed form solved "
             "for x0 (with E[eps | x_t] for eps_hat, this is Tweedie's formula)",
        signature="predicted_x0(x_t, eps_hat, alphas_cumprod, t)",
        solution=predicted_x0, make_inputs=_x0_inputs,
        hint="start from x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps and solve for x0."),
]
