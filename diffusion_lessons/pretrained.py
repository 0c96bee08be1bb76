"""The models the book ships, trained by its own recipes, loaded offline by name.

Layout (diffusers' save_pretrained, safetensors only) under diffusion_lessons/pretrained/:
  digits/      unet/, scheduler/, recipe.json             (python -m diffusion_lessons.train digits)
  shapes-t2i/  a StableDiffusionPipeline folder: vae/, text_encoder/, tokenizer/, unet/,
               scheduler/, model_index.json, recipe-vae.json, recipe.json
               (python -m diffusion_lessons.train vae, then ... train shapes-t2i)
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "pretrained"
NAMES = ("digits", "vae", "text", "shapes-t2i")


def pretrained_path(name: str) -> Path:
    """The folder that holds the shipped model `name`."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    folder = ROOT / ("shapes-t2i" if name in ("vae", "text") else name)
    if not folder.is_dir():
        recipe = "shapes-t2i" if name == "text" else name
        raise FileNotFoundError(f"{folder} is missing: train it with python -m diffusion_lessons.train {recipe}")
    return folder


def load_recipe(name: str) -> dict:
    """The recipe record saved next to the model (what it took and what it scores)."""
    folder = pretrained_path(name)
    return json.loads((folder / ("recipe-vae.json" if name == "vae" else "recipe.json")).read_text())


def load_pretrained(name: str, device=None):
    """Load a shipped model by name, offline, from safetensors.

    digits -> (UNet2DModel, DDIMScheduler); vae -> AutoencoderKL; text -> (tokenizer, CLIPTextModel);
    shapes-t2i -> StableDiffusionPipeline."""
    from . import device as _device

    device = device or _device.pick_device()
    folder = pretrained_path(name)
    kw = dict(use_safetensors=True, local_files_only=True)
    if name == "digits":
        from diffusers import DDIMScheduler, UNet2DModel

        unet = UNet2DModel.from_pretrained(folder / "unet", **kw).to(device).eval()
        return unet, DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    if name == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw).to(device).eval()
    if name == "text":
        from transformers import CLIPTextModel, PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer", local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **kw).to(device).eval()
        return tokenizer, encoder
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
