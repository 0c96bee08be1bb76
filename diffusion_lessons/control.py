"""ControlNet (lesson 12, Part III; Zhang, Rao and Agrawala 2023): pin the layout with a control image.

A trainable copy of the U-Net's encoder and middle block reads the control image (here the shape's silhouette,
white on black) through a small convolutional encoder, and adds its features to the locked U-Net's skip
connections through 1x1 convolutions that start at zero ("zero convolutions"). Before training every added
feature is zero, so the pipeline draws exactly what the base model draws; training moves only the copy.

diffusers builds the copy with ControlNetModel.from_unet and runs it with StableDiffusionControlNetPipeline;
conditioning_embedding_out_channels sets the control encoder's widths, and its len - 1 stride-2 convolutions
must shrink the control image to the latent size: 3 widths for this VAE's 4x downsampling (32 -> 8).
"""

from __future__ import annotations

import torch

from . import _checks, data
from .inpainting import _quiet_import, iou, silhouettes
from .stats import proportion

__all__ = ["CONDITIONING_CHANNELS", "SCALES", "silhouette_images", "build_controlnet", "controlnet_pipeline", "load_controlnet_pipeline",
           "controlled", "zero_convolutions", "control_tasks", "measure_control"]

CONDITIONING_CHANNELS = (16, 32, 64)   # 2 stride-2 convolutions: 32 x 32 -> 8 x 8
SCALES = (0.0, 0.5, 1.0, 1.5)          # the conditioning scales lesson 12 compares


def silhouette_images(shape_idx: torch.Tensor, geometry: torch.Tensor, image_size: int = 32) -> torch.Tensor:
    """Control images (B, 3, H, W) in [0, 1]: each shape (data.SHAPES index, geometry rows cx, cy, r) white on
    black, drawn by data.shape_coverage (soft edges), the same in all three channels."""
    alpha = data.shape_coverage(shape_idx, geometry, image_size)
    return alpha[:, None].expand(-1, 3, -1, -1).contiguous()


def build_controlnet(unet, seed: int | None = 0):
    """ControlNetModel.from_unet(unet): the encoder and middle block copied with their weights, a control
    encoder of CONDITIONING_CHANNELS (seeded) and every zero convolution at zero."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    if not isinstance(unet, UNet2DConditionModel):
        raise ValueError(f"unet must be a diffusers UNet2DConditionModel (the base model's), got {type(unet).__name__}")
    seed = _checks.optional_seed(seed)
    with torch.random.fork_rng(devices=[]):   # the seed draws the control encoder; the global generator is left alone
        if seed is not None:
            torch.manual_seed(seed)
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS)


def zero_convolutions(controlnet) -> dict[str, float]:
    """The largest absolute weight of each group of zero convolutions: the control encoder's last one, the
    down-block outputs and the middle block's (all 0.0 before training)."""
    from diffusers import ControlNetModel

    if not isinstance(controlnet, ControlNetModel):
        raise ValueError(f"controlnet must be a diffusers ControlNetModel, got {type(controlnet).__name__}")
    biggest = lambda mods: max(float(p.detach().abs().max()) for m in mods for p in m.parameters())  # noqa: E731
    return dict(control_encoder_out=biggest([controlnet.controlnet_cond_embedding.conv_out]),
                down_blocks=biggest(controlnet.controlnet_down_blocks),
                mid_block=biggest([controlnet.controlnet_mid_block]))


def controlnet_pipeline(pipe, controlnet):
    """diffusers' StableDiffusionControlNetPipeline from a text-to-image pipeline's parts and a ControlNetModel."""
    from diffusers import ControlNetModel

    if not all(hasattr(pipe, part) for part in ("unet", "vae", "tokenizer", "text_encoder", "scheduler")):
        raise ValueError(f"pipe must be a StableDiffusionPipeline (t2i.load_pipeline), got {type(pipe).__name__}")
    if not isinstance(controlnet, ControlNetModel):
        raise ValueError(f"controlnet must be a diffusers ControlNetModel, got {type(controlnet).__name__}")
    parts = {k: v for k, v in pipe.components.items() if k != "controlnet"}
    out = _quiet_import("StableDiffusionControlNetPipeline")(**parts, controlnet=controlnet,
                                                              requires_safety_checker=False)
    out.set_progress_bar_config(disable=True)
    return out


def load_controlnet_pipeline(base, folder, device=None):
    """StableDiffusionControlNetPipeline.from_pretrained(base, controlnet=ControlNetModel.from_pretrained(folder)),
    the way a user loads the shipped pair (safetensors only, offline)."""
    from pathlib import Path

    from diffusers import ControlNetModel

    for value, name, inside in ((base, "base", "model_index.json"), (folder, "folder", "config.json")):
        if not isinstance(value, (str, Path)) or not (Path(value) / inside).is_file():
            raise ValueError(f"{name} must be a folder holding {inside}, got {value!r}")
    device = _checks.optional_device(device)
    net = ControlNetModel.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    pipe = _quiet_import("StableDiffusionControlNetPipeline").from_pretrained(
        base, controlnet=net, safety_checker=None, requires_safety_checker=False, use_safetensors=True,
        local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if device is not None else pipe


def _check_control(control, size: int, n: int) -> torch.Tensor:
    control = _checks.tensor(control, "control", floating=True, ndim=4, finite=True)
    if control.shape[1] != 3 or tuple(control.shape[-2:]) != (size, size) or control.shape[0] not in (1, n):
        raise ValueError(f"control must be a tensor (B, 3, {size}, {size}) in [0, 1] (white shape on black) with "
                         f"B = 1 or {n}, got shape {tuple(control.shape)}")
    if float(control.min()) < 0 or float(control.max()) > 1:
        raise ValueError("control must hold values in [0, 1] (white shape on black)")
    return control


@torch.no_grad()
def controlled(pipe, prompts: str | list[str], control: torch.Tensor, conditioning_scale: float = 1.0,
               num_inference_steps: int = 25, guidance_scale: float = 7.5,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Pictures (B, 3, H, W) in [-1, 1] from a StableDiffusionControlNetPipeline (controlnet_pipeline, or one
    from_pretrained), one control image per prompt (or one for all) at `conditioning_scale`."""
    if not hasattr(pipe, "controlnet"):
        raise ValueError(f"pipe must be a StableDiffusionControlNetPipeline (control.controlnet_pipeline), got "
                         f"{type(pipe).__name__}")
    prompts = [prompts] if isinstance(prompts, str) else _checks.prompts(prompts)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    control = _check_control(control, size, len(prompts)).expand(len(prompts), -1, -1, -1)
    conditioning_scale = _checks.number(conditioning_scale, "conditioning_scale", 0.0)
    _checks.integer(num_inference_steps, "num_inference_steps", 1)
    _checks.number(guidance_scale, "guidance_scale", 0.0)
    _checks.generator(generator)
    out = pipe(prompts, image=control, controlnet_conditioning_scale=conditioning_scale, height=size, width=size,
               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=generator,
               output_type="pt")
    return out.images.to(control.device) * 2 - 1


def control_tasks(n: int, seed: int = 0, image_size: int = 32) -> dict:
    """n plain prompts with a silhouette of the prompt's shape at a random size and place (data.make_shapes'
    geometry): dict(prompts, control (B, 3, H, W) in [0, 1], colors, shapes (data.ShapesData))."""
    n = _checks.integer(n, "n", 1)
    seed = _checks.seed(seed)
    found = data.make_shapes(n, image_size, caption_style="plain", generator=torch.Generator().manual_seed(seed))
    idx = torch.tensor([data.SHAPES.index(a["shape"]) for a in found.attributes])
    return dict(prompts=found.captions, control=silhouette_images(idx, found.geometry, image_size),
                colors=[a["color"] for a in found.attributes], shapes=found)


def measure_control(pipe, tasks: dict, scales=SCALES, num_inference_steps: int = 25, guidance_scale: float = 7.5,
                    seed: int = 0, batch_size: int = 48) -> dict:
    """For each conditioning scale: the IoU of the generated shape (pixels near the asked color) with the
    silhouette (mean with a bootstrap 95% interval), the share with IoU >= 0.8 and the share whose color
    (evaluation.read_shapes) is right (Wilson 95%), the same starting noise at every scale. Also the pictures."""
    from .evaluation import read_shapes
    from .stats import bootstrap_interval

    if not isinstance(tasks, dict) or not {"prompts", "control", "colors"} <= set(tasks):
        raise ValueError("tasks must be control.control_tasks(...)'s dict")
    if isinstance(scales, (int, float)) or not scales:
        raise ValueError(f"scales must be a non-empty list of conditioning scales >= 0, got {scales!r}")
    scales = [_checks.number(s, "scales", 0.0) for s in scales]
    seed = _checks.seed(seed)
    batch_size = _checks.integer(batch_size, "batch_size", 1)
    target = tasks["control"][:, 0] > 0.5
    found, pictures = {}, {}
    for scale in scales:
        g = torch.Generator().manual_seed(seed)
        images = torch.cat([controlled(pipe, tasks["prompts"][i:i + batch_size], tasks["control"][i:i + batch_size],
                                       scale, num_inference_steps, guidance_scale, g).cpu()
                            for i in range(0, len(tasks["prompts"]), batch_size)])
        overlap = iou(silhouettes(images, tasks["colors"]), target)
        reads = read_shapes(images)
        found[f"{scale:g}"] = dict(
            mean_iou=bootstrap_interval(overlap.numpy(), seed=seed).as_dict(),
            iou_at_least_0_8=proportion(overlap >= 0.8).as_dict(),
            color_right=proportion([r["color"] == c for r, c in zip(reads, tasks["colors"])]).as_dict())
        pictures[f"{scale:g}"] = images
    found["settings"] = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                             n=len(tasks["prompts"]), starting_noise="the same generator seed at every scale",
                             interval="mean IoU: percentile bootstrap 95%; shares: Wilson 95%")
    return dict(measures=found, pictures=pictures)
