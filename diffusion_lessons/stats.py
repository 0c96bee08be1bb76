"""Uncertainty for every measured number: 95% intervals (world-agnostic).

- wilson_interval: a proportion k / n (fidelity, the share of rough samples, a read-back accuracy),
  Wilson's score interval (Wilson 1927), which stays inside [0, 1] and is sensible at k = 0 or k = n.
- bootstrap_interval: any statistic of samples (a mean distance, a diversity figure): the percentile
  bootstrap (Efron 1979) over the samples, resampled with replacement, seeded.
- Estimate: the value with its interval and n, printed as "0.975 [0.943, 0.989] (n=200)".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


@dataclass(frozen=True)
class Estimate:
    """A measured value, its 95% interval [low, high] and the number of samples n it rests on."""

    value: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"

    def as_dict(self, digits: int = 4) -> dict:
        """{'value', 'low', 'high', 'n'} rounded, for a JSON record."""
        d = asdict(self)
        return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in d.items()}

    def overlaps(self, other: "Estimate") -> bool:
        """True when the two intervals overlap: the prose must then call the difference within noise."""
        return self.low <= other.high and other.low <= self.high


def _check_count(k, n) -> tuple[int, int]:
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n] = [0, {n}], got {k}")
    return int(k), int(n)


def wilson_interval(k: int, n: int, z: float = Z95) -> Estimate:
    """Proportion k / n with Wilson's score interval:
    centre (k + z^2/2) / (n + z^2), half-width z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2)."""
    k, n = _check_count(k, n)
    denom = n + z * z
    centre = (k + z * z / 2) / denom
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / denom
    return Estimate(k / n, max(0.0, centre - half), min(1.0, centre + half), n)


def proportion(flags) -> Estimate:
    """wilson_interval of a sequence (or tensor) of booleans: the share that are True."""
    arr = np.asarray(flags.detach().cpu() if hasattr(flags, "detach") else flags).reshape(-1)
    if arr.size == 0:
        raise ValueError("flags must hold at least one value")
    return wilson_interval(int(arr.astype(bool).sum()), int(arr.size))


def bootstrap_interval(values: Sequence[float] | np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
                       resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """statistic(values) with a percentile-bootstrap interval: resample the values with replacement
    `resamples` times (numpy generator seeded by `seed`) and take the (1-level)/2 quantiles.
    values: one number per sample (or rows per sample, when statistic takes a 2-D array)."""
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[0] < 2:
        raise ValueError(f"values must hold at least 2 samples, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values must be finite (no NaN or inf)")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an int >= 100, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    n = arr.shape[0]
    stats = np.array([statistic(arr[rng.integers(0, n, n)]) for _ in range(resamples)], dtype=np.float64)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Estimate(float(statistic(arr)), float(low), float(high), n)
