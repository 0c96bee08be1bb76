"""Recipe of the shipped digits model (lessons 03-05): python -m diffusion_lessons.train digits.

What worked on a 2-core CPU (reference/MEASUREMENTS.md): the 1.1 M-parameter class-conditional
UNet2DModel on digits upsampled to 16x16, batch 128, AdamW with the learning rate decayed from 2e-3
to 0 on a cosine, EMA of the weights (decay warming up to 0.999), label dropout 0.15, cosine noise
schedule, about 2,500 steps. Writes, under --out (default diffusion_lessons/pretrained/digits/):
unet/ (the EMA weights, safetensors), scheduler/ (a DDIMScheduler with the same schedule) and
recipe.json (data, seed, steps, wall time, hardware, final loss and the measured quality: fidelity and
diversity at lesson 05's guidance scales). --evaluate-only re-measures a saved model without training.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from .. import __version__
from ..data import DIGITS_HELD_OUT, DIGITS_SIZE, DIGITS_SPLIT_SEED, load_digits
from ..device import PROFILES, pick_device, run_profile, seed_everything
from ..evaluation import evaluate_digits_model, train_digit_classifier
from ..models import DIGITS_UNET_CONFIG, build_digits_unet, count_parameters
from ..pretrained import ROOT
from ..schedules import make_schedule, to_diffusers_config
from ..training import EMA, fit

SEED = 0
STEPS = {"quick": 2500, "full": 5000}  # the full (GPU) profile trains twice as long
BATCH_SIZE = 128
LR = 2e-3                  # AdamW, decayed to 0 on a cosine
P_UNCOND = 0.15            # label dropout: how often the null label replaces the digit
EMA_MAX_DECAY = 0.999
NOISE_SCHEDULE = "cosine"  # diffusers: squaredcos_cap_v2, T = 1000
EVAL = dict(per_label=20, steps=50, sampler="ddim", scales=(0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0))  # lesson 05's scales


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lessons.train digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="quick (2,500 steps, the CPU recipe) or full (5,000); default: the run profile")
    parser.add_argument("--steps", type=int, default=None, help="training steps (overrides the profile)")
    parser.add_argument("--out", type=Path, default=ROOT / "digits", help="output folder")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--eval-per-label", type=int, default=EVAL["per_label"],
                        help="samples per digit for the quality record (default 20; fewer for a smoke test)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: re-measure the model saved in --out and update the quality in its "
                             "recipe.json (the training figures are kept)")
    args = parser.parse_args(argv)
    args.profile = args.profile or run_profile()
    args.steps = args.steps if args.steps is not None else STEPS[args.profile]
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.eval_per_label < 2:
        parser.error(f"--eval-per-label must be >= 2 (diversity needs pairs), got {args.eval_per_label}")
    return args


def make_scheduler():
    """The DDIMScheduler shipped with the model: same cosine schedule, final step to alpha_bar = 1,
    no clipping, 'leading' timesteps (see sampling's docstring)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**to_diffusers_config(NOISE_SCHEDULE), set_alpha_to_one=True, clip_sample=False,
                         prediction_type="epsilon", timestep_spacing="leading")


def hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU model and its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def measure(model: torch.nn.Module, scheduler, seed: int, per_label: int = EVAL["per_label"]) -> dict:
    """Fidelity and within-class diversity (feature space, and pixels for comparison) at each evaluated
    guidance scale, with the package's classifier, from the same starting noise at every scale."""
    classifier = train_digit_classifier(DIGITS_SIZE)
    quality = dict(classifier="RBF SVM on pixels (evaluation.train_digit_classifier)",
                   classifier_held_out_accuracy=round(classifier.held_out_accuracy, 4),
                   diversity="evaluation.within_class_diversity, 1.0 = real held-out digits: diversity between "
                             "shape directions (unit-length coordinates along the 20 main PCA directions of real "
                             "digits); pixel_diversity: the same in raw pixels",
                   sampler=EVAL["sampler"], sampling_steps=EVAL["steps"], per_label=per_label)
    for scale in EVAL["scales"]:
        result = evaluate_digits_model(model, scheduler, per_label=per_label, steps=EVAL["steps"],
                                       guidance_scale=scale, seed=seed, classifier=classifier,
                                       sampler=EVAL["sampler"])
        quality[f"guidance_{scale:g}"] = dict(fidelity=round(result["fidelity"], 4),
                                              diversity=round(result["diversity"], 4),
                                              pixel_diversity=round(result["pixel_diversity"], 4))
    return quality


def train(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, list[float], float]:
    """Train from the seed; return the EMA model, the loss history and the training wall time."""
    seed_everything(args.seed)
    x0, labels = load_digits("train", DIGITS_SIZE)
    model = build_digits_unet(seed=args.seed)
    ema = EMA(model, max_decay=EMA_MAX_DECAY)
    start = time.perf_counter()
    losses = fit(model, x0, labels, steps=args.steps, batch_size=BATCH_SIZE, lr=LR,
                 schedule=make_schedule(NOISE_SCHEDULE), p_uncond=P_UNCOND, ema=ema, seed=args.seed,
                 device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return ema.model.eval(), losses, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    """Train, save (unet/, scheduler/), measure and write recipe.json; return the record."""
    import diffusers

    args = parse_args(argv)
    device = pick_device()
    if args.evaluate_only:
        return evaluate_only(args, device)
    print(f"digits recipe: {args.steps} steps, profile {args.profile}, device {device}, out {args.out}")
    model, losses, train_s = train(args, device)
    scheduler = make_scheduler()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out / "unet", safe_serialization=True)
    scheduler.save_pretrained(args.out / "scheduler")
    start = time.perf_counter()
    quality = measure(model, scheduler, args.seed, args.eval_per_label)
    tail = losses[-min(100, len(losses)):]
    record = dict(
        model="digits", command=f"python -m diffusion_lessons.train digits --profile {args.profile} "
                                f"--steps {args.steps} --seed {args.seed}",
        data=dict(source="sklearn.datasets.load_digits", split="train", images=len(load_digits("train")[1]),
                  held_out=DIGITS_HELD_OUT, split_seed=DIGITS_SPLIT_SEED, size=DIGITS_SIZE,
                  preprocessing="8x8 values 0..16 -> bilinear upsample to 16x16 -> [-1, 1], ink = +1"),
        seed=args.seed, profile=args.profile, steps=args.steps, batch_size=BATCH_SIZE, lr=LR,
        optimizer="AdamW (weight_decay 0.01), grad-norm clip 1.0", lr_schedule="cosine from lr to 0",
        noise_schedule=dict(kind=NOISE_SCHEDULE, num_train_timesteps=1000, diffusers="squaredcos_cap_v2"),
        p_uncond=P_UNCOND, ema_max_decay=EMA_MAX_DECAY, saved_weights="EMA",
        unet=dict(parameters=count_parameters(model), **{k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in DIGITS_UNET_CONFIG.items()}),
        final_loss=round(sum(tail) / len(tail), 5), final_loss_window=len(tail), first_loss=round(losses[0], 5),
        wall_time_s=round(train_s, 1), steps_per_s=round(args.steps / train_s, 2),
        eval_time_s=round(time.perf_counter() - start, 1), quality=quality,
        evaluated=dict(hardware=hardware(device), command="(with the training)"),
        hardware=hardware(device), device=str(device), platform=platform.platform(),
        versions=dict(python=platform.python_version(), torch=torch.__version__, diffusers=diffusers.__version__,
                      diffusion_lessons=__version__),
    )
    (args.out / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("steps", "wall_time_s", "steps_per_s", "final_loss", "quality")},
                     indent=2))
    return record


def evaluate_only(args: argparse.Namespace, device: torch.device) -> dict:
    """Re-measure the model saved under args.out with the current measures; update its recipe.json."""
    from diffusers import UNet2DModel

    path = args.out / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(f"--out {args.out} holds no recipe.json: train first (without --evaluate-only)")
    record = json.loads(path.read_text())
    model = UNet2DModel.from_pretrained(args.out / "unet", use_safetensors=True, local_files_only=True)
    model = model.to(device).eval()
    print(f"digits recipe: re-measuring {args.out} on {device}")
    start = time.perf_counter()
    record["quality"] = measure(model, make_scheduler(), record["seed"], args.eval_per_label)
    record["eval_time_s"] = round(time.perf_counter() - start, 1)
    record["evaluated"] = dict(hardware=hardware(device),
                               command=f"python -m diffusion_lessons.train digits --evaluate-only "
                                       f"--eval-per-label {args.eval_per_label}")
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["quality"], indent=2))
    return record


if __name__ == "__main__":
    main()
