"""The reverse step, lesson 04: one DDPM step and one DDIM step, written from the formulas.

Notation as in schedules (0-based t, abar_t = schedule.alphas_cumprod[t]); t_prev is the next timestep
the sampler visits (t - 1 over all T steps, fewer steps skip), and t_prev = -1 is the last step, to
abar = 1 (diffusers' set_alpha_to_one=True; the loop can end elsewhere, as Stable Diffusion's DDIM does).

- 'ddpm' takes ancestral steps with the posterior q(x_{t_prev} | x_t, x0_hat) ("fixed_small" variance);
  over fewer than T steps it is the posterior of the respaced chain, which equals the DDIM step with eta = 1.
- 'ddim' takes DDIM steps (eta = 0: deterministic; eta > 0 adds fresh noise).

ddpm_step and ddim_step check their arguments and take the network's eps; ddpm_update and ddim_update are
the same formulas given alpha_bar as numbers, without checks, for the loop, which also hands them the x0
it converted from a v or x0 prediction (so no precision is lost dividing by sqrt(abar_t)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import _checks
from .schedules import NoiseSchedule

SAMPLERS = ("ddpm", "ddim")

__all__ = ["SAMPLERS", "StepOutput", "ddpm_step", "ddpm_update", "ddim_step", "ddim_update", "check_eta"]


class StepOutput(NamedTuple):
    """One reverse step: the next state x_{t_prev} and the x0 predicted at t (diffusers:
    prev_sample and pred_original_sample). Unpacks like a tuple: x_prev, x0 = ddim_step(...)."""

    x_prev: torch.Tensor
    x0: torch.Tensor


def _step_t(schedule: NoiseSchedule, t, name: str = "t") -> int:
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule (make_schedule, loop.as_schedule), got "
                         f"{type(schedule).__name__}")
    t = schedule.check_t(t, name)
    if t.numel() != 1:
        raise ValueError(f"{name} must be one timestep for the whole batch, got {t.numel()}")
    return int(t[0])


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device (as diffusers' randn_tensor)."""
    _checks.tensor(x, "x", floating=True)
    _checks.generator(generator)
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _check_pair(x_t: torch.Tensor, other: torch.Tensor | None, name: str) -> None:
    if not isinstance(x_t, torch.Tensor) or not x_t.dtype.is_floating_point:
        raise ValueError(f"x_t must be a floating-point tensor, got {type(x_t).__name__}")
    if other is not None and (not isinstance(other, torch.Tensor) or tuple(other.shape) != tuple(x_t.shape)):
        raise ValueError(f"{name} must be a tensor with the shape of x_t {tuple(x_t.shape)}, got "
                         f"{tuple(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__}")


def _check_update(x_t, eps, abar_t, abar_prev, x0) -> None:
    """The update formulas' inputs: cheap checks only (no tensor is read), as the loop calls them every step."""
    _check_pair(x_t, eps, "eps")
    _check_pair(x_t, x0, "x0")
    _checks.number(abar_t, "abar_t", 0, 1)
    _checks.number(abar_prev, "abar_prev", 0, 1)
    if not abar_t < 1 or not abar_prev > 0:
        raise ValueError(f"abar_t must be < 1 and abar_prev > 0 (alpha_bar at t and after the step), got "
                         f"abar_t={abar_t!r}, abar_prev={abar_prev!r}")


def check_eta(eta) -> float:
    """eta as a float, or ValueError unless it is a finite number >= 0."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a number >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta!r}")
    return float(eta)


def ddpm_step(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int,
              noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
              t_prev: int | None = None) -> StepOutput:
    """One ancestral DDPM step t -> t_prev (default t - 1), Ho et al. eq. 6-7, no clipping:
    x_prev = c0 x0_hat + ct x_t + sqrt(beta_tilde) z, c0 = sqrt(abar_prev) beta / (1 - abar_t),
    ct = sqrt(alpha) (1 - abar_prev) / (1 - abar_t), beta_tilde = (1 - abar_prev) / (1 - abar_t) beta,
    alpha = abar_t / abar_prev = 1 - beta. No noise at t = 0. Equals DDPMScheduler(clip_sample=False).step."""
    _check_pair(x_t, eps, "eps")
    _check_pair(x_t, noise, "noise")
    t = _step_t(schedule, t)
    t_prev = t - 1 if t_prev is None else int(t_prev)
    if not -1 <= t_prev < t:
        raise ValueError(f"t_prev must satisfy -1 <= t_prev < t = {t}, got {t_prev}")
    abar_t = float(schedule.alphas_cumprod[t])
    abar_prev = float(schedule.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    return ddpm_update(x_t, eps, abar_t, abar_prev, t > 0, noise, generator)


def ddpm_update(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float, add_noise: bool,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                x0: torch.Tensor | None = None) -> StepOutput:
    """ddpm_step's formula given alpha_bar at t and at t_prev (1.0 after the last step); cheap checks only.
    x0: the predicted x0 when the network gave it (else computed from eps)."""
    _check_update(x_t, eps, abar_t, abar_prev, x0)
    _check_pair(x_t, noise, "noise")
    alpha = abar_t / abar_prev                 # respaced: the product of alphas from t_prev + 1 to t
    beta = 1 - alpha
    if x0 is None:                                                          # 1. predicted x0
        x0 = (x_t - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
    c0 = math.sqrt(abar_prev) * beta / (1 - abar_t)                         # 2. posterior mean coefficients
    ct = math.sqrt(alpha) * (1 - abar_prev) / (1 - abar_t)
    x_prev = c0 * x0 + ct * x_t
    if add_noise:                                                           # 3. add noise, sd sqrt(beta_tilde)
        noise = randn_like(x_t, generator) if noise is None else noise
        x_prev = x_prev + math.sqrt((1 - abar_prev) / (1 - abar_t) * beta) * noise
    return StepOutput(x_prev, x0)


def ddim_step(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
              eta: float = 0.0, noise: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> StepOutput:
    """One DDIM step t -> t_prev (Song et al. eq. 12 and 16); t_prev < 0 is the last step, to abar = 1:
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).
    Equals DDIMScheduler(set_alpha_to_one=True, clip_sample=False).step for any eta >= 0."""
    _check_pair(x_t, eps, "eps")
    _check_pair(x_t, noise, "noise")
    t = _step_t(schedule, t)
    eta = check_eta(eta)
    if int(t_prev) >= t:
        raise ValueError(f"t_prev must be smaller than t = {t} (negative for the last step), got {t_prev}")
    abar_t = float(schedule.alphas_cumprod[t])
    abar_prev = float(schedule.alphas_cumprod[int(t_prev)]) if t_prev >= 0 else 1.0
    return ddim_update(x_t, eps, abar_t, abar_prev, eta, noise, generator)


def ddim_update(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float, eta: float = 0.0,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                x0: torch.Tensor | None = None) -> StepOutput:
    """ddim_step's formula given alpha_bar at t and at t_prev (1.0 after the last step); cheap checks only.
    x0: the predicted x0 when the network gave it (else computed from eps)."""
    _check_update(x_t, eps, abar_t, abar_prev, x0)
    _check_pair(x_t, noise, "noise")
    eta = check_eta(eta)
    if x0 is None:                                                                      # 1. predicted x0
        x0 = (x_t - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))  # 2. sigma_t(eta)
    direction = math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps                     # 3. points to x_t
    x_prev = math.sqrt(abar_prev) * x0 + direction
    if eta > 0:                                                                         # 4. fresh noise
        noise = randn_like(x_t, generator) if noise is None else noise
        x_prev = x_prev + sigma * noise
    return StepOutput(x_prev, x0)
