"""Noise schedules and the forward (noising) process, lesson 02.

Notation, used across the package (0-based t = 0 .. T-1, as in diffusers):

| name           | symbol        | meaning                                              |
|----------------|---------------|------------------------------------------------------|
| betas          | beta_t        | variance of the noise added by step t                |
| alphas         | alpha_t       | 1 - beta_t                                           |
| alphas_cumprod | alpha_bar_t   | prod_{s<=t} alpha_s: the signal left after step t    |
| snr            | SNR_t         | alpha_bar_t / (1 - alpha_bar_t)                      |
| x0, x_t, eps   | x_0, x_t, eps | clean image, noised image, standard Gaussian noise   |

One step (Ho et al. 2020, eq. 2):  x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps.
Closed form (eq. 4):              x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("linear", "cosine", "scaled_linear")
DIFFUSERS_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2", "scaled_linear": "scaled_linear"}


@dataclass(frozen=True)
class NoiseSchedule:
    """A noise schedule as data: float32 1-D tensors indexed by the timestep t."""

    kind: str
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    snr: torch.Tensor

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    def check_t(self, t: torch.Tensor | int, name: str = "t") -> torch.Tensor:
        """t as a 1-D int64 tensor, or ValueError if it is not an integer in [0, num_steps)."""
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"{name} must hold integer timesteps, got dtype {t.dtype}")
        t = t.reshape(-1).long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(f"{name} must lie in [0, {self.num_steps}), got values from "
                             f"{int(t.min())} to {int(t.max())}")
        return t

    def at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped (B, 1, 1, ...) to broadcast against `like`, on its device and dtype."""
        out = values.to(like.device)[t.to(like.device)].to(like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Closed form q(x_t | x0): sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise.

        Same argument order and numbers as diffusers' DDPMScheduler.add_noise; t holds one
        integer timestep per batch item (or one for all)."""
        _check_image(x0, "x0")
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        t = self.check_t(t)
        if t.numel() not in (1, x0.shape[0]):
            raise ValueError(f"t must hold 1 or {x0.shape[0]} (batch size) timesteps, got {t.numel()}")
        abar = self.at(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def q_step(self, x_prev: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """One Markov step q(x_t | x_{t-1}): sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise."""
        _check_image(x_prev, "x_prev")
        if noise.shape != x_prev.shape:
            raise ValueError(f"noise must have the shape of x_prev {tuple(x_prev.shape)}, got {tuple(noise.shape)}")
        beta = self.betas[int(self.check_t(t)[0])].item()
        return math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * noise

    def noise_chain(self, x0: torch.Tensor, t: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the Markov chain from x0 through steps 0..t one at a time; same law as add_noise(x0, eps, t)."""
        t_end = int(self.check_t(t)[0])
        x = x0
        for step in range(t_end + 1):
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = self.q_step(x, step, noise)
        return x


def _check_image(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor (e.g. float32 in [-1, 1]), got {kind}")


def _cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol and Dhariwal's cosine schedule, exactly as diffusers' squaredcos_cap_v2."""
    f = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float32)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale sqrt(alpha_bar) so the last step has SNR 0."""
    if not isinstance(betas, torch.Tensor) or not betas.dtype.is_floating_point or betas.ndim != 1 \
            or len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(f"betas must be a 1-D floating-point tensor of at least 2 values in (0, 1), got "
                         f"{tuple(betas.shape) if isinstance(betas, torch.Tensor) else type(betas).__name__}")
    abar_sqrt = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar_sqrt = (abar_sqrt - last) * (first / (first - last))
    abar = abar_sqrt**2
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def make_schedule(kind: str, num_steps: int = 1000, zero_terminal_snr: bool = False) -> NoiseSchedule:
    """The schedule `kind` ('linear', 'cosine' or 'scaled_linear') over num_steps steps.

    linear: betas 1e-4 .. 0.02 (DDPM); cosine: s = 0.008, betas capped at 0.999 (Improved DDPM);
    scaled_linear: sqrt-spaced 0.00085 .. 0.012 (Stable Diffusion). zero_terminal_snr rescales
    any of them so that alpha_bar at the last step is exactly 0 (Lin et al. 2024)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}")
    if kind == "linear":
        betas = torch.linspace(1e-4, 0.02, num_steps, dtype=torch.float32)
    elif kind == "scaled_linear":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_steps, dtype=torch.float32) ** 2
    else:
        betas = _cosine_betas(num_steps)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    name = kind + ("+zero_snr" if zero_terminal_snr else "")
    return NoiseSchedule(name, betas, alphas, alphas_cumprod, snr)


def to_diffusers_config(kind: str, num_steps: int = 1000, zero_terminal_snr: bool = False) -> dict:
    """The keyword arguments that make a diffusers scheduler use the same schedule."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}")
    if not isinstance(zero_terminal_snr, bool):
        raise ValueError(f"zero_terminal_snr must be True or False, got {zero_terminal_snr!r}")
    beta_range = {"scaled_linear": (0.00085, 0.012)}.get(kind, (1e-4, 0.02))
    return dict(num_train_timesteps=num_steps, beta_schedule=DIFFUSERS_NAMES[kind],
                beta_start=beta_range[0], beta_end=beta_range[1], rescale_betas_zero_snr=zero_terminal_snr)
