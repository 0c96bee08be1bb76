"""One trained model, many solvers (lesson 09): diffusers' schedulers built from one shipped config, and the plain
loop that drives them, counting model evaluations.

A sampler solves the probability-flow ODE (Song et al. 2021) of the model's noise schedule. In the
variance-exploding coordinates of Karras et al. (2022), x = x_t / sqrt(abar_t) and
sigma = sqrt((1 - abar_t) / abar_t), the ODE reads

    dx / dsigma = (x - x0_hat(x, sigma)) / sigma,

and every solver here is a way of stepping it from a large sigma down to 0:
  euler     one evaluation per step: x_next = x + (sigma_next - sigma) (x - x0_hat) / sigma (sigma_euler_step)
  heun      Euler, then the slope at the landing point, averaged with the first: two evaluations per step
            (the last step, to sigma = 0, is a plain Euler step)                       Karras et al. 2022, alg. 1
  dpm++2m   DPM-Solver++ (2M): the exact exponential integrator of the x0 form, with the previous step's x0
            reused as a second-order correction; one evaluation per step              Lu et al. 2022
  unipc     UniPC: a predictor and a corrector that reuses the next evaluation; one per step  Zhao et al. 2023
  ddim      DDIM (eta 0), an Euler step of the same ODE in other coordinates (lesson 08); one per step

Spacings say which of the T training timesteps the N steps visit (Lin et al. 2024, table 2):
  leading   0, T/N, 2T/N, ... (the shipped config's): the first step is NOT at T - 1
  linspace  evenly from T - 1 down to 0
  trailing  T - 1, T - 1 - T/N, ...: the first step at T - 1, where x_T is pure noise
karras=True replaces the ladder by Karras et al.'s (sigmas.karras_sigmas) between the smallest and largest sigma of
the spacing's ladder. zero_snr=True rescales the betas so that abar_T = 0 (diffusers' rescale_betas_zero_snr).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                       UniPCMultistepScheduler)
from tqdm.auto import tqdm

from .data import NULL_LABEL
from .guidance import check_labels, check_scales

SOLVERS = {"euler": EulerDiscreteScheduler, "heun": HeunDiscreteScheduler, "dpm++2m": DPMSolverMultistepScheduler,
           "unipc": UniPCMultistepScheduler, "ddim": DDIMScheduler}
SOLVER_NAMES = tuple(SOLVERS)
SPACINGS = ("leading", "linspace", "trailing")
LADDERS = {   # the four ladders lesson 09 compares, as make_solver arguments
    "leading": dict(spacing="leading"),                                # the shipped config's: starts below T - 1
    "trailing": dict(spacing="trailing"),                              # starts at T - 1
    "karras": dict(karras=True, spacing="linspace"),                   # Karras, from the schedule's largest sigma
    "karras80": dict(karras=True, spacing="linspace", sigma_max=80.0),  # Karras, from Karras et al.'s sigma_max 80
}
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")
_EXTRA = {"dpm++2m": dict(algorithm_type="dpmsolver++", solver_order=2),   # DPM-Solver++ (2M)
          "unipc": dict(solver_order=2),
          "ddim": dict(set_alpha_to_one=True, clip_sample=False)}           # eta 0 is step()'s default

__all__ = ["SOLVERS", "SOLVER_NAMES", "SPACINGS", "LADDERS", "SolverRun", "make_solver", "steps_for_evaluations",
           "sigma_euler_step", "sample_with_solver"]


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _schedule_config(config) -> dict:
    """The noise-schedule part of a scheduler's config (a scheduler, its .config or a dict)."""
    config = getattr(config, "config", config)
    if not hasattr(config, "keys") or "beta_schedule" not in config or "num_train_timesteps" not in config:
        raise ValueError(f"config must be a diffusers scheduler or its config (with beta_schedule, "
                         f"num_train_timesteps), got {type(config).__name__}")
    return {k: config[k] for k in _SCHEDULE_KEYS if k in config}


def make_solver(name: str, config, *, karras: bool = False, spacing: str | None = None, zero_snr: bool = False,
                sigma_max: float | None = None):
    """A fresh diffusers scheduler of solver `name` (SOLVER_NAMES) on the noise schedule of `config` (a scheduler
    or its config): same betas and prediction type. spacing: None keeps the config's; karras: Karras sigmas (not
    for 'ddim'), from sigma_max (None: the largest sigma of the spacing's ladder; Karras et al. use 80) down;
    zero_snr: rescale the betas to abar_T = 0 (not for 'heun', which has no such option)."""
    if name not in SOLVERS:
        raise ValueError(f"name must be one of {SOLVER_NAMES}, got {name!r}")
    karras, zero_snr = _flag(karras, "karras"), _flag(zero_snr, "zero_snr")
    if spacing is not None and spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS} or None (the config's), got {spacing!r}")
    if karras and name == "ddim":
        raise ValueError("karras: DDIMScheduler has no Karras sigmas (use euler, heun, dpm++2m or unipc)")
    if sigma_max is not None:
        if not karras:
            raise ValueError("sigma_max: only the Karras ladder takes a largest sigma (set karras=True)")
        if isinstance(sigma_max, bool) or not isinstance(sigma_max, numbers.Real) or not sigma_max > 0:
            raise ValueError(f"sigma_max must be a number > 0, got {sigma_max!r}")
    if zero_snr and name == "heun":
        raise ValueError("zero_snr: HeunDiscreteScheduler has no rescale_betas_zero_snr option")
    kwargs = {**_schedule_config(config), **_EXTRA.get(name, {})}
    if spacing is not None:
        kwargs["timestep_spacing"] = spacing
    if karras:
        kwargs["use_karras_sigmas"] = True
    if zero_snr:
        kwargs["rescale_betas_zero_snr"] = True
    elif name == "heun":
        kwargs.pop("rescale_betas_zero_snr", None)
    scheduler = SOLVERS[name](**kwargs)
    if sigma_max is not None:   # read by every scheduler's Karras conversion; only some take it as an argument
        scheduler.register_to_config(sigma_max=float(sigma_max))
    return scheduler


def steps_for_evaluations(name: str, evaluations: int) -> int:
    """The most steps of solver `name` that cost at most `evaluations` model evaluations:
    Heun's N steps cost 2N - 1 (its last step is a plain Euler step), every other solver's N steps cost N."""
    if name not in SOLVERS:
        raise ValueError(f"name must be one of {SOLVER_NAMES}, got {name!r}")
    if isinstance(evaluations, bool) or not isinstance(evaluations, numbers.Integral) or evaluations < 1:
        raise ValueError(f"evaluations must be an int >= 1, got {evaluations!r}")
    return (int(evaluations) + 1) // 2 if name == "heun" else int(evaluations)


def sigma_euler_step(x: torch.Tensor, x0_hat: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Euler step of the probability-flow ODE in sigma form, dx/dsigma = (x - x0_hat) / sigma
    (Karras et al. 2022, alg. 1 without its second stage): x + (sigma_next - sigma) (x - x0_hat) / sigma.
    x is the variance-exploding state x_t / sqrt(abar_t), as EulerDiscreteScheduler keeps it."""
    if not isinstance(x, torch.Tensor) or not isinstance(x0_hat, torch.Tensor) or x.shape != x0_hat.shape:
        raise ValueError(f"x0_hat must be a tensor of x's shape {tuple(getattr(x, 'shape', ()))}, "
                         f"got {tuple(getattr(x0_hat, 'shape', ())) or type(x0_hat).__name__}")
    values = {}
    for key, value in (("sigma", sigma), ("sigma_next", sigma_next)):
        value = float(value) if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"{key} must be a number >= 0, got {value!r}")
        values[key] = float(value)
    if values["sigma"] <= 0:
        raise ValueError(f"sigma must be > 0 (the slope divides by it), got {sigma!r}")
    if values["sigma_next"] > values["sigma"]:
        raise ValueError(f"sigma_next must not exceed sigma = {values['sigma']}, got {values['sigma_next']}")
    slope = (x - x0_hat) / values["sigma"]
    return x + (values["sigma_next"] - values["sigma"]) * slope


class SolverRun(NamedTuple):
    images: torch.Tensor   # (B, C, H, W), the finished samples
    evaluations: int       # how many times the network ran (each on the batched [cond; uncond] pair)
    timesteps: list        # the timesteps the network was called with, in order


def _start(unet, batch: int, x_T, generator) -> torch.Tensor:
    size = unet.config.sample_size
    shape = (batch, unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    if x_T is None:
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    if not isinstance(x_T, torch.Tensor) or tuple(x_T.shape) != shape:
        raise ValueError(f"x_T must be a tensor of shape {shape}, got "
                         f"{tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__}")
    return x_T


@torch.no_grad()
def sample_with_solver(unet: torch.nn.Module, scheduler, labels, *, num_steps: int, guidance_scale: float = 3.0,
                       x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                       progress: bool = False) -> SolverRun:
    """Diffusers' loop, plainly: set_timesteps, x = x_T * init_noise_sigma, then for each timestep
    scale_model_input, one network pass on [x; x] with [labels; 10] (classifier-free guidance), step.
    x_T: unit Gaussian noise (B, C, H, W), else drawn on the CPU with `generator`. Returns a SolverRun."""
    if not hasattr(scheduler, "set_timesteps") or not hasattr(scheduler, "step"):
        raise ValueError(f"scheduler must be a diffusers scheduler (make_solver), got {type(scheduler).__name__}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    check_scales(guidance_scale)
    labels = check_labels(labels)
    device, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
    x = _start(unet, labels.shape[0], x_T, generator).to(device, dtype)
    labels = labels.to(device)
    both = torch.cat([labels, torch.full_like(labels, NULL_LABEL)])
    scheduler.set_timesteps(int(num_steps), device=device)
    if hasattr(scheduler, "set_begin_index"):   # count steps from the first: Karras ladders can repeat a timestep
        scheduler.set_begin_index(0)
    x = x * scheduler.init_noise_sigma                   # Euler and Heun keep x at sigma's scale
    seen = []
    for t in tqdm(scheduler.timesteps, desc=type(scheduler).__name__, disable=not progress, leave=False):
        x_in = scheduler.scale_model_input(torch.cat([x, x]), t)
        out = unet(x_in, t.expand(x_in.shape[0]), class_labels=both).sample   # v for the shipped digits model
        cond, uncond = out.chunk(2)
        x = scheduler.step(uncond + guidance_scale * (cond - uncond), t, x).prev_sample
        seen.append(float(t))
    return SolverRun(x, len(seen), seen)
