"""Recipe of the shipped digits model (lessons 03-05): python -m diffusion_lessons.train digits.

What worked on a 2-core CPU when the book was planned: the 1.1 M-parameter class-conditional
UNet2DModel on digits upsampled to 16x16, batch 128, AdamW with the learning rate decayed from 2e-3
to 0 on a cosine, EMA of the weights (decay warming up to 0.999), label dropout 0.15, cosine noise
schedule, about 2,500 steps. Writes, under --out (default ./runs/digits-<timestamp>; the shipped
folder diffusion_lessons/pretrained/digits/ only with --force): unet/ (the EMA weights, safetensors),
scheduler/ (a DDIMScheduler with the same schedule and prediction type), recipe.json (the record of
recipes.common: data, seed, steps, wall time, hardware, final loss and the measured quality: fidelity
and diversity at lesson 05's guidance scales; --skip-eval leaves it out) and manifest.json, all at once
(recipes.common.publish). --evaluate-only re-measures the model saved in --out without training. Runs
unchanged under accelerate launch (docs/training.md): the batch of 128 is the global batch.
"""

from __future__ import annotations

import argparse
import time

import torch

from ..data import DIGITS_HELD_OUT, DIGITS_SIZE, DIGITS_SPLIT_SEED, load_digits
from ..device import seed_everything
from ..evaluation import evaluate_digits_model, train_digit_classifier
from ..models import DIGITS_UNET_CONFIG, build_digits_unet, count_parameters
from ..schedules import make_schedule, to_diffusers_config
from ..training import EMA, TrainingInterrupted, fit, training_device
from . import common

SEED = 0
STEPS = {"quick": 2500, "full": 5000}  # the full (GPU) profile trains twice as long
BATCH_SIZE = 128
LR = 2e-3                  # AdamW, decayed to 0 on a cosine
P_UNCOND = 0.15            # label dropout: how often the null label replaces the digit
EMA_MAX_DECAY = 0.999
NOISE_SCHEDULE = "cosine"  # diffusers: squaredcos_cap_v2, T = 1000
PREDICTION_TYPE = "v_prediction"  # what the network outputs: "epsilon", "v_prediction" or "sample"
SNR_GAMMA = None           # min-SNR-gamma loss weighting (None: plain MSE)
EVAL = dict(per_label=20, steps=50, sampler="ddim", scales=(0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0))  # lesson 05's scales
SETTINGS = {profile: dict(steps=steps) for profile, steps in STEPS.items()}  # --steps overrides
OUTPUTS = ("unet", "scheduler", "recipe.json", "measurements.json")  # what OUT holds (measure.py adds the last)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.make_parser("digits", __doc__, SETTINGS, seed=SEED)
    parser.add_argument("--eval-per-label", type=int, default=EVAL["per_label"],
                        help="samples per digit for the quality record (default 20; fewer for a smoke test)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: re-measure the model saved in --out and update the quality in its "
                             "recipe.json (the training figures are kept)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=argparse.SUPPRESS)  # tests: tiny runs
    args = common.parse(parser, argv, "digits", SETTINGS, out_needed_by="evaluate_only", outputs=OUTPUTS)
    if args.eval_per_label < 2:
        parser.error(f"--eval-per-label must be >= 2 (diversity needs pairs), got {args.eval_per_label}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def make_scheduler():
    """The DDIMScheduler shipped with the model: same cosine schedule and prediction type, final step to
    alpha_bar = 1, no clipping, 'leading' timesteps (see sampling's docstring)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**to_diffusers_config(NOISE_SCHEDULE), set_alpha_to_one=True, clip_sample=False,
                         prediction_type=PREDICTION_TYPE, timestep_spacing="leading")


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


def train(args: argparse.Namespace, device: torch.device, accelerator=None) -> tuple[torch.nn.Module, list[float], float]:
    """Train from the seed (in train_loop, under `accelerator` with the run's checkpoints when given); return the
    EMA model, the loss history and the training wall time."""
    seed_everything(args.seed)
    x0, labels = load_digits("train", DIGITS_SIZE)
    model = build_digits_unet(seed=args.seed)
    ema = EMA(model, max_decay=EMA_MAX_DECAY)
    batch_size = getattr(args, "batch_size", BATCH_SIZE)
    checkpointing = common.checkpointing(args, SETTINGS, batch_size=batch_size) if accelerator is not None else None
    start = time.perf_counter()
    losses = fit(model, x0, labels, steps=args.steps, batch_size=batch_size, lr=LR,
                 schedule=make_schedule(NOISE_SCHEDULE), p_uncond=P_UNCOND, ema=ema, seed=args.seed,
                 device=device, prediction_type=PREDICTION_TYPE, snr_gamma=SNR_GAMMA, accelerator=accelerator,
                 checkpointing=checkpointing)
    common.synchronize(device)
    return ema.model.eval(), losses, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict | None:
    """Train (on every process of a launch), then on the main process save (unet/, scheduler/), measure and write
    recipe.json and manifest.json into --out at once; return the record (None on the other processes)."""
    started = time.perf_counter()
    args = parse_args(argv)
    device = training_device()
    if args.evaluate_only:
        return evaluate_only(args, device)
    accelerator = common.accelerator(args, device)
    if accelerator.is_main_process:
        print(f"digits recipe: {args.steps} steps, profile {args.profile}, device {device}, "
              f"{accelerator.num_processes} process(es), writing to {args.out}")
    try:
        model, losses, train_s = train(args, device, accelerator)
    except TrainingInterrupted as err:
        raise common.interrupted(err, "digits") from None
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as staging:
        return save_and_measure(args, model, losses, train_s, device, staging, started)


def data_record() -> dict:
    """The record's description of the training data (shared by the digits recipes)."""
    return dict(source="sklearn.datasets.load_digits", split="train", images=len(load_digits("train")[1]),
                held_out=DIGITS_HELD_OUT, split_seed=DIGITS_SPLIT_SEED, size=DIGITS_SIZE,
                preprocessing="8x8 values 0..16 -> bilinear upsample to 16x16 -> [-1, 1], ink = +1")


def save_and_measure(args: argparse.Namespace, model: torch.nn.Module, losses: list[float], train_s: float,
                     device: torch.device, folder, started: float) -> dict:
    """Save unet/ and scheduler/ into folder, measure them (unless --skip-eval) and write recipe.json."""
    scheduler = make_scheduler()
    model.save_pretrained(folder / "unet", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    start = time.perf_counter()
    quality = None if args.skip_eval else measure(model, scheduler, args.seed, args.eval_per_label)
    eval_s = None if args.skip_eval else time.perf_counter() - start
    record = common.run_record(
        "digits", args, SETTINGS, started=started, losses=losses, train_s=train_s, device=device,
        quality=quality, eval_s=eval_s, batch_size=args.batch_size, lr=LR,
        data=data_record(),
        loop=common.loop_settings(ema_max_decay=EMA_MAX_DECAY),
        noise_schedule=dict(kind=NOISE_SCHEDULE, num_train_timesteps=scheduler.config.num_train_timesteps,
                            diffusers=scheduler.config.beta_schedule, beta_schedule=scheduler.config.beta_schedule),
        prediction_type=PREDICTION_TYPE, snr_gamma=SNR_GAMMA, p_uncond=P_UNCOND, saved_weights="EMA",
        unet=dict(parameters=count_parameters(model), **{k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in DIGITS_UNET_CONFIG.items()}),
        evaluated=None if args.skip_eval else dict(hardware=common.hardware(device), command="(with the training)"),
    )
    if args.batch_size != BATCH_SIZE:
        record["command"] += f" --batch-size {args.batch_size}"
    common.write_record(record, folder / "recipe.json")
    return record


def evaluate_only(args: argparse.Namespace, device: torch.device) -> dict:
    """Re-measure the model saved under args.out (with its saved scheduler) with the current measures;
    update its recipe.json."""
    from diffusers import DDIMScheduler, UNet2DModel

    def load(folder):
        model = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, local_files_only=True)
        scheduler = (DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
                     if (folder / "scheduler").is_dir() else make_scheduler())
        return model, scheduler

    return common.re_measure(args, device, "digits", load, measure)


if __name__ == "__main__":
    main()
