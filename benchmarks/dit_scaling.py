"""The DiT paper's scaling finding in small (lesson 10): python benchmarks/dit_scaling.py [--steps 300].

Peebles and Xie (2023) found that a diffusion transformer's quality improves with training compute and that
larger models turn the same compute into better quality. This benchmark trains the three digits DiTs of
dit.DIT_SIZES (small, base, large) and the digits U-Net (models.build_digits_unet) with the same flow-matching
objective, data, batches and noise (flow.flow_batch_fn and flow_loss_fn through training.train_loop, batch 128,
label dropout 0.15, each recipe's learning rate, AdamW on the loop's cosine to 0 over --steps, no EMA), for the
same number of steps, and records at a few points along the way:

- training FLOPs so far: one training step's forward and backward counted by torch.utils.flop_counter's
  FlopCounterMode (the optimizer's few FLOPs per parameter left out), times the steps taken;
- training wall time so far (the evaluations excluded);
- the held-out flow-matching loss: the 300 held-out digits (data.load_digits('test')), each at K = 4 fixed
  (sigma, noise) draws, sigma stratified over [0, 1]; the same draws for every model and point; the mean over
  digits with a percentile-bootstrap 95% interval over the 300 digits (n = 300).

At the end: sample quality of each final (raw, not EMA) model, 100 samples (10 per digit), 20 Euler steps of the
shipped FlowMatchEulerDiscreteScheduler, guidance 3 (flow.sample_with_flow_scheduler, evaluation.measure_digits:
fidelity and rough with Wilson intervals, diversity with a bootstrap interval); paired bootstrap intervals of the
final held-out-loss differences between models (same digits, same draws); and training steps/s of all four
measured back to back, twice in turn, on the same machine state. Writes benchmarks/dit-scaling/digits.json
(written after each model too, so a stopped run leaves what it finished).

The points along one run are not annealed (the learning rate decays to 0 only at the run's end), so a mid-run point of
a large model is not a fair partner for the last point of a small one. --equal-compute therefore trains the three DiTs
to the same training compute (the small one's at --steps), each with its own schedule, and writes
benchmarks/dit-scaling/digits-equal-compute.json. Run on a 2-core CPU with one thread:
OMP_NUM_THREADS=1 python benchmarks/dit_scaling.py (68 minutes on 2026-12-03 on the busy 2-core CPU, 24 of them an
outside pause; --equal-compute --steps 300 21 minutes beside it). The stored records were made when the DiT recipe's
learning rate was 1e-3 (each model's rate is in its record as `lr`); the recipe now uses the U-Net's 2e-3, so a new
run's DiT rows will differ.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "dit-scaling" / "digits.json"
EQUAL_OUT = OUT.with_name("digits-equal-compute.json")
MODELS = ("small", "base", "large", "unet")
BATCH_SIZE = 128
K = 4                       # (sigma, noise) draws per held-out digit
SEED = 0


def points(steps: int) -> list[int]:
    """Six evaluation points, roughly evenly spaced on a log axis, ending at `steps`."""
    return sorted({max(1, round(steps * f)) for f in (1 / 15, 2 / 15, 1 / 4, 2 / 5, 2 / 3, 1.0)})


def build(name: str) -> tuple[torch.nn.Module, float]:
    """A fresh model (seed 0) and its recipe's learning rate."""
    from diffusion_lessons.dit import build_digits_dit
    from diffusion_lessons.models import build_digits_unet
    from diffusion_lessons.recipes import digits_dit, digits_flow

    if name == "unet":
        return build_digits_unet(seed=SEED), digits_flow.LR
    return build_digits_dit(name, seed=SEED), digits_dit.LR


def held_out_set() -> dict:
    """The 300 held-out digits repeated K times with fixed stratified sigmas and noise."""
    from diffusion_lessons.data import load_digits

    x0, labels = load_digits("test")
    g = torch.Generator().manual_seed(1234)
    n = x0.shape[0]
    sigma = (torch.arange(K).repeat(n) + torch.rand(n * K, generator=g)) / K      # one draw in each quarter
    noise = torch.randn((n * K, *x0.shape[1:]), generator=g)
    return dict(x0=x0.repeat_interleave(K, 0), labels=labels.repeat_interleave(K), sigma=sigma, noise=noise, n=n)


@torch.no_grad()
def per_digit_loss(model: torch.nn.Module, held: dict) -> np.ndarray:
    """The flow-matching loss of each held-out digit, averaged over its K draws (conditional on its label)."""
    from diffusion_lessons.flow import interpolate, velocity_target
    from diffusion_lessons.loop import unet_denoiser

    was_training = model.training
    model.eval()
    denoise = unet_denoiser(model, "class_labels")
    out = []
    for i in range(0, held["x0"].shape[0], 256):
        x0, noise, sigma = held["x0"][i:i + 256], held["noise"][i:i + 256], held["sigma"][i:i + 256]
        v = denoise(interpolate(x0, noise, sigma), sigma * 1000, held["labels"][i:i + 256])
        out.append(((v - velocity_target(x0, noise)) ** 2).flatten(1).mean(1))
    model.train(was_training)
    return torch.cat(out).reshape(held["n"], K).mean(1).double().numpy()


def step_flops(model: torch.nn.Module, loss_fn, batch_fn) -> int:
    """FLOPs of one training step's forward and backward (FlopCounterMode), on a throwaway batch."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = batch_fn(torch.Generator().manual_seed(99))
    with FlopCounterMode(display=False) as counter:
        loss_fn(batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def train_one(name: str, steps: int, held: dict, data, along: bool = True) -> tuple[dict, torch.nn.Module, np.ndarray]:
    """Train one model for `steps`, evaluating at points(steps) (only at the end when not `along`); return its
    record, the model and the final per-digit held-out losses."""
    from diffusion_lessons.flow import flow_batch_fn, flow_loss_fn
    from diffusion_lessons.loop import unet_denoiser
    from diffusion_lessons.models import count_parameters
    from diffusion_lessons.recipes.digits_flow import P_UNCOND
    from diffusion_lessons.stats import bootstrap_interval
    from diffusion_lessons.training import train_loop

    model, lr = build(name)
    loss_fn = flow_loss_fn(unet_denoiser(model, "class_labels"))
    batches = flow_batch_fn(data[0], BATCH_SIZE, data[1], P_UNCOND)
    flops = step_flops(model, loss_fn, batches)
    wanted, rows, clock = (points(steps) if along else []), [], dict(calls=0, eval_s=0.0)
    last = None

    def evaluate(done: int) -> None:
        nonlocal last
        t = time.perf_counter()
        last = per_digit_loss(model, held)
        clock["eval_s"] += time.perf_counter() - t
        rows.append(dict(step=done, train_flops=flops * done,
                         train_wall_s=round(time.perf_counter() - clock["start"] - clock["eval_s"], 2),
                         held_out_loss=bootstrap_interval(last).as_dict(5)))
        print(f"{name} step {done}: held-out loss {bootstrap_interval(last)}", flush=True)

    def batch_fn(generator: torch.Generator):
        if clock["calls"] in wanted:          # called before step calls + 1: the model has taken `calls` steps
            evaluate(clock["calls"])
        clock["calls"] += 1
        return batches(generator)

    clock["start"] = time.perf_counter()
    train_loop(model, loss_fn, batch_fn, steps=steps, lr=lr, generator=torch.Generator().manual_seed(SEED),
               progress=False)
    evaluate(steps)
    record = dict(parameters=count_parameters(model), lr=lr, flops_per_step=flops, points=rows)
    return record, model.eval(), last


def sample_quality(model: torch.nn.Module, classifier) -> dict:
    """fidelity, rough and diversity of 100 samples (10 per digit), 20 Euler steps, guidance 3."""
    from diffusion_lessons.evaluation import measure_digits
    from diffusion_lessons.flow import sample_with_flow_scheduler
    from diffusion_lessons.recipes.digits_flow import make_scheduler

    labels = torch.arange(10).repeat_interleave(10)
    images = sample_with_flow_scheduler(model, make_scheduler(), labels, 20, 3.0,
                                        generator=torch.Generator().manual_seed(SEED))
    found = measure_digits(images, labels, classifier)
    return {k: found[k].as_dict() for k in ("fidelity", "rough", "diversity")}


def steps_per_second(models: dict, data, steps: int = 6, rounds: int = 2) -> dict:
    """Training steps/s of every model (copies, fresh optimizer), measured in turn `rounds` times back to back
    after one warm-up step each; returns the mean and the range over rounds."""
    import copy

    from diffusion_lessons.flow import flow_batch_fn, flow_loss_fn
    from diffusion_lessons.loop import unet_denoiser
    from diffusion_lessons.recipes.digits_flow import P_UNCOND
    from diffusion_lessons.training import train_loop

    batches = flow_batch_fn(data[0], BATCH_SIZE, data[1], P_UNCOND)
    found = {name: [] for name in models}
    for name, model in models.items():                               # warm-up
        m = copy.deepcopy(model)
        train_loop(m, flow_loss_fn(unet_denoiser(m, "class_labels")), batches, steps=1, lr=1e-4,
                   generator=torch.Generator().manual_seed(0), progress=False)
    for _ in range(rounds):
        for name, model in models.items():
            m = copy.deepcopy(model)
            start = time.perf_counter()
            train_loop(m, flow_loss_fn(unet_denoiser(m, "class_labels")), batches, steps=steps, lr=1e-4,
                       generator=torch.Generator().manual_seed(0), progress=False)
            found[name].append(steps / (time.perf_counter() - start))
    return {name: dict(mean=round(float(np.mean(v)), 3), low=round(min(v), 3), high=round(max(v), 3),
                       rounds=rounds, steps_per_round=steps) for name, v in found.items()}


def paired_differences(losses: dict) -> dict:
    """Final held-out loss differences between models on the same digits and draws, bootstrap 95% intervals."""
    from diffusion_lessons.stats import bootstrap_interval

    pairs = [("large", "base"), ("base", "small"), ("large", "small"), ("base", "unet")]
    return {f"{a} - {b}": bootstrap_interval(losses[a] - losses[b]).as_dict(5)
            for a, b in pairs if a in losses and b in losses}


def equal_compute(argv_out: Path, steps: int) -> dict:
    """--equal-compute: the three DiTs trained to the same training compute, the small one's for `steps` steps
    (each run with its own cosine schedule over its own steps, so every final point is annealed), held-out loss at
    the end with paired bootstrap intervals of the differences. Writes its own record."""
    from diffusion_lessons.data import load_digits
    from diffusion_lessons.flow import flow_batch_fn, flow_loss_fn
    from diffusion_lessons.loop import unet_denoiser
    from diffusion_lessons.recipes import common
    from diffusion_lessons.recipes.digits_flow import P_UNCOND

    started = time.perf_counter()
    data, held = load_digits("train"), held_out_set()
    per_step = {}
    for name in ("small", "base", "large"):
        model, _ = build(name)
        per_step[name] = step_flops(model, flow_loss_fn(unet_denoiser(model, "class_labels")),
                                    flow_batch_fn(data[0], BATCH_SIZE, data[1], P_UNCOND))
    budget = per_step["small"] * steps
    record = dict(benchmark="dit_scaling --equal-compute",
                  command=f"OMP_NUM_THREADS=1 python benchmarks/dit_scaling.py --equal-compute --steps {steps}",
                  date=datetime.date.today().isoformat(), hardware=common.hardware(torch.device("cpu")),
                  threads=torch.get_num_threads(), budget_flops=budget,
                  training="as the main record (same loop, batches, noise, learning rates), each run to the budget: "
                           "steps = round(budget / FLOPs per step), cosine to 0 over its own steps",
                  held_out="as the main record (n = 300 held-out digits, 4 fixed draws each)", models={})
    losses = {}
    for name in ("small", "base", "large"):
        n_steps = max(1, round(budget / per_step[name]))
        rec, _, losses[name] = train_one(name, n_steps, held, data, along=False)
        record["models"][name] = dict(steps=n_steps, parameters=rec["parameters"], flops_per_step=per_step[name],
                                      train_flops=per_step[name] * n_steps, held_out_loss=rec["points"][-1]["held_out_loss"])
    record["loss_differences"] = paired_differences(losses)
    record["wall_time_s"] = round(time.perf_counter() - started, 1)
    argv_out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {argv_out}")
    return record


def main(argv: list[str] | None = None) -> dict:
    from diffusion_lessons.data import load_digits
    from diffusion_lessons.evaluation import train_digit_classifier
    from diffusion_lessons.recipes import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per model (default 300)")
    parser.add_argument("--out", type=Path, default=None, help=f"the record (default {OUT}, with --equal-compute "
                                                                f"{EQUAL_OUT})")
    parser.add_argument("--equal-compute", action="store_true",
                        help="instead: the three DiTs trained to the small one's compute at --steps, each annealed")
    args = parser.parse_args(argv)
    if args.equal_compute:
        return equal_compute(args.out or EQUAL_OUT, args.steps)
    args.out = args.out or OUT
    started = time.perf_counter()
    data, held = load_digits("train"), held_out_set()
    record = dict(
        benchmark="dit_scaling", command="OMP_NUM_THREADS=1 python benchmarks/dit_scaling.py"
        + ("" if args.steps == 300 else f" --steps {args.steps}"),
        date=datetime.date.today().isoformat(), hardware=common.hardware(torch.device("cpu")),
        threads=torch.get_num_threads(), cpu_count=os.cpu_count(), load_average_at_start=os.getloadavg(),
        versions=common.versions(), steps=args.steps, batch_size=BATCH_SIZE,
        training="flow matching (flow.flow_batch_fn, flow_loss_fn), training.train_loop: AdamW, cosine to 0 over "
                 "the steps, grad clip 1.0, label dropout 0.15, no EMA; same batches and noise for every model",
        flops="torch.utils.flop_counter.FlopCounterMode over one training step's forward and backward at batch 128, "
              "times steps",
        held_out=f"the {held['n']} held-out digits (data.load_digits('test')), {K} fixed (sigma, noise) draws each, "
                 f"sigma stratified over [0, 1]; mean per-digit flow-matching loss, percentile bootstrap 95% "
                 f"interval over digits (n = {held['n']})",
        quality="100 samples (10 per digit), 20 Euler steps (FlowMatchEulerDiscreteScheduler), guidance 3, final "
                "raw weights; evaluation.measure_digits (fidelity, rough: Wilson; diversity: bootstrap)",
        models={})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    classifier = train_digit_classifier(16)
    trained, losses = {}, {}
    for name in MODELS:
        rec, model, losses[name] = train_one(name, args.steps, held, data)
        rec["quality"] = sample_quality(model, classifier)
        print(f"{name}: {rec['quality']}", flush=True)
        record["models"][name] = rec
        trained[name] = model
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    record["final_loss_differences"] = paired_differences(losses)
    record["steps_per_second"] = steps_per_second(trained, data)
    record["load_average_at_end"] = os.getloadavg()
    record["wall_time_s"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} ({record['wall_time_s']} s)")
    return record


if __name__ == "__main__":
    main()
