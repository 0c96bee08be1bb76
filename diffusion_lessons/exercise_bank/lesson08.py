"""Lesson 08's coding exercises: the flow-matching training pair (Lipman et al. 2023; diffusers'
FlowMatchEulerDiscreteScheduler convention), the timestep shift (Esser et al. 2024) and one deterministic DDIM step
taken as an Euler step on the straight line (Part I in flow coordinates)."""

from __future__ import annotations

import torch

from ..exercises import CodingExercise
from ..schedules import make_schedule


def flow_pair_by_hand(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))   # one sigma per sample, broadcast over the rest
    return (1 - s) * x0 + s * noise, noise - x0      # the point on the line, and the velocity along it


def shift_by_hand(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


def ddim_as_euler_by_hand(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float) -> torch.Tensor:
    a, b = abar_t ** 0.5, (1 - abar_t) ** 0.5
    a_prev, b_prev = abar_prev ** 0.5, (1 - abar_prev) ** 0.5
    x0_hat = (x_t - b * eps) / a                             # the clean image the noise implies
    y = x_t / (a + b)                                        # x_t on the straight line, at sigma = b / (a + b)
    y_next = y + (b_prev / (a_prev + b_prev) - b / (a + b)) * (eps - x0_hat)   # one Euler step, v = eps - x0
    return y_next * (a_prev + b_prev)                        # back to Part I's scale


def _pair_inputs(g: torch.Generator) -> tuple:
    shape = (int(torch.randint(1, 5, (1,), generator=g)), 1, 8, 8)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.rand(shape[0], generator=g)


def _shift_inputs(g: torch.Generator) -> tuple:
    return torch.rand(7, generator=g), float(torch.rand(1, generator=g) * 4 + 0.5)


def _ddim_inputs(g: torch.Generator) -> tuple:
    abar = make_schedule("cosine").alphas_cumprod
    t = int(torch.randint(1, 900, (1,), generator=g))
    t_prev = int(torch.randint(-1, t, (1,), generator=g))
    shape = (int(torch.randint(1, 4, (1,), generator=g)), 1, 8, 8)
    return (torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64),
            float(abar[t]), float(abar[t_prev]) if t_prev >= 0 else 1.0)


EXERCISES = [
    CodingExercise(
        lesson=8, name="flow-matching pair",
        task="return the training pair of flow matching for clean images x0, their noise and one sigma per image: "
             "the point x_sigma = (1 - sigma) x0 + sigma noise on the straight line, and the velocity target "
             "v = noise - x0. sigma has shape (B,); x0 and noise (B, C, H, W)",
        signature="flow_pair_by_hand(x0, noise, sigma)",
        solution=flow_pair_by_hand, make_inputs=_pair_inputs,
        hint="reshape sigma to (B, 1, 1, 1) so it multiplies every pixel of its own image; return a tuple (x_t, v)."),
    CodingExercise(
        lesson=8, name="timestep shift",
        task="shift noise levels as Stable Diffusion 3 does: sigma' = shift sigma / (1 + (shift - 1) sigma), "
             "for a tensor of sigmas in [0, 1] and a number shift > 0",
        signature="shift_by_hand(sigma, shift)",
        solution=shift_by_hand, make_inputs=_shift_inputs,
        hint="one line; check it keeps 0 and 1 where they are, and sends 0.5 to 0.75 for shift 3."),
    CodingExercise(
        lesson=8, name="DDIM step as an Euler step",
        task="take one deterministic DDIM step from x_t (alpha_bar = abar_t) to the earlier level abar_prev, given "
             "the predicted noise eps, but as a flow Euler step: with a = sqrt(abar), b = sqrt(1 - abar), put x_t "
             "on the straight line, y = x_t / (a + b) at sigma = b / (a + b); step y by (sigma_prev - sigma) "
             "(eps - x0_hat), x0_hat = (x_t - b eps) / a; multiply back by (a_prev + b_prev). It must equal "
             "lesson 04's DDIM step sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps",
        signature="ddim_as_euler_by_hand(x_t, eps, abar_t, abar_prev)",
        solution=ddim_as_euler_by_hand, make_inputs=_ddim_inputs, rtol=1e-6, atol=1e-8,
        hint="compute a, b, a_prev, b_prev first; abar_prev = 1.0 on the last step (sigma_prev = 0)."),
]
