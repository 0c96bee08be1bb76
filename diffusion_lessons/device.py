"""Where the book's tensors live, how randomness is seeded, and how much work a run does.

All device logic sits here (lesson 01). `pick_device()` prefers CUDA, then Apple's MPS,
then the CPU; `DIFFUSION_LESSONS_DEVICE` overrides it. The run profile sizes training:
"quick" on a CPU and in CI, "full" on a GPU; `DIFFUSION_LESSONS_PROFILE` overrides it.
"""

from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

from . import _checks

DEVICE_ENV = "DIFFUSION_LESSONS_DEVICE"
PROFILE_ENV = "DIFFUSION_LESSONS_PROFILE"
PROFILES = ("quick", "full")
T = TypeVar("T")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device() -> torch.device:
    """CUDA, then MPS, then CPU; the environment variable DIFFUSION_LESSONS_DEVICE wins."""
    wanted = os.environ.get(DEVICE_ENV, "").strip()
    if wanted:
        kind = wanted.split(":")[0]
        if kind not in ("cpu", "cuda", "mps"):
            raise ValueError(f"{DEVICE_ENV}={wanted!r}: allowed are 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={wanted!r} but torch sees no CUDA device")
        if kind == "mps" and not _mps_available():
            raise ValueError(f"{DEVICE_ENV}={wanted!r} but torch sees no MPS device")
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator seeded with `seed`: pass it as generator= for reproducible noise."""
    seed = _checks.seed(seed)
    return torch.Generator(device=_checks.device(device)).manual_seed(seed)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch's global generators; return a CPU generator with the seed."""
    generator = make_generator(seed)
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return generator


def run_profile() -> str:
    """'quick' on a CPU (and in CI), 'full' on a GPU; DIFFUSION_LESSONS_PROFILE overrides."""
    wanted = os.environ.get(PROFILE_ENV, "").strip()
    if wanted:
        if wanted not in PROFILES:
            raise ValueError(f"{PROFILE_ENV}={wanted!r}: allowed are {PROFILES}")
        return wanted
    return "full" if pick_device().type == "cuda" else "quick"


def by_profile(quick: T, full: T) -> T:
    """The value for the current run profile, e.g. by_profile(quick=200, full=5000) steps."""
    return full if run_profile() == "full" else quick
