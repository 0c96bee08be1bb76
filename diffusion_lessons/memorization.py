"""Lesson 16's memorization measures: does a generator copy its training images, or make new ones?

A sample that copies a training image lies much closer to that image than to any other one; a new sample,
like a held-out real image, has no such single close neighbour. The measures, in pixels of the digits world
(16x16, [-1, 1]), world-agnostic otherwise:

- nearest_neighbours(queries, references, k): the k smallest RMS pixel distances from each query to the
  references, and which references they are (exact brute force, chunked).
- copy_flags(queries, references): True where the nearest reference is at most COPY_RATIO (1/3) of the
  distance to the second nearest, the ratio test of Yoon et al. (2023, "Diffusion probabilistic models
  generalize when they fail to memorize"), scale-free, so it needs no pixel threshold per world. The
  references must be distinct (a duplicated image would be its own second neighbour): `unique_rows`.
- memorization_report(samples, train, held_out): the copy share of the samples and of held-out real images
  (the baseline: real images are new by construction), each with its Wilson interval, and the median
  nearest-training-image distance of each with a bootstrap interval.
- training_subset(n, seed) and with_duplicates(x, rows, copies): the training sets of the experiment: n
  digits from the training split, stratified by label; and the same with some images repeated.
- draw_samples(unet, scheduler, n, seed): what the digits-memorize models draw (unconditional, plain diffusers).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _checks
from . import data as _data
from .stats import Estimate, bootstrap_interval, proportion

__all__ = ["COPY_RATIO", "nearest_neighbours", "unique_rows", "copy_flags", "memorization_report",
           "training_subset", "with_duplicates", "draw_samples"]

COPY_RATIO = 1 / 3   # a copy: nearest distance <= COPY_RATIO x second-nearest distance (Yoon et al. 2023)
SAMPLE_STEPS = 50    # Euler steps of draw_samples


def _images(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.dtype.is_floating_point or x.shape[0] < 1:
        raise ValueError(f"{name} must be a float tensor of images (N, ...) with N >= 1, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    _checks.tensor(x, name, finite=True)
    return x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64)


def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor, k: int = 1,
                       chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices), each (len(queries), k): the k nearest references of every query by RMS pixel
    distance sqrt(mean((a - b)^2)), nearest first, computed exactly in float64."""
    q, r = _images(queries, "queries"), _images(references, "references")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and references must have the same image shape, got {tuple(queries.shape[1:])} "
                         f"and {tuple(references.shape[1:])}")
    k = _checks.integer(k, "k", 1)
    if k > r.shape[0]:
        raise ValueError(f"k must be <= the number of references ({r.shape[0]}), got {k}")
    dists, idx = [], []
    r_sq = (r * r).sum(1)
    for start in range(0, q.shape[0], chunk):
        block = q[start:start + chunk]
        sq = ((block * block).sum(1)[:, None] + r_sq[None] - 2 * block @ r.T).clamp_min(0)
        d, i = sq.topk(k, dim=1, largest=False)
        dists.append((d / q.shape[1]).sqrt())
        idx.append(i)
    return torch.cat(dists).float(), torch.cat(idx)


def unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the distinct images of x in order of first appearance, the row of x where each first appears)."""
    flat = _images(x, "x")
    _, inverse = torch.unique(flat, dim=0, return_inverse=True)
    first: dict[int, int] = {}
    for row, group in enumerate(inverse.tolist()):
        first.setdefault(group, row)
    rows = torch.tensor(sorted(first.values()))
    return x[rows], rows


def copy_flags(queries: torch.Tensor, references: torch.Tensor, ratio: float = COPY_RATIO) -> torch.Tensor:
    """True where a query copies a reference: nearest distance <= ratio x second-nearest distance.
    references: at least two distinct images (pass unique_rows(train)[0] when the set holds duplicates)."""
    ratio = _checks.number(ratio, "ratio", 0.0, 1.0)
    if isinstance(references, torch.Tensor) and references.shape[0] < 2:
        raise ValueError(f"references must hold at least 2 images (the ratio test needs a second neighbour), "
                         f"got {references.shape[0]}")
    d, _ = nearest_neighbours(queries, references, k=2)
    return d[:, 0] <= ratio * d[:, 1]


def _median_distance(queries: torch.Tensor, references: torch.Tensor, seed: int) -> Estimate:
    d, _ = nearest_neighbours(queries, references, k=1)
    return bootstrap_interval(d[:, 0].numpy(), np.median, seed=seed)


def memorization_report(samples: torch.Tensor, train: torch.Tensor, held_out: torch.Tensor,
                        ratio: float = COPY_RATIO, seed: int = 0) -> dict[str, Estimate]:
    """The copy share (Wilson) and median nearest-training-image distance (bootstrap) of the samples and of
    held-out real images, against the distinct images of train."""
    for value, name in ((samples, "samples"), (train, "train"), (held_out, "held_out")):
        _images(value, name)
    references, _ = unique_rows(train)
    return dict(
        sample_copy_share=proportion(copy_flags(samples, references, ratio)),
        held_out_copy_share=proportion(copy_flags(held_out, references, ratio)),
        sample_nn_distance=_median_distance(samples, references, seed),
        held_out_nn_distance=_median_distance(held_out, references, seed),
    )


def training_subset(n: int, seed: int = 0, size: int = _data.DIGITS_SIZE) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      torch.Tensor]:
    """(x0, labels, rows): n digits of the training split (load_digits('train')), as equal per label as n
    allows (rows: their indices into that split, sorted), drawn with a generator seeded by `seed`."""
    x, labels = _data.load_digits("train", size)
    n = _checks.integer(n, "n", 1)
    if n > x.shape[0]:
        raise ValueError(f"n must be <= {x.shape[0]} (the training split), got {n}")
    generator = torch.Generator().manual_seed(_checks.seed(seed))
    per_label = [torch.nonzero(labels == c).flatten() for c in range(_data.NUM_DIGIT_CLASSES)]
    per_label = [rows[torch.randperm(len(rows), generator=generator)] for rows in per_label]
    take, rank = [], 0
    while len(take) < n:   # round robin over the labels, in a seeded order of labels
        for c in torch.randperm(_data.NUM_DIGIT_CLASSES, generator=generator).tolist():
            if rank < len(per_label[c]) and len(take) < n:
                take.append(per_label[c][rank].item())
        rank += 1
    rows = torch.tensor(sorted(take))
    return x[rows], labels[rows], rows


def with_duplicates(x: torch.Tensor, rows, copies: int) -> torch.Tensor:
    """x with the images at `rows` appended `copies` more times each (so each appears copies + 1 times)."""
    _images(x, "x")
    rows = _checks.labels(rows, "rows", x.shape[0], allow_empty=False)
    copies = _checks.integer(copies, "copies", 0)
    return torch.cat([x, x[rows].repeat(copies, *([1] * (x.ndim - 1)))]) if copies else x.clone()


def draw_samples(unet: torch.nn.Module, scheduler, n: int, seed: int = 0, steps: int = SAMPLE_STEPS) -> torch.Tensor:
    """n unconditional digits from a flow UNet2DModel of the digits-memorize recipe (every label NULL_LABEL,
    guidance 1) with its FlowMatchEulerDiscreteScheduler in plain diffusers (flow.sample_with_flow_scheduler),
    from one CPU generator seeded with `seed`; clamped to [-1, 1], on the CPU."""
    from .flow import sample_with_flow_scheduler

    n, seed = _checks.integer(n, "n", 1), _checks.seed(seed)
    labels = torch.full((n,), _data.NULL_LABEL)
    return sample_with_flow_scheduler(unet, scheduler, labels, steps, 1.0,
                                      generator=torch.Generator().manual_seed(seed)).cpu().clamp(-1, 1)
