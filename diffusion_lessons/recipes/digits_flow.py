"""Recipe of the shipped flow-matching digits model (lesson 08): python -m diffusion_lessons.train digits-flow.

The same network, data and loop as the digits recipe (the 1.06 M-parameter class-conditional UNet2DModel of
models.build_digits_unet on sklearn's digits at 16x16, labels 0-9 and the null label 10, label dropout 0.15,
batch 128, AdamW 2e-3 decayed to 0 on a cosine, EMA of the weights up to 0.999, 2,500 steps), trained by flow
matching instead (flow.py; Lipman et al. 2023, Liu et al. 2023): x_sigma = (1 - sigma) x0 + sigma noise with
sigma drawn uniformly from [0, 1] (--sigma-sampler logit_normal: SD3's sigmoid(N(0, 1))), the network told the
timestep 1000 sigma and trained to output noise - x0. Writes, under --out (default ./runs/digits-flow-<timestamp>;
the shipped folder diffusion_lessons/pretrained/digits-flow/ only with --force): unet/ (the EMA weights,
safetensors), scheduler/ (FlowMatchEulerDiscreteScheduler, shift 1.0), recipe.json (the record of
recipes.common, with fidelity, roughness and diversity per sampling setting, each with n and a 95% interval;
--skip-eval leaves them out) and manifest.json, all at once (recipes.common.publish). It samples with plain
diffusers: flow.sample_with_flow_scheduler (the scheduler's own timesteps, guidance over label 10).
--evaluate-only re-measures the model saved in --out. Runs unchanged under accelerate launch.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..data import DIGITS_SIZE, NUM_DIGIT_CLASSES, load_digits
from ..device import seed_everything
from ..evaluation import measure_digits, train_digit_classifier
from ..flow import flow_batch_fn, flow_loss_fn, sample_with_flow_scheduler
from ..loop import unet_denoiser
from ..models import DIGITS_UNET_CONFIG, build_digits_unet, count_parameters
from ..sigmas import NUM_TRAIN_TIMESTEPS, SIGMA_SAMPLERS
from ..training import EMA, TrainingInterrupted, train_loop, training_device
from . import common
from .digits import data_record

NAME = "digits-flow"
SEED = 0
STEPS = {"quick": 2500, "full": 5000}  # the full (GPU) profile trains twice as long
BATCH_SIZE = 128
LR = 2e-3                  # AdamW, decayed to 0 on a cosine
P_UNCOND = 0.15            # label dropout: how often the null label replaces the digit
EMA_MAX_DECAY = 0.999
SIGMA_SAMPLER = "uniform"  # sigma ~ U(0, 1); 'logit_normal' = SD3's sigmoid(N(0, 1)) was no better on the 2-D toys
                           # of lesson 08 (MMD at 2-50 Euler steps within the spread between training seeds)
SHIFT = 1.0                # the scheduler's timestep shift (sampling) and the training draws' (1.0 = none)
# the sampling settings measured: (Euler steps, guidance scale, spacing); 'diffusers' = the scheduler's own
# timesteps (its last step runs from sigma 1/1000 to 0), 'uniform' = set_timesteps(sigmas=1 - i / n)
EVAL = dict(per_label=20, settings=((50, 1.0, "diffusers"), (50, 3.0, "diffusers"), (16, 3.0, "diffusers"),
                                    (8, 3.0, "diffusers"), (4, 3.0, "diffusers"), (2, 3.0, "diffusers"),
                                    (1, 3.0, "diffusers"), (2, 3.0, "uniform"), (4, 3.0, "uniform")))
SETTINGS = {profile: dict(steps=steps) for profile, steps in STEPS.items()}  # --steps overrides


@dataclass(frozen=True)
class Network:
    """What a flow-matching digits recipe trains: the recipe's name and docstring, the folder and diffusers
    class of its network, a builder from a seed, the record's description of it, and its step counts."""
    name: str
    doc: str
    component: str                              # the network's folder: 'unet' or 'transformer'
    model_class: str                            # its diffusers class, to load it back
    build: Callable[[int], torch.nn.Module]     # seed -> a fresh network
    describe: Callable[[torch.nn.Module], dict]  # the record's description of the network
    settings: dict = field(default_factory=lambda: SETTINGS)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.component, "scheduler", "recipe.json", "measurements.json")

    def load(self, folder) -> torch.nn.Module:
        import diffusers

        cls = getattr(diffusers, self.model_class)
        return cls.from_pretrained(folder / self.component, use_safetensors=True, local_files_only=True)


def describe_unet(model: torch.nn.Module) -> dict:
    return dict(unet=dict(parameters=count_parameters(model), **{k: list(v) if isinstance(v, tuple) else v
                                                                for k, v in DIGITS_UNET_CONFIG.items()}))


UNET = Network(NAME, __doc__, "unet", "UNet2DModel", lambda seed: build_digits_unet(seed=seed), describe_unet)


def parse_args(argv: list[str] | None, net: Network = UNET, extra: Callable | None = None) -> argparse.Namespace:
    """The shared recipe options plus the flow options; extra(parser) adds a recipe's own."""
    parser = common.make_parser(net.name, net.doc, net.settings, seed=SEED)
    parser.add_argument("--sigma-sampler", choices=SIGMA_SAMPLERS, default=SIGMA_SAMPLER,
                        help=f"how training draws sigma (default {SIGMA_SAMPLER})")
    parser.add_argument("--eval-per-label", type=int, default=EVAL["per_label"],
                        help="samples per digit for each measured setting (default 20; fewer for a smoke test)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: re-measure the model saved in --out and update its recipe.json")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=argparse.SUPPRESS)  # tests: tiny runs
    if extra is not None:
        extra(parser)
    args = common.parse(parser, argv, net.name, net.settings, out_needed_by="evaluate_only", outputs=net.outputs)
    if args.eval_per_label < 2:
        parser.error(f"--eval-per-label must be >= 2 (diversity needs pairs), got {args.eval_per_label}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def make_scheduler():
    """The FlowMatchEulerDiscreteScheduler shipped with the model: T = 1000, shift 1.0 (sigma = timestep / 1000)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=SHIFT)


def train(args: argparse.Namespace, device: torch.device, accelerator=None, net: Network = UNET,
          model: torch.nn.Module | None = None, batch_fn: Callable | None = None,
          lr: float = LR, loss_fn: Callable | None = None) -> tuple[torch.nn.Module, list[float], float]:
    """Train from the seed in training.train_loop (flow.flow_batch_fn and flow_loss_fn); return the EMA model,
    the loss history and the training wall time. model: start from these weights (reflow) instead of
    net.build(seed); batch_fn: batches from elsewhere (reflow's pairs) instead of the digits with fresh noise;
    loss_fn: loss_fn(model) -> the loss of a batch (reflow's guided loss) instead of flow_loss_fn."""
    seed_everything(args.seed)
    if batch_fn is None:
        x0, labels = load_digits("train", DIGITS_SIZE)
        batch_fn = flow_batch_fn(x0, args.batch_size, labels, P_UNCOND, sigma_kind=args.sigma_sampler, shift=SHIFT)
    model = (net.build(args.seed) if model is None else model).to(device)
    ema = EMA(model, max_decay=EMA_MAX_DECAY).to(device)
    loss_fn = flow_loss_fn(unet_denoiser(model, "class_labels")) if loss_fn is None else loss_fn(model)
    checkpointing = None
    if accelerator is not None:
        checkpointing = common.checkpointing(args, net.settings, batch_size=args.batch_size,
                                             sigma_sampler=args.sigma_sampler)
    start = time.perf_counter()
    losses = train_loop(model, loss_fn, batch_fn, steps=args.steps, lr=lr,
                        generator=torch.Generator().manual_seed(args.seed), ema=ema, desc=net.name,
                        accelerator=accelerator, checkpointing=checkpointing)
    common.synchronize(device)
    return ema.model.eval(), losses, time.perf_counter() - start


def measure(model: torch.nn.Module, scheduler, seed: int, per_label: int = EVAL["per_label"]) -> dict:
    """Fidelity, rough share and diversity (evaluation.measure_digits, each with n and a 95% interval) of
    per_label samples of every digit for each EVAL setting, sampled with plain diffusers from one seed."""
    classifier = train_digit_classifier(DIGITS_SIZE)
    labels = torch.arange(NUM_DIGIT_CLASSES).repeat_interleave(per_label)
    quality = dict(classifier="RBF SVM on pixels (evaluation.train_digit_classifier)",
                   classifier_held_out_accuracy=round(classifier.held_out_accuracy, 4),
                   sampler="FlowMatchEulerDiscreteScheduler (flow.sample_with_flow_scheduler)",
                   measures="evaluation.measure_digits: fidelity and rough (Wilson), diversity and pixel_diversity "
                            "(bootstrap); value, 95% interval [low, high], n",
                   per_label=per_label, settings={})
    for steps, scale, spacing in EVAL["settings"]:
        sigmas = None if spacing == "diffusers" else [1 - i / steps for i in range(steps)]
        images = sample_with_flow_scheduler(model, scheduler, labels, steps, scale, sigmas=sigmas,
                                            generator=torch.Generator().manual_seed(seed)).cpu()
        found = measure_digits(images, labels, classifier)
        quality["settings"][f"steps_{steps}/guidance_{scale:g}/{spacing}"] = {k: v.as_dict() for k, v in found.items()}
    return quality


def main(argv: list[str] | None = None) -> dict | None:
    """Train (on every process of a launch), then on the main process save (unet/, scheduler/), measure and write
    recipe.json and manifest.json into --out at once; return the record (None on the other processes)."""
    return run(argv, UNET)


def run(argv: list[str] | None, net: Network, lr: float = LR, extra: Callable | None = None,
        select: Callable | None = None) -> dict | None:
    """main() of a flow-matching digits recipe training `net` from scratch at learning rate lr. extra(parser) adds
    the recipe's own options; select(args) -> (the Network to train, what to add to the record's command)."""
    started = time.perf_counter()
    args = parse_args(argv, net, extra)
    suffix = ""
    if select is not None:
        net, suffix = select(args)
    device = training_device()
    if args.evaluate_only:
        return evaluate_only(args, device, net)
    accelerator = start(args, device, net)
    try:
        model, losses, train_s = train(args, device, accelerator, net, lr=lr)
    except TrainingInterrupted as err:
        raise common.interrupted(err, net.name) from None
    return finish(args, accelerator, net, model, losses, train_s, device, started, lr=lr, extra_command=suffix)


def start(args: argparse.Namespace, device: torch.device, net: Network):
    """The run's accelerator (common.accelerator), after saying what runs where."""
    accelerator = common.accelerator(args, device)
    if accelerator.is_main_process:
        print(f"{net.name} recipe: {args.steps} steps, profile {args.profile}, sigma {args.sigma_sampler}, device "
              f"{device}, {accelerator.num_processes} process(es), writing to {args.out}")
    return accelerator


def finish(args: argparse.Namespace, accelerator, net: Network, model: torch.nn.Module, losses: list[float],
           train_s: float, device: torch.device, started: float, **details) -> dict | None:
    """On the main process: save, measure and record into --out at once (common.publish); None elsewhere."""
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as staging:
        return save_and_measure(args, model, losses, train_s, device, staging, started, net, **details)


def save_and_measure(args: argparse.Namespace, model: torch.nn.Module, losses: list[float], train_s: float,
                     device: torch.device, folder, started: float, net: Network = UNET, lr: float = LR,
                     extra_command: str = "", **details) -> dict:
    """Save the network and scheduler/ into folder, measure them (unless --skip-eval) and write recipe.json.
    details: more fields for the record (reflow: its teacher and pairs)."""
    scheduler = make_scheduler()
    model.save_pretrained(folder / net.component, safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    start = time.perf_counter()
    quality = None if args.skip_eval else measure(model, scheduler, args.seed, args.eval_per_label)
    eval_s = None if args.skip_eval else time.perf_counter() - start
    record = common.run_record(
        net.name, args, net.settings, started=started, losses=losses, train_s=train_s, device=device,
        quality=quality, eval_s=eval_s, batch_size=args.batch_size, lr=lr,
        data=data_record(),
        loop=common.loop_settings(ema_max_decay=EMA_MAX_DECAY),
        objective=dict(kind="flow matching (rectified flow)", path="x_sigma = (1 - sigma) x0 + sigma noise",
                       target="noise - x0", timestep=f"{NUM_TRAIN_TIMESTEPS} sigma", sigma_sampler=args.sigma_sampler,
                       shift=SHIFT, loss="MSE"),
        prediction_type="flow (velocity noise - x0)", p_uncond=P_UNCOND, saved_weights="EMA",
        scheduler=dict(kind="FlowMatchEulerDiscreteScheduler", num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=SHIFT),
        **net.describe(model), **details,
        evaluated=None if args.skip_eval else dict(hardware=common.hardware(device), command="(with the training)"),
    )
    extra = "" if args.batch_size == BATCH_SIZE else f" --batch-size {args.batch_size}"
    extra += "" if args.sigma_sampler == SIGMA_SAMPLER else f" --sigma-sampler {args.sigma_sampler}"
    record["command"] += extra + extra_command
    record["recipe"] = record["command"]
    common.write_record(record, folder / "recipe.json")
    return record


def evaluate_only(args: argparse.Namespace, device: torch.device, net: Network = UNET) -> dict:
    """Re-measure the model saved under args.out with its saved scheduler; update its recipe.json."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    def load(folder):
        return net.load(folder), FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler",
                                                                                 local_files_only=True)

    return common.re_measure(args, device, net.name, load, measure)


if __name__ == "__main__":
    main()
