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


def _abar(schedule: NoiseSchedule, t, like: torch.Tensor, other: torch.Tensor, name: str,
          like_name: str = "x_t") -> torch.Tensor:
    """alpha_bar_t shaped to broadcast over `like`, after checking the schedule and both tensors."""
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule (make_schedule, loop.as_schedule), got "
                         f"{type(schedule).__name__}")
    for value, label in ((like, like_name), (other, name)):
        if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
            raise ValueError(f"{label} must be a floating-point tensor, got {type(value).__name__}")
    if other.shape != like.shape:
        raise ValueError(f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(other.shape)}")
    return schedule.at(schedule.alphas_cumprod, schedule.check_t(t), like)


def x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (Ho et al. eq. 15; DDIM eq. 12)."""
    abar = _abar(schedule, t, x_t, eps, "eps")
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def eps_from_x0(schedule: NoiseSchedule, x_t: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
    """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t): the noise that turns x0 into x_t."""
    abar = _abar(schedule, t, x_t, x0, "x0")
    return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()


def v_from_x0_eps(schedule: NoiseSchedule, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans and Ho 2022; diffusers' get_velocity)."""
    abar = _abar(schedule, t, x0, eps, "eps", "x0")
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def x0_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
    abar = _abar(schedule, t, x_t, v, "v")
    return abar.sqrt() * x_t - (1 - abar).sqrt() * v


def eps_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""
    abar = _abar(schedule, t, x_t, v, "v")
    return (1 - abar).sqrt() * x_t + abar.sqrt() * v


def x0_and_eps(prediction: torch.Tensor, x_t: torch.Tensor, abar_t: float,
               prediction_type: str = "epsilon") -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from the network's output at one t given as abar_t (a number): the formulas above, in the
    order diffusers' DDIMScheduler.step computes pred_original_sample and pred_epsilon."""
    check_prediction_type(prediction_type)
    if isinstance(abar_t, bool) or not isinstance(abar_t, (int, float)) or not 0 <= abar_t <= 1:
        raise ValueError(f"abar_t must be a number in [0, 1] (alpha_bar at t), got {abar_t!r}")
    a, b = math.sqrt(abar_t), math.sqrt(1 - abar_t)
    if prediction_type == "epsilon":
        return (x_t - b * prediction) / a, prediction
    if prediction_type == "v_prediction":
        return a * x_t - b * prediction, a * prediction + b * x_t
    if prediction_type == "sample":   # the network predicts x0 itself
        return prediction, (x_t - a * prediction) / b
    raise ValueError(check_prediction_type(prediction_type))  # check_prediction_type raises first
