"""The reverse process, lesson 04: DDPM and DDIM steps written from the formulas, and a sample loop.

Notation as in schedules (0-based t, alpha_bar_t = schedule.alphas_cumprod[t]). What the network
predicts can be converted, at a given t (Salimans and Ho 2022 for v):

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps        v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0
    x0  = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)    x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v

Samplers: 'ddpm' takes ancestral steps with the posterior q(x_{t'} | x_t, x0_hat) ("fixed_small"
variance); over fewer than T steps it is the posterior of the respaced chain, which equals the DDIM
step with eta = 1. 'ddim' takes DDIM steps (eta = 0: deterministic).

Timesteps are spaced like diffusers' timestep_spacing. The default is 'leading' (diffusers'
DDIMScheduler default, also in the shipped digits scheduler): 50 of 1000 steps visit 980, 960, ..., 0.
'trailing' and 'linspace' start at t = 999, where the cosine schedule's capped last beta leaves
abar = 2.4e-9: an eps-predicting network's x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) then divides
its error by 4.9e-5, and one DDIM step multiplies it by about 3,000. (Lin et al. 2024 fix this with
v-prediction and a zero-terminal-SNR schedule.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from . import guidance
from .data import NULL_LABEL
from .models import predict_eps
from .schedules import NoiseSchedule

SAMPLERS = ("ddpm", "ddim")
SPACINGS = ("leading", "trailing", "linspace")


class StepOutput(NamedTuple):
    """One reverse step: the next state x_{t_prev} and the x0 predicted at t (diffusers:
    prev_sample and pred_original_sample). Unpacks like a tuple: x_prev, x0 = ddim_step(...)."""

    x_prev: torch.Tensor
    x0: torch.Tensor


@dataclass
class SampleState:
    """One state of the sample loop: x_t at timestep t and the model's x0 prediction there.
    The last state has t = -1 and holds the finished image (x_t is x0)."""

    i: int
    t: int
    x_t: torch.Tensor
    x0: torch.Tensor


# ---- converting between what the network predicts -------------------------------------------

def _abar(schedule: NoiseSchedule, t, like: torch.Tensor) -> torch.Tensor:
    return schedule.at(schedule.alphas_cumprod, schedule.check_t(t), like)


def x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (Ho et al. eq. 15; DDIM eq. 12)."""
    abar = _abar(schedule, t, x_t)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def eps_from_x0(schedule: NoiseSchedule, x_t: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
    """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t): the noise that turns x0 into x_t."""
    abar = _abar(schedule, t, x_t)
    return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()


def v_from_x0_eps(schedule: NoiseSchedule, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans and Ho 2022; diffusers' get_velocity)."""
    abar = _abar(schedule, t, x0)
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def x0_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
    abar = _abar(schedule, t, x_t)
    return abar.sqrt() * x_t - (1 - abar).sqrt() * v


def eps_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""
    abar = _abar(schedule, t, x_t)
    return (1 - abar).sqrt() * x_t + abar.sqrt() * v


# ---- one reverse step -------------------------------------------------------------------------

def _step_t(schedule: NoiseSchedule, t, name: str = "t") -> int:
    t = schedule.check_t(t, name)
    if t.numel() != 1:
        raise ValueError(f"{name} must be one timestep for the whole batch, got {t.numel()}")
    return int(t[0])


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device (as diffusers' randn_tensor)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _check_pair(x_t: torch.Tensor, other: torch.Tensor | None, name: str) -> None:
    if not isinstance(x_t, torch.Tensor) or not x_t.dtype.is_floating_point:
        raise ValueError(f"x_t must be a floating-point tensor, got {type(x_t).__name__}")
    if other is not None and tuple(other.shape) != tuple(x_t.shape):
        raise ValueError(f"{name} must have the shape of x_t {tuple(x_t.shape)}, got {tuple(other.shape)}")


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
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> StepOutput:
    """ddpm_step's formula given alpha_bar at t and at t_prev (1.0 after the last step); no checks."""
    alpha = abar_t / abar_prev                 # respaced: the product of alphas from t_prev + 1 to t
    beta = 1 - alpha
    x0 = (x_t - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)           # 1. predicted x0
    c0 = math.sqrt(abar_prev) * beta / (1 - abar_t)                         # 2. posterior mean coefficients
    ct = math.sqrt(alpha) * (1 - abar_prev) / (1 - abar_t)
    x_prev = c0 * x0 + ct * x_t
    if add_noise:                                                           # 3. add noise, sd sqrt(beta_tilde)
        noise = _randn_like(x_t, generator) if noise is None else noise
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
    if not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a number >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta!r}")
    if int(t_prev) >= t:
        raise ValueError(f"t_prev must be smaller than t = {t} (negative for the last step), got {t_prev}")
    abar_t = float(schedule.alphas_cumprod[t])
    abar_prev = float(schedule.alphas_cumprod[int(t_prev)]) if t_prev >= 0 else 1.0
    return ddim_update(x_t, eps, abar_t, abar_prev, eta, noise, generator)


def ddim_update(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float, eta: float = 0.0,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> StepOutput:
    """ddim_step's formula given alpha_bar at t and at t_prev (1.0 after the last step); no checks."""
    x0 = (x_t - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)                        # 1. predicted x0
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))  # 2. sigma_t(eta)
    direction = math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps                     # 3. points to x_t
    x_prev = math.sqrt(abar_prev) * x0 + direction
    if eta > 0:                                                                         # 4. fresh noise
        noise = _randn_like(x_t, generator) if noise is None else noise
        x_prev = x_prev + sigma * noise
    return StepOutput(x_prev, x0)


# ---- the loop ---------------------------------------------------------------------------------

def as_schedule(schedule) -> NoiseSchedule:
    """A NoiseSchedule, or one built from a diffusers scheduler's betas (e.g. load_pretrained's DDIMScheduler)."""
    if isinstance(schedule, NoiseSchedule):
        return schedule
    if hasattr(schedule, "alphas_cumprod") and hasattr(schedule, "betas"):
        if getattr(schedule.config, "prediction_type", "epsilon") != "epsilon":
            raise ValueError(f"schedule: only prediction_type='epsilon' is supported, got "
                             f"{schedule.config.prediction_type!r}")
        betas = schedule.betas.float().cpu()
        abar = schedule.alphas_cumprod.float().cpu()
        kind = f"diffusers:{getattr(schedule.config, 'beta_schedule', '?')}"
        return NoiseSchedule(kind, betas, 1 - betas, abar, abar / (1 - abar))
    raise ValueError(f"schedule must be a NoiseSchedule or a diffusers scheduler, got {type(schedule).__name__}")


def sampling_timesteps(schedule: NoiseSchedule, steps: int, spacing: str = "leading") -> list[int]:
    """The `steps` timesteps a sampler visits, from noisy to clean, as diffusers' timestep_spacing.
    T = 1000, steps = 10: trailing [999, 899, ..., 99], leading [900, ..., 0], linspace [999, 888, ..., 0]."""
    schedule = as_schedule(schedule)
    T = schedule.num_steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in [1, {T}] (the schedule's num_steps), got {steps!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    elif spacing == "leading":
        ts = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.int64)
    else:
        ts = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
    return [int(t) for t in ts]


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's weights live and their dtype: the loop works there."""
    p = next(model.parameters())
    return p.device, p.dtype


def image_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of the images a UNet2DModel (from its config) or a TinyUNet makes."""
    cfg = getattr(model, "config", model)
    size = cfg.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (cfg.in_channels, h, w)


def _labels_and_batch(labels, num_samples: int | None, x_T: torch.Tensor | None) -> torch.Tensor | None:
    """Asked labels as (B,) int64 (None: unconditional); an int label is repeated num_samples times."""
    if labels is None:
        if num_samples is None and x_T is None:
            raise ValueError("num_samples: give num_samples (or x_T) when sampling without labels")
        return None
    labels = guidance.check_labels(labels)
    if labels.numel() == 1 and num_samples is not None:
        labels = labels.expand(num_samples)
    if num_samples is not None and labels.numel() != num_samples:
        raise ValueError(f"num_samples ({num_samples}) must match the number of labels ({labels.numel()})")
    return labels


def sample_loop(model: torch.nn.Module, schedule, labels=None, *, steps: int = 50, sampler: str = "ddim",
                eta: float | None = None, spacing: str = "leading", guidance_scale: float = 1.0,
                negative_label=None, guidance_rescale: float = 0.0, num_samples: int | None = None,
                x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                progress: bool = True) -> Iterator[SampleState]:
    """Sample from noise, yielding every SampleState (x_t and predicted x0 at each of `steps` timesteps,
    then the finished image with t = -1). labels: a digit, a list or a (B,) tensor, None = unconditional;
    guidance_scale s, negative_label and guidance_rescale as in guidance.guided_eps (one batched pass).
    x_T: the starting noise (B, C, H, W), else drawn with `generator`. Runs on the model's device."""
    schedule = as_schedule(schedule)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if eta is not None and sampler == "ddpm":
        raise ValueError("eta applies to sampler='ddim' only ('ddpm' is the eta = 1 case)")
    eta = 0.0 if eta is None else eta
    if not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a number >= 0 (0 = deterministic DDIM), got {eta!r}")
    timesteps = sampling_timesteps(schedule, steps, spacing)
    labels = _labels_and_batch(labels, num_samples, x_T)
    device, dtype = model_device_dtype(model)
    if labels is None:
        if guidance_scale != 1.0 or negative_label is not None or guidance_rescale != 0.0:
            raise ValueError("labels: guidance (guidance_scale != 1, negative_label, guidance_rescale) needs labels")
        batch = num_samples if x_T is None else x_T.shape[0]
        labels_in, scale, phi = torch.full((batch,), NULL_LABEL, dtype=torch.long), 1.0, 0.0
    else:
        negative = guidance.check_guidance(labels, guidance_scale, negative_label, guidance_rescale)
        labels_in = guidance.branch_labels(labels, guidance_scale, negative, guidance_rescale)
        batch, scale, phi = labels.shape[0], float(guidance_scale), float(guidance_rescale)
    x_T = _start_noise(model, batch, x_T, generator, device, dtype)
    return _run(model, schedule, x_T, labels_in.to(device), timesteps, sampler, eta, scale, phi, generator,
                progress)


def _start_noise(model, batch: int, x_T, generator, device, dtype) -> torch.Tensor:
    shape = (batch, *image_shape(model))
    if x_T is None:
        gen_device = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32).to(device, dtype)
    if not isinstance(x_T, torch.Tensor) or tuple(x_T.shape) != shape:
        raise ValueError(f"x_T must be a tensor of shape {shape} (batch, C, H, W), "
                         f"got {tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__}")
    return x_T.to(device, dtype)


@torch.no_grad()
def _run(model, schedule, x, labels_in, timesteps, sampler, eta, scale, phi, generator, progress):
    """The loop itself: predict eps (one batched pass), step, repeat. No host syncs inside."""
    t_device = torch.tensor(timesteps, device=x.device)      # timesteps on the device, once
    abar = schedule.alphas_cumprod.tolist() + [1.0]          # abar[-1] = 1: after the last step
    t_prevs = timesteps[1:] + [-1]
    two_branches = labels_in.shape[0] != x.shape[0]
    for i in tqdm(range(len(timesteps)), desc=sampler, disable=not progress, leave=False):
        t, t_prev = timesteps[i], t_prevs[i]
        x_in = torch.cat([x, x]) if two_branches else x
        eps = guidance.combine_branches(predict_eps(model, x_in, t_device[i], labels_in), scale, phi)
        if sampler == "ddim":   # ddim_step / ddpm_step without their per-call checks
            x_prev, x0 = ddim_update(x, eps, abar[t], abar[t_prev], eta, generator=generator)
        else:
            x_prev, x0 = ddpm_update(x, eps, abar[t], abar[t_prev], t > 0, generator=generator)
        yield SampleState(i, t, x, x0)
        x = x_prev
    yield SampleState(len(timesteps), -1, x, x)


def sample(model: torch.nn.Module, schedule, labels=None, **kwargs) -> torch.Tensor:
    """The finished images (B, C, H, W), roughly in [-1, 1] (not clipped): sample_loop's last state.
    Same arguments as sample_loop, e.g. sample(unet, scheduler, [0, 1, 2], steps=50, guidance_scale=3)."""
    state = None
    for state in sample_loop(model, schedule, labels, **kwargs):
        pass
    return state.x_t
