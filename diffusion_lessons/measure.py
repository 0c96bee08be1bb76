"""Full-size measurements of a shipped model: python -m diffusion_lessons.measure NAME.

A lesson measures a small live sample in its quick profile; the narrow intervals come from here:
enough samples per setting (500 digits by default) that each 95% interval is a few points wide.
The record is written as measurements.json next to the model it measured, with the SHA-256 of the
model's weight files, so a test can check it still belongs to the weights that ship
(`record_matches_model`). Every figure is stored as {"value", "low", "high", "n"} (stats.Estimate).

    python -m diffusion_lessons.measure digits            # lessons 04 and 05 (about 10 min on a 2-core CPU)
    python -m diffusion_lessons.measure digits --per-label 5 --out /tmp/m.json   # a quick smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .pretrained import ROOT

MODELS = ("digits",)
RECORD_NAME = "measurements.json"
DIGITS_GUIDANCE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0)   # lesson 05's sweep, DDIM 50 steps
DIGITS_SAMPLER_STEPS = (5, 10, 20, 50)                          # lesson 04's table, guidance 1
DIGITS_SEED = 0


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a shipped model folder, sorted by their path inside it."""
    files = sorted(Path(folder).rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .safetensors weights")
    return files


def model_hashes(folder: Path) -> dict[str, str]:
    """{relative path: SHA-256 hex} of every weight file of the model in `folder`."""
    folder = Path(folder)
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in weight_files(folder)}


def record_matches_model(record: dict, folder: Path) -> bool:
    """True when a measurements record was made on exactly the weights now in `folder`."""
    return record.get("model_sha256") == model_hashes(folder)


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu} ({torch.get_num_threads()} threads)"


def _row(measures: dict) -> dict:
    return {key: est.as_dict() for key, est in measures.items()}


def _digits_settings() -> list[tuple[str, str, dict]]:
    settings = [("guidance", f"{s:.1f}", dict(sampler="ddim", steps=50, guidance_scale=s))
                for s in DIGITS_GUIDANCE_SCALES]
    settings += [("samplers", f"{sampler}/{steps}", dict(sampler=sampler, steps=steps, guidance_scale=1.0))
                 for sampler in ("ddpm", "ddim") for steps in DIGITS_SAMPLER_STEPS]
    return settings


def _load_digits(folder: Path):
    from diffusers import DDIMScheduler, UNet2DModel

    from .device import pick_device

    unet = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, local_files_only=True)
    unet = unet.to(pick_device()).eval()
    return unet, DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)


def _measure_digits_settings(folder: Path, per_label: int, settings: list, threads: int | None = None,
                             progress: bool = False) -> list[tuple[str, str, dict]]:
    """Sample and measure the given settings (one worker's share); each setting starts from the same seed."""
    from tqdm.auto import tqdm

    from . import evaluation
    from .sampling import sample

    if threads:
        torch.set_num_threads(threads)
    unet, scheduler = _load_digits(folder)
    classifier = evaluation.train_digit_classifier(unet.config.sample_size)
    labels = torch.arange(10).repeat_interleave(per_label)
    rows = []
    for group, key, kwargs in tqdm(settings, desc="settings", disable=not progress):
        generator = torch.Generator().manual_seed(DIGITS_SEED)   # the same starting noise for every setting
        images = sample(unet, scheduler, labels, generator=generator, progress=False, **kwargs).cpu()
        rows.append((group, key, _row(evaluation.measure_digits(images, labels, classifier))))
    return rows


def measure_digits(folder: Path, per_label: int, progress: bool = True, workers: int = 1) -> dict:
    """Lesson 05's guidance sweep (DDIM 50) and lesson 04's sampler table (DDPM and DDIM, guidance 1).
    workers > 1 shares the settings among processes (one torch thread each); the figures do not change."""
    from . import evaluation

    settings = _digits_settings()
    if workers <= 1:
        rows = _measure_digits_settings(folder, per_label, settings, progress=progress)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        shares = [settings[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            parts = list(pool.map(_measure_digits_settings, [folder] * workers, [per_label] * workers, shares,
                                  [1] * workers))
        rows = [row for part in parts for row in part]
    out: dict = {"guidance": {}, "samplers": {}}
    for group, key, _ in settings:   # keep the settings' order
        out[group][key] = next(r for g, k, r in rows if (g, k) == (group, key))
    unet, _ = _load_digits(folder)
    classifier = evaluation.train_digit_classifier(unet.config.sample_size)
    out["classifier_held_out_accuracy"] = round(classifier.held_out_accuracy, 4)
    out["real_roughness_max"] = round(float(evaluation.real_roughness(unet.config.sample_size)[-1]), 5)
    out["settings"] = dict(guidance="DDIM (eta 0), 50 steps, 'leading' spacing; key = guidance scale s",
                           samplers="guidance 1; key = sampler/steps (ddpm = ancestral, ddim = eta 0)",
                           per_setting=10 * per_label, per_label=per_label, seed=DIGITS_SEED,
                           starting_noise="one generator seeded with `seed` per setting: the same noise everywhere")
    out["measures"] = dict(
        fidelity="share read as the asked digit by evaluation.train_digit_classifier (Wilson 95% interval)",
        rough="share rougher than the roughest of the 1,797 real digits (evaluation.rough_mask; Wilson)",
        diversity="within-class diversity between shapes, 1.0 = real held-out digits (bootstrap 95%, 2,000 resamples)",
        pixel_diversity="the same in raw pixels (bootstrap)")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lessons.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=MODELS, help="which shipped model to measure")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--per-label", type=int, default=50, help="samples per digit and setting (default 50)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the settings (one torch thread each; same figures)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where to write the record (default: {RECORD_NAME} in the model folder)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.per_label < 2:
        parser.error(f"--per-label must be >= 2 (diversity needs pairs), got {args.per_label}")
    folder = args.model or ROOT / args.name
    if not folder.is_dir():
        parser.error(f"--model {folder} is not a folder")
    start = time.perf_counter()
    results = measure_digits(folder, args.per_label, workers=args.workers)
    import diffusers

    record = dict(model=args.name, model_sha256=model_hashes(folder),
                  command=f"python -m diffusion_lessons.measure {args.name} --per-label {args.per_label}",
                  **results, wall_time_s=round(time.perf_counter() - start, 1), hardware=_hardware(),
                  date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                  versions=dict(torch=torch.__version__, diffusers=diffusers.__version__))
    out = args.out or folder / RECORD_NAME
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} ({record['wall_time_s']} s)")
    return record


if __name__ == "__main__":
    main()
