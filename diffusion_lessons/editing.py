"""Editing by partial noising (lesson 11, Part III): img2img, also called SDEdit (Meng et al. 2022).

Start from the user's picture instead of pure noise: encode it to latents z_0, noise them to the timestep t_start
that `strength` picks ("how far back into the noise": 1.0 is pure noise, the picture forgotten; 0.2 keeps most
of it), then run only the rest of the denoising loop with the new prompt:

    1. z_0 = scaling_factor * (a sample of the VAE encoder's q(z | x))
    2. the schedule's num_inference_steps timesteps; keep the last floor(num_inference_steps * strength) of them
    3. z_{t_start} = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps     (scheduler.add_noise, t = the first kept timestep)
    4. the guided denoising loop of lesson 07 over the kept timesteps (t2i's, the package's one loop)
    5. decode

The same numbers as diffusers' StableDiffusionImg2ImgPipeline(**pipe.components) for the same generator seed
(it draws the encoder's sample first, then the noise, as here).
"""

from __future__ import annotations

from typing import Iterator

import torch

from . import _checks, latents
from .t2i import DEFAULT_GUIDANCE, DEFAULT_STEPS, _check_generation, _generate_steps, sampler_for

__all__ = ["img2img_timesteps", "img2img_steps", "img2img"]


def img2img_timesteps(scheduler, num_inference_steps: int, strength: float) -> list[int]:
    """The timesteps img2img runs: the last min(int(num_inference_steps * strength), num_inference_steps) of the
    scheduler's num_inference_steps (after scheduler.set_timesteps), as diffusers' img2img pipeline takes them."""
    num_inference_steps = _checks.integer(num_inference_steps, "num_inference_steps", 1)
    strength = _check_strength(strength)
    if not hasattr(scheduler, "set_timesteps"):
        raise ValueError(f"scheduler must be a diffusers scheduler, got {type(scheduler).__name__}")
    scheduler.set_timesteps(num_inference_steps)
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    if kept == 0:
        raise ValueError(f"strength must keep at least one step: strength * num_inference_steps = "
                         f"{strength * num_inference_steps:g} < 1 (raise strength or num_inference_steps)")
    return scheduler.timesteps[num_inference_steps - kept:].tolist()


def _check_strength(strength) -> float:
    strength = _checks.number(strength, "strength", 0.0, 1.0)
    if strength == 0.0:
        raise ValueError("strength must be in (0, 1]: at 0 no step would run (the picture comes back unchanged)")
    return strength


def _check_image(pipe, image) -> torch.Tensor:
    size = pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3 \
            or tuple(image.shape[-2:]) != (size, size) or not image.dtype.is_floating_point:
        raise ValueError(f"image must be a float tensor (B, 3, {size}, {size}) in [-1, 1], got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    _checks.tensor(image, "image", finite=True)
    return image


def img2img_steps(pipe, image: torch.Tensor, prompt: str | list[str], strength: float = 0.8,
                  num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
                  generator: torch.Generator | None = None) -> Iterator[dict]:
    """The img2img loop one step at a time (module docstring): yields dict(t, z_t, z0_pred) after every kept
    step. image: (B, 3, H, W) in [-1, 1], one per prompt (or one for all prompts)."""
    prompts = _check_generation(pipe, prompt, num_inference_steps, guidance_scale, generator, 1)
    strength = _check_strength(strength)
    image = _check_image(pipe, image)
    if image.shape[0] not in (1, len(prompts)):
        raise ValueError(f"image must hold one picture, or one per prompt ({len(prompts)}), got {image.shape[0]}")
    sampler = sampler_for(pipe.scheduler)

    def start(n: int):
        timesteps = img2img_timesteps(pipe.scheduler, num_inference_steps, strength)
        device = pipe.unet.device
        z0 = latents.encode(pipe.vae, image, generator)                               # 1. the picture's latents
        z0 = z0.expand(n, *z0.shape[1:]) if z0.shape[0] == 1 else z0
        noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(device)  # 3. noised to t_start
        t_start = torch.tensor([timesteps[0]] * n, device=device)
        return pipe.scheduler.add_noise(z0.to(device), noise, t_start), timesteps

    return _generate_steps(pipe, prompts, num_inference_steps, guidance_scale, generator, 1, sampler, start=start)


@torch.no_grad()
def img2img(pipe, image: torch.Tensor, prompt: str | list[str], strength: float = 0.8,
            num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """The edited pictures (B, 3, H, W) in [-1, 1]: img2img_steps' last latent, decoded."""
    for state in img2img_steps(pipe, image, prompt, strength, num_inference_steps, guidance_scale, generator):
        pass
    return latents.decode(pipe.vae, state["z_t"]).clamp(-1, 1)
