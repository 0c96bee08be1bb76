"""Lesson 05's coding exercises: the classifier-free guidance combination (Ho and Salimans 2022, in
diffusers' convention s = 1 + w) and guidance rescale (Lin et al. 2024, eq. 15-16)."""

from __future__ import annotations

import torch

from ..exercises import CodingExercise


def guided_prediction(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, s: float) -> torch.Tensor:
    return eps_uncond + s * (eps_cond - eps_uncond)


def rescaled_guidance(eps_cfg: torch.Tensor, eps_cond: torch.Tensor, phi: float) -> torch.Tensor:
    dims = tuple(range(1, eps_cfg.ndim))                    # every axis but the batch: one std per sample
    rescaled = eps_cfg * eps_cond.std(dim=dims, keepdim=True) / eps_cfg.std(dim=dims, keepdim=True)
    return phi * rescaled + (1 - phi) * eps_cfg


def _pair(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (int(torch.randint(1, 5, (1,), generator=g)), 1, 16, 16)
    eps_uncond = torch.randn(shape, generator=g)
    return eps_uncond + 0.1 * torch.randn(shape, generator=g), eps_uncond   # conditional = unconditional + a little


def _combine_inputs(g: torch.Generator) -> tuple:
    eps_cond, eps_uncond = _pair(g)
    s = round(float(torch.rand(1, generator=g)) * 9 + 1.5, 2)                # a scale from 1.5 to 10.5
    return eps_cond, eps_uncond, s


def _rescale_inputs(g: torch.Generator) -> tuple:
    eps_cond, eps_uncond = _pair(g)
    eps_cfg = guided_prediction(eps_cond, eps_uncond, 7.5)
    return eps_cfg, eps_cond, round(float(torch.rand(1, generator=g)) * 0.8 + 0.2, 2)  # phi from 0.2 to 1.0


EXERCISES = [
    CodingExercise(
        lesson=5, name="guidance combination",
        task="return the classifier-free guided prediction at guidance scale s, eps_uncond + s (eps_cond - "
             "eps_uncond): s = 1 is the conditional prediction, s = 0 the unconditional one, and s > 1 walks past "
             "the conditional prediction, away from the unconditional one",
        signature="guided_prediction(eps_cond, eps_uncond, s)",
        solution=guided_prediction, make_inputs=_combine_inputs,
        hint="one line; the paper's (1 + w) eps_cond - w eps_uncond is the same with w = s - 1."),
    CodingExercise(
        lesson=5, name="guidance rescale",
        task="apply guidance rescale: scale each sample of eps_cfg (B, 1, 16, 16) so that its standard deviation "
             "equals that of the same sample of eps_cond, then mix: phi * rescaled + (1 - phi) * eps_cfg",
        signature="rescaled_guidance(eps_cfg, eps_cond, phi)",
        solution=rescaled_guidance, make_inputs=_rescale_inputs,
        hint="one standard deviation per sample: .std(dim=(1, 2, 3), keepdim=True), so that it broadcasts back "
             "over the pixels; a single .std() over the whole batch is not the same."),
]
