"""Training the noise predictor, lesson 03.

The simple loss (Ho et al. 2020, eq. 14): pick a random t, noise a clean image in closed form,
ask the network for the noise, and score it with the mean squared error:

    L = E_{x0, t, eps} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, label) ||^2

The label is dropped (replaced by NULL_LABEL) with probability p_uncond, so one network also
learns the unconditional prediction that guidance needs (lesson 05). All randomness (batches, t,
eps, dropped labels) is drawn from one CPU generator, so a seed gives the same run on any device.

train_loop is the one loop every trained model goes through: fit() for the digits (and the live runs in
lesson 03), and the VAE and text-to-image recipes. Its parts come from diffusers (the EMA of the weights,
training_utils.EMAModel; the cosine learning rate, optimization.get_cosine_schedule_with_warmup) and it runs on
accelerate: one process or many (accelerate launch), gradient accumulation, bf16 on a GPU, checkpoints with
save_state and resume. A step draws its whole global batch and randomness from the one CPU generator on every
process, so 1 or N processes give the same weights (docs/training.md).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import shutil
import signal
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import _checks
from .data import NULL_LABEL
from .device import pick_device
from .guidance import drop_labels
from .models import predict_eps
from .parameterisation import PREDICTION_TYPES, check_prediction_type  # noqa: F401
from .schedules import NoiseSchedule, make_schedule




def loss_target(schedule: NoiseSchedule, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                prediction_type: str = "epsilon") -> torch.Tensor:
    """What the network is trained to output: eps, v = sqrt(abar) eps - sqrt(1 - abar) x0
    (Salimans and Ho 2022) or x0 itself ('sample'), as in diffusers' training examples."""
    check_prediction_type(prediction_type)
    _checks.tensor(x0, "x0", floating=True)
    if not isinstance(eps, torch.Tensor) or eps.shape != x0.shape:
        raise ValueError(f"eps must be a tensor with the shape of x0 {tuple(x0.shape)}, got "
                         f"{tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__}")
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    abar = schedule.at(schedule.alphas_cumprod, t, x0)
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def min_snr_weights(schedule: NoiseSchedule, t: torch.Tensor, gamma: float | None,
                    prediction_type: str = "epsilon") -> torch.Tensor | None:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as diffusers' train_text_to_image.py computes them
    from training_utils.compute_snr: min(SNR, gamma) / SNR for eps, min(SNR, gamma) / (SNR + 1) for v.
    None (no weighting) when gamma is None."""
    if gamma is None:
        return None
    _checks.number(gamma, "gamma (snr_gamma)", above=0)
    snr = schedule.snr[t.cpu()].float()
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped  # x0 prediction: the x0 loss is SNR times the eps loss


def draw_noise(schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor | None = None, p_uncond: float = 0.0,
               generator: torch.Generator | None = None, t: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The randomness of one diffusion_loss batch, in this order: t ~ U{0..T-1} (unless given), eps ~ N(0, I)
    shaped like x0 (drawn on the CPU generator, then moved to x0's device), labels after dropout (NULL_LABEL
    for all when labels is None). Returns dict(x0, t, eps, labels) for noise_loss; row i is sample i."""
    _checks.tensor(x0, "x0", floating=True)
    _checks.generator(generator)
    batch, device = x0.shape[0], x0.device
    if labels is not None:
        labels = _check_labels(labels, batch)
    if t is not None:
        t = schedule.check_t(t)
        if t.numel() != batch:
            raise ValueError(f"t must hold one timestep per sample ({batch}), got {t.numel()}")
    if t is None:
        t = torch.randint(0, schedule.num_steps, (batch,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)
    if labels is None:
        labels = torch.full((batch,), NULL_LABEL, dtype=torch.long)
    labels = drop_labels(labels.cpu(), p_uncond, generator)   # label dropout, drawn on the CPU generator
    return dict(x0=x0, t=t, eps=eps, labels=labels)


def _check_labels(labels, batch: int) -> torch.Tensor:
    """Class labels 0..NULL_LABEL, one per sample, as a CPU int64 tensor (a label the model has no embedding for
    is refused here, not as an IndexError inside the network)."""
    labels = _checks.labels(_checks.tensor(labels, "labels", ndim=1), "labels", NULL_LABEL + 1).cpu()
    if labels.shape[0] != batch:
        raise ValueError(f"labels must hold one label per image ({batch}), got {labels.shape[0]}")
    return labels


def noise_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
               labels: torch.Tensor, prediction_type: str = "epsilon", snr_gamma: float | None = None) -> torch.Tensor:
    """L_simple for drawn noise: x_t by add_noise (closed form q(x_t | x0)), MSE of the network's output against
    loss_target, optionally weighted per sample by min_snr_weights. Deterministic: all randomness is in t, eps
    and labels, so a batch can be split across processes and micro-batches (train_loop)."""
    device = x0.device
    x_t = schedule.add_noise(x0, eps.to(device), t)
    out = predict_eps(model, x_t, t.to(device), labels.to(device))  # the raw network output
    target = loss_target(schedule, x0, eps.to(device), t, prediction_type)
    weights = min_snr_weights(schedule, t, snr_gamma, prediction_type)
    if weights is None:
        return F.mse_loss(out, target)
    per_sample = F.mse_loss(out, target, reduction="none").mean(dim=tuple(range(1, x0.ndim)))
    return (per_sample * weights.to(device, per_sample.dtype)).mean()


def diffusion_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor,
                   labels: torch.Tensor | None = None, p_uncond: float = 0.0,
                   generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                   prediction_type: str = "epsilon", snr_gamma: float | None = None) -> torch.Tensor:
    """L_simple on one batch: draw_noise (t ~ U{0..T-1} or the given t, eps ~ N(0, I), label dropout with
    probability p_uncond; labels None = unconditional), then noise_loss (MSE against eps, v or x0 by
    prediction_type, optionally min-SNR weighted)."""
    _checks.tensor(x0, "x0", floating=True, finite=True)
    check_prediction_type(prediction_type)
    drawn = draw_noise(schedule, x0, labels, p_uncond, generator, t)
    return noise_loss(model, schedule, **drawn, prediction_type=prediction_type, snr_gamma=snr_gamma)


class EMA:
    """Exponential moving average of the weights, kept by diffusers' EMAModel (default settings):
    theta_ema <- d theta_ema + (1 - d) theta with d = min(max_decay, (1 + n) / (10 + n)) at the n-th
    update counted from 0 (d = 0 at n = 0: the first update copies the weights). `ema.model` is the
    averaged copy of the network; sample from it."""

    def __init__(self, model: torch.nn.Module, max_decay: float = 0.999):
        from diffusers.training_utils import EMAModel

        _checks.module(model)
        if isinstance(max_decay, bool) or not isinstance(max_decay, (int, float)) or not 0.0 <= max_decay < 1.0:
            raise ValueError(f"max_decay must lie in [0, 1), got {max_decay!r}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.averager = EMAModel(model.parameters(), decay=max_decay, foreach=True)
        self.max_decay = max_decay

    @property
    def num_updates(self) -> int:
        return self.averager.optimization_step

    def decay(self) -> float:
        """The decay d that the next update() uses (EMAModel.get_decay)."""
        return self.averager.get_decay(self.num_updates + 1)

    def to(self, device: torch.device | str) -> "EMA":
        self.model.to(device)
        self.averager.to(device=device)
        return self

    def state_dict(self) -> dict:
        """What a checkpoint keeps: EMAModel's state (shadow weights, update count) and the copied buffers."""
        return dict(averager=self.averager.state_dict(), buffers=[b.detach().clone() for b in self.model.buffers()])

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint's state onto this EMA's device and copy the average into `self.model`."""
        self.averager.load_state_dict(state["averager"])
        device = next(self.model.parameters()).device
        self.averager.to(device=device)
        self.averager.copy_to(self.model.parameters())
        for b_ema, b in zip(self.model.buffers(), state["buffers"]):
            b_ema.copy_(b)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One EMAModel.step with the trained model's weights; copy the average into `self.model`."""
        self.averager.step(model.parameters())
        self.averager.copy_to(self.model.parameters())
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def cosine_lr(optimizer: torch.optim.Optimizer, steps: int, warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' get_cosine_schedule_with_warmup: the LR rises linearly from 0 over `warmup` steps, then
    falls from its start value to 0 on a half cosine by step `steps`."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    steps = _checks.integer(steps, "steps", 1)
    warmup = _checks.integer(warmup, "warmup", 0)   # a warmup longer than the run is allowed (tiny test runs)
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=steps)


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   lr_scheduler=None, ema: EMA | None = None, max_grad_norm: float | None = 1.0) -> None:
    """Backward, clip the gradient norm, step the optimizer, then the LR schedule and the EMA."""
    _checks.module(model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
        raise ValueError(f"loss must be a one-number tensor that requires grad (the output of diffusion_loss), "
                         f"got {loss if not isinstance(loss, torch.Tensor) else f'a tensor of shape {tuple(loss.shape)}'}")
    if max_grad_norm is not None:
        _checks.number(max_grad_norm, "max_grad_norm", above=0)
    if ema is not None and not isinstance(ema, EMA):
        raise ValueError(f"ema must be an EMA or None, got {type(ema).__name__}")
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if lr_scheduler is not None:
        lr_scheduler.step()
    if ema is not None:
        ema.update(model)


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: NoiseSchedule,
                  x0: torch.Tensor, labels: torch.Tensor | None = None, p_uncond: float = 0.0,
                  generator: torch.Generator | None = None, ema: EMA | None = None,
                  lr_scheduler=None, max_grad_norm: float | None = 1.0, prediction_type: str = "epsilon",
                  snr_gamma: float | None = None) -> torch.Tensor:
    """One optimisation step of diffusion_loss on a batch (what train_loop does each step, for the digits
    model). Returns the batch loss as a detached tensor (no host sync)."""
    optimizer.zero_grad(set_to_none=True)
    loss = diffusion_loss(model, schedule, x0, labels, p_uncond, generator, prediction_type=prediction_type,
                          snr_gamma=snr_gamma)
    optimizer_step(model, optimizer, loss, lr_scheduler, ema, max_grad_norm)
    return loss.detach()


# ---- the one loop, on Accelerate --------------------------------------------------------------------------------
# A step draws the whole global batch, with all its randomness, from the one CPU generator on every process; each
# process takes its rows and splits them into micro-batches; DDP averages the gradients. So a run gives the same
# weights on 1..N processes (up to float rounding) and a seed gives the same run on any device.

LAUNCH_ENV = ("LOCAL_RANK", "WORLD_SIZE")  # set by accelerate launch --multi_gpu / torchrun in every process
MIXED_PRECISION = ("no", "bf16")


def launched_distributed() -> bool:
    """True in a process started by a multi-process launcher (accelerate launch --multi_gpu, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) >= 0


def training_device(device: torch.device | str | None = None) -> torch.device:
    """The device a training run uses: this process's device under a multi-process launch (its GPU, or the CPU
    where there is none or ACCELERATE_USE_CPU is set; accelerate's PartialState), else `device` or pick_device()."""
    device = _checks.optional_device(device)
    if not launched_distributed():
        return device if device is not None else pick_device()
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    launched = PartialState(cpu=cpu).device
    if device is not None and torch.device(device).type != launched.type:
        raise ValueError(f"device={device!r}, but this launched process runs on {launched}")
    return launched


def make_accelerator(device: torch.device | str | None = None, mixed_precision: str | None = None,
                     gradient_accumulation_steps: int = 1):
    """The accelerate.Accelerator that train_loop runs under, for `device` (default training_device()).
    mixed_precision: 'no' or 'bf16' (a CUDA GPU only); None reads accelerate launch's --mixed_precision, else 'no'.
    One process: a fresh Accelerator each call (accelerate's state is process-wide; a notebook may change device).
    The loop places tensors itself (device_placement=False), so the Accelerator never moves the model."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    device = training_device(device)
    mixed_precision = mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
    if mixed_precision == "bf16" and device.type != "cuda":
        raise ValueError(f"mixed_precision='bf16' needs a CUDA GPU; this run trains on {device}")
    if isinstance(gradient_accumulation_steps, bool) or not isinstance(gradient_accumulation_steps, int) \
            or gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be an int >= 1, got {gradient_accumulation_steps!r}")
    if not launched_distributed():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision, device_placement=False,
                       gradient_accumulation_steps=gradient_accumulation_steps)


@dataclass
class Checkpointing:
    """Where and when train_loop saves its whole state with accelerate's save_state, and whether it resumes."""
    folder: Path                 # OUT/checkpoints: one step-N/ folder per checkpoint
    every: int | None = None     # save after every this-many steps (None: only when a SIGINT/SIGTERM stops the run)
    resume: bool = False         # continue from the newest step-N/ in folder
    keep: int = 2                # how many of the newest checkpoints stay on disk
    config: dict = field(default_factory=dict)  # settings that must match on resume (the recipe's options)

    def __post_init__(self):
        if not isinstance(self.folder, (str, os.PathLike)):
            raise ValueError(f"folder must be a path (OUT/checkpoints), got {type(self.folder).__name__}")
        if self.every is not None:
            _checks.integer(self.every, "every", 1)
        _checks.flag(self.resume, "resume")
        _checks.integer(self.keep, "keep", 1)
        if not isinstance(self.config, dict):
            raise ValueError(f"config must be a dict of settings, got {type(self.config).__name__}")


class TrainingInterrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM stopped train_loop after a whole step; its state is saved in `checkpoint`."""

    def __init__(self, step: int, steps: int, checkpoint: Path, main_process: bool = True):
        super().__init__(f"stopped after step {step} of {steps}; checkpoint in {checkpoint}")
        self.step, self.steps, self.checkpoint, self.main_process = step, steps, checkpoint, main_process


class _LossModule(torch.nn.Module):
    """The trained model with loss_fn as its forward: what DDP wraps, so that the gradients of every parameter
    loss_fn uses (through any of the model's methods) are averaged across processes."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[Any], torch.Tensor]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(batch)


class _LoopState:
    """The loop's own state in a checkpoint: steps done, the loss history and the CPU generator."""

    def __init__(self, generator: torch.Generator):
        self.generator, self.step, self.losses = generator, 0, []

    def state_dict(self) -> dict:
        return dict(step=self.step, losses=list(self.losses), generator=self.generator.get_state())

    def load_state_dict(self, state: dict) -> None:
        self.step, self.losses = state["step"], list(state["losses"])
        self.generator.set_state(state["generator"])


def _rows(batch: Any, start: int, stop: int, device: torch.device) -> Any:
    """Rows start:stop of every tensor in batch (a tensor, or tuples, lists and dicts of them), on device."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop].to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_rows(b, start, stop, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _rows(v, start, stop, device) for k, v in batch.items()}
    return batch


def _batch_size(batch: Any) -> int:
    """The number of rows every tensor in batch has (an error if they disagree or there is none)."""
    sizes = set()

    def visit(b):
        if isinstance(b, torch.Tensor):
            sizes.add(b.shape[0] if b.ndim else None)
        elif isinstance(b, (tuple, list)):
            [visit(v) for v in b]
        elif isinstance(b, dict):
            [visit(v) for v in b.values()]

    visit(batch)
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"batch_fn must return tensors that all have one batch dimension first, got sizes {sizes}")
    return sizes.pop()


def _accumulate_step(accelerator, wrapped, batch: Any, device: torch.device) -> torch.Tensor:
    """Forward and backward this process's share of the global batch, one micro-batch at a time (gradients
    synchronised on the last). Returns this process's mean loss."""
    size, parts = _batch_size(batch), accelerator.num_processes * accelerator.gradient_accumulation_steps
    if size % parts:
        raise ValueError(f"the global batch ({size}) must split evenly into {accelerator.num_processes} processes x "
                         f"{accelerator.gradient_accumulation_steps} accumulation steps")
    micro = size // parts
    first = accelerator.process_index * size // accelerator.num_processes
    losses = []
    for k in range(accelerator.gradient_accumulation_steps):
        with accelerator.accumulate(wrapped):
            loss = wrapped(_rows(batch, first + k * micro, first + (k + 1) * micro, device))
            accelerator.backward(loss)                  # divided by the accumulation steps when there are several
        losses.append(loss.detach())
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


def train_loop(model: torch.nn.Module, loss_fn: Callable[[Any], torch.Tensor],
               batch_fn: Callable[[torch.Generator], Any], *, steps: int, lr: float, generator: torch.Generator,
               weight_decay: float = 0.01, warmup: int = 0, max_grad_norm: float | None = 1.0,
               ema: EMA | None = None, progress: bool = True, log_every: int = 25, desc: str = "training",
               accelerator=None, checkpointing: Checkpointing | None = None, betas: tuple[float, float] = (0.9, 0.999),
               callback: Callable[[int], None] | None = None) -> list[float]:
    """The book's one training loop (fit() and every recipe run it), on accelerate. Each step: batch =
    batch_fn(generator), the whole global batch with all its randomness (tensors with the batch dimension first);
    this process's rows, split into micro-batches, go through loss_fn(rows) (deterministic) and backward; then
    AdamW (weight_decay), gradient clipping, cosine_lr (`warmup` steps) and the EMA. `generator` is a CPU
    torch.Generator, so a seed gives the same run on any device and number of processes. The model stays where
    it is (make_accelerator says where a launched process trains). Returns every step's loss (mean over
    processes). checkpointing: save_state every N steps and on SIGINT/SIGTERM; resume from the newest.
    betas: AdamW's (the GAN of lesson 17 uses DCGAN's (0.5, 0.999)); callback(step): called on every process
    after each step's update (and the EMA's), e.g. to watch samples over training; it must not draw from
    `generator`."""
    _check_loop_args(model, steps, lr, generator, checkpointing)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"betas must be two numbers in [0, 1) (AdamW's), got {betas!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable(step) or None, got {type(callback).__name__}")
    accelerator = accelerator or make_accelerator(_device_of(model))
    device = _device_of(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay, betas=tuple(betas))
    lr_scheduler = cosine_lr(optimizer, steps, warmup)   # stepped here once per step, whatever the processes
    wrapped, optimizer = accelerator.prepare(_LossModule(model, loss_fn), optimizer)
    state = _LoopState(generator)
    for obj in (state, lr_scheduler, ema):
        if obj is not None:
            accelerator.register_for_checkpointing(obj)
    config = _loop_config(accelerator, steps, lr, weight_decay, warmup, max_grad_norm, ema, checkpointing)
    if checkpointing is not None and checkpointing.resume:
        _resume(accelerator, checkpointing, config, ema)
    _run_steps(accelerator, model, wrapped, optimizer, lr_scheduler, ema, batch_fn, state, device,
               steps=steps, max_grad_norm=max_grad_norm, progress=progress, log_every=log_every, desc=desc,
               checkpointing=checkpointing, config=config, callback=callback)
    model.eval()
    accelerator.wait_for_everyone()
    return state.losses


def _run_steps(accelerator, model, wrapped, optimizer, lr_scheduler, ema, batch_fn, state: _LoopState,
               device: torch.device, *, steps: int, max_grad_norm, progress: bool, log_every: int, desc: str,
               checkpointing: Checkpointing | None, config: dict, callback=None) -> None:
    """The steps from state.step to `steps`; the loss of each is kept (one host sync every log_every steps)."""
    model.train()
    bar = tqdm(total=steps, initial=state.step, desc=desc, disable=not progress or not accelerator.is_main_process)
    pending: list[torch.Tensor] = []
    with _stop_signals(checkpointing is not None) as stop:
        while state.step < steps:
            pending.append(_accumulate_step(accelerator, wrapped, batch_fn(state.generator), device))
            if max_grad_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            state.step += 1
            if callback is not None:
                callback(state.step)
            bar.update(1)
            stopping = checkpointing is not None and _agreed(accelerator, stop["signal"] is not None, device)
            due = checkpointing is not None and checkpointing.every and state.step % checkpointing.every == 0
            if state.step % log_every == 0 or state.step == steps or due or stopping:
                new = _mean_over_processes(accelerator, pending)
                if not all(math.isfinite(v) for v in new) and all(math.isfinite(v) for v in state.losses):
                    warnings.warn(f"the training loss is not finite ({new[-1]}) by step {state.step}: look for NaN or "
                                  f"inf in the data and try a smaller lr", RuntimeWarning, stacklevel=3)
                state.losses += new
                pending = []
                bar.set_postfix(loss=f"{sum(state.losses[-log_every:]) / len(state.losses[-log_every:]):.4f}")
            if due or stopping:
                saved = save_checkpoint(accelerator, checkpointing, state.step, config)
            if stopping:
                bar.close()
                raise TrainingInterrupted(state.step, steps, saved, accelerator.is_main_process)
    bar.close()


def _mean_over_processes(accelerator, losses: list[torch.Tensor]) -> list[float]:
    """The step losses averaged over processes (the global batch's loss), as floats."""
    if not losses:
        return []
    stacked = torch.stack(losses)
    if accelerator.num_processes > 1:
        stacked = accelerator.reduce(stacked, reduction="mean")
    return stacked.float().cpu().tolist()


def _agreed(accelerator, flag: bool, device: torch.device) -> bool:
    """True on every process when any process has the flag (so all stop after the same step)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=device), reduction="sum").item() > 0)


@contextlib.contextmanager
def _stop_signals(enabled: bool):
    """While training: the first SIGINT or SIGTERM only sets stop['signal'] (the loop then saves a checkpoint and
    stops after the current step); a second one acts as usual. Only in the main thread (where signals arrive)."""
    stop = {"signal": None}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        stop["signal"] = signum
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_loop_args(model, steps, lr, generator, checkpointing) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    _checks.module(model)
    _checks.number(lr, "lr", above=0)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got {generator!r}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no parameter that requires grad: nothing to train")
    if checkpointing is not None and checkpointing.every is not None and (
            isinstance(checkpointing.every, bool) or not isinstance(checkpointing.every, int) or checkpointing.every < 1):
        raise ValueError(f"checkpointing.every must be an int >= 1 or None, got {checkpointing.every!r}")


def _loop_config(accelerator, steps, lr, weight_decay, warmup, max_grad_norm, ema, checkpointing) -> dict:
    """What a checkpoint must agree with to be resumed: the loop's settings, its processes and the recipe's."""
    loop = dict(steps=steps, lr=lr, weight_decay=weight_decay, warmup=warmup, max_grad_norm=max_grad_norm,
                ema_max_decay=None if ema is None else ema.max_decay, processes=accelerator.num_processes,
                gradient_accumulation_steps=accelerator.gradient_accumulation_steps,
                mixed_precision=accelerator.mixed_precision)
    extra = checkpointing.config if checkpointing is not None else {}
    return json.loads(json.dumps({**extra, **loop}, default=str))


# ---- checkpoints: OUT/checkpoints/step-N/ ---------------------------------------------------------------------
CHECKPOINT = re.compile(r"step-(\d+)")
CHECKPOINT_CONFIG = "loop.json"


def checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints step-N/ in folder, oldest first (a half-written one is never named step-N)."""
    if not isinstance(folder, (str, os.PathLike)):
        raise ValueError(f"folder must be a path (OUT/checkpoints), got {type(folder).__name__}")
    found = [(int(m.group(1)), p) for p in Path(folder).glob("step-*")
             if (m := CHECKPOINT.fullmatch(p.name)) and (p / CHECKPOINT_CONFIG).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(accelerator, checkpointing: Checkpointing, step: int, config: dict) -> Path:
    """accelerate's save_state (model, optimizer, RNG states and the registered LR schedule, EMA and loop state)
    into a hidden folder, then renamed to step-N/ on the main process: a crash never leaves half a checkpoint
    under a step-N name. Keeps the newest checkpointing.keep checkpoints."""
    _checks.integer(step, "step", 0)
    if not isinstance(checkpointing, Checkpointing):
        raise ValueError(f"checkpointing must be a Checkpointing, got {type(checkpointing).__name__}")
    if not all(hasattr(accelerator, a) for a in ("save_state", "is_main_process", "wait_for_everyone")):
        raise ValueError(f"accelerator must be an accelerate.Accelerator (make_accelerator), got "
                         f"{type(accelerator).__name__}")
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict of settings, got {type(config).__name__}")
    final = Path(checkpointing.folder) / f"step-{step}"
    partial = final.with_name(f".step-{step}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / CHECKPOINT_CONFIG).write_text(json.dumps(dict(step=step, config=config), indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in checkpoints(checkpointing.folder)[:-max(1, checkpointing.keep)]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def _resume(accelerator, checkpointing: Checkpointing, config: dict, ema: EMA | None) -> None:
    """Load the newest checkpoint (accelerate's load_state), after checking it was made with the same settings."""
    found = checkpoints(checkpointing.folder)
    if not found:
        raise FileNotFoundError(f"resume: no checkpoint in {checkpointing.folder} (a run saves step-N/ there every "
                                f"--checkpoint-every N steps and when it is interrupted); run without --resume")
    saved = json.loads((found[-1] / CHECKPOINT_CONFIG).read_text())["config"]
    differ = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    if differ:
        said = ", ".join(f"{k}: {saved.get(k)!r} there, {config.get(k)!r} now" for k in differ)
        raise ValueError(f"resume: {found[-1]} was made with other settings ({said}); resume with the same ones")
    accelerator.load_state(str(found[-1]))
    if accelerator.is_main_process:
        print(f"resumed from {found[-1]}")


def _check_fit_args(x0: torch.Tensor, labels, steps: int, batch_size: int, lr: float, p_uncond: float) -> None:
    if not isinstance(x0, torch.Tensor) or x0.ndim != 4 or not x0.dtype.is_floating_point:
        raise ValueError(f"x0 must be a float tensor (N, C, H, W), got {getattr(x0, 'shape', type(x0))}")
    if labels is not None:
        _check_labels(labels, x0.shape[0])
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    _checks.number(lr, "lr", above=0)
    _checks.number(p_uncond, "p_uncond", 0, 1)
    _checks.tensor(x0, "x0", finite=True)   # one NaN would make every loss NaN


def fit(model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor | None = None, *, steps: int = 500,
        batch_size: int = 128, lr: float = 2e-3, schedule: NoiseSchedule | None = None, p_uncond: float = 0.15,
        ema: EMA | None = None, seed: int = 0, device: torch.device | str | None = None,
        progress: bool = True, log_every: int = 25, prediction_type: str = "epsilon",
        snr_gamma: float | None = None, accelerator=None, checkpointing: Checkpointing | None = None) -> list[float]:
    """Train `model` on images x0 (N, C, H, W) with diffusion_loss for `steps` random batches of `batch_size`
    (the global batch) in train_loop (AdamW, cosine-decayed LR, EMA if given), on training_device(device); the bar
    shows the recent mean loss. Returns the loss of every step. schedule: default make_schedule('cosine'); ema: an
    EMA(model) (it moves too); accelerator: make_accelerator()'s (default: a plain one for the device)."""
    _checks.module(model)
    _check_fit_args(x0, labels, steps, batch_size, lr, p_uncond)
    check_prediction_type(prediction_type)
    seed = _checks.seed(seed)
    if schedule is not None and not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule (make_schedule) or None, got {type(schedule).__name__}")
    if ema is not None and not isinstance(ema, EMA):
        raise ValueError(f"ema must be an EMA or None, got {type(ema).__name__}")
    schedule = schedule or make_schedule("cosine")
    device = training_device(device)
    model.to(device)
    if ema is not None:
        ema.to(device)
    data = x0.to(device)
    labels = labels.long().cpu() if labels is not None else None   # dropout is drawn on the CPU

    def batch_fn(generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The global batch and all its randomness: rows, then t, eps and label dropout (draw_noise)."""
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        return draw_noise(schedule, data[idx.to(device)], labels[idx] if labels is not None else None, p_uncond,
                          generator)

    def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return noise_loss(model, schedule, **batch, prediction_type=prediction_type, snr_gamma=snr_gamma)

    for trained in (model, ema.model if ema is not None else None):   # sampling checks the schedule against it
        _checks.mark_trained_timesteps(trained, schedule.num_steps)
    return train_loop(model, loss_fn, batch_fn, steps=steps, lr=lr, generator=torch.Generator().manual_seed(seed),
                      ema=ema, progress=progress, log_every=log_every, accelerator=accelerator,
                      checkpointing=checkpointing)


@torch.no_grad()
def loss_by_timestep(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor,
                     labels: torch.Tensor | None = None, timesteps=None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss at fixed timesteps (default 20 from 0 to T-1), averaged over x0: which noise levels are hard.
    Returns (t, loss) as CPU tensors; runs on the model's device."""
    _checks.module(model)
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule (make_schedule), got {type(schedule).__name__}")
    device = next(model.parameters()).device
    if timesteps is None:
        timesteps = torch.linspace(0, schedule.num_steps - 1, 20).round().long()
    timesteps = schedule.check_t(timesteps, "timesteps")
    x0 = x0.to(device)
    losses = []
    for t in timesteps.tolist():
        t_batch = torch.full((x0.shape[0],), t, dtype=torch.long)
        losses.append(diffusion_loss(model, schedule, x0, labels, 0.0, generator, t=t_batch))
    return timesteps, torch.stack(losses).float().cpu()
