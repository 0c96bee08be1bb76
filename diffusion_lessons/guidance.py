"""Classifier-free guidance (Ho and Salimans 2022), lesson 05.

One network learns both predictions: during training its label is dropped (replaced by
NULL_LABEL) with probability p_uncond, so eps(x_t, t, label) is the conditional prediction and
eps(x_t, t, NULL_LABEL) the unconditional one. At sampling time the two are combined in
diffusers' convention (StableDiffusionPipeline's guidance_scale s):

    eps = eps_uncond + s * (eps_cond - eps_uncond)        the paper writes (1 + w) eps_cond - w eps_uncond,
                                                          so w = s - 1
s = 1 is the plain conditional prediction, s = 0 the unconditional one, s > 1 pushes past the
conditional prediction, away from the unconditional one. Negative guidance swaps the
unconditional branch for another label's prediction (the analogue of a negative prompt).

Guidance is a wrapper around a denoiser (see loop): guided_denoiser(denoise, s, uncond) is again a
denoiser, which runs ONE batched pass of [x; x] with [cond; uncond] and combines the two halves (or, for
large batches on a CPU, where two passes of x are faster, the same two predictions in two passes:
batch_guidance, docs/performance.md). The
digits pass class labels (uncond = NULL_LABEL or a negative label), text to image passes prompt
embeddings (uncond = the empty prompt's), with the same rule at every s >= 0. (diffusers'
StableDiffusionPipeline instead switches guidance off for s <= 1, so there s < 1 acts as s = 1.)
The combination works on whatever the network predicts: it is a weighted sum with weights adding to
1, and converting eps, v and x0 into each other is affine with the same x_t, so guiding v and then
converting equals converting and then guiding. The rescale (phi) is not affine: like diffusers it acts
on the raw prediction.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from . import _checks
from .data import NULL_LABEL, NUM_DIGIT_CLASSES
from .loop import Denoiser, unet_denoiser

__all__ = ["NULL_LABEL", "check_labels", "drop_labels", "cfg_combine", "rescale_guidance", "check_scales",
           "check_guidance", "guided_denoiser", "branch_labels", "combine_branches", "guided_eps"]


def check_labels(labels: torch.Tensor | int | list, name: str = "labels") -> torch.Tensor:
    """labels as a 1-D int64 tensor, or ValueError unless every label is a digit 0..9."""
    try:
        found = torch.as_tensor(labels) if not isinstance(labels, (str, bytes, dict, set)) else None
    except (TypeError, ValueError, RuntimeError):
        found = None
    if found is None:
        raise ValueError(f"{name} must be a digit 0..9, a list of them or an integer tensor, got {type(labels).__name__}")
    labels = found
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name} must hold integer class labels 0..9, got dtype {labels.dtype}")
    labels = labels.reshape(-1).long()
    if labels.numel() == 0:
        raise ValueError(f"{name} must hold at least one label")
    if int(labels.min()) < 0 or int(labels.max()) >= NUM_DIGIT_CLASSES:
        raise ValueError(f"{name} must lie in 0..{NUM_DIGIT_CLASSES - 1} (the digits; {NULL_LABEL} is the "
                         f"null label, used internally), got values from {int(labels.min())} to {int(labels.max())}")
    return labels


def drop_labels(labels: torch.Tensor, p_uncond: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Label dropout for training: each label becomes NULL_LABEL with probability p_uncond
    (the CFG paper uses 0.1 or 0.2; the shipped digits model 0.15)."""
    _checks.tensor(labels, "labels")
    _checks.generator(generator)
    if not _is_number(p_uncond) or not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond!r}")
    if p_uncond == 0.0:
        return labels
    device = generator.device if generator is not None else labels.device
    drop = torch.rand(labels.shape, generator=generator, device=device).to(labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)


def cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """eps_uncond + s * (eps_cond - eps_uncond) (diffusers; the paper's w = s - 1).
    s = 1 returns eps_cond itself and s = 0 eps_uncond, exactly."""
    _checks.tensor(eps_cond, "eps_cond")
    _checks.tensor(eps_uncond, "eps_uncond")
    _checks.number(guidance_scale, "guidance_scale")
    if eps_cond.shape != eps_uncond.shape:
        raise ValueError(f"eps_uncond must have the shape of eps_cond {tuple(eps_cond.shape)}, "
                         f"got {tuple(eps_uncond.shape)}")
    if guidance_scale == 1.0:  # in floating point u + 1 * (c - u) is only nearly c
        return eps_cond
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def rescale_guidance(eps_cfg: torch.Tensor, eps_cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2024, eq. 15-16; diffusers' rescale_noise_cfg):
    rescaled = cfg * std(eps_cond) / std(cfg) per sample; out = phi * rescaled + (1 - phi) * cfg."""
    if not 0.0 <= phi <= 1.0:
        raise ValueError(f"phi (guidance_rescale) must lie in [0, 1], got {phi!r}")
    if phi == 0.0:
        return eps_cfg
    dims = list(range(1, eps_cfg.ndim))
    std_cond = eps_cond.std(dim=dims, keepdim=True)
    std_cfg = eps_cfg.std(dim=dims, keepdim=True)
    rescaled = eps_cfg * (std_cond / std_cfg)
    return phi * rescaled + (1 - phi) * eps_cfg


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_scales(guidance_scale: float, guidance_rescale: float = 0.0) -> None:
    """ValueError unless guidance_scale is a finite number >= 0 and guidance_rescale lies in [0, 1]."""
    if not _is_number(guidance_scale) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = conditional, 0 = unconditional), "
                         f"got {guidance_scale!r}")
    if not _is_number(guidance_rescale) or not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"guidance_rescale must lie in [0, 1], got {guidance_rescale!r}")


def check_guidance(labels: torch.Tensor, guidance_scale: float, negative_label=None,
                   guidance_rescale: float = 0.0) -> torch.Tensor | None:
    """Validate guidance settings for `labels` (already checked); return the negative labels (B,) or None."""
    check_scales(guidance_scale, guidance_rescale)
    if negative_label is None:
        return None
    negative = check_labels(negative_label, "negative_label")
    if negative.numel() == 1:
        negative = negative.expand(labels.shape[0])
    if negative.shape != labels.shape:
        raise ValueError(f"negative_label must be one label or one per sample ({labels.shape[0]}), "
                         f"got {negative.numel()}")
    if bool((negative == labels.to(negative.device)).any()):
        raise ValueError("negative_label must differ from the asked label of every sample "
                         "(steering away from the asked digit would cancel the guidance)")
    return negative


# ---- guidance as a wrapper around a denoiser -------------------------------------------------------

# 'auto' guidance on a CPU: one batched pass of [x; x] while x (one branch) holds fewer numbers than this,
# else two passes (measured on the digits UNet, 16x16x1 per sample: docs/performance.md).
CPU_BATCHED_MAX_ELEMENTS = 16 * 16 * 16


def _one_branch(guidance_scale: float, guidance_rescale: float) -> bool:
    """s = 1 needs only the conditional branch; s = 0 without rescale only the unconditional one."""
    return guidance_scale == 1.0 or (guidance_scale == 0.0 and guidance_rescale == 0.0)


def _branches(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float, guidance_rescale: float):
    """The conditions of the one batched pass: [cond; uncond], or the only branch needed."""
    if guidance_scale == 1.0:
        return cond
    uncond = uncond.to(cond.device)
    if uncond.shape[0] != cond.shape[0]:
        raise ValueError(f"uncond must hold one condition per sample ({cond.shape[0]}), got {uncond.shape[0]}")
    return uncond if guidance_scale == 0.0 and guidance_rescale == 0.0 else torch.cat([cond, uncond])


def combine_branches(prediction: torch.Tensor, guidance_scale: float, guidance_rescale: float = 0.0) -> torch.Tensor:
    """Split the batched prediction made on [cond; uncond] (branch_labels) and combine: cfg, then rescale."""
    check_scales(guidance_scale, guidance_rescale)
    _checks.tensor(prediction, "prediction")
    if _one_branch(guidance_scale, guidance_rescale):
        return prediction  # only one branch was run
    cond, other = prediction.chunk(2)
    return rescale_guidance(cfg_combine(cond, other, guidance_scale), cond, guidance_rescale)


def _check_batch_guidance(batch_guidance) -> bool | str:
    """batch_guidance as given, or ValueError unless it is True, False or 'auto'."""
    if batch_guidance is True or batch_guidance is False or (isinstance(batch_guidance, str)
                                                              and batch_guidance == "auto"):
        return batch_guidance
    raise ValueError(f"batch_guidance must be True (one batched pass of [x; x]), False (two passes of x) or "
                     f"'auto' (batched except for large batches on a CPU), got {batch_guidance!r}")


def _batched(x: torch.Tensor, batch_guidance: bool | str) -> bool:
    """Whether guided_denoiser runs one batched pass for the states x (else two passes).
    'auto': batched on a GPU (CUDA, MPS), where one large kernel launch beats two; on a CPU batched only
    while x holds fewer than CPU_BATCHED_MAX_ELEMENTS numbers (per branch): there a pass pays a fixed cost
    that batching saves, but the doubled batch's activations outgrow the CPU's caches, and the
    convolutions, the layout reorders around them and the elementwise operators then cost more per
    sample (measured: docs/performance.md)."""
    if batch_guidance != "auto":
        return batch_guidance
    return x.device.type != "cpu" or x.numel() < CPU_BATCHED_MAX_ELEMENTS


def guided_denoiser(denoise: Denoiser, guidance_scale: float, uncond: torch.Tensor | None,
                    guidance_rescale: float = 0.0, batch_guidance: bool | str = "auto") -> Denoiser:
    """Classifier-free guidance as a denoiser: guided(x, t, cond) runs denoise on [x; x] with
    [cond; uncond] and returns uncond_pred + s (cond_pred - uncond_pred), then rescaled by phi.
    uncond: the unconditional (or negative) conditions, one per sample; None only at s = 1.
    batch_guidance: True runs ONE batched pass of [x; x], False two passes (cond, then uncond), 'auto'
    (default) picks the faster on the device: batched on a GPU and for small
    batches, two passes for large batches on a CPU. Both give the same result up to rounding (~1e-6)."""
    if not callable(denoise):
        raise ValueError(f"denoise must be a callable denoise(x, t, cond) (loop.unet_denoiser), got "
                         f"{type(denoise).__name__}")
    check_scales(guidance_scale, guidance_rescale)
    policy = _check_batch_guidance(batch_guidance)
    if uncond is None and guidance_scale != 1.0:
        raise ValueError("uncond: guidance (guidance_scale != 1) needs the unconditional conditions")
    s, phi = float(guidance_scale), float(guidance_rescale)

    def guided(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        cond_in = _branches(cond, uncond, s, phi)
        if _one_branch(s, phi):
            return denoise(x, t, cond_in)
        if _batched(x, policy):
            return combine_branches(denoise(torch.cat([x, x]), t, cond_in), s, phi)
        half = cond.shape[0]   # two passes: the same two halves, one network call each
        pred_cond, pred_uncond = denoise(x, t, cond_in[:half]), denoise(x, t, cond_in[half:])
        return rescale_guidance(cfg_combine(pred_cond, pred_uncond, s), pred_cond, phi)

    return guided


def branch_labels(labels: torch.Tensor, guidance_scale: float, negative: torch.Tensor | None = None,
                  guidance_rescale: float = 0.0) -> torch.Tensor:
    """The class labels of the single batched forward pass: [labels; null or negative labels].
    Only one branch is needed at s = 1 (conditional) and, without rescale, at s = 0 (the other one)."""
    check_scales(guidance_scale, guidance_rescale)
    _checks.tensor(labels, "labels")
    other = negative if negative is not None else torch.full_like(labels, NULL_LABEL)
    return _branches(labels, other, guidance_scale, guidance_rescale)


def guided_eps(model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor | int, labels,
               guidance_scale: float = 1.0, negative_label=None, guidance_rescale: float = 0.0) -> torch.Tensor:
    """The guided prediction (eps for an eps model) with ONE batched forward pass of [x_t; x_t] with
    [labels; null labels] (or the negative label's, to steer away from it): guided_denoiser on the model."""
    _checks.tensor(x_t, "x_t", floating=True)
    labels = check_labels(labels)
    if labels.shape[0] != x_t.shape[0]:
        raise ValueError(f"labels must hold one label per sample ({x_t.shape[0]}), got {labels.shape[0]}")
    negative = check_guidance(labels, guidance_scale, negative_label, guidance_rescale)
    uncond = negative if negative is not None else torch.full_like(labels, NULL_LABEL)
    denoise = guided_denoiser(unet_denoiser(model, "class_labels"), guidance_scale, uncond, guidance_rescale)
    return denoise(x_t, t, labels.to(x_t.device))
