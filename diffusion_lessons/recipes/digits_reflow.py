"""Recipe of the shipped reflowed digits model (lesson 08): python -m diffusion_lessons.train digits-reflow.

Rectified flow's second round (Liu et al. 2023, "reflow"): the first flow model (the teacher, by default the
shipped diffusion_lessons/pretrained/digits-flow) turns noises into digits with many Euler steps; a copy of it
is then trained by the same flow-matching loss on those (noise, sample) pairs instead of independent ones.
The pairs' straight lines no longer cross much, so the learned paths straighten and few steps suffice.

Guided reflow: the book samples its digits with classifier-free guidance 3, and guidance bends the paths
again, so the pairs are drawn, and the paths straightened, at the guidance the model is sampled with.
Pairs: --pairs of them conditional (labels 0-9 in turn, drawn at --guidance w, default 3) and 15% more from
the null label 10 (the teacher's unconditional flow), each by --pair-steps Euler steps on the even ladder
sigma = 1 - i / n, noise from the seed. Training: the digits-flow loop (batch 128, AdamW decayed to 0 on a
cosine, EMA up to 0.999, sigma uniform) started from the teacher's weights, on rows of the pairs with their own
noise. The loss of a conditional row is taken on the guided velocity v_null + w (v_label - v_null), the one the
sampler follows at guidance w; a null row's on v_null alone (guided_loss_fn). --guidance 1 is plain reflow
(pairs from the conditional flow, the loss on v_label). Writes unet/,
scheduler/, recipe.json (the teacher's SHA-256, the pairs' settings and time, fidelity, roughness and
diversity per setting with n and 95% intervals) and manifest.json into --out (default
./runs/digits-reflow-<timestamp>; the shipped folder only with --force), all at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import NULL_LABEL, NUM_DIGIT_CLASSES
from ..device import seed_everything
from ..flow import flow_batch_fn, flow_loss_fn, interpolate, sample_with_flow_scheduler, velocity_target
from ..loop import unet_denoiser
from ..sigmas import NUM_TRAIN_TIMESTEPS
from ..pretrained import ROOT
from ..training import TrainingInterrupted, training_device
from . import common, digits_flow

NAME = "digits-reflow"
TEACHER = ROOT / "digits-flow"
SETTINGS = {"quick": dict(steps=1500, pairs=8000, pair_steps=20),
            "full": dict(steps=4000, pairs=40_000, pair_steps=50)}
LR = 5e-4               # a fine-tune of the teacher: a quarter of its learning rate
GUIDANCE = 3.0          # the pairs' guidance and the guidance the loss straightens: the one the book samples at
PAIR_CHUNK = 500
NET = digits_flow.Network(NAME, __doc__, "unet", "UNet2DModel", None, digits_flow.describe_unet, SETTINGS)


def extra(parser) -> None:
    parser.add_argument("--teacher", type=Path, default=TEACHER,
                        help=f"the flow model whose pairs are learned (default: {TEACHER})")
    parser.add_argument("--guidance", type=float, default=GUIDANCE,
                        help=f"classifier-free guidance of the pairs and of the loss (default {GUIDANCE:g}; "
                             f"1: plain reflow)")


def unconditional_count(pairs: int) -> int:
    """How many null-label pairs go with `pairs` conditional ones: the digits recipe's label-dropout share."""
    return round(pairs * digits_flow.P_UNCOND / (1 - digits_flow.P_UNCOND))


@torch.no_grad()
def make_pairs(teacher: torch.nn.Module, scheduler, pairs: int, steps: int, seed: int,
               progress: bool = True, guidance: float = GUIDANCE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noise, sample, label) triples from the teacher: `pairs` conditional ones (labels 0-9 in turn) and
    unconditional_count(pairs) with the null label, each by `steps` even Euler steps (conditional: at `guidance`),
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
        samples.append(torch.cat([_draw(teacher, scheduler, labels[chunk][part], noise[chunk][part], sigmas,
                                        guidance)
                                  for part in (labels[chunk] != NULL_LABEL, labels[chunk] == NULL_LABEL)
                                  if part.any()]).cpu())
    return noise, torch.cat(samples), labels


def _draw(teacher, scheduler, labels, noise, sigmas, guidance) -> torch.Tensor:
    """The teacher's samples for one kind of label: the conditional flow at `guidance`, or, for the null
    label, the unconditional flow (guidance 0 over any digit: v_uncond + 0 (v_cond - v_uncond) = v_uncond)."""
    if (labels == NULL_LABEL).all():
        return sample_with_flow_scheduler(teacher, scheduler, torch.zeros_like(labels), guidance_scale=0.0,
                                          x_T=noise, sigmas=sigmas)
    return sample_with_flow_scheduler(teacher, scheduler, labels, guidance_scale=guidance, x_T=noise,
                                      sigmas=sigmas)


def guided_loss_fn(guidance: float = GUIDANCE):
    """loss_fn(model) for digits_flow.train: the flow-matching loss of each row on the velocity the sampler
    follows. A labelled row: v = v_null + w (v_label - v_null) at x_sigma (both branches in one forward pass);
    a null-label row: v = v_null. Target noise - x0, MSE. At w = 1 this is flow.flow_matching_loss."""
    def make(model):
        denoise = unet_denoiser(model, "class_labels")
        if guidance == 1:
            return flow_loss_fn(denoise)

        def loss_fn(batch: dict) -> torch.Tensor:
            x0, noise, sigma, labels = batch["x0"], batch["noise"], batch["sigma"], batch["labels"]
            x_t = interpolate(x0, noise, sigma)
            t = sigma.to(x0.device, x0.dtype) * NUM_TRAIN_TIMESTEPS
            labelled = (labels != NULL_LABEL).to(x0.device)
            v = denoise(torch.cat([x_t, x_t[labelled]]), torch.cat([t, t[labelled]]),
                        torch.cat([labels, torch.full((int(labelled.sum()),), NULL_LABEL)]).to(x0.device))
            first, v_null = v[:len(x0)], v[len(x0):]
            guided = first.clone()
            guided[labelled] = v_null + guidance * (first[labelled] - v_null)
            return F.mse_loss(guided, velocity_target(x0, noise))

        return loss_fn

    return make


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
                                        args.seed + 1, progress=accelerator.is_main_process,
                                        guidance=args.guidance)
    pair_s = time.perf_counter() - pair_start
    batch_fn = flow_batch_fn(samples, args.batch_size, labels, 0.0, noise=noise, sigma_kind=args.sigma_sampler,
                             shift=digits_flow.SHIFT)
    try:
        model, losses, train_s = digits_flow.train(args, device, accelerator, NET, model=teacher.train(),
                                                   batch_fn=batch_fn, lr=LR,
                                                   loss_fn=guided_loss_fn(args.guidance))
    except TrainingInterrupted as err:
        raise common.interrupted(err, NAME) from None
    pairs = dict(conditional=args.pairs, unconditional=unconditional_count(args.pairs),
                 sampler=f"FlowMatchEulerDiscreteScheduler, {args.pair_steps} even steps (sigma = 1 - i / n)",
                 guidance=args.guidance, noise_seed=args.seed + 1, seconds=round(pair_s, 1))
    teacher_record = dict(path=str(args.teacher), unet_sha256=model_hashes(args.teacher / "unet"))
    return digits_flow.finish(args, accelerator, NET, model, losses, train_s, device, started, lr=LR,
                              extra_command=("" if args.teacher == TEACHER else f" --teacher {args.teacher}")
                              + ("" if args.guidance == GUIDANCE else f" --guidance {args.guidance:g}"),
                              teacher=teacher_record, pairs=pairs, initialised_from="the teacher's weights",
                              loss=("flow matching on v_null + w (v_label - v_null) for labelled rows, v_null for "
                                    f"null rows, w = {args.guidance:g}" if args.guidance != 1
                                    else "flow matching on the labelled (or null) velocity"))


if __name__ == "__main__":
    main()
