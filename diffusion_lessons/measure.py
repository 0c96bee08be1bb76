"""Full-size measurements of a shipped model: python -m diffusion_lessons.measure NAME.

A lesson measures a small live sample in its quick profile; the narrow intervals come from here:
enough samples per setting (500 digits by default) that each 95% interval is a few points wide.
The record is written as measurements.json next to the model it measured, with the SHA-256 of the
model's weight files, so a test can check it still belongs to the weights that ship
(`record_matches_model`). Every figure is stored as {"value", "low", "high", "n"} (stats.Estimate).

    python -m diffusion_lessons.measure digits            # lessons 04, 05 and 08 (about 10 min on a 2-core CPU)
    python -m diffusion_lessons.measure digits --groups few_steps --per-label 20   # only lesson 08's DDIM row
    python -m diffusion_lessons.measure digits-flow --per-label 20   # lesson 08's table (also digits-reflow)
    python -m diffusion_lessons.measure digits --per-label 5 --out /tmp/m.json   # a quick smoke run

--groups measures only the named groups of settings and keeps the record's other groups, when the record was
made on the same weights (a different per-label count is kept per group in settings.per_label_of).
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

MODELS = ("digits", "digits-flow", "digits-reflow", "digits-dit")
FLOW_MODELS = ("digits-flow", "digits-reflow", "digits-dit")
RECORD_NAME = "measurements.json"
DIGITS_GUIDANCE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0)   # lesson 05's sweep, DDIM 50 steps
DIGITS_SAMPLER_STEPS = (5, 10, 20, 50)                          # lesson 04's table, guidance 1
DIGITS_SEED = 0
FEW_STEPS = (1, 2, 4, 8, 16, 50)                                # lesson 08's table, guidance 3
FEW_STEPS_GUIDANCE = 3.0


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
    if not isinstance(record, dict):
        raise ValueError(f"record must be a dict (a measurements.json read with json), got {type(record).__name__}")
    return record.get("model_sha256") == model_hashes(folder)


def hardware(device: torch.device | None = None) -> str:
    """The GPU's name (of `device`, default the first when CUDA is there), or the CPU model and torch's thread
    count: what a record says it was measured on. device: 'cpu', 'cuda', 'cuda:N', a torch.device or None."""
    from . import _checks

    device = _checks.optional_device(device)
    if (device.type == "cuda") if device is not None else torch.cuda.is_available():
        return torch.cuda.get_device_name(device if device is not None else 0)
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"{cpu} ({threads} thread{'' if threads == 1 else 's'})"


def _row(measures: dict) -> dict:
    return {key: est.as_dict() for key, est in measures.items()}


def _digits_settings() -> list[tuple[str, str, dict]]:
    settings = [("guidance", f"{s:.1f}", dict(sampler="ddim", steps=50, guidance_scale=s))
                for s in DIGITS_GUIDANCE_SCALES]
    settings += [("samplers", f"{sampler}/{steps}", dict(sampler=sampler, steps=steps, guidance_scale=1.0))
                 for sampler in ("ddpm", "ddim") for steps in DIGITS_SAMPLER_STEPS]
    # DDIM from t = 999 ('trailing'): with 'leading' spacing one step would start at t = 0, from no noise at all
    settings += [("few_steps", str(steps), dict(sampler="ddim", steps=steps, guidance_scale=FEW_STEPS_GUIDANCE,
                                                spacing="trailing")) for steps in FEW_STEPS]
    return settings


def _flow_settings() -> list[tuple[str, str, dict]]:
    """Even Euler ladders sigma = 1 - i / n (set_timesteps(sigmas=...)), and the scheduler's own set_timesteps(n)
    (linspace(1, 1/1000, n), then 0: its 2 steps are one step to sigma 1/1000 and a nudge)."""
    settings = [("few_steps", str(steps), dict(steps=steps, ladder="even")) for steps in FEW_STEPS]
    settings += [("scheduler_ladder", str(steps), dict(steps=steps, ladder="scheduler")) for steps in (2, 50)]
    return settings


def _settings(name: str) -> list[tuple[str, str, dict]]:
    return _flow_settings() if name in FLOW_MODELS else _digits_settings()


def _load_digits(folder: Path):
    """The network (unet/ UNet2DModel, or transformer/ DiTTransformer2DModel) and scheduler of a digits model."""
    import diffusers

    from .device import pick_device

    folder = Path(folder)
    cls, part = ("DiTTransformer2DModel", "transformer") if (folder / "transformer").is_dir() else ("UNet2DModel", "unet")
    model = getattr(diffusers, cls).from_pretrained(folder / part, use_safetensors=True, local_files_only=True)
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, config["_class_name"]).from_pretrained(folder / "scheduler", local_files_only=True)
    return model.to(pick_device()).eval(), scheduler


def _sample_setting(model, scheduler, labels, kwargs: dict) -> torch.Tensor:
    """One setting's images from the seed: the package's sampler for a DDIM model, plain diffusers for a flow one."""
    from .flow import sample_with_flow_scheduler
    from .sampling import sample

    generator = torch.Generator().manual_seed(DIGITS_SEED)   # the same starting noise for every setting
    if type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler":
        n = kwargs["steps"]
        sigmas = [1 - i / n for i in range(n)] if kwargs["ladder"] == "even" else None
        return sample_with_flow_scheduler(model, scheduler, labels, n, FEW_STEPS_GUIDANCE, generator=generator,
                                          sigmas=sigmas)
    return sample(model, scheduler, labels, generator=generator, progress=False, **kwargs)


def _measure_digits_settings(folder: Path, per_label: int, settings: list, threads: int | None = None,
                             progress: bool = False) -> list[tuple[str, str, dict]]:
    """Sample and measure the given settings (one worker's share); each setting starts from the same seed."""
    from tqdm.auto import tqdm

    from . import evaluation

    if threads:
        torch.set_num_threads(threads)
    model, scheduler = _load_digits(folder)
    classifier = evaluation.train_digit_classifier(model.config.sample_size)
    labels = torch.arange(10).repeat_interleave(per_label)
    rows = []
    for group, key, kwargs in tqdm(settings, desc="settings", disable=not progress):
        images = _sample_setting(model, scheduler, labels, kwargs).cpu()
        rows.append((group, key, _row(evaluation.measure_digits(images, labels, classifier))))
    return rows


def measure_digits(folder: Path, per_label: int, progress: bool = True, workers: int = 1,
                   name: str = "digits", groups: tuple[str, ...] | None = None) -> dict:
    """Lesson 05's guidance sweep (DDIM 50), lesson 04's sampler table (DDPM and DDIM, guidance 1) and lesson 08's
    few-step row (DDIM, trailing, guidance 3); for a flow model (FLOW_MODELS) lesson 08's few-step rows (even
    Euler ladders and the scheduler's own, guidance 3). groups: only these groups of settings.
    workers > 1 shares the settings among processes (one torch thread each); the figures do not change."""
    from . import _checks, evaluation

    per_label = _checks.integer(per_label, "per_label", 2)
    workers = _checks.integer(workers, "workers", 1)
    _checks.choice(name, "name", MODELS)
    settings = [s for s in _settings(name) if groups is None or s[0] in groups]
    if not settings:
        raise ValueError(f"groups must name groups of the {name} settings "
                         f"({sorted({s[0] for s in _settings(name)})}), got {groups!r}")
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
    out: dict = {group: {} for group, _, _ in settings}
    for group, key, _ in settings:   # keep the settings' order
        out[group][key] = next(r for g, k, r in rows if (g, k) == (group, key))
    unet, _ = _load_digits(folder)
    classifier = evaluation.train_digit_classifier(unet.config.sample_size)
    out["classifier_held_out_accuracy"] = round(classifier.held_out_accuracy, 4)
    out["real_roughness_max"] = round(float(evaluation.real_roughness(unet.config.sample_size)[-1]), 5)
    described = dict(guidance="DDIM (eta 0), 50 steps, 'leading' spacing; key = guidance scale s",
                     samplers="guidance 1; key = sampler/steps (ddpm = ancestral, ddim = eta 0)",
                     few_steps=("guidance 3; key = Euler steps on the even ladder sigma = 1 - i / n "
                                "(FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=...))" if name in FLOW_MODELS
                                else "guidance 3; key = DDIM (eta 0) steps, 'trailing' spacing (from t = 999)"),
                     scheduler_ladder="guidance 3; key = steps of the scheduler's own set_timesteps(n)")
    out["settings"] = dict(**{g: described[g] for g in out if g in described},
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
    parser.add_argument("--groups", default=None,
                        help="comma-separated groups of settings to measure (e.g. few_steps); the record's other "
                             "groups are kept when it was made on the same weights")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.per_label < 2:
        parser.error(f"--per-label must be >= 2 (diversity needs pairs), got {args.per_label}")
    folder = args.model or ROOT / args.name
    if not folder.is_dir():
        parser.error(f"--model {folder} is not a folder")
    groups = None
    if args.groups is not None:
        groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
        known = {s[0] for s in _settings(args.name)}
        if not groups or not set(groups) <= known:
            parser.error(f"--groups must name groups of the {args.name} settings ({', '.join(sorted(known))}), "
                         f"got {args.groups!r}")
    start = time.perf_counter()
    results = measure_digits(folder, args.per_label, workers=args.workers, name=args.name, groups=groups)
    import diffusers

    command = f"python -m diffusion_lessons.measure {args.name} --per-label {args.per_label}"
    record = dict(model=args.name, model_sha256=model_hashes(folder), command=command,
                  **results, wall_time_s=round(time.perf_counter() - start, 1), hardware=hardware(),
                  date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                  versions=dict(torch=torch.__version__, diffusers=diffusers.__version__))
    out = args.out or folder / RECORD_NAME
    if groups is not None:
        record = _merge(out, record, groups, f"{command} --groups {','.join(groups)}")
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} ({record['wall_time_s']} s)")
    return record


def _merge(path: Path, new: dict, groups: tuple[str, ...], command: str) -> dict:
    """The record at path with `groups` replaced by the new measurement's, when both were made on the same
    weights; otherwise the new record alone. Each group's per-label count and command are kept."""
    if not path.is_file():
        return new
    old = json.loads(path.read_text())
    if old.get("model_sha256") != new["model_sha256"]:
        print(f"{path} was made on other weights: writing a new record with {', '.join(groups)} only")
        return new
    settings = old.setdefault("settings", {})
    per_label_of = settings.setdefault("per_label_of", {})
    commands = old.setdefault("commands_of", {})
    for group in groups:
        old[group] = new[group]
        settings[group] = new["settings"][group]
        per_label_of[group] = new["settings"]["per_label"]
        commands[group] = command
    old["wall_time_s_of"] = {**old.get("wall_time_s_of", {}), **{g: new["wall_time_s"] for g in groups}}
    return old


if __name__ == "__main__":
    main()
