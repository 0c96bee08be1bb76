"""Lesson 01's coding exercises: the variance-preserving mix, once and repeated."""

from __future__ import annotations

import torch

from ..exercises import CodingExercise


def vp_mix(x: torch.Tensor, eps: torch.Tensor, beta: float) -> torch.Tensor:
    return (1 - beta) ** 0.5 * x + beta**0.5 * eps


def repeated_mix(x: torch.Tensor, noises: torch.Tensor, beta: float) -> torch.Tensor:
    for eps in noises:  # one fresh noise per step: noises[0] first, then noises[1], ...
        x = (1 - beta) ** 0.5 * x + beta**0.5 * eps
    return x


def _image(g: torch.Generator) -> torch.Tensor:
    size = int(torch.randint(2, 9, (1,), generator=g))
    return torch.rand(3, size, size, generator=g) * 2 - 1


def _mix_inputs(g: torch.Generator) -> tuple:
    x = _image(g)
    return x, torch.randn(x.shape, generator=g), round(float(torch.rand(1, generator=g)) * 0.98 + 0.01, 3)


def _repeat_inputs(g: torch.Generator) -> tuple:
    x = _image(g)
    steps = int(torch.randint(2, 12, (1,), generator=g))
    return x, torch.randn(steps, *x.shape, generator=g), round(float(torch.rand(1, generator=g)) * 0.3 + 0.01, 3)


EXERCISES = [
    CodingExercise(
        lesson=1, name="variance-preserving mix",
        task="return sqrt(1 - beta) x + sqrt(beta) eps: the picture x shrunk a little and mixed with the noise eps "
             "(x and eps are tensors of the same shape, beta a float between 0 and 1)",
        signature="vp_mix(x, eps, beta)",
        solution=vp_mix, make_inputs=_mix_inputs,
        hint="beta is a plain float: (1 - beta) ** 0.5 is its square root. The tensors then combine elementwise."),
    CodingExercise(
        lesson=1, name="repeated mix",
        task="apply the variance-preserving mix len(noises) times, with the same beta each time and the fresh noise "
             "noises[0] at the first step, noises[1] at the second, and so on; return the final tensor",
        signature="repeated_mix(x, noises, beta)",
        solution=repeated_mix, make_inputs=_repeat_inputs,
        hint="a for loop over noises (iterating over a tensor gives its first-axis slices), updating x each time; "
             "each step mixes the *current* x, not the original picture."),
]
