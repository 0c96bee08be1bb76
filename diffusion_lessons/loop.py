"""The one sampling loop, lessons 04, 05 and 07: from noise x_T to an image, one reverse step at a time.

The loop knows nothing about digits, prompts or U-Nets. It calls a **denoiser**, a function

    denoise(x, t, cond) -> prediction

- x: the current states x_t, a float tensor (B, C, H, W) (images or latents);
- t: the timestep, one for the whole batch, as a 0-d int64 tensor on x's device (as diffusers'
  pipelines pass scheduler.timesteps[i] to the U-Net);
- cond: what the network is conditioned on, batched along dim 0 like x: class labels (B,) for the
  digits, text embeddings (B, L, D) for text to image, or None for an unconditional network;
- prediction: the network's raw output, shaped like x, in its prediction type ('epsilon', 'v_prediction'
  or 'sample', see parameterisation); the loop converts it to x0 and eps before each step.

unet_denoiser(model) makes one from a diffusers UNet2DModel or the book's TinyUNet (cond = class labels)
or a UNet2DConditionModel (cond = text embeddings); guidance.guided_denoiser wraps a denoiser into the
classifier-free-guided one, so guidance is not the loop's business. The loop yields a SampleState per
timestep (x_t and the x0 predicted there) and a last one holding the finished sample (t = -1).

A diffusers scheduler can stand in for the schedule (as_schedule reads its betas); its config then
supplies the defaults: prediction_type, timestep_spacing, steps_offset and, for DDIM, where the last
step ends (set_alpha_to_one). Clipping and thresholding are never applied (clip_sample=False).

Timesteps are spaced like diffusers' timestep_spacing. The digits' default is 'leading' (diffusers'
DDIMScheduler default): 50 of 1000 steps visit 980, 960, ..., 0. 'trailing' and 'linspace' start at
t = 999, where the cosine schedule's capped last beta leaves abar = 2.4e-9: an eps-predicting network's
x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) then divides its error by 4.9e-5, and one DDIM step
multiplies it by about 3,000. (Lin et al. 2024 fix this with v-prediction and a zero-terminal-SNR
schedule; a v-predicting network's x0 = sqrt(abar) x_t - sqrt(1 - abar) v divides by nothing.)
Each step goes from one visited timestep to the next (t_prev), as diffusers' DDPMScheduler does;
DDIMScheduler steps to t - T // steps, the same timestep whenever steps divides T.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .parameterisation import PREDICTION_TYPES, check_prediction_type, x0_and_eps
from .samplers import SAMPLERS, check_eta, ddim_update, ddpm_update
from .schedules import NoiseSchedule

SPACINGS = ("leading", "trailing", "linspace")

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]  # denoise(x, t, cond) -> prediction

__all__ = ["SPACINGS", "Denoiser", "SampleState", "unet_denoiser", "as_schedule", "prediction_type_of",
           "sampling_timesteps", "final_alpha_cumprod", "denoising_loop"]


@dataclass
class SampleState:
    """One state of the sample loop: x_t at timestep t and the model's x0 prediction there.
    The last state has t = -1 and holds the finished image (x_t is x0)."""

    i: int
    t: int
    x_t: torch.Tensor
    x0: torch.Tensor


# ---- the denoiser -----------------------------------------------------------------------------

def unet_denoiser(model: torch.nn.Module, cond_argument: str | None = None) -> Denoiser:
    """denoise(x, t, cond) calling model(x, t, **{cond_argument: cond}) and unwrapping .sample.
    cond_argument: 'class_labels' (UNet2DModel, DiTTransformer2DModel, TinyUNet) or 'encoder_hidden_states' (UNet2DConditionModel);
    None picks 'encoder_hidden_states' when model.forward takes it, else 'class_labels'."""
    if not callable(model):
        raise ValueError(f"model must be a callable network (a UNet2DModel, ...), got {type(model).__name__}")
    if cond_argument is None:
        takes_text = "encoder_hidden_states" in inspect.signature(model.forward).parameters
        cond_argument = "encoder_hidden_states" if takes_text else "class_labels"
    if cond_argument not in ("class_labels", "encoder_hidden_states"):
        raise ValueError(f"cond_argument must be 'class_labels' or 'encoder_hidden_states', got {cond_argument!r}")

    def denoise(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.ndim == 0:   # one timestep for the batch: a DiT needs one per sample
            t = torch.as_tensor(t, device=x.device).reshape(1).expand(x.shape[0])
        out = model(x, t, **{cond_argument: cond})
        return out.sample if hasattr(out, "sample") else out

    return denoise


# ---- what a schedule or a diffusers scheduler says ----------------------------------------------

def as_schedule(schedule) -> NoiseSchedule:
    """A NoiseSchedule, or one built from a diffusers scheduler's betas (e.g. load_pretrained's DDIMScheduler)."""
    if isinstance(schedule, NoiseSchedule):
        return schedule
    if hasattr(schedule, "alphas_cumprod") and hasattr(schedule, "betas"):
        betas = schedule.betas.float().cpu()
        abar = schedule.alphas_cumprod.float().cpu()
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"schedule must have at least 2 training timesteps, got a {type(schedule).__name__} "
                             f"with num_train_timesteps={len(betas) if betas.ndim == 1 else betas.shape}")
        kind = f"diffusers:{getattr(schedule.config, 'beta_schedule', '?')}"
        return NoiseSchedule(kind, betas, 1 - betas, abar, abar / (1 - abar))
    raise ValueError(f"schedule must be a NoiseSchedule or a diffusers scheduler, got {type(schedule).__name__}")


def _config(schedule, key: str, default):
    return getattr(getattr(schedule, "config", None), key, default)


def prediction_type_of(schedule) -> str:
    """What the network predicts: a diffusers scheduler's config.prediction_type, 'epsilon' for a NoiseSchedule."""
    as_schedule(schedule)
    found = _config(schedule, "prediction_type", "epsilon")
    if found not in PREDICTION_TYPES:
        raise ValueError(f"schedule: config.prediction_type must be one of {PREDICTION_TYPES}, got {found!r}")
    return found


def sampling_timesteps(schedule, steps: int, spacing: str | None = None) -> list[int]:
    """The `steps` timesteps a sampler visits, from noisy to clean, as diffusers' timestep_spacing.
    T = 1000, steps = 10: trailing [999, 899, ..., 99], leading [900, ..., 0], linspace [999, 888, ..., 0].
    spacing None: the scheduler's config (else 'leading'); 'leading' adds its config.steps_offset."""
    T = as_schedule(schedule).num_steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in [1, {T}] (the schedule's num_steps), got {steps!r}")
    spacing = _config(schedule, "timestep_spacing", "leading") if spacing is None else spacing
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    elif spacing == "leading":
        ts = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.int64) + _config(schedule, "steps_offset", 0)
    else:
        ts = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
    return [int(t) for t in ts]


def final_alpha_cumprod(schedule, sampler: str = "ddim") -> float:
    """alpha_bar after the last step: 1.0 (a clean sample), except for DDIM with a scheduler whose config
    has set_alpha_to_one=False (Stable Diffusion's), which ends at alpha_bar_0, as diffusers' DDIM does."""
    as_schedule(schedule)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "ddim" and _config(schedule, "set_alpha_to_one", True) is False:
        return float(as_schedule(schedule).alphas_cumprod[0])
    return 1.0


# ---- the loop -----------------------------------------------------------------------------------

def _check_timesteps(timesteps, num_steps: int) -> list[int]:
    ts = [int(t) for t in timesteps] if isinstance(timesteps, (list, tuple, torch.Tensor, np.ndarray)) else None
    if not ts or any(not 0 <= t < num_steps for t in ts) or any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be a non-empty, strictly decreasing list of ints in [0, {num_steps}), "
                         f"got {timesteps!r}")
    return ts


def denoising_loop(denoise: Denoiser, schedule, x_T: torch.Tensor, cond: Any = None, *, timesteps,
                   sampler: str = "ddim", eta: float = 0.0, prediction_type: str = "epsilon",
                   final_alpha: float = 1.0, generator: torch.Generator | None = None,
                   progress: bool = True) -> Iterator[SampleState]:
    """The loop of every sampler in the book: predict, convert to (x0, eps), step, repeat; yields every
    SampleState. denoise(x, t, cond) as in the module docstring; timesteps: from sampling_timesteps;
    sampler 'ddim' (eta >= 0) or 'ddpm'; final_alpha: alpha_bar after the last step. Checks at the call."""
    if not callable(denoise):
        raise ValueError(f"denoise must be a callable denoise(x, t, cond) (unet_denoiser), got {type(denoise).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    ns = as_schedule(schedule)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    eta = check_eta(eta)
    if sampler == "ddpm" and eta != 0:
        raise ValueError("eta applies to sampler='ddim' only ('ddpm' is the eta = 1 case)")
    check_prediction_type(prediction_type)
    if not isinstance(x_T, torch.Tensor) or not x_T.dtype.is_floating_point or x_T.ndim < 2:
        raise ValueError(f"x_T must be a floating-point tensor (batch, ...), got "
                         f"{x_T.dtype if isinstance(x_T, torch.Tensor) else type(x_T).__name__}")
    if isinstance(cond, torch.Tensor) and cond.shape[0] != x_T.shape[0]:
        raise ValueError(f"cond must hold one condition per sample ({x_T.shape[0]}), got {cond.shape[0]}")
    if not isinstance(final_alpha, (int, float)) or not 0 < final_alpha <= 1:
        raise ValueError(f"final_alpha must be a number in (0, 1] (alpha_bar after the last step), got {final_alpha!r}")
    timesteps = _check_timesteps(timesteps, ns.num_steps)
    return _run(denoise, ns, x_T, cond, timesteps, sampler, eta, prediction_type, float(final_alpha),
                generator, progress)


@torch.no_grad()
def _run(denoise, schedule, x, cond, timesteps, sampler, eta, prediction_type, final_alpha, generator, progress):
    """The loop itself. No host syncs inside: timesteps and alpha_bar are Python numbers, t goes to the device once."""
    t_device = torch.tensor(timesteps, device=x.device)                       # timesteps on the device, once
    abar = schedule.alphas_cumprod.tolist()
    abar_prevs = [abar[t] for t in timesteps[1:]] + [final_alpha]             # alpha_bar where each step lands
    for i in tqdm(range(len(timesteps)), desc=sampler, disable=not progress, leave=False):
        t = timesteps[i]
        prediction = denoise(x, t_device[i], cond)                            # 1. the network's output
        x0, eps = x0_and_eps(prediction, x, abar[t], prediction_type)          # 2. as x0 and eps
        if sampler == "ddim":                                                  # 3. one reverse step
            x_prev, _ = ddim_update(x, eps, abar[t], abar_prevs[i], eta, generator=generator, x0=x0)
        else:
            x_prev, _ = ddpm_update(x, eps, abar[t], abar_prevs[i], t > 0, generator=generator, x0=x0)
        yield SampleState(i, t, x, x0)
        x = x_prev
    yield SampleState(len(timesteps), -1, x, x)
