"""Lesson 02's coding exercise: the closed-form forward noising q(x_t | x_0)."""

from __future__ import annotations

import torch

from ..exercises import CodingExercise
from ..schedules import make_schedule


def noisy_image(x0: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor, t: int) -> torch.Tensor:
    abar = alphas_cumprod[t]
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def _inputs(g: torch.Generator) -> tuple:
    kind = ["linear", "cosine", "scaled_linear"][int(torch.randint(0, 3, (1,), generator=g))]
    shape = (int(torch.randint(1, 4, (1,), generator=g)), 3, 8, 8)
    return (torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g),
            make_schedule(kind).alphas_cumprod, int(torch.randint(0, 1000, (1,), generator=g)))


EXERCISES = [
    CodingExercise(
        lesson=2, name="closed-form noising",
        task="return x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, the noisy image at timestep t "
             "in one jump (alphas_cumprod[t] is alpha_bar_t; t is 0-based)",
        signature="noisy_image(x0, eps, alphas_cumprod, t)",
        solution=noisy_image, make_inputs=_inputs,
        hint="alphas_cumprod[t] is a 0-d tensor: .sqrt() works on it, and so does (1 - it).sqrt()."),
]
