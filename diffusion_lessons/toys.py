"""The toy 2-D world, lesson 08: point clouds, where every path from noise to data can be drawn.

Data (each call seeded by generator=, points as a float32 tensor (n, 2) of about unit scale):
  two_moons        two interleaved half circles (as scikit-learn's make_moons), centred
  eight_gaussians  eight small Gaussian blobs on a circle of radius 2
  checkerboard     uniform on the dark squares of a 4x4 board over [-2, 2]^2
Model: VelocityMLP, a small MLP v_theta(x, t) told the timestep t = 1000 sigma (the flow convention of flow.py).
Training: train_flow runs the book's one loop (training.train_loop) with flow.flow_batch_fn and flow_loss_fn;
reflow_pairs makes the (noise, sample) pairs of rectified flow's second round (Liu et al. 2023), and
train_flow(..., noise=pairs) trains on the straight lines between them.
Sampling: sample_paths runs flow.flow_loop and keeps every state (the trajectories).
Measures, each with a 95% interval (stats.Estimate):
  mmd              the squared maximum mean discrepancy with a narrow Gaussian kernel (Gretton et al. 2012)
                   between generated and real points: 0 when the distributions agree, sensitive to blur
  energy_distance  2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely and Rizzo 2004): the same idea with the kernel
                   -|x - y|, which weighs the large-scale layout and barely sees a blur
                   (both unbiased, with a percentile bootstrap over both sets for the interval)
  straightness     Liu et al.'s S = integral_0^1 || (x_1 - x_0) - v(x_sigma) ||^2 dsigma per path (0 = straight at
                   constant speed), and path_length_ratio: length of the path / distance between its ends (1 =
                   straight), both from the simulated trajectories; bootstrap over paths (path_estimates).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import _checks
from .flow import flow_batch_fn, flow_loop, flow_loss_fn
from .models import timestep_embedding
from .sigmas import NUM_TRAIN_TIMESTEPS, flow_sigmas
from .stats import Estimate, bootstrap_interval
from .training import train_loop

__all__ = ["TOYS", "two_moons", "eight_gaussians", "checkerboard", "toy_points", "VelocityMLP", "mlp_denoiser",
           "train_flow", "sample_paths", "generate", "reflow_pairs", "energy_distance",
           "energy_distance_estimate", "MMD_BANDWIDTH", "mmd", "mmd_estimate", "straightness", "path_length_ratio",
           "path_estimates"]


def _count(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be an int >= 1, got {n!r}")
    return int(n)


# ---- data --------------------------------------------------------------------------------------------------

def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.06) -> torch.Tensor:
    """n points on two interleaved half circles (scikit-learn's make_moons), centred, Gaussian jitter `noise`."""
    n = _count(n)
    _checks.generator(generator)
    _checks.number(noise, "noise", 0)
    upper = torch.rand((n,), generator=generator) < 0.5
    angle = torch.rand((n,), generator=generator) * math.pi
    x = torch.where(upper, angle.cos(), 1 - angle.cos())
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin())
    points = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.5
    return points + noise * torch.randn((n, 2), generator=generator)


def eight_gaussians(n: int, generator: torch.Generator | None = None, radius: float = 2.0,
                    std: float = 0.15) -> torch.Tensor:
    """n points from eight equal Gaussian blobs (standard deviation std) centred on a circle of `radius`."""
    n = _count(n)
    _checks.generator(generator)
    _checks.number(radius, "radius", 0)
    _checks.number(std, "std", 0)
    angle = torch.randint(0, 8, (n,), generator=generator).float() * (math.pi / 4)
    centres = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + std * torch.randn((n, 2), generator=generator)


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points uniform on the 8 dark squares of a 4x4 board covering [-2, 2]^2 (squares of side 1)."""
    n = _count(n)
    _checks.generator(generator)
    x = torch.rand((n,), generator=generator) * 4 - 2
    column = torch.floor(x)                                      # -2, -1, 0, 1
    row = torch.randint(0, 2, (n,), generator=generator) * 2     # 0 or 2: which of the two dark squares
    y = torch.rand((n,), generator=generator) + row - 2 + torch.remainder(column, 2)
    return torch.stack([x, y], dim=1)


TOYS: dict[str, Callable[..., torch.Tensor]] = {"two_moons": two_moons, "eight_gaussians": eight_gaussians,
                                                "checkerboard": checkerboard}


def toy_points(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points of the toy distribution `name` (one of TOYS)."""
    if name not in TOYS:
        raise ValueError(f"name must be one of {sorted(TOYS)}, got {name!r}")
    return TOYS[name](n, generator)


# ---- the model ---------------------------------------------------------------------------------------------

class VelocityMLP(nn.Module):
    """v_theta(x, t) for 2-D points: the sinusoidal embedding of the timestep t = 1000 sigma (as a U-Net's),
    concatenated with x, through `depth` hidden layers of `width` units with SiLU: 10.7 k parameters as built."""

    def __init__(self, width: int = 64, depth: int = 3, time_dim: int = 32, dim: int = 2):
        _checks.integer(width, "width", 1)
        _checks.integer(depth, "depth", 1)
        if isinstance(time_dim, bool) or not isinstance(time_dim, int) or time_dim < 2 or time_dim % 2:
            raise ValueError(f"time_dim must be an even int >= 2, got {time_dim!r}")
        _checks.integer(dim, "dim", 1)
        super().__init__()
        self.time_dim = time_dim
        layers, size = [], dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.SiLU()]
            size = width
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        return self.net(torch.cat([x, timestep_embedding(t, self.time_dim).to(x.dtype)], dim=1))


def mlp_denoiser(model: nn.Module):
    """The model as a denoiser denoise(x, t, cond) (loop.py's convention; cond is unused)."""
    _checks.module(model)
    return lambda x, t, cond: model(x, t)


# ---- training and sampling ---------------------------------------------------------------------------------

def train_flow(model: nn.Module, x0: torch.Tensor, steps: int = 1000, batch_size: int = 256, lr: float = 1e-2,
               seed: int = 0, noise: torch.Tensor | None = None, progress: bool = True, desc: str = "flow matching",
               **sigma_options) -> list[float]:
    """Train `model` by flow matching on the points x0 (n, 2) in training.train_loop (AdamW, cosine LR to 0).
    noise None: fresh noise for every batch (first round); noise (n, 2): the noise paired with each row of x0
    (reflow). sigma_options: sigma_kind ('uniform', 'logit_normal'), m, s, shift. Returns every step's loss."""
    _checks.module(model)
    if not isinstance(x0, torch.Tensor) or x0.ndim != 2 or not x0.dtype.is_floating_point:
        raise ValueError(f"x0 must be a float tensor of points (n, dim), got "
                         f"{tuple(getattr(x0, 'shape', ())) or type(x0).__name__}")
    _checks.tensor(x0, "x0", finite=True)
    _checks.integer(steps, "steps", 1)
    seed = _checks.seed(seed)
    batch_fn = flow_batch_fn(x0, batch_size, noise=noise, **sigma_options)
    return train_loop(model, flow_loss_fn(mlp_denoiser(model)), batch_fn, steps=steps, lr=lr,
                      generator=torch.Generator().manual_seed(seed), progress=progress, desc=desc)


@torch.no_grad()
def sample_paths(model: nn.Module, noise: torch.Tensor, steps: int = 50, shift: float = 1.0,
                 spacing: str = "uniform") -> torch.Tensor:
    """Euler trajectories from the noise (n, 2) (sigma = 1) to samples (sigma = 0) on flow_sigmas(steps, shift,
    spacing) (default: `steps` even steps), run on the model's device: a CPU tensor (steps + 1, n, 2),
    paths[0] = noise, paths[-1] = the samples."""
    _checks.module(model)
    if not isinstance(noise, torch.Tensor) or noise.ndim != 2:
        raise ValueError(f"noise must be a tensor (n, dim), got {getattr(noise, 'shape', type(noise).__name__)}")
    steps = _checks.integer(steps, "steps", 1)
    model.eval()
    x_T = noise.to(next(model.parameters()).device)
    states = flow_loop(mlp_denoiser(model), x_T, sigmas=flow_sigmas(steps, shift, spacing), progress=False)
    return torch.stack([s.x_t.cpu() for s in states])


def generate(model: nn.Module, noise: torch.Tensor, steps: int = 50, shift: float = 1.0,
             spacing: str = "uniform") -> torch.Tensor:
    """The samples only: the last state of sample_paths."""
    return sample_paths(model, noise, steps, shift, spacing)[-1]


def reflow_pairs(model: nn.Module, n: int, generator: torch.Generator | None = None,
                 steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified flow's coupling (Liu et al. 2023): n noise points and where the model's ODE (`steps` Euler
    steps) takes each of them. Returns (noise, samples); train_flow(new, samples, noise=noise) reflows."""
    n = _count(n)
    _checks.module(model)
    _checks.generator(generator)
    _checks.integer(steps, "steps", 1)
    noise = torch.randn((n, 2), generator=generator)
    return noise, generate(model, noise, steps)


# ---- measures ----------------------------------------------------------------------------------------------

def _points(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a tensor (n, dim) with n >= 2, got "
                         f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}")
    return x.detach().double().cpu()


MMD_BANDWIDTH = 0.1  # the Gaussian kernel's width: small against the toys' scale, so fine detail counts


def _kernels(a: torch.Tensor, b: torch.Tensor, bandwidth: float | None):
    """The kernel matrices (a-b, a-a, b-b) and the kernel's value at distance 0: k = -|x - y| (energy distance)
    when bandwidth is None, else the Gaussian k = exp(-|x - y|^2 / (2 bandwidth^2)) (MMD)."""
    if bandwidth is None:
        return -torch.cdist(a, b), -torch.cdist(a, a), -torch.cdist(b, b), 0.0
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not bandwidth > 0:
        raise ValueError(f"bandwidth must be a number > 0, got {bandwidth!r}")
    return tuple(torch.exp(-torch.cdist(x, y).pow(2) / (2 * bandwidth ** 2)) for x, y in ((a, b), (a, a), (b, b))) \
        + (1.0,)


def _discrepancy(k_ab, k_aa, k_bb, k_same: float, w_a, w_b) -> torch.Tensor:
    """mean k_aa + mean k_bb - 2 mean k_ab for points counted w_a, w_b times (one row of weights per resample).
    The within-set means run over pairs of different points only: copies of one point sit at distance 0 (kernel
    value k_same), there are sum w^2 such ordered pairs, and n^2 - sum w^2 others. Unbiased at w = 1."""
    n, m = k_aa.shape[0], k_bb.shape[0]
    sq_a, sq_b = w_a.pow(2).sum(1), w_b.pow(2).sum(1)
    aa = (((w_a @ k_aa) * w_a).sum(1) - k_same * sq_a) / (n * n - sq_a)
    bb = (((w_b @ k_bb) * w_b).sum(1) - k_same * sq_b) / (m * m - sq_b)
    return aa + bb - 2 * ((w_a @ k_ab) * w_b).sum(1) / (n * m)


def _measure(generated, real, bandwidth, resamples: int | None = None, seed: int = 0) -> Estimate:
    a, b = _points(generated, "generated"), _points(real, "real")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"real must have the dimension of generated ({a.shape[1]}), got {b.shape[1]}")
    seed = _checks.seed(seed)
    *kernels, k_same = _kernels(a, b, bandwidth)
    n, m = a.shape[0], b.shape[0]
    value = float(_discrepancy(*kernels, k_same, torch.ones(1, n, dtype=torch.float64),
                               torch.ones(1, m, dtype=torch.float64))[0])
    if resamples is None:
        return Estimate(value, value, value, n)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an int >= 100, got {resamples!r}")
    rng = np.random.default_rng(seed)
    w_a = torch.from_numpy(rng.multinomial(n, np.full(n, 1 / n), size=resamples)).double()  # counts per point
    w_b = torch.from_numpy(rng.multinomial(m, np.full(m, 1 / m), size=resamples)).double()
    low, high = np.quantile(_discrepancy(*kernels, k_same, w_a, w_b).numpy(), [0.025, 0.975])
    return Estimate(value, float(low), float(high), n)


def energy_distance(generated: torch.Tensor, real: torch.Tensor) -> float:
    """The energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (X generated, Y real; pairs of different points),
    an unbiased estimate of a quantity that is 0 exactly when the two distributions agree. It weighs the
    large-scale layout; a slight blur of the points barely moves it (mmd sees that)."""
    return _measure(generated, real, None).value


def mmd(generated: torch.Tensor, real: torch.Tensor, bandwidth: float = MMD_BANDWIDTH) -> float:
    """The squared maximum mean discrepancy with a Gaussian kernel of width `bandwidth` (Gretton et al. 2012),
    E k(X, X') + E k(Y, Y') - 2 E k(X, Y) over pairs of different points (unbiased; 0 when the distributions
    agree, so an estimate can fall slightly below 0). A narrow kernel makes it sensitive to blurred detail."""
    return _measure(generated, real, bandwidth).value


def energy_distance_estimate(generated: torch.Tensor, real: torch.Tensor, resamples: int = 1000,
                             seed: int = 0) -> Estimate:
    """energy_distance with a 95% percentile-bootstrap interval: both sets resampled with replacement
    (`resamples` times, numpy generator seeded by seed); a point paired with a copy of itself is left out."""
    return _measure(generated, real, None, resamples, seed)


def mmd_estimate(generated: torch.Tensor, real: torch.Tensor, bandwidth: float = MMD_BANDWIDTH,
                 resamples: int = 1000, seed: int = 0) -> Estimate:
    """mmd with a 95% percentile-bootstrap interval, resampled as in energy_distance_estimate."""
    return _measure(generated, real, bandwidth, resamples, seed)


def _paths(paths, sigmas=None):
    if not isinstance(paths, torch.Tensor) or paths.ndim != 3 or paths.shape[0] < 2:
        raise ValueError(f"paths must be a tensor (steps + 1, n, dim), got "
                         f"{tuple(getattr(paths, 'shape', ())) or type(paths).__name__}")
    paths = paths.detach().double().cpu()
    if sigmas is None:
        return paths, None
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if sigmas.shape[0] != paths.shape[0] or bool((sigmas[1:] >= sigmas[:-1]).any()):
        raise ValueError(f"sigmas must hold one strictly descending sigma per state ({paths.shape[0]}), "
                         f"got {tuple(sigmas.shape)}")
    return paths, sigmas


def straightness(paths: torch.Tensor, sigmas) -> torch.Tensor:
    """Liu et al. (2023)'s straightness of each path, sum_k |d sigma_k| || u - d_k ||^2 with d_k = (x_{k+1} - x_k)
    / (sigma_{k+1} - sigma_k) the velocity on step k and u = (x_end - x_start) / (sigma_end - sigma_start) the
    constant velocity of the straight line between the ends. (n,) float64; 0 for a straight, evenly run path."""
    if sigmas is None:
        raise ValueError("sigmas must hold one sigma per state of the paths, got None")
    paths, sigmas = _paths(paths, sigmas)
    d_sigma = (sigmas[1:] - sigmas[:-1]).reshape(-1, 1, 1)
    d = (paths[1:] - paths[:-1]) / d_sigma                                # (steps, n, dim)
    u = (paths[-1] - paths[0]) / (sigmas[-1] - sigmas[0])                 # (n, dim)
    return (d_sigma.abs().squeeze(-1) * (d - u).pow(2).sum(-1)).sum(0)


def path_length_ratio(paths: torch.Tensor) -> torch.Tensor:
    """Length of each path over the distance between its ends: (n,) float64, 1 for a straight path."""
    paths, _ = _paths(paths)
    length = (paths[1:] - paths[:-1]).norm(dim=-1).sum(0)
    return length / (paths[-1] - paths[0]).norm(dim=-1).clamp_min(1e-12)


def path_estimates(paths: torch.Tensor, sigmas, seed: int = 0) -> dict[str, Estimate]:
    """{'straightness': the mean over paths, 'length_ratio': the median over paths (a path that ends near where it
    began has a huge ratio, which a mean would follow)}, each with a 95% bootstrap interval."""
    _checks.seed(seed)
    return dict(straightness=bootstrap_interval(straightness(paths, sigmas).numpy(), seed=seed),
                length_ratio=bootstrap_interval(path_length_ratio(paths).numpy(), statistic=np.median, seed=seed))
