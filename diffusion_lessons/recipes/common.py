"""What the recipes share: their command line, how they train and write, and the one record format.

Every recipe takes --profile, --seed, --out, --force, --skip-eval, the training options of train_loop
(--checkpoint-every, --resume, --keep-checkpoints, --grad-accumulation, --mixed-precision) and one option per
setting (--steps, --batch-size, ...). A run writes to ./runs/NAME-<timestamp>/ unless --out says otherwise; the
shipped folder diffusion_lessons/pretrained/ is written only when --out names it and --force is given, and never
into another model's folder. The model, its record and its manifest are written into a hidden sibling folder,
measured there, then swapped into place in one rename (`publish`): an interrupt leaves the old model with its
old record or the new one with its new record. Under `accelerate launch` every process trains and only the
main one writes. The record (recipe.json) has the same fields for every recipe, filled by `run_record`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import platform
import shutil
import signal
import time
from importlib import metadata
from pathlib import Path

import torch

from .. import __version__, training
from ..measure import hardware
from ..device import PROFILES, run_profile
from ..pretrained import MANIFEST, RECORDS, write_manifest
from ..pretrained import ROOT as PRETRAINED

RECORD_WINDOW = 100  # final_loss: the mean over the last this-many steps


SEED_MAX = 2**32 - 1   # NumPy's seed range; torch takes these and the seed + k the recipes derive


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
    training_options(parser)
    for key in settings["quick"]:
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                            help=f"default: {settings['quick'][key]} (quick), {settings['full'][key]} (full)")
    return parser


def training_options(parser: argparse.ArgumentParser) -> None:
    """The options of the one training loop (train_loop under accelerate)."""
    group = parser.add_argument_group("training (accelerate)")
    group.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                       help="save the whole training state to OUT/checkpoints/step-N/ every N steps (a SIGINT or "
                            "SIGTERM also saves one and stops the run)")
    group.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in OUT/checkpoints (same other options; needs --out)")
    group.add_argument("--keep-checkpoints", action="store_true",
                       help="keep OUT/checkpoints after the model is written (default: removed then)")
    group.add_argument("--grad-accumulation", type=int, default=1, metavar="K",
                       help="split each process's share of the batch into K micro-batches (same global batch)")
    group.add_argument("--mixed-precision", choices=training.MIXED_PRECISION, default=None,
                       help="bf16 autocast on a CUDA GPU (default: accelerate launch's --mixed_precision, else no)")


def parse(parser: argparse.ArgumentParser, argv: list[str] | None, name: str, settings: dict[str, dict[str, int]],
          out_needed_by: str | None = None, outputs: tuple[str, ...] = ()) -> argparse.Namespace:
    """Parse argv; fill settings from the profile (each must be >= 1) and resolve --out (see out_folder and
    check_out). out_needed_by: a flag (dest name) that reads an earlier run, so --out must be given with it (as
    with --resume). outputs: the files and folders the recipe writes in OUT."""
    args = parser.parse_args(argv)
    if not 0 <= args.seed <= SEED_MAX:
        parser.error(f"--seed must be an int in [0, 2**32 - 1], got {args.seed}")
    for flag in (out_needed_by, "resume"):
        if flag and getattr(args, flag) and args.out is None:
            parser.error(f"--{flag.replace('_', '-')} needs --out, the folder of " +
                         ("a trained model" if flag == out_needed_by else "the interrupted run"))
    for flag in ("checkpoint_every", "grad_accumulation"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    args.profile = args.profile or run_profile()
    for key, value in settings[args.profile].items():
        given = getattr(args, key)
        if given is not None and given < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {given}")
        setattr(args, key, value if given is None else given)
    args.out = out_folder(parser, name, args.out, args.force)
    check_out(parser, name, args.out, outputs)
    if args.resume and not training.checkpoints(args.out / "checkpoints"):
        parser.error(f"--resume: no checkpoint in {args.out / 'checkpoints'} (a run saves one there every "
                     f"--checkpoint-every N steps and when Ctrl-C stops it); run without --resume")
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


OWN = ("checkpoints", MANIFEST)   # what any recipe may find in its own OUT besides its outputs


def check_out(parser: argparse.ArgumentParser, name: str, out: Path, outputs: tuple[str, ...]) -> None:
    """Refuse, before any training, an --out that is a file, lies inside a model's folder, or holds anything
    the recipe does not write itself (publish replaces the whole folder): a recipe never writes into another
    model's folder."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; name a folder")
    for parent in out.expanduser().resolve().parents:
        if any((parent / marker).is_file() for marker in (*RECORDS, "model_index.json")):
            parser.error(f"--out {out} lies inside the model folder {parent}: name a folder of its own")
    if not outputs or not out.is_dir():
        return
    other = model_in(out)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in (*outputs, *OWN))
    if other not in (None, name):
        parser.error(f"--out {out} holds the {other} model: the {name} recipe never writes into another model's "
                     f"folder; name a new folder")
    if foreign:
        parser.error(f"--out {out} holds files the {name} recipe does not write ({', '.join(foreign)}); it replaces "
                     f"its whole output folder, so name a new folder or one of its earlier runs")


def model_in(folder: Path) -> str | None:
    """Which recipe's model a folder holds, by its recipe.json ('model', or the older records' 'recipe'
    command), or 'shapes-t2i' for a pipeline folder; None when it holds none."""
    record = folder / "recipe.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if "model" in saved:
            return saved["model"]
        words = str(saved.get("recipe", "")).split()  # "python -m diffusion_lessons.train NAME ..."
        return next((after for word, after in zip(words, words[1:]) if word.endswith("train")), "unknown")
    return "shapes-t2i" if (folder / "model_index.json").is_file() else None


def command(name: str, args: argparse.Namespace, settings: dict[str, dict[str, int]], options: str = "") -> str:
    """The command that repeats the run (without --out); `options`: the recipe's own flags (e.g. --encoder causal)."""
    sized = " ".join(f"--{key.replace('_', '-')} {getattr(args, key)}" for key in settings["quick"])
    return (f"python -m diffusion_lessons.train {name} {options + ' ' if options else ''}--profile {args.profile} "
            f"--seed {args.seed} {sized}")


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
               eval_s: float | None, started: float, options: str = "", **details) -> dict:
    """The recipe record: what ran (model, command, data, seed, steps, batch, loop settings, the recipe's
    details), how long (wall_time_s: training in this process, which after --resume covers only the steps
    after resumed_from_step, and steps_per_s over those; eval_time_s; total_time_s since `started`), on what
    (hardware, device, platform, versions), how far (first and final loss) and how well (quality, None
    with --skip-eval); `options`: the recipe's own flags, written into the command. Older names that the shipped
    records and the lessons read are repeated at the end."""
    tail = losses[-min(RECORD_WINDOW, len(losses)):]
    cmd = command(name, args, settings, options)
    total_s = time.perf_counter() - started
    record = dict(
        model=name, command=cmd, data=data, seed=args.seed, profile=args.profile, steps=args.steps,
        batch_size=batch_size, lr=lr, **loop, **details,
        first_loss=round(losses[0], 5), final_loss=round(sum(tail) / len(tail), 5), final_loss_window=len(tail),
        wall_time_s=round(train_s, 1),
        steps_per_s=round((args.steps - (getattr(args, "resumed_from_step", None) or 0)) / train_s, 2),
        eval_time_s=None if eval_s is None else round(eval_s, 1), total_time_s=round(total_s, 1),
        quality=quality, hardware=hardware(device), device=str(device), cpu_threads=torch.get_num_threads(),
        platform=platform.platform(), versions=versions(), **launch_details(args),
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


def launch_details(args: argparse.Namespace) -> dict:
    """How the run was spread: processes, gradient accumulation, mixed precision, and the step it resumed from."""
    processes = getattr(args, "processes", 1)
    return dict(processes=processes, grad_accumulation=args.grad_accumulation,
                mixed_precision=getattr(args, "mixed_precision_used", args.mixed_precision or "no"),
                launch=f"accelerate launch --multi_gpu --num_processes {processes}" if processes > 1 else None,
                resumed_from_step=getattr(args, "resumed_from_step", None))


def write_record(record: dict, path: Path, show: tuple[str, ...] = ("steps", "wall_time_s", "steps_per_s",
                                                                      "final_loss", "quality")) -> None:
    """Write the record as JSON (a temporary file renamed into place) and print its headline fields."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(partial, path)
    print(json.dumps({k: record[k] for k in show if k in record}, indent=2, default=str))


def write_measurements(folder: Path, name: str, record: dict, found: dict, eval_s: float,
                       show: tuple[str, ...]) -> None:
    """folder/measurements.json: what the recipe measured (`found`), with the weights' hashes it was measured on,
    the command, hardware, versions and date from the run's record, and the measuring time."""
    from ..measure import model_hashes

    write_record(dict(model=name, model_sha256=model_hashes(folder), command=record["command"], **found,
                      hardware=record["hardware"], wall_time_s=round(eval_s, 1), date=time.strftime("%Y-%m-%d"),
                      versions=record["versions"]), folder / "measurements.json", show=show)


def re_measure(args: argparse.Namespace, device: torch.device, name: str, load, measure) -> dict:
    """--evaluate-only: load(OUT) -> (model, scheduler) of a saved run, measure(model, scheduler, seed,
    per_label) -> quality, written into OUT/recipe.json with the time and hardware it took."""
    path = args.out / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(f"--out {args.out} holds no recipe.json: train first (without --evaluate-only)")
    record = json.loads(path.read_text())
    model, scheduler = load(args.out)
    print(f"{name} recipe: re-measuring {args.out} on {device}")
    start = time.perf_counter()
    record["quality"] = measure(model.to(device).eval(), scheduler, record["seed"], args.eval_per_label)
    record["eval_time_s"] = round(time.perf_counter() - start, 1)
    record["evaluated"] = dict(hardware=hardware(device),
                               command=f"python -m diffusion_lessons.train {name} --evaluate-only "
                                       f"--eval-per-label {args.eval_per_label}")
    write_record(record, path, show=("quality",))
    return record


def evaluate_pipeline(args: argparse.Namespace, name: str, measure, summarise, option: str,
                      model=None, load=None, show: tuple[str, ...] = ()) -> dict:
    """--evaluate-only for a pipeline recipe: measure(pipe, seed) -> found on the pipeline saved in --out,
    summarise(found) -> the record's quality; rewrites OUT/recipe.json and OUT/measurements.json with the time and
    hardware it took. option: the measuring option as typed (for the command); model(record) -> the name in
    measurements.json (default: name); load(folder, device) -> the pipeline (default t2i.load_pipeline); show:
    the measurements' keys to print."""
    from .. import t2i

    load = t2i.load_pipeline if load is None else load
    path = args.out / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(f"--out {args.out} holds no recipe.json: train first (without --evaluate-only)")
    record = json.loads(path.read_text())
    device = training.training_device()
    print(f"{name} recipe: re-measuring {args.out} on {device}")
    start = time.perf_counter()
    found = measure(load(args.out, device), record["seed"])
    eval_s = time.perf_counter() - start
    record["quality"], record["eval_time_s"] = summarise(found), round(eval_s, 1)
    record["evaluated"] = dict(hardware=hardware(device),
                               command=f"python -m diffusion_lessons.train {name} --evaluate-only {option} "
                                       f"--out {args.out.name}")
    write_record(record, path, show=())
    write_measurements(args.out, name if model is None else model(record), record, found, eval_s, show=show)
    print(json.dumps(record["quality"], indent=1))
    return record


# ---- training under accelerate -------------------------------------------------------------------------------

def accelerator(args: argparse.Namespace, device: torch.device):
    """The run's Accelerator (training.make_accelerator with --mixed-precision and --grad-accumulation). Under a
    multi-process launch every process takes the main process's --out (the default one holds a timestamp); args
    gains `processes`, `mixed_precision_used` and `resumed_from_step` for the record."""
    acc = training.make_accelerator(device, args.mixed_precision, args.grad_accumulation)
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        args.out = broadcast_object_list([args.out])[0]
    args.processes, args.mixed_precision_used = acc.num_processes, acc.mixed_precision
    found = training.checkpoints(args.out / "checkpoints") if args.resume else []
    args.resumed_from_step = int(found[-1].name.split("-")[1]) if found else None
    return acc


def checkpointing(args: argparse.Namespace, settings: dict, **extra) -> training.Checkpointing:
    """Checkpoints in OUT/checkpoints every --checkpoint-every steps (and on SIGINT/SIGTERM); --resume continues
    from the newest one when the seed, profile, settings and `extra` match the run that saved it."""
    config = dict(seed=args.seed, profile=args.profile, **{k: getattr(args, k) for k in settings["quick"]}, **extra)
    return training.Checkpointing(folder=args.out / "checkpoints", every=args.checkpoint_every, resume=args.resume,
                                  config=config)


def interrupted(err: training.TrainingInterrupted, name: str) -> SystemExit:
    """The message and exit status (130, as for Ctrl-C) of a run that a signal stopped with a checkpoint."""
    if err.main_process:
        print(f"\n{name}: {err}. Continue with the same command plus --resume.", flush=True)
    return SystemExit(130)


# ---- writing the model: all or nothing ---------------------------------------------------------------------

@contextlib.contextmanager
def publish(out: Path, keep_checkpoints: bool = False):
    """Yield a hidden sibling folder to write the model, its record and its measurements into; on success write
    its manifest (pretrained.write_manifest), flush it to disk and swap it into place as `out` in one rename
    (OUT/checkpoints move along with keep_checkpoints, else they leave with the old folder). On an error or an
    interrupt the sibling is removed and `out` is untouched."""
    out = Path(out)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        write_manifest(staging)
        if keep_checkpoints and (out / "checkpoints").is_dir():
            os.replace(out / "checkpoints", staging / "checkpoints")
        _fsync_tree(staging)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {out} (model, record, {MANIFEST})")


def _fsync_tree(folder: Path) -> None:
    """Flush every file under folder to disk, so the rename never publishes empty files after a power cut."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _swap_into_place(staging: Path, out: Path) -> None:
    """Make `staging` the folder `out`: one rename when out is new; otherwise Linux's atomic exchange
    (renameat2 RENAME_EXCHANGE), or, where that is missing, two renames with SIGINT/SIGTERM held off."""
    if not out.exists():
        os.replace(staging, out)
        return
    if not _exchange(staging, out):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            os.replace(out, old)
            os.replace(staging, out)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        staging = old
    shutil.rmtree(staging)   # the old model, now under the staging name


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where the system has no such call."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
