"""Sampling the digits, lessons 04-05: sample_loop and sample, the one loop (loop.py) driven by a model.

The engine lives in small modules, re-exported here under the names the lessons use:
  parameterisation  eps, x0, v and their conversions (x0_from_eps, eps_from_v, ...)
  samplers          one DDPM step and one DDIM step (ddpm_step, ddim_step), checked against diffusers
  loop              the denoiser convention denoise(x, t, cond), the timesteps, the one loop
  guidance          classifier-free guidance as a wrapper around a denoiser

sample_loop turns a model (UNet2DModel or TinyUNet), a schedule and digit labels into a denoiser
(guided when guidance_scale != 1) and runs the loop. With a diffusers scheduler as the schedule its
config.prediction_type says what the network predicts ('epsilon', 'v_prediction' or 'sample'), and
its timestep_spacing, steps_offset and set_alpha_to_one set the timesteps and the last step (the
spacings and why the digits use 'leading': loop's docstring).
"""

from __future__ import annotations

from typing import Iterator

import torch

from . import _checks, guidance
from .data import NULL_LABEL
from .loop import (SPACINGS, Denoiser, SampleState, as_schedule, denoising_loop, final_alpha_cumprod,
                   prediction_type_of, sampling_timesteps, unet_denoiser)
from .parameterisation import (PREDICTION_TYPES, check_prediction_type, eps_from_v, eps_from_x0, v_from_x0_eps,
                               x0_and_eps, x0_from_eps, x0_from_v)
from .samplers import SAMPLERS, StepOutput, check_eta, ddim_step, ddim_update, ddpm_step, ddpm_update

__all__ = [  # re-exported from the engine's modules, as the lessons import them from here
    "SAMPLERS", "SPACINGS", "PREDICTION_TYPES", "StepOutput", "SampleState", "Denoiser",
    "x0_from_eps", "eps_from_x0", "v_from_x0_eps", "x0_from_v", "eps_from_v", "x0_and_eps",
    "ddpm_step", "ddpm_update", "ddim_step", "ddim_update", "as_schedule", "sampling_timesteps",
    "prediction_type_of", "final_alpha_cumprod", "unet_denoiser", "denoising_loop",
    "model_device_dtype", "image_shape", "sample_loop", "sample",
]


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's weights live and their dtype: the loop works there."""
    _checks.module(model)
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError("model must have parameters (its device and dtype are theirs), got a model without any")
    return p.device, p.dtype


def image_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of the images a UNet2DModel (from its config) or a TinyUNet makes."""
    _checks.module(model)
    cfg = getattr(model, "config", model)
    if not hasattr(cfg, "sample_size") or not hasattr(cfg, "in_channels"):
        raise ValueError(f"model must say its image size (config.sample_size and in_channels, as a UNet2DModel or "
                         f"TinyUNet does), got {type(model).__name__}")
    size = cfg.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (cfg.in_channels, h, w)


def _labels_and_batch(labels, num_samples: int | None, x_T: torch.Tensor | None) -> torch.Tensor | None:
    """Asked labels as (B,) int64 (None: unconditional); an int label is repeated num_samples times."""
    if num_samples is not None:
        num_samples = _checks.integer(num_samples, "num_samples", 1)
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


def _start_noise(shape: tuple, x_T, generator, device, dtype) -> torch.Tensor:
    """x_T checked against shape, or drawn with the generator (on its device, in float32, as before)."""
    if x_T is None:
        gen_device = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32).to(device, dtype)
    if not isinstance(x_T, torch.Tensor) or (shape is not None and tuple(x_T.shape) != shape):
        raise ValueError(f"x_T must be a tensor of shape {shape} (batch, C, H, W), "
                         f"got {tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__}")
    return x_T.to(device, dtype)


def _class_conditional(model) -> bool:
    """False for a diffusers model built without class embeddings (then cond is None, not NULL_LABEL)."""
    cfg = getattr(model, "config", None)
    return cfg is None or getattr(cfg, "num_class_embeds", None) is not None


def _denoiser_and_cond(model, labels, batch: int, guidance_scale, negative_label, guidance_rescale, device):
    """The model as a denoiser (guided when needed) and the conditions handed to the loop."""
    denoise = unet_denoiser(model, "class_labels") if isinstance(model, torch.nn.Module) else model
    if labels is None:
        if guidance_scale != 1.0 or negative_label is not None or guidance_rescale != 0.0:
            raise ValueError("labels: guidance (guidance_scale != 1, negative_label, guidance_rescale) needs labels")
        null = torch.full((batch,), NULL_LABEL, dtype=torch.long, device=device)
        return denoise, (null if _class_conditional(model) else None)
    negative = guidance.check_guidance(labels, guidance_scale, negative_label, guidance_rescale)
    uncond = negative if negative is not None else torch.full_like(labels, NULL_LABEL)
    guided = guidance.guided_denoiser(denoise, guidance_scale, uncond.to(device), guidance_rescale)
    return guided, labels.to(device)


def sample_loop(model: torch.nn.Module | Denoiser, schedule, labels=None, *, steps: int = 50,
                sampler: str = "ddim", eta: float | None = None, spacing: str | None = None,
                prediction_type: str | None = None, guidance_scale: float = 1.0, negative_label=None,
                guidance_rescale: float = 0.0, num_samples: int | None = None, x_T: torch.Tensor | None = None,
                generator: torch.Generator | None = None, progress: bool = True) -> Iterator[SampleState]:
    """Sample from noise, yielding every SampleState (x_t and predicted x0 at each of `steps` timesteps,
    then the finished image with t = -1). labels: a digit, a list or a (B,) tensor, None = unconditional;
    guidance_scale s, negative_label and guidance_rescale as in guidance.guided_eps (one batched pass).
    prediction_type and spacing: None = the scheduler's config ('epsilon' and 'leading' for a NoiseSchedule).
    x_T: the starting noise (B, C, H, W), else drawn with `generator`. Runs on the model's device.
    model may also be a denoiser callable denoise(x, t, labels) (see loop); then x_T is required."""
    ns = as_schedule(schedule)
    _checks.check_trained_timesteps(model, ns.num_steps)
    _checks.generator(generator)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if eta is not None and sampler == "ddpm":
        raise ValueError("eta applies to sampler='ddim' only ('ddpm' is the eta = 1 case)")
    eta = check_eta(0.0 if eta is None else eta)
    prediction_type = check_prediction_type(prediction_type or prediction_type_of(schedule))
    timesteps = sampling_timesteps(schedule, steps, spacing)
    labels = _labels_and_batch(labels, num_samples, x_T)
    if isinstance(model, torch.nn.Module):
        device, dtype = model_device_dtype(model)
        batch = labels.shape[0] if labels is not None else (num_samples if x_T is None else x_T.shape[0])
        x_T = _start_noise((batch, *image_shape(model)), x_T, generator, device, dtype)
    elif callable(model):
        if not isinstance(x_T, torch.Tensor):
            raise ValueError("x_T: give the starting noise when model is a denoiser callable, not a network")
        device, batch = x_T.device, x_T.shape[0]
        if labels is not None and labels.shape[0] != batch:
            raise ValueError(f"labels must hold one label per sample of x_T ({batch}), got {labels.shape[0]}")
    else:
        raise ValueError(f"model must be a network (UNet2DModel, TinyUNet) or a denoiser callable, "
                         f"got {type(model).__name__}")
    denoise, cond = _denoiser_and_cond(model, labels, batch, guidance_scale, negative_label, guidance_rescale,
                                       device)
    return denoising_loop(denoise, ns, x_T, cond, timesteps=timesteps, sampler=sampler, eta=eta,
                          prediction_type=prediction_type, final_alpha=final_alpha_cumprod(schedule, sampler),
                          generator=generator, progress=progress)


def sample(model: torch.nn.Module | Denoiser, schedule, labels=None, **kwargs) -> torch.Tensor:
    """The finished images (B, C, H, W), roughly in [-1, 1] (not clipped): sample_loop's last state.
    Same arguments as sample_loop, e.g. sample(unet, scheduler, [0, 1, 2], steps=50, guidance_scale=3)."""
    state = None
    for state in sample_loop(model, schedule, labels, **kwargs):
        pass
    return state.x_t
