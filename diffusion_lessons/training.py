"""Training the noise predictor, lesson 03.

The simple loss (Ho et al. 2020, eq. 14): pick a random t, noise a clean image in closed form,
ask the network for the noise, and score it with the mean squared error:

    L = E_{x0, t, eps} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, label) ||^2

The label is dropped (replaced by NULL_LABEL) with probability p_uncond, so one network also
learns the unconditional prediction that guidance needs (lesson 05). All randomness (batches, t,
eps, dropped labels) is drawn from one CPU generator, so a seed gives the same run on any device.

train_loop is the one loop every trained model goes through: fit() for the digits (and the live runs in
lesson 03), and the VAE and text-to-image recipes. Its parts come from diffusers: the EMA of the weights
(training_utils.EMAModel) and the cosine learning rate (optimization.get_cosine_schedule_with_warmup).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

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
    if not gamma > 0:
        raise ValueError(f"snr_gamma must be > 0 or None, got {gamma!r}")
    snr = schedule.snr[t.cpu()].float()
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped  # x0 prediction: the x0 loss is SNR times the eps loss


def diffusion_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor,
                   labels: torch.Tensor | None = None, p_uncond: float = 0.0,
                   generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                   prediction_type: str = "epsilon", snr_gamma: float | None = None) -> torch.Tensor:
    """L_simple on one batch: t ~ U{0..T-1} (or the given t), eps ~ N(0, I), x_t by add_noise, MSE of
    the network's output against loss_target (eps by default; v or x0 by prediction_type), optionally
    weighted per sample by min_snr_weights. labels None = unconditional (NULL_LABEL); p_uncond = label
    dropout probability."""
    batch, device = x0.shape[0], x0.device
    if t is None:
        t = torch.randint(0, schedule.num_steps, (batch,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)
    x_t = schedule.add_noise(x0, eps, t)                       # closed form q(x_t | x0)
    if labels is None:
        labels = torch.full((batch,), NULL_LABEL, dtype=torch.long)
    labels = drop_labels(labels.cpu(), p_uncond, generator)   # label dropout, drawn on the CPU generator
    out = predict_eps(model, x_t, t.to(device), labels.to(device))  # the raw network output
    target = loss_target(schedule, x0, eps, t, prediction_type)
    weights = min_snr_weights(schedule, t, snr_gamma, prediction_type)
    if weights is None:
        return F.mse_loss(out, target)
    per_sample = F.mse_loss(out, target, reduction="none").mean(dim=tuple(range(1, x0.ndim)))
    return (per_sample * weights.to(device, per_sample.dtype)).mean()


class EMA:
    """Exponential moving average of the weights, kept by diffusers' EMAModel (default settings):
    theta_ema <- d theta_ema + (1 - d) theta with d = min(max_decay, (1 + n) / (10 + n)) at the n-th
    update counted from 0 (d = 0 at n = 0: the first update copies the weights). `ema.model` is the
    averaged copy of the network; sample from it."""

    def __init__(self, model: torch.nn.Module, max_decay: float = 0.999):
        from diffusers.training_utils import EMAModel

        if not 0.0 <= max_decay < 1.0:
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

    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=steps)


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   lr_scheduler=None, ema: EMA | None = None, max_grad_norm: float | None = 1.0) -> None:
    """Backward, clip the gradient norm, step the optimizer, then the LR schedule and the EMA."""
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


def train_loop(model: torch.nn.Module, loss_fn: Callable[[Any, torch.Generator], torch.Tensor],
               batch_fn: Callable[[torch.Generator], Any], *, steps: int, lr: float, generator: torch.Generator,
               weight_decay: float = 0.01, warmup: int = 0, max_grad_norm: float | None = 1.0,
               ema: EMA | None = None, progress: bool = True, log_every: int = 25,
               desc: str = "training") -> list[float]:
    """The book's one training loop (fit() and every recipe run it). Each step: batch = batch_fn(generator),
    loss = loss_fn(batch, generator), then optimizer_step with AdamW (weight_decay), gradient clipping,
    cosine_lr (diffusers' schedule, `warmup` steps) and the EMA. All randomness comes from `generator`
    (a CPU torch.Generator), so a seed gives the same run on any device. Returns every step's loss."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    lr_scheduler = cosine_lr(optimizer, steps, warmup)
    model.train()
    losses: list[torch.Tensor] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(batch_fn(generator), generator)
        optimizer_step(model, optimizer, loss, lr_scheduler, ema, max_grad_norm)
        losses.append(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:   # one host sync every log_every steps
            bar.set_postfix(loss=f"{torch.stack(losses[-log_every:]).mean().item():.4f}")
    model.eval()
    return torch.stack(losses).float().cpu().tolist()


def _check_fit_args(x0: torch.Tensor, labels, steps: int, batch_size: int, lr: float) -> None:
    if not isinstance(x0, torch.Tensor) or x0.ndim != 4 or not x0.dtype.is_floating_point:
        raise ValueError(f"x0 must be a float tensor (N, C, H, W), got {getattr(x0, 'shape', type(x0))}")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != x0.shape[0]):
        raise ValueError(f"labels must have shape ({x0.shape[0]},), got {tuple(labels.shape)}")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")


def fit(model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor | None = None, *, steps: int = 500,
        batch_size: int = 128, lr: float = 2e-3, schedule: NoiseSchedule | None = None, p_uncond: float = 0.15,
        ema: EMA | None = None, seed: int = 0, device: torch.device | str | None = None,
        progress: bool = True, log_every: int = 25, prediction_type: str = "epsilon",
        snr_gamma: float | None = None) -> list[float]:
    """Train `model` on images x0 (N, C, H, W) with diffusion_loss for `steps` random batches in train_loop
    (AdamW, cosine-decayed LR, EMA if given), on pick_device(); the bar shows the recent mean loss. Returns
    the loss of every step. schedule: default make_schedule('cosine'); ema: an EMA(model) (it moves too)."""
    _check_fit_args(x0, labels, steps, batch_size, lr)
    check_prediction_type(prediction_type)
    schedule = schedule or make_schedule("cosine")
    device = torch.device(device) if device is not None else pick_device()
    model.to(device)
    if ema is not None:
        ema.to(device)
    data = x0.to(device)
    labels = labels.long().cpu() if labels is not None else None   # dropout is drawn on the CPU

    def batch_fn(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        return data[idx.to(device)], (labels[idx] if labels is not None else None)

    def loss_fn(batch, generator: torch.Generator) -> torch.Tensor:
        return diffusion_loss(model, schedule, *batch, p_uncond, generator, prediction_type=prediction_type,
                              snr_gamma=snr_gamma)

    return train_loop(model, loss_fn, batch_fn, steps=steps, lr=lr, generator=torch.Generator().manual_seed(seed),
                      ema=ema, progress=progress, log_every=log_every)


@torch.no_grad()
def loss_by_timestep(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor,
                     labels: torch.Tensor | None = None, timesteps=None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss at fixed timesteps (default 20 from 0 to T-1), averaged over x0: which noise levels are hard.
    Returns (t, loss) as CPU tensors; runs on the model's device."""
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
