"""The package's input checks, shared by every module: each raises a ValueError in the house style
"NAME must be ..., got VALUE" before any torch or diffusers work starts, and returns the value in the
form the caller works with."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

SEED_MAX = 2**64 - 1   # torch.Generator.manual_seed takes seeds in [0, 2**64 - 1]
DEVICE_KINDS = ("cpu", "cuda", "mps")


def integer(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """value as an int (a Python or NumPy integer, not a bool or a float) in [minimum, maximum]."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if maximum is None:
            allowed = "an int" if minimum is None else f"an int >= {minimum}"
        else:
            allowed = f"an int in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def number(value, name: str, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None) -> float:
    """value as a finite float (a real number, not a bool) in [minimum, maximum], or > above."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (above is None or value > above)
    if not ok:
        bounds = [f">= {minimum}" if minimum is not None else "", f"<= {maximum}" if maximum is not None else "",
                  f"> {above}" if above is not None else ""]
        bounds = " and ".join(b for b in bounds if b)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return float(value)


def seed(value, name: str = "seed") -> int:
    """A seed torch.Generator.manual_seed takes: an int in [0, 2**64 - 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"{name} must be an int in [0, 2**64 - 1], got {value!r}")
    return int(value)


def optional_seed(value, name: str = "seed") -> int | None:
    return None if value is None else seed(value, name)


def choice(value, name: str, options) -> object:
    """value, one of options."""
    if isinstance(value, (list, dict, set)) or value not in tuple(options):
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def text(value, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def tensor(value, name: str, *, floating: bool = False, ndim: int | tuple[int, ...] | None = None,
           finite: bool = False) -> torch.Tensor:
    """value as it is, when it is a torch.Tensor (floating-point, with ndim dimensions, without NaN or inf
    as asked)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and value.ndim not in dims:
        want = " or ".join(str(d) for d in dims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    if finite and value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must hold finite numbers, got {int((~torch.isfinite(value)).sum())} "
                         f"NaN or infinite values")
    return value


def module(value, name: str = "model") -> torch.nn.Module:
    if not isinstance(value, torch.nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def generator(value, name: str = "generator") -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


def device(value, name: str = "device") -> torch.device:
    """A device this machine has: 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device (an int, 'gpu' and CUDA
    without a CUDA build are refused here rather than deep in torch)."""
    if isinstance(value, torch.device):
        wanted = value
    elif isinstance(value, str) and value.split(":")[0] in DEVICE_KINDS:
        try:
            wanted = torch.device(value)
        except RuntimeError:
            wanted = None
        if wanted is None:
            raise ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got {value!r}")
    else:
        raise ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got {value!r}")
    if wanted.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (wanted.index is not None and wanted.index >= count):
            raise ValueError(f"{name} must be a device this machine has (torch sees {count} CUDA devices), "
                             f"got {value!r}")
    elif wanted.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps is not None and mps.is_available()):
            raise ValueError(f"{name} must be a device this machine has (torch sees no MPS device), got {value!r}")
    elif wanted.type != "cpu":
        raise ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got {value!r}")
    return wanted


def optional_device(value, name: str = "device") -> torch.device | None:
    return None if value is None else device(value, name)


def prompts(value, name: str = "prompts") -> list[str]:
    """One prompt (a string) or a non-empty list or tuple of strings, as a list; a string is one prompt."""
    found = [value] if isinstance(value, str) else value
    if not isinstance(found, (list, tuple)) or not found or not all(isinstance(p, str) for p in found):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {value!r}")
    return list(found)


def labels(value, name: str, num_classes: int, allow_empty: bool = True) -> torch.Tensor:
    """Integer class labels in [0, num_classes) as a 1-D int64 tensor (on the value's device)."""
    try:
        found = torch.as_tensor(value) if isinstance(value, (int, np.integer, list, tuple, np.ndarray,
                                                             torch.Tensor)) else None
    except (TypeError, ValueError, RuntimeError):
        found = None
    if found is None or found.dtype.is_floating_point or found.dtype == torch.bool or found.is_complex():
        raise ValueError(f"{name} must be integer labels in [0, {num_classes}), got "
                         f"{found.dtype if found is not None else type(value).__name__}")
    found = found.reshape(-1).long()
    if not allow_empty and not found.numel():
        raise ValueError(f"{name} must hold at least one label, got none")
    if found.numel() and (int(found.min()) < 0 or int(found.max()) >= num_classes):
        raise ValueError(f"{name} must be integer labels in [0, {num_classes}), got values from {int(found.min())} "
                         f"to {int(found.max())}")
    return found


# ---- what a model was trained with ---------------------------------------------------------------------------

TRAINED_TIMESTEPS = "_diffusion_lessons_num_train_timesteps"   # set on a model by training.fit and load_pretrained


def mark_trained_timesteps(model, num_steps: int) -> None:
    """Remember on the model how many timesteps T its training schedule had."""
    if isinstance(model, torch.nn.Module):
        setattr(model, TRAINED_TIMESTEPS, int(num_steps))


def check_trained_timesteps(model, num_steps: int, name: str = "schedule") -> None:
    """ValueError when the model was trained with another number of timesteps than the schedule has (the
    timesteps it would be shown mean other noise levels than it learned)."""
    trained = getattr(model, TRAINED_TIMESTEPS, None)
    if trained is not None and trained != num_steps:
        raise ValueError(f"{name} must have the {trained} training timesteps the model was trained with "
                         f"(num_train_timesteps), got {num_steps}")
