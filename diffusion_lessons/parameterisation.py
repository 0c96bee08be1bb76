"""What the network predicts, lesson 03: eps, x0 or v, and the conversions between them.

Notation as in schedules (0-based t, abar_t = schedule.alphas_cumprod[t]). At a given t and x_t each
prediction fixes the other two (Ho et al. 2020 eq. 4 and 15; Salimans and Ho 2022 for v):

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps        v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0
    x0  = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)    x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v
    eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)     eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v

diffusers names the three prediction types 'epsilon', 'v_prediction' and 'sample' (x0), in a
scheduler's config.prediction_type. Every conversion is affine in the prediction with weights fixed
by x_t and t, so a weighted sum with weights adding to 1 (classifier-free guidance) commutes with it:
guiding v and then converting gives the same eps as converting and then guiding.
"""

from __future__ import annotations

import math

import torch

from .schedules import NoiseSchedule

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # diffusers' names for eps, v and x0

__all__ = ["PREDICTION_TYPES", "check_prediction_type", "x0_from_eps", "eps_from_x0", "v_from_x0_eps",
           "x0_from_v", "eps_from_v", "x0_and_eps"]


def check_prediction_type(prediction_type: str) -> str:
    """prediction_type itself, or ValueError unless it is one of PREDICTION_TYPES."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES} (diffusers' names for eps, v "
                         f"and x0), got {prediction_type!r}")
    return prediction_type


def _abar(schedule: NoiseSchedule, t, like: torch.Tensor) -> torch.Tensor:
    return schedule.at(schedule.alphas_cumprod, schedule.check_t(t), like)


def x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (Ho et al. eq. 15; DDIM eq. 12)."""
    abar = _abar(schedule, t, x_t)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def eps_from_x0(schedule: NoiseSchedule, x_t: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
    """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t): the noise that turns x0 into x_t."""
    abar = _abar(schedule, t, x_t)
    return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()


def v_from_x0_eps(schedule: NoiseSchedule, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans and Ho 2022; diffusers' get_velocity)."""
    abar = _abar(schedule, t, x0)
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def x0_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
    abar = _abar(schedule, t, x_t)
    return abar.sqrt() * x_t - (1 - abar).sqrt() * v


def eps_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""
    abar = _abar(schedule, t, x_t)
    return (1 - abar).sqrt() * x_t + abar.sqrt() * v


def x0_and_eps(prediction: torch.Tensor, x_t: torch.Tensor, abar_t: float,
               prediction_type: str = "epsilon") -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from the network's output at one t given as abar_t (a number): the formulas above, in the
    order diffusers' DDIMScheduler.step computes pred_original_sample and pred_epsilon."""
    a, b = math.sqrt(abar_t), math.sqrt(1 - abar_t)
    if prediction_type == "epsilon":
        return (x_t - b * prediction) / a, prediction
    if prediction_type == "v_prediction":
        return a * x_t - b * prediction, a * prediction + b * x_t
    if prediction_type == "sample":   # the network predicts x0 itself
        return prediction, (x_t - a * prediction) / b
    raise ValueError(check_prediction_type(prediction_type))  # check_prediction_type raises first
