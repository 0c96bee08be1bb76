"""Lesson 03's coding exercises: the velocity target v that the shipped digits model is trained on, and
the clean image that a v prediction implies (Salimans and Ho 2022)."""

from __future__ import annotations

import torch

from ..exercises import CodingExercise
from ..schedules import make_schedule


def velocity_target(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    # alpha_bar holds one value per image (B,): shape it (B, 1, 1, 1) so it broadcasts over the pixels.
    abar = alpha_bar.reshape(-1, 1, 1, 1)
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    abar = alpha_bar.reshape(-1, 1, 1, 1)
    return abar.sqrt() * x_t - (1 - abar).sqrt() * v


def _alpha_bar(g: torch.Generator, batch: int) -> torch.Tensor:
    """alpha_bar of the cosine schedule at a random timestep per image."""
    return make_schedule("cosine").alphas_cumprod[torch.randint(0, 1000, (batch,), generator=g)]


def _target_inputs(g: torch.Generator) -> tuple:
    batch = int(torch.randint(2, 6, (1,), generator=g))
    shape = (batch, 1, 16, 16)
    return torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g), _alpha_bar(g, batch)


def _x0_inputs(g: torch.Generator) -> tuple:
    batch = int(torch.randint(2, 6, (1,), generator=g))
    shape = (batch, 1, 16, 16)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g), _alpha_bar(g, batch)


EXERCISES = [
    CodingExercise(
        lesson=3, name="velocity target",
        task="return the training target of a v-prediction network, v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0, "
             "for a batch of clean images x0 (B, 1, 16, 16) and their noise eps, where alpha_bar (B,) holds each "
             "image's own alpha_bar_t (every image has its own random timestep)",
        signature="velocity_target(x0, eps, alpha_bar)",
        solution=velocity_target, make_inputs=_target_inputs,
        hint="alpha_bar has shape (B,) and the images (B, 1, 16, 16): reshape it to (B, 1, 1, 1) before multiplying, "
             "or every image gets multiplied by every alpha_bar."),
    CodingExercise(
        lesson=3, name="x0 from v",
        task="given noisy images x_t (B, 1, 16, 16), the network's velocity prediction v and alpha_bar (B,), return "
             "the clean images they imply, x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v: no division, so an "
             "error in v is never magnified on its way to x0",
        signature="x0_from_velocity(x_t, v, alpha_bar)",
        solution=x0_from_velocity, make_inputs=_x0_inputs,
        hint="substitute x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and v = sqrt(abar) eps - sqrt(1 - abar) x0 to check "
             "the formula; alpha_bar needs the shape (B, 1, 1, 1)."),
]
