"""Inpainting, "Generative Fill" (lesson 11, Part III): repaint the masked part of a picture, keep the rest.

Two ways, both run by diffusers' StableDiffusionInpaintPipeline (white = 1 in the mask means "repaint"):

(a) the blending trick, on the base model's 4-channel U-Net: denoise as usual, and after every step put back
    the known region, re-noised to the next timestep:
        z_t <- (1 - m) * add_noise(z_image, eps, t_next) + m * z_t        (m: the mask at latent size)
    The model never sees the mask; it only finds the known region already in place at every step.
(b) a dedicated inpainting U-Net (Stable Diffusion's inpainting model): 9 input channels, the noisy latents,
    the mask downsampled to latent size and the masked picture's latents, so the model sees what is known and
    where it must paint. inpaint_unet widens the shipped U-Net's first convolution with zero weights for the 5
    new channels: before fine-tuning it predicts exactly what the base model predicts.

The measures of lesson 11 live here too: box masks around a shape (snapped to the VAE's 4x4 cells, since
the U-Net sees the mask at 8x8), the two edit tasks (replace the shape, replace the background), and what is
kept outside the mask, the seam at its border and the shape's overlap (IoU) with the original.
"""

from __future__ import annotations

import torch

from . import _checks, data
from .stats import bootstrap_interval, proportion

__all__ = ["CELL", "MAX_OUTSIDE_CHANGE", "MIN_KEPT_IOU", "box_masks", "masked_images", "inpaint_unet",
           "inpaint_pipeline", "load_inpaint_pipeline", "inpaint", "silhouettes", "iou", "outside_change", "seam", "edit_tasks",
           "measure_edits"]

CELL = 4                      # pixels per latent cell (the shapes VAE downsamples 32 -> 8)
MAX_OUTSIDE_CHANGE = 24 / 255  # "kept": mean absolute change outside the mask, RGB in [0, 1]
MIN_KEPT_IOU = 0.8            # "shape kept": IoU of the shape's silhouette with the original's
EXTRA_CHANNELS = 5            # the mask (1) and the masked picture's latents (4)


def _geometry(geometry) -> torch.Tensor:
    geometry = _checks.tensor(geometry, "geometry", floating=True, ndim=2, finite=True)
    if geometry.shape[1] != 3:
        raise ValueError(f"geometry must be a tensor (B, 3) of rows cx, cy, r in pixels, got shape "
                         f"{tuple(geometry.shape)}")
    return geometry


def box_masks(geometry: torch.Tensor, image_size: int = 32, margin: float = 1.0, cell: int = CELL) -> torch.Tensor:
    """Masks (B, 1, H, W) of 1.0 over each shape's box [c - r - margin, c + r + margin], grown outwards to whole
    `cell` x `cell` blocks (so the mask at latent size is exactly the box), 0.0 elsewhere."""
    geometry = _geometry(geometry)
    image_size = _checks.integer(image_size, "image_size", 1)
    margin = _checks.number(margin, "margin", 0.0)
    cell = _checks.integer(cell, "cell", 1)
    if image_size % cell:
        raise ValueError(f"image_size must be a multiple of cell ({cell}), got {image_size}")
    cx, cy, r = geometry.unbind(1)
    lo = lambda c: ((c - r - margin) / cell).floor().clamp(0, image_size // cell) * cell   # noqa: E731
    hi = lambda c: ((c + r + margin) / cell).ceil().clamp(0, image_size // cell) * cell    # noqa: E731
    grid = torch.arange(image_size, dtype=torch.float32) + 0.5
    inside_x = (grid[None] > lo(cx)[:, None]) & (grid[None] < hi(cx)[:, None])
    inside_y = (grid[None] > lo(cy)[:, None]) & (grid[None] < hi(cy)[:, None])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]


def _check_masks(masks, images: torch.Tensor, name: str = "masks") -> torch.Tensor:
    masks = _checks.tensor(masks, name, floating=True, ndim=4, finite=True)
    if masks.shape[1] != 1 or masks.shape[-2:] != images.shape[-2:] or masks.shape[0] not in (1, len(images)):
        raise ValueError(f"{name} must be a tensor (B, 1, H, W) matching the images (H, W) = "
                         f"{tuple(images.shape[-2:])} with B = 1 or {len(images)}, got shape {tuple(masks.shape)}")
    return masks


def _check_images(images, name: str = "images") -> torch.Tensor:
    images = _checks.tensor(images, name, floating=True, ndim=4, finite=True)
    if images.shape[1] != 3:
        raise ValueError(f"{name} must be a tensor (B, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
    return images


def masked_images(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """What the inpainting U-Net is shown of each picture: the picture with the masked part set to 0 (grey in
    [-1, 1]), as StableDiffusionInpaintPipeline makes it (image * (mask < 0.5))."""
    images = _check_images(images)
    return images * (_check_masks(masks, images) < 0.5)


def inpaint_unet(unet):
    """A copy of `unet` (a 4-channel UNet2DConditionModel) with 9 input channels: conv_in's weights for the
    noisy latents copied, for the mask and the masked picture's latents zero, so it predicts what `unet` does."""
    from diffusers import UNet2DConditionModel

    if not isinstance(unet, UNet2DConditionModel) or unet.config.in_channels != 4:
        raise ValueError(f"unet must be a 4-channel diffusers UNet2DConditionModel (the base model's), got "
                         f"{type(unet).__name__}" + (f" with {unet.config.in_channels} input channels"
                                                     if hasattr(unet, "config") else ""))
    config = dict(unet.config)
    config["in_channels"] = 4 + EXTRA_CHANNELS
    wide = UNet2DConditionModel.from_config(config).to(unet.device)
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("conv_in.weight")}
    wide.load_state_dict(state, strict=False)
    with torch.no_grad():
        wide.conv_in.weight.zero_()
        wide.conv_in.weight[:, :4] = unet.conv_in.weight
    return wide


def inpaint_pipeline(pipe, unet=None):
    """diffusers' StableDiffusionInpaintPipeline from a text-to-image pipeline's parts: with its own 4-channel
    U-Net (the blending trick) or with `unet` (e.g. inpaint_unet's 9-channel one)."""
    if not all(hasattr(pipe, part) for part in ("unet", "vae", "tokenizer", "text_encoder", "scheduler")):
        raise ValueError(f"pipe must be a StableDiffusionPipeline (t2i.load_pipeline), got {type(pipe).__name__}")
    StableDiffusionInpaintPipeline = _quiet_import("StableDiffusionInpaintPipeline")
    parts = dict(pipe.components)
    if unet is not None:
        parts["unet"] = unet
    if parts["unet"].config.in_channels not in (4, 4 + EXTRA_CHANNELS):
        raise ValueError(f"unet must have 4 (blending) or 9 (inpainting) input channels, got "
                         f"{parts['unet'].config.in_channels}")
    parts["requires_safety_checker"] = False
    sample = parts["unet"].config.sample_size
    if isinstance(sample, int):
        out = StableDiffusionInpaintPipeline(**parts)
    else:   # a (height, width) U-Net: diffusers' __init__ compares sample_size < 64, so it sees an int meanwhile
        parts["unet"].register_to_config(sample_size=min(sample))
        try:
            out = StableDiffusionInpaintPipeline(**parts)
        finally:
            parts["unet"].register_to_config(sample_size=sample)
    out.set_progress_bar_config(disable=True)
    return out


def _quiet_import(name: str):
    """diffusers.<name>, imported with transformers' logging at error level (no notices about the image
    processors the book never uses, as t2i.stable_diffusion_pipeline_class)."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        import diffusers

        return getattr(diffusers, name)
    finally:
        transformers.logging.set_verbosity(level)


def load_inpaint_pipeline(folder, device=None):
    """A saved inpainting pipeline (the shapes-inpaint folder), loaded the way a user loads it:
    StableDiffusionInpaintPipeline.from_pretrained(folder), safetensors only, offline."""
    from pathlib import Path

    if not isinstance(folder, (str, Path)) or not (Path(folder) / "model_index.json").is_file():
        raise ValueError(f"folder must be a pipeline folder holding model_index.json, got {folder!r}")
    device = _checks.optional_device(device)
    pipe = _quiet_import("StableDiffusionInpaintPipeline").from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False, use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if device is not None else pipe


@torch.no_grad()
def inpaint(pipe, images: torch.Tensor, masks: torch.Tensor, prompts: str | list[str], num_inference_steps: int = 25,
            guidance_scale: float = 7.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Repaint the masked parts (mask 1 = repaint) of images (B, 3, H, W) in [-1, 1] with a
    StableDiffusionInpaintPipeline (inpaint_pipeline, or one from_pretrained); one prompt per picture (or one
    for all). Returns (B, 3, H, W) in [-1, 1]."""
    if not hasattr(pipe, "mask_processor"):
        raise ValueError(f"pipe must be a StableDiffusionInpaintPipeline (inpainting.inpaint_pipeline), got "
                         f"{type(pipe).__name__}")
    images = _check_images(images)
    masks = _check_masks(masks, images)
    sample = pipe.unet.config.sample_size
    height, width = ((sample, sample) if isinstance(sample, int) else tuple(sample))
    height, width = height * pipe.vae_scale_factor, width * pipe.vae_scale_factor
    if tuple(images.shape[-2:]) != (height, width):
        raise ValueError(f"images must be {height} x {width} (the model's size), got {tuple(images.shape[-2:])}")
    prompts = [prompts] * len(images) if isinstance(prompts, str) else _checks.prompts(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"prompts must hold one prompt per picture ({len(images)}), got {len(prompts)}")
    _checks.integer(num_inference_steps, "num_inference_steps", 1)
    _checks.number(guidance_scale, "guidance_scale", 0.0)
    _checks.generator(generator)
    masks = masks.expand(len(images), -1, -1, -1)
    out = pipe(prompts, image=(images + 1) / 2, mask_image=masks, height=height, width=width,
               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=generator,
               output_type="pt")
    return out.images.to(images.device) * 2 - 1


# ---- measures ------------------------------------------------------------------------------------------------

def silhouettes(images: torch.Tensor, colors: list[str]) -> torch.Tensor:
    """Pixels (B, H, W) of each picture within 0.5 (RGB in [0, 1]) of its named palette color (data.COLORS)."""
    images = _check_images(images)
    if isinstance(colors, str) or len(colors) != len(images) or any(c not in data.COLORS for c in colors):
        raise ValueError(f"colors must be a list of one name per picture ({len(images)}) from "
                         f"{tuple(data.COLORS)}, got {colors!r}")
    rgb = torch.tensor([data.COLORS[c] for c in colors])[:, :, None, None]
    return ((images.float().cpu().clamp(-1, 1) + 1) / 2 - rgb).norm(dim=1) < 0.5


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union (B,) of two stacks of boolean masks (B, H, W) (1.0 where both are empty)."""
    for value, name in ((a, "a"), (b, "b")):
        if not isinstance(value, torch.Tensor) or value.ndim != 3:
            raise ValueError(f"{name} must be a tensor (B, H, W) of masks, got {getattr(value, 'shape', value)}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.bool(), b.bool()
    inter, union = (a & b).sum((1, 2)).float(), (a | b).sum((1, 2)).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def outside_change(results: torch.Tensor, originals: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean absolute change (B,) outside each mask, RGB in [0, 1] (0 = kept exactly)."""
    results, originals = _check_images(results, "results"), _check_images(originals, "originals")
    if results.shape != originals.shape:
        raise ValueError(f"results and originals must have the same shape, got {tuple(results.shape)} and "
                         f"{tuple(originals.shape)}")
    keep = (_check_masks(masks, results) < 0.5).float().cpu()
    diff = (results.float().cpu() - originals.float().cpu()).abs().mean(1, keepdim=True) / 2
    return (diff * keep).sum((1, 2, 3)) / keep.sum((1, 2, 3)).clamp_min(1)


def seam(results: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean absolute color jump (B,) between neighbouring pixels on either side of the mask's border, RGB in
    [0, 1]: 0 where the repainted part continues the kept part seamlessly."""
    results = _check_images(results, "results")
    m = _check_masks(masks, results).expand(len(results), -1, -1, -1).cpu() > 0.5
    p = (results.float().cpu().clamp(-1, 1) + 1) / 2
    jumps, counts = torch.zeros(len(p)), torch.zeros(len(p))
    for dim in (2, 3):
        a, b = p.narrow(dim, 0, p.shape[dim] - 1), p.narrow(dim, 1, p.shape[dim] - 1)
        ma, mb = m.narrow(dim, 0, m.shape[dim] - 1), m.narrow(dim, 1, m.shape[dim] - 1)
        across = (ma != mb).float()
        jumps += ((a - b).abs().mean(1, keepdim=True) * across).sum((1, 2, 3))
        counts += across.sum((1, 2, 3))
    return jumps / counts.clamp_min(1)


def edit_tasks(n: int, seed: int = 0, image_size: int = 32) -> dict:
    """The two edits lesson 11 measures, on n generated pictures (plain captions) each, and a control:
    'replace': the shape's box masked, the prompt asks another color and another shape (same background);
    'background': everything but the shape's box masked, the prompt asks the other background (same shape);
    'keep' (the control): background's pictures and masks with their own captions, so nothing is to change.
    Each: dict(images, masks, prompts, wanted (the reader's dicts), shapes (data.ShapesData))."""
    n = _checks.integer(n, "n", 1)
    seed = _checks.seed(seed)
    g = torch.Generator().manual_seed(seed)
    colors, shapes_, backs = list(data.COLORS), list(data.SHAPES), list(data.BACKGROUNDS)
    out = {}
    for k, task in enumerate(("replace", "background")):
        found = data.make_shapes(n, image_size, caption_style="plain", generator=torch.Generator().manual_seed(seed + k))
        box = box_masks(found.geometry, image_size)
        shift_c = torch.randint(1, len(colors), (n,), generator=g).tolist()
        shift_s = torch.randint(1, len(shapes_), (n,), generator=g).tolist()
        wanted = []
        for a, dc, ds in zip(found.attributes, shift_c, shift_s):
            if task == "replace":
                wanted.append(dict(shape=shapes_[(shapes_.index(a["shape"]) + ds) % len(shapes_)],
                                   color=colors[(colors.index(a["color"]) + dc) % len(colors)],
                                   background=a["background"]))
            else:
                wanted.append(dict(shape=a["shape"], color=a["color"],
                                   background=backs[1 - backs.index(a["background"])]))
        out[task] = dict(images=found.images, masks=box if task == "replace" else 1 - box, wanted=wanted,
                         prompts=[data.shape_caption(w["shape"], w["color"], w["background"]) for w in wanted],
                         shapes=found)
    same = out["background"]
    out["keep"] = dict(same, wanted=[dict(a) for a in same["shapes"].attributes],
                       prompts=[data.shape_caption(a["shape"], a["color"], a["background"])
                                for a in same["shapes"].attributes])
    return out


def _row(estimate) -> dict:
    return estimate.as_dict()


def measure_edits(pipe, tasks: dict, num_inference_steps: int = 25, guidance_scale: float = 7.5, seed: int = 0,
                  batch_size: int = 48) -> dict:
    """Run the edit tasks (edit_tasks) through an inpainting pipeline and measure them, each share with its
    Wilson 95% interval and the mean IoU with its bootstrap 95% interval (stats.Estimate.as_dict):
    replace: asked color, asked shape (evaluation.read_shapes), outside kept (mean change <= 24/255), seam;
    background: new background read, shape kept (IoU >= 0.8), mean IoU, mean seam; keep (when given): the
    same, its background read as the caption's own. Also returns the pictures."""
    from .evaluation import read_shapes

    if not isinstance(tasks, dict) or set(tasks) - {"keep"} != {"replace", "background"}:
        raise ValueError("tasks must be inpainting.edit_tasks(...)'s dict with 'replace' and 'background' (and "
                         "optionally 'keep')")
    seed = _checks.seed(seed)
    batch_size = _checks.integer(batch_size, "batch_size", 1)
    found, pictures = {}, {}
    for k, (task, t) in enumerate(tasks.items()):
        g = torch.Generator().manual_seed(seed + k)
        results = torch.cat([inpaint(pipe, t["images"][i:i + batch_size], t["masks"][i:i + batch_size],
                                     t["prompts"][i:i + batch_size], num_inference_steps, guidance_scale, g).cpu()
                             for i in range(0, len(t["images"]), batch_size)])
        reads = read_shapes(results)
        seams = seam(results, t["masks"])
        pictures[task] = results
        if task == "replace":
            change = outside_change(results, t["images"], t["masks"])
            found[task] = dict(
                asked_color=_row(proportion([r["color"] == w["color"] for r, w in zip(reads, t["wanted"])])),
                asked_shape=_row(proportion([r["shape"] == w["shape"] for r, w in zip(reads, t["wanted"])])),
                outside_kept=_row(proportion(change <= MAX_OUTSIDE_CHANGE)),
                mean_outside_change=round(float(change.mean()), 4), mean_seam=round(float(seams.mean()), 4))
        else:
            shapes = t["shapes"]
            idx = torch.tensor([data.SHAPES.index(a["shape"]) for a in shapes.attributes])
            original = data.shape_coverage(idx, shapes.geometry, shapes.images.shape[-1]) > 0.5
            overlap = iou(silhouettes(results, [w["color"] for w in t["wanted"]]), original)
            found[task] = {
                "new_background" if task == "background" else "background_right": _row(proportion(
                    [r["background"] == w["background"] for r, w in zip(reads, t["wanted"])]))}
            found[task].update(
                shape_kept=_row(proportion(overlap >= MIN_KEPT_IOU)),
                mean_iou=bootstrap_interval(overlap.numpy(), seed=seed).as_dict(),
                mean_seam=round(float(seams.mean()), 4))
    found["settings"] = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                             n=len(tasks["replace"]["images"]),
                             interval="Wilson 95% (shares), percentile bootstrap 95% (mean IoU)")
    return dict(measures=found, pictures=pictures)
