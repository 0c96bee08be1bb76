"""What the recipes share: their command line, where a run writes, and the one record format.

Every recipe takes --profile, --seed, --out, --force, --skip-eval and one option per setting (--steps,
--batch-size, ...). A run writes to ./runs/NAME-<timestamp>/ unless --out says otherwise; the shipped
folder diffusion_lessons/pretrained/ is written only when --out names it and --force is given. The
record (recipe.json) has the same fields for every recipe, filled by `run_record`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib import metadata
from pathlib import Path

import torch

from .. import __version__
from ..device import PROFILES, run_profile
from ..pretrained import ROOT as PRETRAINED

RECORD_WINDOW = 100  # final_loss: the mean over the last this-many steps


def make_parser(name: str, description: str, settings: dict[str, dict[str, int]],
                seed: int = 0) -> argparse.ArgumentParser:
    """The shared options, plus --KEY for every setting (ints per profile, e.g. steps, batch_size)."""
    parser = argparse.ArgumentParser(prog=f"python -m diffusion_lessons.train {name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="quick (the CPU-sized recipe) or full (longer); default: device.run_profile()")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default ./runs/{name}-<timestamp>)")
    parser.add_argument("--force", action="store_true",
                        help=f"allow --out inside {PRETRAINED} (overwrites the shipped model)")
    parser.add_argument("--skip-eval", action="store_true", help="skip the final quality measurement")
    for key in settings["quick"]:
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                            help=f"default: {settings['quick'][key]} (quick), {settings['full'][key]} (full)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None, name: str, settings: dict[str, dict[str, int]],
          out_needed_by: str | None = None) -> argparse.Namespace:
    """Parse argv; fill settings from the profile (each must be >= 1) and resolve --out (see out_folder).
    out_needed_by: a flag (dest name) that reads an earlier run, so --out must be given with it."""
    args = parser.parse_args(argv)
    if out_needed_by and getattr(args, out_needed_by) and args.out is None:
        parser.error(f"--{out_needed_by.replace('_', '-')} needs --out, the folder of a trained model")
    args.profile = args.profile or run_profile()
    for key, value in settings[args.profile].items():
        given = getattr(args, key)
        if given is not None and given < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {given}")
        setattr(args, key, value if given is None else given)
    args.out = out_folder(parser, name, args.out, args.force)
    return args


def out_folder(parser: argparse.ArgumentParser, name: str, out: Path | None, force: bool) -> Path:
    """./runs/NAME-<timestamp> under the working directory when out is None; an --out inside the shipped
    folder is an argparse error unless force."""
    if out is None:
        stem = Path.cwd() / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        out, n = stem, 1
        while out.exists():  # another run started in the same second
            n += 1
            out = stem.with_name(f"{stem.name}-{n}")
        return out
    resolved = out.expanduser().resolve()
    if resolved.is_relative_to(PRETRAINED.resolve()) and not force:
        parser.error(f"--out {out} is inside {PRETRAINED}, the shipped models: add --force to overwrite them")
    return out


def command(name: str, args: argparse.Namespace, settings: dict[str, dict[str, int]]) -> str:
    """The command that repeats the run (without --out)."""
    options = " ".join(f"--{key.replace('_', '-')} {getattr(args, key)}" for key in settings["quick"])
    return f"python -m diffusion_lessons.train {name} --profile {args.profile} --seed {args.seed} {options}"


def hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    """Python and the libraries a recipe runs on."""
    found = {"python": platform.python_version(), "torch": torch.__version__, "diffusion_lessons": __version__}
    for package in ("diffusers", "transformers", "accelerate"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def synchronize(device: torch.device) -> None:
    """Wait for the accelerator, so a timer stops when its work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_record(name: str, args: argparse.Namespace, settings: dict, *, data: dict, batch_size: int, lr: float,
               loop: dict, losses: list[float], train_s: float, device: torch.device, quality: dict | None,
               eval_s: float | None, started: float, **details) -> dict:
    """The recipe record: what ran (model, command, data, seed, steps, batch, loop settings, the recipe's
    details), how long (wall_time_s: training; eval_time_s; total_time_s since `started`), on what
    (hardware, device, platform, versions), how far (first and final loss) and how well (quality, None
    with --skip-eval). Older names that the shipped records and the lessons read are repeated at the end."""
    tail = losses[-min(RECORD_WINDOW, len(losses)):]
    cmd = command(name, args, settings)
    total_s = time.perf_counter() - started
    record = dict(
        model=name, command=cmd, data=data, seed=args.seed, profile=args.profile, steps=args.steps,
        batch_size=batch_size, lr=lr, **loop, **details,
        first_loss=round(losses[0], 5), final_loss=round(sum(tail) / len(tail), 5), final_loss_window=len(tail),
        wall_time_s=round(train_s, 1), steps_per_s=round(args.steps / train_s, 2),
        eval_time_s=None if eval_s is None else round(eval_s, 1), total_time_s=round(total_s, 1),
        quality=quality, hardware=hardware(device), device=str(device), cpu_threads=torch.get_num_threads(),
        platform=platform.platform(), versions=versions(),
    )
    record.update(  # the same values under the names of the first VAE and text-to-image records
        recipe=cmd, train_seconds=record["wall_time_s"], steps_per_second=record["steps_per_s"],
        wall_seconds=record["total_time_s"], torch=record["versions"]["torch"],
        diffusers=record["versions"].get("diffusers"))
    return record


def loop_settings(weight_decay: float = 0.01, warmup: int = 0, max_grad_norm: float | None = 1.0,
                  ema_max_decay: float | None = None) -> dict:
    """The train_loop settings (defaults: train_loop's, which fit() uses) as the record states them."""
    return dict(optimizer=f"AdamW (weight_decay {weight_decay:g})" + (
                    f", grad-norm clip {max_grad_norm:g}" if max_grad_norm is not None else ""),
                lr_schedule=f"diffusers get_cosine_schedule_with_warmup: {warmup} warm-up steps, then cosine to 0",
                warmup=warmup, ema_max_decay=ema_max_decay,
                ema="diffusers EMAModel, decay min(ema_max_decay, (1 + n) / (10 + n))" if ema_max_decay else None)


def write_record(record: dict, path: Path, show: tuple[str, ...] = ("steps", "wall_time_s", "steps_per_s",
                                                                      "final_loss", "quality")) -> None:
    """Write the record as JSON and print its headline fields."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({k: record[k] for k in show if k in record}, indent=2, default=str))
    print(f"wrote {path}")
