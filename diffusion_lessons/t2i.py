"""Text to image, lesson 07: the parts assembled into diffusers' StableDiffusionPipeline, and its
generation loop written out by hand (same numbers as the one-line pipeline call for the same seed).

    1. encode the prompt and the empty prompt with the text encoder
    2. start from latent noise z_T ~ N(0, I) of shape (B, 4, H/f, W/f)
    3. for each t: eps = eps_uncond + w (eps_text - eps_uncond)   (classifier-free guidance)
                   z_{t-1} = scheduler.step(eps, t, z_t)          (DDIM, eta = 0)
    4. decode with the VAE: x = decoder(z_0 / scaling_factor)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterator

import torch

from . import latents, text
from .schedules import to_diffusers_config

# StableDiffusionPipeline's own defaults (its __call__ signature): the "default settings" we measure.
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 7.5


def build_scheduler():
    """DDIM with Stable Diffusion's training schedule (scaled_linear 0.00085..0.012, 1000 steps)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**to_diffusers_config("scaled_linear"), clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1, timestep_spacing="leading")


def assemble_pipeline(vae, tokenizer, text_encoder, unet, scheduler=None):
    """A diffusers StableDiffusionPipeline from the book's parts (no safety checker, no feature extractor)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler or build_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, folder: str | Path) -> None:
    """save_pretrained (safetensors); the tokenizer is recorded as a PreTrainedTokenizerFast so the folder
    loads with plain StableDiffusionPipeline.from_pretrained under transformers 4 and 5."""
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    text.save_tokenizer(pipe.tokenizer, folder / "tokenizer")
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def load_pipeline(folder: str | Path, device: torch.device | str | None = None):
    """StableDiffusionPipeline.from_pretrained(folder), offline, safetensors only, progress bar off."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                   use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if device is not None else pipe


def _prompt_list(pipe, prompt: str | list[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    for p in prompts:
        for problem in text.prompt_problems(pipe.tokenizer, p):
            warnings.warn(f"prompt {p!r}: {problem}", stacklevel=3)
    return list(prompts)


@torch.no_grad()
def generate_steps(pipe, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
                   guidance_scale: float = DEFAULT_GUIDANCE, generator: torch.Generator | None = None,
                   num_images_per_prompt: int = 1) -> Iterator[dict]:
    """The denoising loop, one step at a time: yields dict(t, z_t, z0_pred) after every step (z_t is the new
    latent). Steps 1-3 of the module docstring, in StableDiffusionPipeline's order of operations."""
    prompts = _prompt_list(pipe, prompt)
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
    device, scheduler, unet = pipe.unet.device, pipe.scheduler, pipe.unet
    emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
    emb = emb.repeat_interleave(num_images_per_prompt, dim=0)
    n, guided = len(emb), guidance_scale > 1.0
    if guided:  # the unconditional (empty-prompt) embeddings first, as the pipeline orders them
        emb = torch.cat([text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [""] * n), emb])
    shape = (n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    z = torch.randn(shape, generator=generator, device=generator.device if generator else device).to(device)
    scheduler.set_timesteps(num_inference_steps, device=device)
    z = z * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        z_in = scheduler.scale_model_input(torch.cat([z, z]) if guided else z, t)
        eps = unet(z_in, t, encoder_hidden_states=emb).sample
        if guided:
            eps_uncond, eps_text = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
        out = scheduler.step(eps, t, z, eta=0.0, generator=generator)
        z = out.prev_sample
        yield dict(t=int(t), z_t=z, z0_pred=out.pred_original_sample)


@torch.no_grad()
def generate(pipe, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
             guidance_scale: float = DEFAULT_GUIDANCE, generator: torch.Generator | None = None,
             num_images_per_prompt: int = 1) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] from the hand-written loop (step 4: decode the last latent).
    Equals pipe(prompt, ..., output_type='pt').images * 2 - 1 for the same generator seed."""
    for state in generate_steps(pipe, prompt, num_inference_steps, guidance_scale, generator, num_images_per_prompt):
        pass
    return latents.decode(pipe.vae, state["z_t"]).clamp(-1, 1)


@torch.no_grad()
def pipeline_images(pipe, prompts: list[str], generator: torch.Generator | None = None,
                    num_images_per_prompt: int = 1, **kwargs) -> torch.Tensor:
    """pipe(prompts, ...) as a tensor (B, 3, H, W) in [-1, 1], prompt-major (each prompt's images together)."""
    out = pipe(list(prompts), generator=generator, num_images_per_prompt=num_images_per_prompt,
               output_type="pt", **kwargs)
    return out.images * 2 - 1
