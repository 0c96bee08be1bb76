"""Lesson 16's coding exercises: Wilson's interval for a share (Wilson 1927), the guided share of an ideal
classifier-free-guided sampler (Ho and Salimans 2022, read through Bayes' rule), and the nearest-neighbour copy
test (Yoon et al. 2023)."""

from __future__ import annotations

import math

import torch

from ..exercises import CodingExercise

Z95 = 1.959963984540054


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    centre = (k + Z95 ** 2 / 2) / (n + Z95 ** 2)
    half = Z95 * math.sqrt(k * (n - k) / n + Z95 ** 2 / 4) / (n + Z95 ** 2)
    return max(0.0, centre - half), min(1.0, centre + half)


def guided_shares(p_cond: torch.Tensor, p_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    weights = p_cond * (p_cond / p_uncond) ** (scale - 1)   # p(c | x)^(s - 1) is proportional to (p(x|c) / p(x))^(s - 1)
    return weights / weights.sum()


def copy_flags_by_hand(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    d = ((queries[:, None, :] - references[None, :, :]) ** 2).mean(-1).sqrt()   # (N, M) RMS distances
    two = d.topk(2, dim=1, largest=False).values                                # nearest, second nearest
    return two[:, 0] <= two[:, 1] / 3


def _count_inputs(g: torch.Generator) -> tuple:
    n = int(torch.randint(1, 400, (1,), generator=g))
    return int(torch.randint(0, n + 1, (1,), generator=g)), n


def _share_inputs(g: torch.Generator) -> tuple:
    k = int(torch.randint(2, 7, (1,), generator=g))
    p_cond, p_uncond = torch.rand(k, generator=g) + 0.05, torch.rand(k, generator=g) + 0.05
    return p_cond / p_cond.sum(), p_uncond / p_uncond.sum(), float(torch.rand(1, generator=g) * 7 + 1)


def _copy_inputs(g: torch.Generator) -> tuple:
    references = torch.randn(int(torch.randint(3, 20, (1,), generator=g)), 16, generator=g)
    near = references[:3] + 0.05 * torch.randn(3, 16, generator=g)      # three near copies among random queries
    return torch.cat([near, torch.randn(5, 16, generator=g)]), references


EXERCISES = [
    CodingExercise(
        lesson=16, name="Wilson interval",
        task="return the 95% Wilson score interval (low, high) of a share of k successes in n trials: centre "
             "(k + z^2/2) / (n + z^2), half-width z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2), z = 1.959963984540054, "
             "clipped to [0, 1]",
        signature="wilson_by_hand(k, n)",
        solution=wilson_by_hand, make_inputs=_count_inputs,
        hint="compute centre and half-width as written; return (max(0, centre - half), min(1, centre + half))."),
    CodingExercise(
        lesson=16, name="guided shares",
        task="an ideal guided sampler at scale s draws a color c with probability proportional to "
             "p(c | prompt) (p(c | prompt) / p(c))^(s - 1) (Bayes' rule: p(prompt | c)^(s - 1) up to a constant). "
             "Given p_cond = p(c | prompt) and p_uncond = p(c) (two probability vectors over the colors) and s, "
             "return the guided shares (they sum to 1)",
        signature="guided_shares(p_cond, p_uncond, scale)",
        solution=guided_shares, make_inputs=_share_inputs,
        hint="weights = p_cond * (p_cond / p_uncond) ** (scale - 1); divide by their sum."),
    CodingExercise(
        lesson=16, name="copy test",
        task="flag which queries (N, D) copy one of the references (M, D): with the RMS distance "
             "sqrt(mean((a - b)^2)), a query is a copy when its distance to the nearest reference is at most a "
             "third of its distance to the second nearest; return a bool tensor (N,)",
        signature="copy_flags_by_hand(queries, references)",
        solution=copy_flags_by_hand, make_inputs=_copy_inputs,
        hint="broadcast to an (N, M) distance matrix, take the two smallest per row with topk(2, largest=False)."),
]
