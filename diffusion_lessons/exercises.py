"""Self-checking exercises: each lesson ends with a few, and check() says "correct" or shows the difference."""

from __future__ import annotations

import numpy as np
import torch


def check(answer, expected, name: str = "answer", rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Print 'correct' when answer matches expected (numbers, arrays, tensors, strings), else what differs."""
    if answer is None or answer is ...:
        print(f"{name}: not answered yet (replace the ... with your answer)")
        return False
    if isinstance(expected, str) or isinstance(answer, str):
        ok = str(answer).strip().lower() == str(expected).strip().lower()
        print(f"{name}: correct" if ok else f"{name}: not quite: you gave {answer!r}, expected {expected!r}")
        return ok
    a = np.asarray(answer.detach().cpu() if isinstance(answer, torch.Tensor) else answer, dtype=np.float64)
    e = np.asarray(expected.detach().cpu() if isinstance(expected, torch.Tensor) else expected, dtype=np.float64)
    if a.shape != e.shape:
        print(f"{name}: not quite: shape {a.shape}, expected {e.shape}")
        return False
    ok = bool(np.allclose(a, e, rtol=rtol, atol=atol))
    if ok:
        print(f"{name}: correct")
    else:
        diff = np.abs(a - e)
        print(f"{name}: not quite: largest difference {diff.max():.4g} (you: {a.ravel()[diff.argmax()]:.6g}, "
              f"expected: {e.ravel()[diff.argmax()]:.6g})")
    return ok
