"""LoRA and DreamBooth (lesson 13, Part III): teach the model a shape it has never seen from 20 pictures.

LoRA (Hu et al. 2021): keep every weight W and learn a low-rank change, W + (alpha / r) B A with A (r x k), B
(d x r), B starting at zero (so training starts from the base model). peft puts it on the U-Net's attention
projections (to_q, to_k, to_v, to_out.0) and, with add_text_lora, on the text encoder's (q_proj, k_proj, v_proj,
out_proj): without the text encoder's, the U-Net alone never learned the star (lesson 13's control). diffusers
saves only A and B, both parts in one file (save_lora_weights), and loads them into a pipeline (load_lora_weights).

The new shape is a five-pointed star (inner radius 0.4 of the outer), upright. The word "star" is not in the
word-level tokenizer's vocabulary, so it becomes [UNK], a token the base model never saw in training. DreamBooth
(Ruiz et al. 2023) binds the new thing to a rare token; here the rarest token there is, [UNK], is the identifier,
and the caption is "a red star on a white background" as users write it. The price: every other unknown word
is [UNK] too, so the adapter draws a star for "a red moon" as well (lesson 13 shows it). DreamBooth's
prior-preservation loss trains on the base model's own pictures of the other shapes alongside, against
language drift (the adapter changing what "circle" draws).

The star reader: evaluation.read_shapes' color and background, and for the shape the best of four templates of
the same area and centroid (the three shapes and the star).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from . import _checks, data
from .evaluation import _foreground, _harden, _nearest, _shape_errors, _template_errors
from .stats import proportion

__all__ = ["STAR", "INNER", "TARGET_MODULES", "TEXT_TARGET_MODULES", "star_coverage", "render_stars", "star_caption",
           "star_pictures", "read_with_star", "add_lora", "add_text_lora", "lora_parameters", "save_lora",
           "adapter_bytes", "load_adapter",
           "measure_adapter"]

STAR = "star"
INNER = 0.4                                          # inner radius / outer radius
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]  # the U-Net's attention projections
TEXT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]  # the CLIP text encoder's attention projections
STAR_AREA = 5 * INNER * math.sin(math.radians(36))   # star area / r^2 (ten triangles of sides r and INNER r)
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
# Outer radius of the training stars, as a fraction of the side: larger than the shapes world's "large" (0.28-0.34),
# because the shipped VAE (trained on circles, squares and triangles, 4x downsampling) gives a star's points back
# only from an outer radius of about 11 px of 32 (lesson 13 measures its round trip per size).
STAR_SIZE = (0.38, 0.44)


def _star_polygon(geometry: torch.Tensor) -> torch.Tensor:
    """The ten corners (B, 10, 2) of each upright star (first point straight up), x right and y down."""
    k = torch.arange(10, dtype=torch.float32)
    angle = -math.pi / 2 + k * math.pi / 5
    radius = torch.where(k % 2 == 0, torch.tensor(1.0), torch.tensor(INNER))
    cx, cy, r = (geometry[:, i, None].float() for i in range(3))
    return torch.stack([cx + r * radius * torch.cos(angle), cy + r * radius * torch.sin(angle)], dim=2)


def star_coverage(geometry: torch.Tensor, image_size: int = 32, supersample: int = 4) -> torch.Tensor:
    """Fraction of each pixel (B, H, W) that each star covers (geometry rows cx, cy, r: centre and outer radius in
    pixels), anti-aliased by supersampling as data.shape_coverage does."""
    geometry = _checks.tensor(geometry, "geometry", floating=True, ndim=2, finite=True)
    if geometry.shape[1] != 3:
        raise ValueError(f"geometry must be a tensor (B, 3) of rows cx, cy, r in pixels, got {tuple(geometry.shape)}")
    image_size = _checks.integer(image_size, "image_size", 1)
    k = _checks.integer(supersample, "supersample", 1)
    grid = (torch.arange(image_size * k, dtype=torch.float32) + 0.5) / k
    px, py = grid[None, None, :, None], grid[None, :, None, None]              # (1, H, W, 1) after broadcast
    poly = _star_polygon(geometry)[:, None, None]                              # (B, 1, 1, 10, 2)
    x0, y0 = poly[..., 0], poly[..., 1]
    x1, y1 = poly.roll(-1, dims=3)[..., 0], poly.roll(-1, dims=3)[..., 1]
    crosses = ((y0 > py) != (y1 > py)) & (px < (x1 - x0) * (py - y0) / (y1 - y0 + 1e-12) + x0)
    inside = crosses.sum(dim=3) % 2 == 1                                        # even-odd rule
    return inside.float().reshape(-1, image_size, k, image_size, k).mean(dim=(2, 4))


def render_stars(color_idx: torch.Tensor, background_idx: torch.Tensor, geometry: torch.Tensor,
                 image_size: int = 32) -> torch.Tensor:
    """Star pictures (B, 3, H, W) in [-1, 1] in the shapes world's colors and backgrounds (data.COLORS,
    data.BACKGROUNDS indices)."""
    alpha = star_coverage(geometry, image_size)[:, None]
    for value, name, size in ((color_idx, "color_idx", len(data.COLORS)),
                              (background_idx, "background_idx", len(data.BACKGROUNDS))):
        value = _checks.labels(_checks.tensor(value, name, ndim=1), name, size)
        if len(value) != len(alpha):
            raise ValueError(f"{name} must hold one index per star ({len(alpha)}), got {len(value)}")
    fg = torch.tensor(list(data.COLORS.values()))[color_idx][:, :, None, None]
    bg = torch.tensor(list(data.BACKGROUNDS.values()))[background_idx][:, :, None, None]
    return (bg + alpha * (fg - bg)) * 2 - 1


def star_caption(color: str, background: str) -> str:
    """'a red star on a white background'."""
    if color not in data.COLORS or background not in data.BACKGROUNDS:
        raise ValueError(f"color must be one of {tuple(data.COLORS)} and background one of "
                         f"{tuple(data.BACKGROUNDS)}, got {color!r} and {background!r}")
    return f"a {color} {STAR} on a {background} background"


def star_pictures(n: int = 20, seed: int = 0, image_size: int = 32) -> dict:
    """The n training pictures (n <= 20 in the recipe): every color and background in turn, outer radius
    STAR_SIZE (a fraction of the side, drawn uniformly), centred where the star fits inside the margin.
    dict(images, captions, attributes, geometry)."""
    n = _checks.integer(n, "n", 1)
    g = torch.Generator().manual_seed(_checks.seed(seed))
    image_size = _checks.integer(image_size, "image_size", 16)
    combos = [(c, b) for b in range(len(data.BACKGROUNDS)) for c in range(len(data.COLORS))]
    color = torch.tensor([combos[i % len(combos)][0] for i in range(n)])
    back = torch.tensor([combos[i % len(combos)][1] for i in range(n)])
    u = torch.rand(n, 3, generator=g)
    r = (STAR_SIZE[0] + u[:, 0] * (STAR_SIZE[1] - STAR_SIZE[0])) * image_size
    lo = r + data.MARGIN * image_size
    geometry = torch.stack([lo + u[:, 1] * (image_size - 2 * lo), lo + u[:, 2] * (image_size - 2 * lo), r], dim=1)
    names = lambda idx, table: [list(table)[i] for i in idx.tolist()]  # noqa: E731
    colors, backs = names(color, data.COLORS), names(back, data.BACKGROUNDS)
    return dict(images=render_stars(color, back, geometry, image_size), geometry=geometry,
                captions=[star_caption(c, b) for c, b in zip(colors, backs)],
                attributes=[dict(shape=STAR, color=c, background=b) for c, b in zip(colors, backs)])


@torch.no_grad()
def read_with_star(images: torch.Tensor) -> list[dict[str, str | None]]:
    """Read background, color and shape of each picture (B, 3, H, W) in [-1, 1] as evaluation.read_shapes does,
    with the star as a fourth shape template (same area and centroid as the picture's shape)."""
    images = _checks.tensor(images, "images", floating=True, ndim=4)
    if images.shape[1] != 3:
        raise ValueError(f"images must be a tensor (B, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
    bg, fg, far, alpha = _foreground(images)
    hard = _harden(alpha)
    errors, _ = _shape_errors(hard)
    b, size = hard.shape[0], hard.shape[-1]
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    mass = hard.sum(dim=(1, 2)).clamp_min(1e-6)
    mx, my = (hard * grid[None, None, :]).sum((1, 2)) / mass, (hard * grid[None, :, None]).sum((1, 2)) / mass
    star = star_coverage(torch.stack([mx, my, (mass / STAR_AREA).sqrt()], dim=1), size)[:, None]
    best = torch.cat([errors, _template_errors(star, hard)[:, None]], dim=1).argmin(dim=1).tolist()
    names = (*data.SHAPES, STAR)
    return [dict(background=back, color=color if far[i].any() else None,
                 shape=names[best[i]] if far[i].any() else None)
            for i, (back, color) in enumerate(zip(_nearest(bg, data.BACKGROUNDS), _nearest(fg, data.COLORS)))]


# ---- the adapter ------------------------------------------------------------------------------------------------

def add_lora(unet, rank: int = 4, seed: int | None = 0) -> None:
    """Add a peft LoRA of `rank` (lora_alpha = rank, so the update is B A) to the U-Net's attention projections
    (unet.add_adapter): A drawn (seeded), B zero; every other weight frozen."""
    from peft import LoraConfig

    rank = _checks.integer(rank, "rank", 1)
    seed = _checks.optional_seed(seed)
    if not hasattr(unet, "add_adapter"):
        raise ValueError(f"unet must be a diffusers UNet2DConditionModel, got {type(unet).__name__}")
    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):   # the seed draws A; the global generator is left alone
        if seed is not None:
            torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=TARGET_MODULES))


def add_text_lora(text_encoder, rank: int = 4, seed: int | None = 0) -> None:
    """Add a peft LoRA of `rank` (lora_alpha = rank) to the text encoder's attention projections
    (TEXT_TARGET_MODULES, peft.inject_adapter_in_model), as DreamBooth-LoRA's --train_text_encoder does: A drawn
    (seeded), B zero; every other weight frozen. It lets the caption's [UNK] become a vector of its own."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import CLIPTextModel

    rank = _checks.integer(rank, "rank", 1)
    seed = _checks.optional_seed(seed)
    if not isinstance(text_encoder, CLIPTextModel):
        raise ValueError(f"text_encoder must be a transformers CLIPTextModel, got {type(text_encoder).__name__}")
    text_encoder.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                           target_modules=TEXT_TARGET_MODULES), text_encoder)
    for name, p in text_encoder.named_parameters():
        p.requires_grad_("lora_" in name)


def lora_parameters(unet) -> int:
    """How many numbers the LoRA adds (the trainable A and B matrices) to a U-Net or a text encoder."""
    _checks.module(unet, "unet")
    return sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)


def save_lora(unet, folder: str | Path, text_encoder=None) -> Path:
    """StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=the U-Net's LoRA in diffusers' naming,
    text_encoder_lora_layers=the text encoder's, if given): writes folder/pytorch_lora_weights.safetensors, which
    pipe.load_lora_weights(folder) loads (both parts)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    if not isinstance(folder, (str, Path)):
        raise ValueError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
    if lora_parameters(unet) == 0:
        raise ValueError("unet must carry a LoRA adapter (lora.add_lora), found none")
    if text_encoder is not None and lora_parameters(text_encoder) == 0:
        raise ValueError("text_encoder must carry a LoRA adapter (lora.add_text_lora) or be None, found none")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    text_layers = (None if text_encoder is None
                   else convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder)))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, text_encoder_lora_layers=text_layers,
                                              safe_serialization=True)
    return folder / WEIGHTS_NAME


def adapter_bytes(folder: str | Path) -> int:
    """Size on disk of folder/pytorch_lora_weights.safetensors (FileNotFoundError naming the folder if missing)."""
    if not isinstance(folder, (str, Path)):
        raise ValueError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"folder {folder} holds no {WEIGHTS_NAME} (a LoRA saved by lora.save_lora)")
    return path.stat().st_size


def load_adapter(pipe, folder: str | Path) -> None:
    """pipe.load_lora_weights(folder), after checking that folder holds the adapter (ValueError naming it)."""
    if not isinstance(folder, (str, Path)) or not (Path(folder) / WEIGHTS_NAME).is_file():
        raise ValueError(f"folder must hold {WEIGHTS_NAME} (a LoRA saved by lora.save_lora), got {folder}")
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()   # not the notice that an adapter has no text-encoder part
    try:
        pipe.load_lora_weights(str(folder))
    finally:
        logging.set_verbosity(level)


@torch.no_grad()
def _pictures(pipe, prompts: list[str], per_prompt: int, generator, steps: int, guidance: float) -> torch.Tensor:
    out = pipe(prompts, num_images_per_prompt=per_prompt, num_inference_steps=steps, guidance_scale=guidance,
               generator=generator, output_type="pt")
    return out.images.cpu() * 2 - 1


def measure_adapter(pipe, per_prompt: int = 6, seed: int = 0, num_inference_steps: int = 25,
                    guidance_scale: float = 7.5, old_prompts: bool = True) -> dict:
    """With whatever adapter pipe carries: the 8 star prompts (every color and background, per_prompt each):
    read as a star, color right; with old_prompts, the 24 base prompts (per_prompt / 2 each, at least 1): all of
    background, color and shape read right (read_with_star, so a star drawn for 'circle' counts as wrong), and
    how many read as a star. Shares with Wilson 95% intervals; also the pictures."""
    per_prompt = _checks.integer(per_prompt, "per_prompt", 1)
    seed = _checks.seed(seed)
    if not hasattr(pipe, "unet") or not hasattr(pipe, "tokenizer"):
        raise ValueError(f"pipe must be a StableDiffusionPipeline, got {type(pipe).__name__}")
    if not isinstance(old_prompts, bool):
        raise ValueError(f"old_prompts must be True or False, got {old_prompts!r}")
    star_prompts = [star_caption(c, b) for b in data.BACKGROUNDS for c in data.COLORS]
    stars = _pictures(pipe, star_prompts, per_prompt, torch.Generator().manual_seed(seed), num_inference_steps,
                      guidance_scale)
    star_reads = read_with_star(stars)
    star_want = [dict(color=c, background=b) for b in data.BACKGROUNDS for c in data.COLORS for _ in range(per_prompt)]
    measures = dict(star_read=proportion([r["shape"] == STAR for r in star_reads]).as_dict(),
                    star_color_right=proportion([r["color"] == w["color"]
                                                 for r, w in zip(star_reads, star_want)]).as_dict())
    settings = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                    star_prompts=len(star_prompts), star_per_prompt=per_prompt, interval="Wilson 95%")
    if not old_prompts:
        return dict(measures=dict(**measures, settings=settings), pictures=dict(stars=stars))
    base_per = max(1, per_prompt // 2)
    base = _pictures(pipe, data.shape_prompts(), base_per, torch.Generator().manual_seed(seed + 1),
                     num_inference_steps, guidance_scale)
    base_reads = read_with_star(base)
    base_want = [data.parse_caption(p) for p in data.shape_prompts() for _ in range(base_per)]
    return dict(
        measures=dict(
            **measures,
            base_prompts_right=proportion([all(r[k] == w[k] for k in ("background", "color", "shape"))
                                           for r, w in zip(base_reads, base_want)]).as_dict(),
            base_prompts_drawn_as_star=proportion([r["shape"] == STAR for r in base_reads]).as_dict(),
            settings=dict(**settings, base_prompts=24, base_per_prompt=base_per)),
        pictures=dict(stars=stars, base=base))
