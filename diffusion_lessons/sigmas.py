"""Noise levels as data, lessons 08-09 (world-agnostic): sigma ladders for sampling, sigma draws for training.

Two conventions share the name sigma, and this module says which one each function uses:

- flow sigma (lesson 08; diffusers' FlowMatchEulerDiscreteScheduler): sigma in [0, 1],
  x_sigma = (1 - sigma) x0 + sigma noise; sigma = 1 is pure noise, sigma = 0 the data.
- variance-exploding sigma (lesson 09; Karras et al. 2022; diffusers' EulerDiscreteScheduler):
  sigma_t = sqrt((1 - abar_t) / abar_t) in [0, inf), x_t / sqrt(abar_t) = x0 + sigma_t eps.

Ladders (descending, from noisy to clean):
  flow_sigmas(N, shift)      the N sigmas FlowMatchEulerDiscreteScheduler.set_timesteps(N) visits, then 0
                             (spacing='uniform': 1, 1 - 1/N, ..., 1/N, then 0, for few-step sampling)
  karras_sigmas(N, lo, hi)   sigma_i = (hi^(1/rho) + i / (N - 1) (lo^(1/rho) - hi^(1/rho)))^rho, rho = 7
Shift (SD3, Esser et al. 2024; diffusers' `shift`): sigma' = shift sigma / (1 + (shift - 1) sigma), which
spends more of the steps (or of the training) at high noise when shift > 1.
Training draws (flow sigma, one per sample, on a CPU generator):
  'uniform'       sigma ~ U(0, 1) (Lipman et al. 2023; Liu et al. 2023)
  'logit_normal'  sigma = sigmoid(u), u ~ N(m, s) (SD3's choice, m = 0, s = 1), as diffusers'
                  training_utils.compute_density_for_timestep_sampling('logit_normal', ...)
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

SIGMA_SAMPLERS = ("uniform", "logit_normal")
FLOW_SPACINGS = ("diffusers", "uniform")
NUM_TRAIN_TIMESTEPS = 1000  # diffusers' flow models are told timestep = 1000 sigma

__all__ = ["SIGMA_SAMPLERS", "FLOW_SPACINGS", "NUM_TRAIN_TIMESTEPS", "timestep_shift", "flow_sigmas", "karras_sigmas",
           "draw_sigmas"]


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _steps(num_steps, name: str = "num_steps") -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"{name} must be an int >= 1, got {num_steps!r}")
    return int(num_steps)


def timestep_shift(sigma, shift: float = 1.0):
    """sigma' = shift sigma / (1 + (shift - 1) sigma) (diffusers' FlowMatchEulerDiscreteScheduler `shift`,
    SD3 uses 3.0): keeps 0 and 1, pushes every sigma between them up when shift > 1. Tensors or numbers."""
    shift = _number(shift, "shift")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift!r}")
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_sigmas(num_steps: int, shift: float = 1.0, spacing: str = "diffusers",
                num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The num_steps + 1 sigmas (float32, the last 0) an Euler sampler visits, shifted by timestep_shift.
    spacing 'diffusers': those of FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(num_steps), evenly
    spaced from 1 down to the scheduler's smallest training sigma 1 / T (taken after its shift, so shift(shift(1/T))
    when shift != 1), then 0: the last step is a tiny one, from 1 / T to 0, so 2 steps act almost like 1.
    spacing 'uniform': 1 - i / num_steps, i = 0..num_steps, shifted (set_timesteps(sigmas=...) without the 0)."""
    num_steps = _steps(num_steps)
    if spacing not in FLOW_SPACINGS:
        raise ValueError(f"spacing must be one of {FLOW_SPACINGS}, got {spacing!r}")
    if spacing == "uniform":
        ladder = timestep_shift((1 - np.arange(num_steps) / num_steps).astype(np.float32), shift)  # float32
        return torch.cat([torch.from_numpy(ladder), torch.zeros(1)])
    smallest = torch.tensor([1.0], dtype=torch.float32) / num_train_timesteps   # the scheduler's training sigmas
    sigma_min = float(timestep_shift(smallest, shift)[0])                        # end at 1 / T, shifted in float32
    ladder = np.linspace(num_train_timesteps, sigma_min * num_train_timesteps, num_steps) / num_train_timesteps
    ladder = timestep_shift(ladder, shift).astype(np.float32)
    return torch.cat([torch.from_numpy(ladder), torch.zeros(1)])


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """The Karras et al. (2022, eq. 5) ladder of num_steps variance-exploding sigmas, descending (float32):
    sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..N-1.
    Equals EulerDiscreteScheduler(use_karras_sigmas=True).sigmas without the final 0."""
    num_steps = _steps(num_steps)
    sigma_min, sigma_max, rho = (_number(v, n) for v, n in ((sigma_min, "sigma_min"), (sigma_max, "sigma_max"),
                                                             (rho, "rho")))
    if sigma_min < 0:
        raise ValueError(f"sigma_min must be >= 0, got {sigma_min!r}")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be smaller than sigma_max, got sigma_min={sigma_min!r} >= "
                         f"sigma_max={sigma_max!r}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0 (the paper uses 7), got {rho!r}")
    ramp = np.linspace(0, 1, num_steps)                     # i / (N - 1), in float64 as diffusers
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.from_numpy((hi + ramp * (lo - hi)) ** rho).to(torch.float32)


def draw_sigmas(n: int, generator: torch.Generator | None = None, kind: str = "uniform", m: float = 0.0,
                s: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """n training sigmas (float32, CPU) in [0, 1]: 'uniform' (torch.rand) or 'logit_normal'
    (sigmoid(N(m, s)), drawn as diffusers' compute_density_for_timestep_sampling), then timestep_shift."""
    n = _steps(n, "n")
    if kind not in SIGMA_SAMPLERS:
        raise ValueError(f"kind must be one of {SIGMA_SAMPLERS}, got {kind!r}")
    if kind == "uniform":
        sigma = torch.rand((n,), generator=generator)
    else:
        m, s = _number(m, "m"), _number(s, "s")
        if s <= 0:
            raise ValueError(f"s must be > 0 (the standard deviation of the logit), got {s!r}")
        sigma = torch.sigmoid(torch.normal(mean=m, std=s, size=(n,), generator=generator))
    return sigma if shift == 1.0 else timestep_shift(sigma, shift)
