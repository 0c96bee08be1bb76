"""Lesson 09's coding exercises: the Karras et al. (2022) sigma ladder, the clean-image guess of a v-prediction
network in sigma form (as diffusers' EulerDiscreteScheduler computes it), one Euler step and one Heun step of the
probability-flow ODE dx/dsigma = (x - x0_hat) / sigma."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..exercises import CodingExercise


def karras_by_hand(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)           # i / (N - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho                                  # evenly spaced in sigma^(1/rho)


def x0_from_v_by_hand(x: torch.Tensor, v: torch.Tensor, sigma: float) -> torch.Tensor:
    # x = x_t / sqrt(abar) with sqrt(abar) = 1 / sqrt(1 + sigma^2); x0 = sqrt(abar) x_t - sqrt(1 - abar) v
    return x / (sigma ** 2 + 1) - sigma / (sigma ** 2 + 1) ** 0.5 * v


def euler_by_hand(x: torch.Tensor, x0_hat: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    slope = (x - x0_hat) / sigma                                           # dx/dsigma
    return x + (sigma_next - sigma) * slope


def heun_by_hand(x: torch.Tensor, sigma: float, sigma_next: float, denoise) -> torch.Tensor:
    slope = (x - denoise(x, sigma)) / sigma                                # the slope here
    x_euler = x + (sigma_next - sigma) * slope                             # an Euler step
    slope_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next     # the slope where it lands
    return x + (sigma_next - sigma) * (slope + slope_next) / 2             # step again with their average


@dataclass(frozen=True)
class GaussianDenoiser:
    """The best denoiser when the data are Gaussian with variance `variance` per pixel: x0_hat = c x / (c + sigma^2)."""

    variance: float

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.variance * x / (self.variance + sigma ** 2)


def _shape(g: torch.Generator) -> tuple:
    return (int(torch.randint(1, 4, (1,), generator=g)), 1, 4, 4)


def _karras_inputs(g: torch.Generator) -> tuple:
    sigma_min = float(torch.rand(1, generator=g) * 0.05 + 0.002)
    return (int(torch.randint(2, 30, (1,), generator=g)), sigma_min, float(torch.rand(1, generator=g) * 100 + 1),
            float(torch.rand(1, generator=g) * 8 + 1))


def _v_inputs(g: torch.Generator) -> tuple:
    sigma = float(torch.rand(1, generator=g) * 10 + 0.01)
    shape = _shape(g)
    return torch.randn(shape, generator=g) * (1 + sigma ** 2) ** 0.5, torch.randn(shape, generator=g), sigma


def _euler_inputs(g: torch.Generator) -> tuple:
    sigma = float(torch.rand(1, generator=g) * 10 + 0.05)
    shape = _shape(g)
    return (torch.randn(shape, generator=g) * sigma, torch.randn(shape, generator=g),
            sigma, float(torch.rand(1, generator=g)) * sigma)


def _heun_inputs(g: torch.Generator) -> tuple:
    sigma = float(torch.rand(1, generator=g) * 10 + 0.1)
    sigma_next = float(torch.rand(1, generator=g) * 0.9 + 0.05) * sigma
    x = torch.randn(_shape(g), generator=g, dtype=torch.float64) * sigma
    return x, sigma, sigma_next, GaussianDenoiser(round(float(torch.rand(1, generator=g)) + 0.1, 3))


EXERCISES = [
    CodingExercise(
        lesson=9, name="Karras ladder",
        task="return the num_steps noise levels of Karras et al. (2022), descending from sigma_max to sigma_min: "
             "evenly spaced in sigma^(1/rho), i.e. sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - "
             "sigma_max^(1/rho)))^rho for i = 0..N-1, as a tensor",
        signature="karras_by_hand(num_steps, sigma_min, sigma_max, rho)",
        solution=karras_by_hand, make_inputs=_karras_inputs,
        hint="torch.linspace(0, 1, num_steps) gives i / (N - 1); raise the ends to 1 / rho, interpolate, raise to rho."),
    CodingExercise(
        lesson=9, name="x0 from v in sigma form",
        task="a v-prediction network was shown x / sqrt(1 + sigma^2) and answered v; return its clean-image guess "
             "x0_hat = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v (x is the sigma-form state x_t / sqrt(abar))",
        signature="x0_from_v_by_hand(x, v, sigma)",
        solution=x0_from_v_by_hand, make_inputs=_v_inputs,
        hint="sqrt(abar) = 1 / sqrt(1 + sigma^2) and sqrt(1 - abar) = sigma / sqrt(1 + sigma^2); x_t = sqrt(abar) x."),
    CodingExercise(
        lesson=9, name="Euler step in sigma form",
        task="take one Euler step of dx/dsigma = (x - x0_hat) / sigma from sigma down to sigma_next",
        signature="euler_by_hand(x, x0_hat, sigma, sigma_next)",
        solution=euler_by_hand, make_inputs=_euler_inputs,
        hint="the slope is (x - x0_hat) / sigma; move by (sigma_next - sigma) times it (a negative step)."),
    CodingExercise(
        lesson=9, name="Heun step",
        task="take one Heun step (Karras et al. 2022, algorithm 1) from sigma to sigma_next > 0: an Euler step with "
             "the slope d = (x - denoise(x, sigma)) / sigma lands at x_euler; the slope there is "
             "d' = (x_euler - denoise(x_euler, sigma_next)) / sigma_next; step from x again with (d + d') / 2. "
             "denoise(x, sigma) returns the clean-image guess (it counts as one model evaluation)",
        signature="heun_by_hand(x, sigma, sigma_next, denoise)",
        solution=heun_by_hand, make_inputs=_heun_inputs, rtol=1e-6, atol=1e-9,
        hint="call denoise twice: once at (x, sigma), once at (x_euler, sigma_next)."),
]
