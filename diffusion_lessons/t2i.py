"""Text to image, lesson 07: the parts assembled into diffusers' StableDiffusionPipeline, and its
generation loop run by the package's one loop (same numbers as the one-line pipeline call for the same
seed, at guidance scales s >= 1).

    1. encode the prompt and the empty prompt with the text encoder
    2. start from latent noise z_T ~ N(0, I) of shape (B, 4, H/f, W/f)
    3. for each t: eps = eps_uncond + s (eps_text - eps_uncond)   (classifier-free guidance)
                   z_{t_prev} = DDIM step (eta = 0)                (loop.denoising_loop)
    4. decode with the VAE: x = decoder(z_0 / scaling_factor)

Step 3 is the digits' loop: the U-Net becomes a denoiser (loop.unet_denoiser, cond = prompt embeddings),
guidance.guided_denoiser wraps it with the empty prompt's embeddings as the unconditional branch, and the
pipeline's scheduler supplies the timesteps, the prediction type and where the last step ends (a
DDIMScheduler or DDPMScheduler; pipeline_images runs any other). Guidance follows lesson 05's rule at every
s >= 0: s = 1 is the plain conditional prediction, s = 0 the empty prompt's, 0 < s < 1 in between.
diffusers' pipeline switches guidance off for s <= 1 (its do_classifier_free_guidance is s > 1), so there
s < 1 acts as s = 1; the two agree for s >= 1.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from . import _checks, latents, text
from .guidance import check_scales, guided_denoiser
from .loop import denoising_loop, final_alpha_cumprod, prediction_type_of, unet_denoiser
from .schedules import to_diffusers_config

def stable_diffusion_pipeline_class():
    """diffusers' StableDiffusionPipeline, imported with transformers' logging at error level for the import
    only: without the optional torchvision, importing it prints notices about image processors the book never
    uses (its pipelines have no safety checker or feature extractor)."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        transformers.logging.set_verbosity(level)
    return StableDiffusionPipeline


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
    latents.downsampling_factor(vae)                       # checks vae
    text.prompt_problems(tokenizer, "")                    # checks tokenizer
    _checks.module(text_encoder, "text_encoder")
    _checks.module(unet, "unet")
    if scheduler is not None and not (hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "step")):
        raise ValueError(f"scheduler must be a diffusers scheduler or None, got {type(scheduler).__name__}")
    StableDiffusionPipeline = stable_diffusion_pipeline_class()

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler or build_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, folder: str | Path) -> None:
    """save_pretrained (safetensors); the tokenizer is recorded as a PreTrainedTokenizerFast so the folder
    loads with plain StableDiffusionPipeline.from_pretrained under transformers 4 and 5."""
    _check_pipe(pipe)
    if not isinstance(folder, (str, Path)):
        raise ValueError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    text.save_tokenizer(pipe.tokenizer, folder / "tokenizer")
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def load_pipeline(folder: str | Path, device: torch.device | str | None = None):
    """StableDiffusionPipeline.from_pretrained(folder), offline, safetensors only, progress bar off. A folder
    whose recipe.json says conditioning "pooled" (scenes-t2i-pooled) gives a pipeline marked so
    (pipe.caption_conditioning = "pooled"): pipeline_images then refuses to draw it from plain prompts."""
    if not isinstance(folder, (str, Path)):
        raise ValueError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
    if not (Path(folder) / "model_index.json").is_file():
        raise FileNotFoundError(f"folder {folder} not found or not a saved pipeline (expected model_index.json, "
                                f"unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    device = _checks.optional_device(device)
    StableDiffusionPipeline = stable_diffusion_pipeline_class()

    with _t5_text_encoder_expected():
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                       use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    record = Path(folder) / "recipe.json"
    if record.is_file():
        pipe.caption_conditioning = json.loads(record.read_text()).get("conditioning", "sequence")
    return pipe.to(device) if device is not None else pipe


@contextmanager
def _t5_text_encoder_expected():
    """StableDiffusionPipeline's type hints name CLIPTextModel for the text encoder, and from_pretrained warns
    when a folder holds another one; lesson 15's scenes-t2i holds a T5EncoderModel on purpose (its call
    signature and output are what the pipeline uses), so that one warning is dropped while loading."""
    import logging

    log = logging.getLogger("diffusers.pipelines.pipeline_utils")

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Expected types for text_encoder") and "T5EncoderModel" in message)

    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


def _check_pipe(pipe) -> None:
    if not all(hasattr(pipe, part) for part in ("unet", "vae", "tokenizer", "text_encoder", "scheduler")):
        raise ValueError(f"pipe must be a StableDiffusionPipeline (assemble_pipeline, load_pipeline), got "
                         f"{type(pipe).__name__}")


def _check_generation(pipe, prompt, num_inference_steps, guidance_scale, generator, num_images_per_prompt,
                     guidance_rescale: float = 0.0, name: str = "prompt") -> list[str]:
    """The checks of every text-to-image call (ValueError naming the argument); returns the prompts as a list
    (a string is one prompt), after warning about words the model will not see."""
    _check_pipe(pipe)
    prompts = _checks.prompts(prompt, name)
    _checks.integer(num_inference_steps, "num_inference_steps", 1)
    check_scales(guidance_scale, guidance_rescale)
    _checks.generator(generator)
    _checks.integer(num_images_per_prompt, "num_images_per_prompt", 1)
    return _prompt_list(pipe, prompts)


def _prompt_list(pipe, prompt: str | list[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    for p in prompts:
        for problem in text.prompt_problems(pipe.tokenizer, p):
            warnings.warn(f"prompt {p!r}: {problem}", stacklevel=3)
    return list(prompts)


def sampler_for(scheduler) -> str:
    """The package's sampler that takes the same steps as a diffusers scheduler: 'ddim' or 'ddpm'."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if isinstance(scheduler, DDIMScheduler):
        return "ddim"
    if isinstance(scheduler, DDPMScheduler):
        return "ddpm"
    raise ValueError(f"pipe.scheduler must be a DDIMScheduler or a DDPMScheduler (the package's samplers), got "
                     f"{type(scheduler).__name__}; t2i.pipeline_images runs the pipeline with any scheduler")


def generate_steps(pipe, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
                   guidance_scale: float = DEFAULT_GUIDANCE, generator: torch.Generator | None = None,
                   num_images_per_prompt: int = 1) -> Iterator[dict]:
    """The denoising loop, one step at a time: yields dict(t, z_t, z0_pred) after every step (z_t is the new
    latent, z0_pred the clean latent predicted at t). Steps 1-3 of the module docstring, with the pipeline's
    timesteps (pipe.scheduler.set_timesteps) and its starting noise. Bad arguments are refused at the call."""
    prompts = _check_generation(pipe, prompt, num_inference_steps, guidance_scale, generator, num_images_per_prompt)
    if getattr(pipe, "caption_conditioning", None) == "pooled":
        raise ValueError("pipe was trained on one pooled caption vector (its recipe.json says conditioning 'pooled'): "
                         "this loop hands the U-Net the token sequence; draw it with pipeline_images(..., pooled=True)")
    sampler = sampler_for(pipe.scheduler)
    return _generate_steps(pipe, prompts, num_inference_steps, guidance_scale, generator, num_images_per_prompt,
                           sampler)


@torch.no_grad()
def _generate_steps(pipe, prompts: list[str], num_inference_steps: int, guidance_scale: float, generator,
                    num_images_per_prompt: int, sampler: str, start=None) -> Iterator[dict]:
    """start: None (pure noise through every timestep), or start(n) -> (z, timesteps) after set_timesteps:
    the latent to begin from and the timesteps still to run (img2img: editing.img2img_steps)."""
    device, scheduler, unet = pipe.unet.device, pipe.scheduler, pipe.unet
    emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)                  # 1. the prompts ...
    emb = emb.repeat_interleave(num_images_per_prompt, dim=0)
    n = len(emb)
    empty = None if guidance_scale == 1.0 else text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [""] * n)
    denoise = guided_denoiser(unet_denoiser(unet, "encoder_hidden_states"), guidance_scale, empty)  # ... and ""
    scheduler.set_timesteps(num_inference_steps, device=device)
    if start is None:
        shape = (n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        z = torch.randn(shape, generator=generator, device=generator.device if generator else device).to(device)  # 2.
        timesteps = scheduler.timesteps.tolist()
    else:
        z, timesteps = start(n)
    states = denoising_loop(denoise, scheduler, z, emb, timesteps=timesteps, sampler=sampler,
                            prediction_type=prediction_type_of(scheduler),
                            final_alpha=final_alpha_cumprod(scheduler, sampler), generator=generator, progress=False)
    before = next(states)                                                                   # 3. denoise, guided
    for after in states:
        yield dict(t=before.t, z_t=after.x_t, z0_pred=before.x0)
        before = after


@torch.no_grad()
def generate(pipe, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
             guidance_scale: float = DEFAULT_GUIDANCE, generator: torch.Generator | None = None,
             num_images_per_prompt: int = 1) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] from the package's loop (step 4: decode the last latent).
    Equals pipe(prompt, ..., output_type='pt').images * 2 - 1 for the same generator seed when
    guidance_scale >= 1 (below 1 diffusers switches guidance off; see the module docstring)."""
    for state in generate_steps(pipe, prompt, num_inference_steps, guidance_scale, generator, num_images_per_prompt):
        pass
    return latents.decode(pipe.vae, state["z_t"]).clamp(-1, 1)


@torch.no_grad()
def pipeline_images(pipe, prompts: list[str], generator: torch.Generator | None = None,
                    num_images_per_prompt: int = 1, pooled: bool = False, **kwargs) -> torch.Tensor:
    """pipe(prompts, ...) as a tensor (B, 3, H, W) in [-1, 1], prompt-major (each prompt's images together).
    A string is one prompt. num_inference_steps, guidance_scale and guidance_rescale among kwargs are checked
    as generate's are; generator may also be a list of them, one per image, as diffusers takes.
    pooled=True, for a model trained on pooled captions (scenes-t2i-pooled): the pipeline is handed
    prompt_embeds = text.encode_pooled(prompts) and negative_prompt_embeds = text.encode_pooled("") instead
    of the prompts (plain diffusers' prompt_embeds route)."""
    one = generator
    if isinstance(generator, list) and generator and all(isinstance(g, torch.Generator) for g in generator):
        one = generator[0]
    prompts = _check_generation(pipe, prompts, kwargs.get("num_inference_steps", DEFAULT_STEPS),
                                kwargs.get("guidance_scale", DEFAULT_GUIDANCE), one, num_images_per_prompt,
                                kwargs.get("guidance_rescale", 0.0), name="prompts")
    if not isinstance(pooled, bool):
        raise ValueError(f"pooled must be True or False, got {pooled!r}")
    if getattr(pipe, "caption_conditioning", None) == "pooled" and not pooled:
        raise ValueError("pooled must be True for this pipeline: it was trained on one pooled caption vector "
                         "(its recipe.json says conditioning 'pooled'), and plain prompts would hand it a token "
                         "sequence it never saw")
    if pooled:
        with torch.no_grad():
            kwargs.update(prompt_embeds=text.encode_pooled(pipe.tokenizer, pipe.text_encoder, prompts),
                          negative_prompt_embeds=text.encode_pooled(pipe.tokenizer, pipe.text_encoder,
                                                                    [""] * len(prompts)))
        prompts = None
    out = pipe(prompts, generator=generator, num_images_per_prompt=num_images_per_prompt,
               output_type="pt", **kwargs)
    return out.images * 2 - 1
