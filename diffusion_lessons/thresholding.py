"""Guidance overshoot and dynamic thresholding, lesson 07 (the overshoot is first seen in lesson 06).

A large guidance scale s extrapolates the prediction, eps = eps_uncond + s (eps_text - eps_uncond), and
the clean latent it implies, z0_hat = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), overshoots: early in
sampling, where sqrt(abar_t) is small, it is far larger than any real latent. Two remedies, per sample:

- guidance rescale (Lin et al. 2024, sec. 3.4; diffusers' guidance_rescale): scale the guided prediction
  back to the standard deviation of the text branch's, mixed by phi (guidance.guided_denoiser's
  guidance_rescale);
- dynamic thresholding (Saharia et al. 2022, Imagen, sec. 2.3): s_p = the p-quantile of |z0_hat|,
  s_p = max(s_p, floor); clip z0_hat to [-s_p, s_p] and scale it by floor / s_p. Imagen's pixels live in
  [-1, 1], so its floor is 1 (diffusers' DDIMScheduler(thresholding=True)); a latent has its own range,
  so its floor is the same quantile measured on real latents (latent_floor).

thresholded_denoiser wraps any denoiser (loop.Denoiser) so that the prediction it returns implies the
thresholded z0_hat; guided_steps is t2i.generate_steps with both remedies as options.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from . import _checks, latents, text
from .guidance import guided_denoiser
from .loop import Denoiser, as_schedule, denoising_loop, final_alpha_cumprod, prediction_type_of, unet_denoiser
from .parameterisation import check_prediction_type, x0_and_eps

__all__ = ["dynamic_threshold", "latent_floor", "thresholded_denoiser", "guided_steps"]


def _check_percentile(percentile: float) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must lie in (0, 1], got {percentile!r}")
    return float(percentile)


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995, floor: float = 1.0) -> torch.Tensor:
    """Imagen's dynamic thresholding of a predicted clean sample x0 (B, ...), per sample:
    s = max(quantile(|x0|, percentile), floor); clip x0 to [-s, s], then multiply by floor / s.
    floor = 1 is Imagen's rule for pixels in [-1, 1] (and diffusers' DDIMScheduler(thresholding=True))."""
    _checks.tensor(x0, "x0", floating=True)
    _check_percentile(percentile)
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor > 0:
        raise ValueError(f"floor must be a positive number, got {floor!r}")
    flat = x0.float().reshape(x0.shape[0], -1)
    s = torch.quantile(flat.abs(), percentile, dim=1).clamp_min(floor)[:, None]
    return (flat.clamp(-s, s) * (floor / s)).reshape(x0.shape).to(x0.dtype)


@torch.no_grad()
def latent_floor(vae, images: torch.Tensor, percentile: float = 0.995) -> float:
    """The latent's own range: the percentile-quantile of |z| per image, averaged over real images
    (z = the scaled latent of each image's posterior mean)."""
    _check_percentile(percentile)
    z = latents.encode(vae, images, sample=False).float().flatten(1)
    return float(torch.quantile(z.abs(), percentile, dim=1).mean())


def _prediction_from_x0(x0: torch.Tensor, x_t: torch.Tensor, abar_t: float, prediction_type: str) -> torch.Tensor:
    """The network output (in prediction_type) that implies x0 at x_t: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
    a, b = math.sqrt(abar_t), math.sqrt(1 - abar_t)
    eps = (x_t - a * x0) / b
    return {"epsilon": eps, "sample": x0, "v_prediction": a * eps - b * x0}[prediction_type]


def thresholded_denoiser(denoise: Denoiser, schedule, percentile: float = 0.995, floor: float = 1.0,
                         prediction_type: str = "epsilon") -> Denoiser:
    """denoise wrapped so that its prediction implies the dynamically thresholded x0 (Imagen): x0 and eps
    from the prediction, x0 -> dynamic_threshold(x0, percentile, floor), and back to prediction_type.
    schedule: a NoiseSchedule or a diffusers scheduler (its alphas_cumprod)."""
    if not callable(denoise):
        raise ValueError(f"denoise must be a callable denoise(x, t, cond) (loop.unet_denoiser), got "
                         f"{type(denoise).__name__}")
    percentile = _check_percentile(percentile)
    dynamic_threshold(torch.zeros(1, 1), percentile, floor)  # checks floor now, not at the first step
    check_prediction_type(prediction_type)
    abar = as_schedule(schedule).alphas_cumprod.tolist()

    def thresholded(x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        abar_t = abar[int(t)]
        x0, _ = x0_and_eps(denoise(x, t, cond), x, abar_t, prediction_type)
        return _prediction_from_x0(dynamic_threshold(x0, percentile, floor), x, abar_t, prediction_type)

    return thresholded


def guided_steps(pipe, prompt: str | list[str], num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 generator: torch.Generator | None = None, num_images_per_prompt: int = 1,
                 guidance_rescale: float = 0.0, threshold: tuple[float, float] | None = None) -> Iterator[dict]:
    """t2i.generate_steps with guidance rescale (phi = guidance_rescale, as pipe(..., guidance_rescale=phi))
    and dynamic thresholding (threshold = (percentile, floor)); yields dict(t, z_t, z0_pred) after every step.
    With both off it gives t2i.generate_steps' numbers (a DDIMScheduler pipeline). Bad arguments are refused at
    the call."""
    from .t2i import _check_generation, sampler_for

    prompts = _check_generation(pipe, prompt, num_inference_steps, guidance_scale, generator, num_images_per_prompt,
                                guidance_rescale)
    if threshold is not None:
        if not isinstance(threshold, (tuple, list)) or len(threshold) != 2:
            raise ValueError(f"threshold must be (percentile, floor) or None, got {threshold!r}")
        dynamic_threshold(torch.zeros(1, 1), *threshold)
    sampler_for(pipe.scheduler)
    return _guided_steps(pipe, prompts, num_inference_steps, guidance_scale, generator, num_images_per_prompt,
                         guidance_rescale, threshold)


@torch.no_grad()
def _guided_steps(pipe, prompts, num_inference_steps, guidance_scale, generator, num_images_per_prompt,
                  guidance_rescale, threshold) -> Iterator[dict]:
    from .t2i import sampler_for

    unet, scheduler, device = pipe.unet, pipe.scheduler, pipe.unet.device
    emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts).repeat_interleave(num_images_per_prompt, 0)
    empty = None if guidance_scale == 1.0 else text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [""] * len(emb))
    ptype = prediction_type_of(scheduler)
    denoise = guided_denoiser(unet_denoiser(unet, "encoder_hidden_states"), guidance_scale, empty, guidance_rescale)
    if threshold is not None:
        denoise = thresholded_denoiser(denoise, scheduler, *threshold, prediction_type=ptype)
    shape = (len(emb), unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    z = torch.randn(shape, generator=generator, device=generator.device if generator else device).to(device)
    scheduler.set_timesteps(num_inference_steps, device=device)
    sampler = sampler_for(scheduler)
    states = denoising_loop(denoise, scheduler, z, emb, timesteps=scheduler.timesteps.tolist(), sampler=sampler,
                            prediction_type=ptype, final_alpha=final_alpha_cumprod(scheduler, sampler),
                            generator=generator, progress=False)
    before = next(states)
    for after in states:
        yield dict(t=before.t, z_t=after.x_t, z0_pred=before.x0)
        before = after
