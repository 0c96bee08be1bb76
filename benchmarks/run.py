"""The book's speed figures: python benchmarks/run.py [--no-notebooks | --gpu-only] (make bench).

Prints a markdown table and records it in benchmarks/RESULTS.md under a section for this
machine (CPU model, cores, torch version, GPU); sections of other machines are kept, and a
rerun on the same machine and device replaces its own section. Measured:
- each lesson's execution time (from build/book/timings.json when `make book` executed the
  lessons on this machine, else by executing them here in a fresh kernel);
- training steps per second of the digits model (lessons 03-05) at the recipe's batch size;
- benchmarks/bench_sampling.py: the package's sample loop against diffusers' pipeline loop,
  batched guidance against two passes; benchmarks/bench_t2i.py: text-to-image time;
  benchmarks/bench_speed.py: guidance batched vs two passes per batch size (with the operator profile),
  attention processor / channels-last on the sampler, FLOP/s and share of peak (docs/performance.md).
A section whose module is missing prints "not available yet". Figures, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "benchmarks")]

import build_book  # noqa: E402  (tools/build_book.py: lesson discovery, execution, machine info)

Row = tuple[str, str]
BENCH_MODULES = {"bench_sampling": "sampling", "bench_t2i": "text to image", "bench_speed": "speed"}
BENCH_FUNCTIONS = ("run", "benchmark", "bench", "measure")
RESULTS_HEADER = """# Benchmark results

Written by `make bench` (benchmarks/run.py); see benchmarks/README.md for what each figure means.
One section per machine and device; rerunning on the same machine replaces only its own section.
"""


def fmt(value) -> str:
    """A readable cell: floats with 3 significant digits, everything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def flatten(prefix: str, result: dict) -> list[Row]:
    """Rows 'prefix: key' -> value from a (possibly nested) dict of numbers."""
    rows: list[Row] = []
    for key, value in result.items():
        name = f"{prefix}: {key}"
        rows += flatten(name, value) if isinstance(value, dict) else [(name, fmt(value))]
    return rows


def stored_timings(path: Path, machine: dict) -> dict[tuple[str, str], float]:
    """{(notebook, source digest): seconds} from a `make book` run that executed the lessons on this
    machine (same CPU and GPU); empty if there is none."""
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    same_machine = all(record.get("machine", {}).get(k) == machine[k] for k in ("cpu", "cores", "gpu"))
    if record.get("mode") != "executed" or not same_machine:
        return {}
    return {(x["notebook"], x.get("source_digest")): x["seconds"] for x in record.get("lessons", [])
            if not x.get("error") and x.get("seconds") is not None}


def lesson_rows(machine: dict, timings: Path, force_execute: bool, timeout: int) -> list[Row]:
    """Each lesson's execution time in a fresh kernel (reused from `make book` when it ran here)."""
    paths = build_book.lesson_paths(ROOT / "notebooks")
    if not paths:
        return [("lessons", "not available yet (no notebooks/NN_*.ipynb)")]
    known = {} if force_execute else stored_timings(timings, machine)
    rows = []
    for path in paths:
        key = (path.name, build_book.source_digest(build_book.read_notebook(path)))
        if key in known:  # the same cells, timed by `make book` on this machine
            seconds, source = known[key], " (make book)"
        else:
            _, lesson = build_book.load_lesson(path, True, "diffusion-lessons", timeout)
            if lesson["error"]:
                rows.append((f"lesson {path.stem}", f"failed: {lesson['error']}"))
                continue
            seconds, source = lesson["seconds"], ""
        rows.append((f"lesson {path.stem}: execution time", f"{seconds:.0f} s{source}"))
    return rows


def training_rows(device, seconds: float = 15.0, batch_size: int = 128) -> list[Row]:
    """Training steps per second of the digits UNet2DModel (16x16, AdamW, label dropout): lessons 03-05."""
    try:
        import torch

        from diffusion_lessons import data, models, schedules, training
    except ImportError as exc:
        return [("digits training", f"not available yet ({exc})")]
    x0, labels = data.load_digits("train")
    model = models.build_digits_unet(seed=0).to(device).train()
    optimizer, schedule = torch.optim.AdamW(model.parameters(), lr=1e-3), schedules.make_schedule("cosine")
    generator = torch.Generator().manual_seed(0)
    x0 = x0.to(device)

    def step() -> torch.Tensor:
        idx = torch.randint(0, x0.shape[0], (batch_size,), generator=generator)
        return training.training_step(model, optimizer, schedule, x0[idx.to(device)], labels[idx], 0.15, generator)

    for _ in range(2):  # warm-up: allocations, kernel selection
        step().item()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds or steps < 3:
        loss = step()
        steps += 1
    loss.item()  # wait for queued GPU work before stopping the clock
    rate = steps / (time.perf_counter() - start)
    return [(f"digits training: steps/s (batch {batch_size}, 16x16, "
             f"{models.count_parameters(model) / 1e6:.2f} M params)", fmt(rate))]


def bench_function(module) -> Callable[..., dict] | None:
    """The module's function named like the module (bench_sampling.bench_sampling), else run() & co."""
    for name in (module.__name__.rsplit(".", 1)[-1], *BENCH_FUNCTIONS):
        if callable(getattr(module, name, None)):
            return getattr(module, name)
    return None


def module_rows(name: str, title: str, device) -> list[Row]:
    """Rows from benchmarks/NAME.py: its function NAME() (or run()) returns a dict of figures."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return [(title, f"not available yet (benchmarks/{name}.py)")]
    function = bench_function(module)
    if function is None:
        return [(title, f"not available yet (benchmarks/{name}.py defines neither {name}() nor run())")]
    kwargs = {"device": device} if "device" in inspect.signature(function).parameters else {}
    return flatten(title, function(**kwargs))


def guarded(title: str, make_rows: Callable[[], list[Row]], failures: list[str]) -> list[Row]:
    """Run one section; a failure becomes a row (and a non-zero exit) instead of ending the run."""
    start = time.perf_counter()
    print(f"[bench] {title} ...", flush=True)
    try:
        rows = make_rows()
    except Exception as exc:  # a benchmark error must not hide the other figures
        failures.append(title)
        rows = [(title, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")]
    print(f"[bench] {title}: {time.perf_counter() - start:.1f} s", flush=True)
    return rows


def markdown_table(rows: list[Row]) -> str:
    cells = [(a.replace("|", "\\|"), b.replace("|", "\\|")) for a, b in rows]
    return "\n".join(["| measure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in cells])


def machine_key(machine: dict, device) -> str:
    return f"{build_book.machine_label(machine)} | device {device}"


def update_results(path: Path, key: str, section: str) -> None:
    """Replace this machine's section in RESULTS.md (or append it), keeping every other machine's."""
    text = path.read_text() if path.exists() else RESULTS_HEADER
    start, end = f"<!-- machine: {key} -->", f"<!-- end machine: {key} -->"
    block = f"{start}\n{section.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text if text.endswith("\n") else text + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-notebooks", action="store_true", help="skip the lessons' execution times")
    parser.add_argument("--gpu-only", action="store_true",
                        help="a CUDA machine without Jupyter: no notebooks, everything on the GPU")
    parser.add_argument("--execute", action="store_true",
                        help="execute the lessons even if build/book/timings.json has this machine's times")
    parser.add_argument("--timings", type=Path, default=ROOT / "build" / "book" / "timings.json")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--train-seconds", type=float, default=15.0, help="how long to time training")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per notebook cell")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from diffusion_lessons.device import pick_device

    device = pick_device()
    if args.gpu_only and device.type != "cuda":
        print("--gpu-only: torch sees no CUDA device here", file=sys.stderr)
        return 2
    machine, failures, rows = build_book.machine_info(), [], []
    if args.no_notebooks or args.gpu_only:
        rows.append(("lessons", "not measured (--no-notebooks)"))
    else:
        rows += guarded("lessons", lambda: lesson_rows(machine, args.timings, args.execute, args.timeout), failures)
    rows += guarded("digits training", lambda: training_rows(device, args.train_seconds), failures)
    for name, title in BENCH_MODULES.items():
        rows += guarded(title, lambda: module_rows(name, title, device), failures)
    when = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    section = (f"## {build_book.machine_label(machine)}\n\nDevice `{device}`, Python {machine['python']}, "
               f"{machine['os']}; measured {when}.\n\n{markdown_table(rows)}\n")
    print("\n" + section)
    update_results(args.results, machine_key(machine, device), section)
    print(f"written to {args.results}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
