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

DDIM inversion (Song et al. 2021; Mokady et al. 2023 for its use in editing): DDIM's step is deterministic, so
it can be run backwards, from the picture's latents up to noise. Going up from t to the next timestep t', with
the noise predicted at t' from the current latent (the one approximation: the prediction at t' is not known
before reaching t'):

    z0_pred = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),    z_t' = sqrt(abar_t') z0_pred + sqrt(1 - abar_t') eps

Sampling from the inverted noise with the same prompt returns (nearly) the picture; with a changed prompt, an
edit that keeps what the prompt does not mention. Equals diffusers' DDIMInverseScheduler (set_alpha_to_one
False: it starts where the pipeline's DDIM ends, at alpha_bar_0).
"""

from __future__ import annotations

from typing import Iterator

import torch

from . import _checks, latents, text
from .guidance import guided_denoiser
from .loop import final_alpha_cumprod, unet_denoiser
from .t2i import DEFAULT_GUIDANCE, DEFAULT_STEPS, _check_generation, _generate_steps, sampler_for

__all__ = ["img2img_timesteps", "img2img_steps", "img2img", "ddim_inversion_steps", "ddim_invert", "sample_from"]


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


def _check_ddim(pipe) -> None:
    if sampler_for(pipe.scheduler) != "ddim":
        raise ValueError(f"pipe.scheduler must be a DDIMScheduler (inversion runs DDIM backwards), got "
                         f"{type(pipe.scheduler).__name__}")


def ddim_inversion_steps(pipe, image: torch.Tensor, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
                         guidance_scale: float = 1.0) -> Iterator[dict]:
    """DDIM run backwards from the picture's latents (the VAE posterior's mean, no randomness) up the
    pipeline's timesteps: yields dict(t, z_t) after every step, the last one the inverted noise at the highest
    timestep. Guidance as in sampling (1.0, the default, inverts best: guidance magnifies the approximation's
    error). Bad arguments are refused at the call."""
    prompts = _check_generation(pipe, prompt, num_inference_steps, guidance_scale, None, 1)
    _check_ddim(pipe)
    image = _check_image(pipe, image)
    if image.shape[0] not in (1, len(prompts)):
        raise ValueError(f"image must hold one picture, or one per prompt ({len(prompts)}), got {image.shape[0]}")
    return _inversion_steps(pipe, image, prompts, num_inference_steps, guidance_scale)


@torch.no_grad()
def _inversion_steps(pipe, image: torch.Tensor, prompts: list[str], num_inference_steps: int,
                     guidance_scale: float) -> Iterator[dict]:
    device, scheduler = pipe.unet.device, pipe.scheduler
    z = latents.encode(pipe.vae, image.to(device), sample=False)
    n = max(len(prompts), z.shape[0])
    z = z.expand(n, *z.shape[1:]).clone()
    emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
    emb = emb.expand(n, *emb.shape[1:]) if emb.shape[0] == 1 else emb
    empty = None if guidance_scale == 1.0 else text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [""] * n)
    denoise = guided_denoiser(unet_denoiser(pipe.unet, "encoder_hidden_states"), guidance_scale, empty)
    scheduler.set_timesteps(num_inference_steps, device=device)
    abar = scheduler.alphas_cumprod.to(device)
    a_t = torch.tensor(final_alpha_cumprod(scheduler, "ddim"), device=device)   # where sampling ends
    for t in scheduler.timesteps.flip(0).tolist():
        eps = denoise(z, torch.full((n,), t, device=device), emb)
        a_next = abar[t]
        z0_pred = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        z = a_next.sqrt() * z0_pred + (1 - a_next).sqrt() * eps
        a_t = a_next
        yield dict(t=t, z_t=z)


def ddim_invert(pipe, image: torch.Tensor, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
                guidance_scale: float = 1.0) -> torch.Tensor:
    """The inverted noise (B, 4, h, w): ddim_inversion_steps' last latent."""
    for state in ddim_inversion_steps(pipe, image, prompt, num_inference_steps, guidance_scale):
        pass
    return state["z_t"]


@torch.no_grad()
def sample_from(pipe, z_start: torch.Tensor, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
                guidance_scale: float = 1.0) -> torch.Tensor:
    """Pictures (B, 3, H, W) in [-1, 1]: the pipeline's DDIM loop (the package's one loop, as t2i.generate) from
    a given starting latent, e.g. ddim_invert's, instead of fresh noise; one prompt per latent (or one for all)."""
    prompts = _check_generation(pipe, prompt, num_inference_steps, guidance_scale, None, 1)
    _check_ddim(pipe)
    shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    z_start = _checks.tensor(z_start, "z_start", floating=True, ndim=4, finite=True)
    if tuple(z_start.shape[1:]) != shape or z_start.shape[0] not in (1, len(prompts)):
        raise ValueError(f"z_start must be latents (B, {', '.join(map(str, shape))}) with B = 1 or the number of "
                         f"prompts ({len(prompts)}), got shape {tuple(z_start.shape)}")

    def start(n: int):
        z = z_start.to(pipe.unet.device)
        return (z.expand(n, *shape) if z.shape[0] == 1 else z), pipe.scheduler.timesteps.tolist()

    for state in _generate_steps(pipe, prompts, num_inference_steps, guidance_scale, None, 1, "ddim", start=start):
        pass
    return latents.decode(pipe.vae, state["z_t"]).clamp(-1, 1)
