"""Flow matching and rectified flow, lesson 08 (world-agnostic): straight paths from data to noise.

Notation (diffusers' FlowMatchEulerDiscreteScheduler; Lipman et al. 2023, Liu et al. 2023):

    sigma in [0, 1]              the noise level: 1 = pure noise, 0 = the data
    x_sigma = (1 - sigma) x0 + sigma noise          a straight line between a data point and its noise
    v = noise - x0 = d x_sigma / d sigma             the velocity along it: the network's training target
    timestep = 1000 sigma                            what the network is told (diffusers' convention)
    L = E || v_theta(x_sigma, 1000 sigma, label) - (noise - x0) ||^2     the flow-matching loss
    x_{sigma'} = x_sigma + (sigma' - sigma) v_theta  one Euler step of the ODE dx/dsigma = v, sigma' < sigma

A network that minimises L learns the *average* velocity of all the lines through x_sigma, so its paths are
curved where lines cross; rectified flow's reflow (Liu et al. 2023) retrains on the model's own
(noise, sample) pairs, whose lines cross less, and the paths straighten.

The relation to Part I: with abar_t of a DDPM schedule, sigma = sqrt(1 - abar) / (sqrt(abar) + sqrt(1 - abar))
and x_sigma = x_t / (sqrt(abar) + sqrt(1 - abar)) put x_t on the straight line, and one deterministic DDIM step
(eta = 0) is exactly one Euler step there with v = eps_hat - x0_hat (flow_sigma_from_alpha_bar, to_flow_state).

The denoiser convention is the loop's (loop.py): denoise(x, t, cond) -> the network's raw output, here the
velocity; t is the timestep 1000 sigma, a 0-d float tensor in sampling (as diffusers passes
scheduler.timesteps[i]) or one per sample in training. unet_denoiser and guidance.guided_denoiser apply
unchanged: guidance is a weighted sum with weights adding to 1, and x0 and noise are affine in v.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import _checks
from .data import NULL_LABEL
from .guidance import check_scales, drop_labels, guided_denoiser
from .loop import Denoiser, unet_denoiser
from .sigmas import NUM_TRAIN_TIMESTEPS, SIGMA_SAMPLERS, draw_sigmas, flow_sigmas

__all__ = ["FlowState", "interpolate", "velocity_target", "x0_from_velocity", "noise_from_velocity",
           "flow_euler_step", "flow_sigma_from_alpha_bar", "alpha_bar_from_flow_sigma", "to_flow_state",
           "draw_flow_batch", "flow_matching_loss", "flow_batch_fn", "flow_loss_fn", "flow_loop", "flow_sample",
           "sample_with_flow_scheduler"]


@dataclass
class FlowState:
    """One state of flow_loop: x_t at noise level sigma, the velocity the network gave there and the clean
    point it implies, x0 = x_t - sigma v. The last state has sigma = 0 (or the ladder's end), velocity None."""

    i: int
    sigma: float
    x_t: torch.Tensor
    x0: torch.Tensor
    velocity: torch.Tensor | None


# ---- the straight line and its velocity --------------------------------------------------------------------

def _check_like(x: torch.Tensor, other: torch.Tensor, name: str, ref: str = "x0") -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise ValueError(f"{ref} must be a floating-point tensor, got {type(x).__name__}")
    if not isinstance(other, torch.Tensor) or tuple(other.shape) != tuple(x.shape):
        raise ValueError(f"{name} must be a tensor with the shape of {ref} {tuple(x.shape)}, "
                         f"got {tuple(getattr(other, 'shape', ())) or type(other).__name__}")


def _per_sample(sigma, like: torch.Tensor) -> torch.Tensor:
    """sigma (a number, a 0-d tensor or one per sample) shaped to broadcast over like (B, ...)."""
    if not isinstance(sigma, torch.Tensor):
        _checks.number(sigma, "sigma")
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        return sigma
    if sigma.ndim != 1 or sigma.shape[0] != like.shape[0]:
        raise ValueError(f"sigma must be one number or one per sample ({like.shape[0]}), got shape "
                         f"{tuple(sigma.shape)}")
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """x_sigma = (1 - sigma) x0 + sigma noise: the point at noise level sigma on the straight line from x0
    (sigma = 0) to its noise (sigma = 1); diffusers' FlowMatchEulerDiscreteScheduler.scale_noise."""
    _check_like(x0, noise, "noise")
    s = _per_sample(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = noise - x0 = d x_sigma / d sigma: the constant velocity along the line, the network's target."""
    _check_like(x0, noise, "noise")
    return noise - x0


def x0_from_velocity(x_t: torch.Tensor, velocity: torch.Tensor, sigma) -> torch.Tensor:
    """The clean point a velocity implies: follow the line to sigma = 0, x0 = x_t - sigma v."""
    _check_like(x_t, velocity, "velocity", "x_t")
    return x_t - _per_sample(sigma, x_t) * velocity


def noise_from_velocity(x_t: torch.Tensor, velocity: torch.Tensor, sigma) -> torch.Tensor:
    """The noise a velocity implies: follow the line to sigma = 1, noise = x_t + (1 - sigma) v."""
    _check_like(x_t, velocity, "velocity", "x_t")
    return x_t + (1 - _per_sample(sigma, x_t)) * velocity


def _sigma_value(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be one number for the whole batch, got {value.numel()} values")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def flow_euler_step(x_t: torch.Tensor, velocity: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One Euler step of dx/dsigma = v from sigma down to sigma_next: x_next = x_t + (sigma_next - sigma) v.
    Computed as FlowMatchEulerDiscreteScheduler.step does (the sigmas in float32, at least float32 arithmetic,
    the result in the velocity's dtype), so it equals that step for the same sigmas."""
    _check_like(x_t, velocity, "velocity", "x_t")
    sigma, sigma_next = _sigma_value(sigma, "sigma"), _sigma_value(sigma_next, "sigma_next")
    if sigma_next > sigma:
        raise ValueError(f"sigma_next must not exceed sigma = {sigma} (steps go from noise to data), "
                         f"got {sigma_next}")
    return _euler_update(x_t, velocity, sigma, sigma_next)


def _euler_update(x_t: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """flow_euler_step without checks (the loop's)."""
    work = torch.promote_types(x_t.dtype, torch.float32)
    dt = torch.tensor(sigma_next, dtype=torch.float32) - torch.tensor(sigma, dtype=torch.float32)  # as diffusers
    return (x_t.to(work) + dt.to(work) * velocity).to(velocity.dtype)


# ---- Part I in flow coordinates: DDIM is an Euler step -------------------------------------------------------

def _unit_interval(value, name: str):
    """A number or a floating-point tensor with every value in [0, 1]."""
    if isinstance(value, torch.Tensor):
        if not value.dtype.is_floating_point or not bool(((value >= 0) & (value <= 1)).all()):
            raise ValueError(f"{name} must hold numbers in [0, 1], got a {value.dtype} tensor of {value.numel()} values")
        return value
    return _checks.number(value, name, 0, 1)


def flow_sigma_from_alpha_bar(abar):
    """The flow sigma of DDPM's x_t: sigma = sqrt(1 - abar) / (sqrt(abar) + sqrt(1 - abar)) (numbers or tensors)."""
    abar = _unit_interval(abar, "abar")
    a, b = abar ** 0.5, (1 - abar) ** 0.5
    return b / (a + b)


def alpha_bar_from_flow_sigma(sigma):
    """The inverse: abar = (1 - sigma)^2 / ((1 - sigma)^2 + sigma^2)."""
    sigma = _unit_interval(sigma, "sigma")
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma ** 2)


def to_flow_state(x_t: torch.Tensor, abar) -> torch.Tensor:
    """x_t = sqrt(abar) x0 + sqrt(1 - abar) eps rescaled onto the straight line: x_t / (sqrt(abar) + sqrt(1 - abar))
    = (1 - sigma) x0 + sigma eps with sigma = flow_sigma_from_alpha_bar(abar)."""
    _checks.tensor(x_t, "x_t", floating=True)
    abar = _unit_interval(abar, "abar")
    return x_t / (abar ** 0.5 + (1 - abar) ** 0.5)


# ---- training: the loss and the batches of train_loop -------------------------------------------------------

def draw_flow_batch(x0: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
                    p_uncond: float = 0.0, noise: torch.Tensor | None = None, sigma_kind: str = "uniform",
                    m: float = 0.0, s: float = 1.0, shift: float = 1.0) -> dict[str, Any]:
    """The randomness of one flow-matching batch, in this order: sigma (sigmas.draw_sigmas: 'uniform' or
    'logit_normal', then shift), noise ~ N(0, I) shaped like x0 unless given (reflow passes the paired noise),
    labels after dropout (None stays None). All drawn on the CPU generator. Returns dict(x0, noise, sigma, labels)."""
    _checks.tensor(x0, "x0", floating=True)
    _checks.choice(sigma_kind, "sigma_kind", SIGMA_SAMPLERS)
    sigma = draw_sigmas(x0.shape[0], generator, sigma_kind, m=m, s=s, shift=shift)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    _check_like(x0, noise, "noise")
    if labels is not None:
        labels = drop_labels(labels.cpu().long(), p_uncond, generator)
    return dict(x0=x0, noise=noise.to(x0.device), sigma=sigma.to(x0.device), labels=labels)


def flow_matching_loss(denoise: Denoiser, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
                       labels: torch.Tensor | None = None,
                       timestep_scale: float = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """L = mean || denoise(x_sigma, timestep_scale sigma, labels) - (noise - x0) ||^2 with
    x_sigma = (1 - sigma) x0 + sigma noise, one sigma per sample (Lipman et al. 2023's conditional flow matching)."""
    _check_denoiser(denoise)
    _checks.number(timestep_scale, "timestep_scale", above=0)
    x_t = interpolate(x0, noise, sigma)
    prediction = denoise(x_t, sigma.to(x0.device, x0.dtype) * timestep_scale, labels)
    return F.mse_loss(prediction, velocity_target(x0, noise))


def _check_denoiser(denoise) -> None:
    if not callable(denoise):
        raise ValueError(f"denoise must be a callable denoise(x, t, cond) (loop.unet_denoiser), got "
                         f"{type(denoise).__name__}")


def flow_batch_fn(x0: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None, p_uncond: float = 0.0,
                  noise: torch.Tensor | None = None, **sigma_options) -> Callable[[torch.Generator], dict]:
    """batch_fn for training.train_loop: rows of x0 drawn with replacement, then draw_flow_batch. noise: one
    noise per row of x0 (reflow: the noise each sample came from), else fresh noise every batch.
    sigma_options: sigma_kind, m, s, shift (draw_flow_batch)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if noise is not None:
        _check_like(x0, noise, "noise")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != x0.shape[0]):
        raise ValueError(f"labels must have shape ({x0.shape[0]},), got {tuple(labels.shape)}")
    labels = labels.long().cpu() if labels is not None else None

    def batch_fn(generator: torch.Generator) -> dict:
        idx = torch.randint(0, x0.shape[0], (batch_size,), generator=generator)
        return draw_flow_batch(x0[idx], generator, labels[idx] if labels is not None else None, p_uncond,
                               noise[idx] if noise is not None else None, **sigma_options)

    return batch_fn


def flow_loss_fn(denoise: Denoiser, timestep_scale: float = NUM_TRAIN_TIMESTEPS) -> Callable[[dict], torch.Tensor]:
    """loss_fn for training.train_loop: flow_matching_loss on a batch of flow_batch_fn."""
    _check_denoiser(denoise)
    _checks.number(timestep_scale, "timestep_scale", above=0)

    def loss_fn(batch: dict) -> torch.Tensor:
        return flow_matching_loss(denoise, **batch, timestep_scale=timestep_scale)

    return loss_fn


# ---- sampling: the Euler loop, and the same with plain diffusers --------------------------------------------

def _check_ladder(sigmas) -> list[float]:
    ladder = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1).tolist()
    if len(ladder) < 2 or any(not math.isfinite(v) or v < 0 for v in ladder) \
            or any(a < b for a, b in zip(ladder, ladder[1:])):
        raise ValueError(f"sigmas must hold at least two finite numbers >= 0, descending (the last is where "
                         f"sampling ends, usually 0), got {sigmas!r}")
    return ladder


def flow_loop(denoise: Denoiser, x_T: torch.Tensor, cond: Any = None, *, sigmas,
              timestep_scale: float = NUM_TRAIN_TIMESTEPS, progress: bool = True) -> Iterator[FlowState]:
    """Euler sampling of a flow model: at each sigma of the ladder (sigmas.flow_sigmas, ending at 0) ask
    denoise(x, timestep_scale sigma, cond) for the velocity and step to the next sigma; yields every FlowState,
    the last holding the sample. Timesteps are computed in float32 as diffusers' scheduler.timesteps."""
    if not isinstance(x_T, torch.Tensor) or not x_T.dtype.is_floating_point or x_T.ndim < 2:
        raise ValueError(f"x_T must be a floating-point tensor (batch, ...), got "
                         f"{x_T.dtype if isinstance(x_T, torch.Tensor) else type(x_T).__name__}")
    if isinstance(cond, torch.Tensor) and cond.shape[0] != x_T.shape[0]:
        raise ValueError(f"cond must hold one condition per sample ({x_T.shape[0]}), got {cond.shape[0]}")
    ladder = _check_ladder(sigmas)
    return _run(denoise, x_T, cond, ladder, timestep_scale, progress)


@torch.no_grad()
def _run(denoise, x, cond, ladder, timestep_scale, progress):
    timesteps = (torch.tensor(ladder[:-1], dtype=torch.float32) * timestep_scale).to(x.device)  # once, no syncs
    for i in tqdm(range(len(ladder) - 1), desc="euler", disable=not progress, leave=False):
        velocity = denoise(x, timesteps[i], cond)                       # 1. the network's velocity
        x0 = x - ladder[i] * velocity                                    # 2. where the line it points along ends
        yield FlowState(i, ladder[i], x, x0, velocity)
        x = _euler_update(x, velocity, ladder[i], ladder[i + 1])        # 3. one Euler step
    yield FlowState(len(ladder) - 1, ladder[-1], x, x, None)


def flow_sample(model: torch.nn.Module, labels: torch.Tensor, steps: int = 50, guidance_scale: float = 1.0,
                shift: float = 1.0, generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                spacing: str = "diffusers", progress: bool = False) -> torch.Tensor:
    """Class-conditional samples of a flow UNet2DModel with the package's loop: flow_sigmas(steps, shift, spacing),
    classifier-free guidance over NULL_LABEL (guidance.guided_denoiser); x_T drawn on the CPU generator."""
    labels = _checks.labels(labels, "labels", NULL_LABEL + 1, allow_empty=False)   # NULL_LABEL: unconditional
    sigmas = flow_sigmas(_checks.integer(steps, "steps", 1), shift, spacing)
    check_scales(guidance_scale)
    _checks.generator(generator)
    _check_flow_unet(model, "model")
    p = next(model.parameters())
    labels = labels.to(p.device)
    if x_T is None:
        shape = (labels.shape[0], model.config.in_channels, *_hw(model.config.sample_size))
        x_T = torch.randn(shape, generator=generator, dtype=p.dtype).to(p.device)
    denoise = guided_denoiser(unet_denoiser(model, "class_labels"), guidance_scale,
                              torch.full_like(labels, NULL_LABEL))
    *_, last = flow_loop(denoise, x_T, labels, sigmas=sigmas, progress=progress)
    return last.x_t


def _check_flow_unet(model, name: str) -> None:
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config") or not hasattr(model, "dtype"):
        raise ValueError(f"{name} must be a diffusers model with a config (a flow UNet2DModel), got "
                         f"{type(model).__name__}")


def _hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


@torch.no_grad()
def sample_with_flow_scheduler(unet: torch.nn.Module, scheduler, labels, num_inference_steps: int = 50,
                               guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                               x_T: torch.Tensor | None = None, sigmas: list[float] | None = None,
                               progress: bool = False) -> torch.Tensor:
    """The plain diffusers loop for a shipped flow model: FlowMatchEulerDiscreteScheduler's own timesteps, the
    UNet2DModel called with each, classifier-free guidance over label 10 (NULL_LABEL), scheduler.step.
    x_T drawn on the CPU generator (diffusers' randn_tensor on a CPU generator). sigmas: set_timesteps(sigmas=...)
    instead of its default ladder, before the scheduler's shift (e.g. 1 - i / n for n even steps)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    check_scales(guidance_scale)
    if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        raise ValueError(f"scheduler must be a FlowMatchEulerDiscreteScheduler, got {type(scheduler).__name__}")
    _checks.integer(num_inference_steps, "num_inference_steps", 1)
    labels = _checks.labels(labels, "labels", NULL_LABEL + 1, allow_empty=False)   # NULL_LABEL: unconditional
    _checks.generator(generator)
    if sigmas is not None:
        _check_ladder(list(sigmas) + [0.0])
    _check_flow_unet(unet, "unet")
    device, dtype = unet.device, unet.dtype
    labels = labels.to(device)
    null = torch.full_like(labels, NULL_LABEL)
    if x_T is None:
        shape = (labels.shape[0], unet.config.in_channels, *_hw(unet.config.sample_size))
        x_T = torch.randn(shape, generator=generator, dtype=dtype)
    x = x_T.to(device)                      # flow noise is N(0, I) at sigma = 1: no init_noise_sigma scaling
    if sigmas is None:
        scheduler.set_timesteps(num_inference_steps, device=device)
    else:
        scheduler.set_timesteps(sigmas=[float(v) for v in sigmas], device=device)
    for t in tqdm(scheduler.timesteps, desc="FlowMatchEuler", disable=not progress, leave=False):
        guided = guidance_scale != 1.0
        x_in, labels_in = (torch.cat([x, x]), torch.cat([labels, null])) if guided else (x, labels)
        v = unet(x_in, t.expand(x_in.shape[0]), class_labels=labels_in).sample   # the velocity
        if guided:
            v_cond, v_uncond = v.chunk(2)
            v = v_uncond + guidance_scale * (v_cond - v_uncond)
        x = scheduler.step(v, t, x).prev_sample
    return x
