"""Recipe of lesson 16's memorization experiment: python -m diffusion_lessons.train digits-memorize.

The same unconditional flow-matching digits U-Net (models.build_digits_unet, every row labelled NULL_LABEL;
the digits-flow objective, loop, EMA and learning rate) trained four times with the same steps and batch on
different training sets (memorization.training_subset, stratified by label, seed --seed):
  n10, n100, n1000: 10, 100 and 1,000 digits of the training split;
  n1000-dup: the n1000 images with DUPLICATED of them repeated COPIES more times each (so every one of those
  appears COPIES + 1 times), the duplicated training images of large web scrapes in miniature.
Then each model draws --samples digits (FlowMatchEulerDiscreteScheduler, 50 steps, one seed) and
memorization.memorization_report compares them with their training images and with the 300 held-out digits
of the test split: the copy share (ratio test, Wilson interval) and the median nearest-neighbour distance
(bootstrap interval); for n1000 and n1000-dup also the share of samples whose nearest training digit is one of
the repeated ones. --evaluate-only --out DIR re-measures a saved run without training. Writes, into --out (default ./runs/digits-memorize-<timestamp>; the shipped
diffusion_lessons/pretrained/digits-memorize/ only with --force): RUN/unet/ for each run (EMA weights,
safetensors), scheduler/, recipe.json, measurements.json (per run: its training rows and the report) and
manifest.json, all at once. Runs under accelerate launch; --resume is not offered (four short runs).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from .. import memorization
from ..stats import proportion
from ..data import NULL_LABEL, load_digits
from ..flow import flow_batch_fn, flow_loss_fn
from ..loop import unet_denoiser
from ..models import build_digits_unet
from ..device import seed_everything
from ..training import EMA, TrainingInterrupted, train_loop, training_device
from . import common, digits_flow

NAME = "digits-memorize"
SETTINGS = {"quick": dict(steps=1200, batch_size=64),     # four runs, about 24 min on the idle 2-core CPU
            "full": dict(steps=4000, batch_size=128)}
SIZES = (10, 100, 1000)
DUPLICATED, COPIES = 10, 30          # n1000-dup: 10 of its images appear 31 times each
RUNS = (*(f"n{n}" for n in SIZES), "n1000-dup")
SAMPLES = 500
OUTPUTS = (*RUNS, "scheduler", "recipe.json", "measurements.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.make_parser(NAME, __doc__, SETTINGS)
    parser.add_argument("--samples", type=int, default=SAMPLES,
                        help=f"samples per model for the measurement (default {SAMPLES})")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: re-measure the four models saved in --out and rewrite measurements.json")
    args = common.parse(parser, argv, NAME, SETTINGS, out_needed_by="evaluate_only", outputs=OUTPUTS)
    if args.samples < 2:
        parser.error(f"--samples must be >= 2, got {args.samples}")
    if args.resume or args.checkpoint_every:
        parser.error("--resume and --checkpoint-every are not offered by digits-memorize (four short runs)")
    return args


def training_sets(seed: int) -> dict[str, dict]:
    """run -> {x0: the training images (with their repeats), rows: their training-split rows, duplicated: the
    rows repeated}; the n1000-dup repeats are the first DUPLICATED of n1000's rows in a seeded order."""
    sets = {}
    for n in SIZES:
        x0, _, rows = memorization.training_subset(n, seed)
        sets[f"n{n}"] = dict(x0=x0, rows=rows.tolist(), duplicated=[])
    base = sets[f"n{SIZES[-1]}"]
    pick = torch.randperm(len(base["rows"]), generator=torch.Generator().manual_seed(seed))[:DUPLICATED]
    sets["n1000-dup"] = dict(x0=memorization.with_duplicates(base["x0"], pick, COPIES), rows=base["rows"],
                             duplicated=sorted(base["rows"][i] for i in pick.tolist()))
    return sets


def train_one(x0: torch.Tensor, args: argparse.Namespace, device, accelerator, desc: str):
    """The U-Net trained unconditionally on x0 from the seed; returns (EMA model, losses, seconds)."""
    seed_everything(args.seed)
    labels = torch.full((x0.shape[0],), NULL_LABEL)
    batch_fn = flow_batch_fn(x0, args.batch_size, labels, 0.0)
    model = build_digits_unet(seed=args.seed).to(device)
    ema = EMA(model, max_decay=digits_flow.EMA_MAX_DECAY).to(device)
    start = time.perf_counter()
    losses = train_loop(model, flow_loss_fn(unet_denoiser(model, "class_labels")), batch_fn, steps=args.steps,
                        lr=digits_flow.LR, generator=torch.Generator().manual_seed(args.seed), ema=ema,
                        desc=desc, accelerator=accelerator)
    common.synchronize(device)
    return ema.model.eval(), losses, time.perf_counter() - start


def measure_run(samples: torch.Tensor, train_set: dict, held_out: torch.Tensor, seed: int,
                repeated: list[int]) -> dict:
    """The memorization report of one run. For the runs whose training set holds the `repeated` digits (n1000
    and n1000-dup), also: the share of samples whose nearest training digit is one of them (Wilson; what the
    repeats do to the model's distribution), how many samples copy one of them and how many copy another digit,
    and the share of training rows the repeated digits make up."""
    report = memorization.memorization_report(samples, train_set["x0"], held_out, seed=seed)
    found = {k: v.as_dict() for k, v in report.items()}
    if set(repeated) <= set(train_set["rows"]):
        references, first = memorization.unique_rows(train_set["x0"])
        flags = memorization.copy_flags(samples, references)
        _, nearest = memorization.nearest_neighbours(samples, references)
        rows = torch.tensor(train_set["rows"])[first[nearest[:, 0]]]   # the repeats come after the originals
        of_repeated = torch.isin(rows, torch.tensor(repeated))
        found["nearest_is_repeated"] = proportion(of_repeated).as_dict()
        found["copies_of_repeated"] = int((flags & of_repeated).sum())
        found["copies_of_others"] = int((flags & ~of_repeated).sum())
        found["repeated_share_of_training_rows"] = round(
            sum(row in repeated for row in train_set["rows"]) * (COPIES + 1 if train_set["duplicated"] else 1)
            / train_set["x0"].shape[0], 4)
    return found


def measure_all(models: dict, scheduler, sets: dict, samples: int, seed: int) -> dict:
    """run -> measure_run of `samples` digits drawn from its model (memorization.draw_samples, one seed)."""
    held_out, _ = load_digits("test")
    repeated = sets["n1000-dup"]["duplicated"]
    return {run: measure_run(memorization.draw_samples(models[run], scheduler, samples, seed), sets[run], held_out,
                             seed, repeated) for run in RUNS}


def write_measurements(folder, found: dict, sets: dict, args: argparse.Namespace, record: dict,
                       eval_s: float) -> None:
    """measurements.json: per run its training rows, the rows repeated and measure_run's figures."""
    from ..measure import model_hashes

    common.write_record(dict(
        model=NAME, model_sha256=model_hashes(folder), command=record["command"],
        runs={run: dict(training_rows=sets[run]["rows"], duplicated_rows=sets[run]["duplicated"], **found[run])
              for run in RUNS},
        settings=dict(samples=args.samples, num_inference_steps=memorization.SAMPLE_STEPS, guidance_scale=1.0,
                      seed=record["seed"], scheduler="FlowMatchEulerDiscreteScheduler (scheduler/)",
                      copy_test=f"nearest <= {memorization.COPY_RATIO:.4f} x second-nearest distinct training "
                                f"image (RMS pixel distance; Yoon et al. 2023)",
                      held_out="load_digits('test'), 300 images",
                      interval="Wilson 95% (shares), percentile bootstrap 95% (medians)"),
        hardware=common.hardware(training_device()), wall_time_s=round(eval_s, 1), date=time.strftime("%Y-%m-%d"),
        versions=common.versions()), folder / "measurements.json", show=("wall_time_s",))


def quality(found: dict) -> dict:
    return {run: {k: found[run][k] for k in ("sample_copy_share", "held_out_copy_share")} for run in RUNS}


def evaluate_only(args: argparse.Namespace) -> dict:
    """Re-measure the four models saved under --out (no training); rewrite measurements.json and the record's
    quality."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    path = args.out / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(f"--out {args.out} holds no recipe.json: train first (without --evaluate-only)")
    record = json.loads(path.read_text())
    device = training_device()
    models = {run: UNet2DModel.from_pretrained(args.out / run / "unet", use_safetensors=True,
                                               local_files_only=True).to(device).eval() for run in RUNS}
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(args.out / "scheduler", local_files_only=True)
    print(f"{NAME} recipe: re-measuring {args.out} on {device}")
    start = time.perf_counter()
    sets = training_sets(record["seed"])
    found = measure_all(models, scheduler, sets, args.samples, record["seed"])
    eval_s = time.perf_counter() - start
    record.update(quality=quality(found), eval_time_s=round(eval_s, 1),
                  evaluated=dict(hardware=common.hardware(device),
                                 command=f"python -m diffusion_lessons.train {NAME} --evaluate-only --samples "
                                         f"{args.samples}"))
    common.write_record(record, path, show=("quality",))
    write_measurements(args.out, found, sets, args, record, eval_s)
    return record


def main(argv: list[str] | None = None) -> dict | None:
    """Train the four runs (every process of a launch); on the main process save, measure and record."""
    from .digits_flow import make_scheduler

    started = time.perf_counter()
    args = parse_args(argv)
    if args.evaluate_only:
        return evaluate_only(args)
    device = training_device()
    accelerator = common.accelerator(args, device)
    if accelerator.is_main_process:
        print(f"{NAME} recipe: {len(RUNS)} runs of {args.steps} steps (batch {args.batch_size}), profile "
              f"{args.profile}, device {device}, writing to {args.out}")
    sets = training_sets(args.seed)
    models, losses, seconds = {}, {}, {}
    try:
        for run in RUNS:
            models[run], losses[run], seconds[run] = train_one(sets[run]["x0"], args, device, accelerator,
                                                               f"{NAME} {run}")
    except TrainingInterrupted as err:
        raise common.interrupted(err, NAME) from None
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as folder:
        scheduler = make_scheduler()
        scheduler.save_pretrained(folder / "scheduler")
        for run in RUNS:
            models[run].save_pretrained(folder / run / "unet", safe_serialization=True)
        t_eval = time.perf_counter()
        found = None if args.skip_eval else measure_all(models, scheduler, sets, args.samples, args.seed)
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        record = common.run_record(
            NAME, args, SETTINGS, started=started, losses=[x for run in RUNS for x in losses[run]],
            train_s=sum(seconds.values()), device=device, eval_s=eval_s, batch_size=args.batch_size,
            lr=digits_flow.LR, loop=common.loop_settings(ema_max_decay=digits_flow.EMA_MAX_DECAY),
            quality=None if found is None else quality(found),
            data=dict(source="sklearn.datasets.load_digits", split="train (memorization.training_subset)",
                      runs={run: dict(images=sets[run]["x0"].shape[0], distinct=len(sets[run]["rows"]),
                                      duplicated=len(sets[run]["duplicated"]),
                                      copies_each=COPIES + 1 if sets[run]["duplicated"] else 1) for run in RUNS},
                      held_out="the 300 digits of load_digits('test')", size=16, labels="none (NULL_LABEL)"),
            objective=dict(kind="flow matching (rectified flow), unconditional", target="noise - x0",
                           sigma_sampler="uniform"),
            runs={run: dict(final_loss=round(sum(losses[run][-100:]) / len(losses[run][-100:]), 5),
                            wall_time_s=round(seconds[run], 1)) for run in RUNS},
            saved_weights="EMA", steps_per_run=args.steps)
        record["steps_per_s"] = round(len(RUNS) * args.steps / sum(seconds.values()), 2)
        if args.samples != SAMPLES:
            record["command"] += f" --samples {args.samples}"
            record["recipe"] = record["command"]
        common.write_record(record, folder / "recipe.json")
        if found is not None:
            write_measurements(folder, found, sets, args, record, eval_s)
        return record


if __name__ == "__main__":
    main()
