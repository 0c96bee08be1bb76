"""Recipe of the shipped reflowed digits model (lesson 08): python -m diffusion_lessons.train digits-reflow.

Rectified flow's second round (Liu et al. 2023, "reflow"): the first flow model (the teacher, by default the
shipped diffusion_lessons/pretrained/digits-flow) turns noises into digits with many Euler steps; a copy of it
is then trained by the same flow-matching loss on those (noise, sample) pairs instead of independent ones.
The pairs' straight lines no longer cross much, so the learned paths straighten and few steps suffice.

Pairs: --pairs of them conditional (labels 0-9 in turn, guidance 1: the teacher's own conditional flow) and
15% more from the null label 10 (the teacher's unconditional flow), so classifier-free guidance still works on
the reflowed model; each drawn by --pair-steps Euler steps on the even ladder sigma = 1 - i / n, noise from the
seed. Training: the digits-flow loop (batch 128, AdamW decayed to 0 on a cosine, EMA up to 0.999, sigma
uniform) started from the teacher's weights, on rows of the pairs with their own noise. Writes unet/,
scheduler/, recipe.json (the teacher's SHA-256, the pairs' settings and time, fidelity, roughness and
diversity per setting with n and 95% intervals) and manifest.json into --out (default
./runs/digits-reflow-<timestamp>; the shipped folder only with --force), all at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import NULL_LABEL, NUM_DIGIT_CLASSES
from ..device import seed_everything
from ..flow import flow_batch_fn, sample_with_flow_scheduler
from ..pretrained import ROOT
from ..training import TrainingInterrupted, training_device
from . import common, digits_flow

NAME = "digits-reflow"
TEACHER = ROOT / "digits-flow"
SETTINGS = {"quick": dict(steps=1500, pairs=8000, pair_steps=20),
            "full": dict(steps=4000, pairs=40_000, pair_steps=50)}
LR = 5e-4               # a fine-tune of the teacher: a quarter of its learning rate
PAIR_GUIDANCE = 1.0     # the teacher's conditional flow, unguided: guidance is applied when sampling
PAIR_CHUNK = 500
NET = digits_flow.Network(NAME, __doc__, "unet", "UNet2DModel", None, digits_flow.describe_unet, SETTINGS)


def extra(parser) -> None:
    parser.add_argument("--teacher", type=Path, default=TEACHER,
                        help=f"the flow model whose pairs are learned (default: {TEACHER})")


def unconditional_count(pairs: int) -> int:
    """How many null-label pairs go with `pairs` conditional ones: the digits recipe's label-dropout share."""
    return round(pairs * digits_flow.P_UNCOND / (1 - digits_flow.P_UNCOND))


@torch.no_grad()
def make_pairs(teacher: torch.nn.Module, scheduler, pairs: int, steps: int, seed: int,
               progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noise, sample, label) triples from the teacher: `pairs` conditional ones (labels 0-9 in turn) and
    unconditional_count(pairs) with the null label, each by `steps` even Euler steps at PAIR_GUIDANCE,
    noise drawn on one CPU generator seeded with `seed`, in chunks of PAIR_CHUNK."""
    labels = torch.cat([torch.arange(pairs) % NUM_DIGIT_CLASSES,
                        torch.full((unconditional_count(pairs),), NULL_LABEL)])
    generator = torch.Generator().manual_seed(seed)
    shape = (teacher.config.in_channels, teacher.config.sample_size, teacher.config.sample_size)
    noise = torch.randn((len(labels), *shape), generator=generator)
    sigmas = [1 - i / steps for i in range(steps)]
    samples = []
    for start in tqdm(range(0, len(labels), PAIR_CHUNK), desc="reflow pairs", disable=not progress):
        chunk = slice(start, start + PAIR_CHUNK)
        samples.append(torch.cat([_draw(teacher, scheduler, labels[chunk][part], noise[chunk][part], sigmas)
                                  for part in (labels[chunk] != NULL_LABEL, labels[chunk] == NULL_LABEL)
                                  if part.any()]).cpu())
    return noise, torch.cat(samples), labels


def _draw(teacher, scheduler, labels, noise, sigmas) -> torch.Tensor:
    """The teacher's samples for one kind of label: the conditional flow at PAIR_GUIDANCE, or, for the null
    label, the unconditional flow (guidance 0 over any digit: v_uncond + 0 (v_cond - v_uncond) = v_uncond)."""
    if (labels == NULL_LABEL).all():
        return sample_with_flow_scheduler(teacher, scheduler, torch.zeros_like(labels), guidance_scale=0.0,
                                          x_T=noise, sigmas=sigmas)
    return sample_with_flow_scheduler(teacher, scheduler, labels, guidance_scale=PAIR_GUIDANCE, x_T=noise,
                                      sigmas=sigmas)


def main(argv: list[str] | None = None) -> dict | None:
    """Pairs from the teacher, then the flow loop on them from the teacher's weights (every process of a launch
    makes the same pairs); the main process saves, measures and records."""
    from ..measure import model_hashes

    started = time.perf_counter()
    args = digits_flow.parse_args(argv, NET, extra)
    device = training_device()
    if args.evaluate_only:
        return digits_flow.evaluate_only(args, device, NET)
    if not (args.teacher / "unet").is_dir():
        raise SystemExit(f"--teacher {args.teacher} holds no unet/: train digits-flow first "
                         f"(python -m diffusion_lessons.train digits-flow)")
    accelerator = digits_flow.start(args, device, NET)
    seed_everything(args.seed)
    teacher = NET.load(args.teacher).to(device).eval()
    pair_start = time.perf_counter()
    noise, samples, labels = make_pairs(teacher, digits_flow.make_scheduler(), args.pairs, args.pair_steps,
                                        args.seed + 1, progress=accelerator.is_main_process)
    pair_s = time.perf_counter() - pair_start
    batch_fn = flow_batch_fn(samples, args.batch_size, labels, 0.0, noise=noise, sigma_kind=args.sigma_sampler,
                             shift=digits_flow.SHIFT)
    try:
        model, losses, train_s = digits_flow.train(args, device, accelerator, NET, model=teacher.train(),
                                                   batch_fn=batch_fn, lr=LR)
    except TrainingInterrupted as err:
        raise common.interrupted(err, NAME) from None
    pairs = dict(conditional=args.pairs, unconditional=unconditional_count(args.pairs),
                 sampler=f"FlowMatchEulerDiscreteScheduler, {args.pair_steps} even steps (sigma = 1 - i / n)",
                 guidance=PAIR_GUIDANCE, noise_seed=args.seed + 1, seconds=round(pair_s, 1))
    teacher_record = dict(path=str(args.teacher), unet_sha256=model_hashes(args.teacher / "unet"))
    return digits_flow.finish(args, accelerator, NET, model, losses, train_s, device, started, lr=LR,
                              extra_command="" if args.teacher == TEACHER else f" --teacher {args.teacher}",
                              teacher=teacher_record, pairs=pairs, initialised_from="the teacher's weights")


if __name__ == "__main__":
    main()
