"""Self-checking exercises: each lesson ends with a few, and check() says "correct" or shows the difference."""

from __future__ import annotations

import numpy as np
import torch

from . import _checks


def check(answer, expected, name: str = "answer", rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Print 'correct' when answer matches expected (numbers, arrays, tensors, strings), else what differs."""
    _checks.text(name, "name")
    rtol, atol = _checks.number(rtol, "rtol", 0), _checks.number(atol, "atol", 0)
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


# ---- coding exercises: the reader writes a function, a checker runs it on random inputs ----------------
# Each lesson's exercises live in diffusion_lessons/exercise_bank/lessonNN.py as a list EXERCISES of
# CodingExercise. A notebook shows the task, leaves a stub for the reader, and calls ex.check(my_function);
# ex.show_solution() prints the reference only when the reader asks for it.

import copy  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

CODING_LESSONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17)  # lessons with coding exercises


def _describe(value: Any) -> str:
    """A short, readable description of one input or output value."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1)[:4].tolist()
        head = ", ".join(f"{v:.4g}" if isinstance(v, float) else repr(v) for v in flat)
        more = ", ..." if value.numel() > 4 else ""
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}: [{head}{more}]"
    if isinstance(value, np.ndarray):
        return _describe(torch.from_numpy(value))
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{type(value).__name__} of {len(value)}: {list(value[:6])!r} ..."
    return repr(value)


def _first_difference(got: Any, want: Any, rtol: float, atol: float) -> str | None:
    """None when got matches want; else a sentence saying how it differs."""
    if got is None:
        return "your function returned None (did you forget `return`?)"
    if isinstance(want, (tuple, list)) and not isinstance(want, str):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"expected a {type(want).__name__} of {len(want)} values, got {_describe(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            msg = _first_difference(g, w, rtol, atol)
            if msg:
                return f"item {i}: {msg}"
        return None
    if isinstance(want, str):
        return None if got == want else f"expected {want!r}, got {got!r}"
    if isinstance(want, (torch.Tensor, np.ndarray, float, int)) and not isinstance(want, bool):
        try:
            g = torch.as_tensor(got.detach().cpu() if isinstance(got, torch.Tensor) else got, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            return f"expected a number or tensor, got {_describe(got)}"
        w = torch.as_tensor(want.detach().cpu() if isinstance(want, torch.Tensor) else want, dtype=torch.float64)
        if g.shape != w.shape:
            return f"shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        if not torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=False):
            diff = (g - w).abs().reshape(-1)
            i = int(diff.argmax())
            return (f"largest difference {diff[i].item():.4g} at flat index {i}: "
                    f"you {g.reshape(-1)[i].item():.6g}, expected {w.reshape(-1)[i].item():.6g}")
        return None
    return None if got == want else f"expected {_describe(want)}, got {_describe(got)}"


@dataclass
class CodingExercise:
    """Write `signature` so that it does what `task` says. make_inputs(generator) returns the positional
    arguments of one random trial; check(fn) runs `trials` of them through fn and the reference."""

    lesson: int
    name: str
    task: str
    signature: str
    solution: Callable
    make_inputs: Callable[[torch.Generator], tuple]
    trials: int = 5
    rtol: float = 1e-4
    atol: float = 1e-5
    hint: str = ""
    compare: Callable[[Any, Any], str | None] | None = field(default=None, repr=False)

    def describe(self) -> None:
        """Print the task, the signature to write and how to check it."""
        print(f"Exercise ({self.name}): {self.task}\n\n    def {self.signature}: ...\n\n"
              f"Check it with: ex.check(your_function). Stuck? ex.show_hint(); the answer: ex.show_solution().")

    def check(self, fn: Callable, seed: int = 0, verbose: bool = True) -> bool:
        """Run fn and the reference on `trials` random inputs; True when every output matches.
        Prints 'correct', or the first difference with the inputs that produced it."""
        say = print if verbose else (lambda *a, **k: None)
        if fn is None or fn is ... or not callable(fn):
            say(f"{self.name}: not answered yet: pass the function you wrote, e.g. ex.check(my_function)")
            return False
        for trial in range(self.trials):
            args = self.make_inputs(torch.Generator().manual_seed(seed + trial))
            want = self.solution(*copy.deepcopy(args))
            try:
                got = fn(*copy.deepcopy(args))
            except Exception as err:  # the reader's code: report, don't raise
                say(f"{self.name}: your function raised {type(err).__name__}: {err}\n"
                    f"  on inputs: " + "; ".join(_describe(a) for a in args))
                return False
            msg = (self.compare or (lambda g, w: _first_difference(g, w, self.rtol, self.atol)))(got, want)
            if msg:
                say(f"{self.name}: not quite (trial {trial + 1} of {self.trials}): {msg}\n"
                    f"  on inputs: " + "; ".join(_describe(a) for a in args))
                return False
        say(f"{self.name}: correct ({self.trials} random trials)")
        return True

    def show_hint(self) -> None:
        """Print a hint (not the answer)."""
        print(self.hint or "No hint for this one: re-read the formula cell above.")

    def show_solution(self) -> None:
        """Print the reference solution's source (only when you ask)."""
        print(inspect.getsource(self.solution))


def coding_exercises(lesson: int) -> list[CodingExercise]:
    """The coding exercises of a lesson (CODING_LESSONS): a list of CodingExercise with .name, .check(fn), .solution."""
    if isinstance(lesson, bool) or not isinstance(lesson, int) or lesson not in CODING_LESSONS:
        raise ValueError(f"lesson must be one of {CODING_LESSONS}, got {lesson!r}")
    module = importlib.import_module(f"diffusion_lessons.exercise_bank.lesson{lesson:02d}")
    return list(module.EXERCISES)


def coding_exercise(lesson: int, name: str) -> CodingExercise:
    """One coding exercise by lesson and name."""
    found = {ex.name: ex for ex in coding_exercises(lesson)}
    if name not in found:
        raise ValueError(f"name must be one of {sorted(found)} for lesson {lesson}, got {name!r}")
    return found[name]
