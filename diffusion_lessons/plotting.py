"""Figures for the book: image grids, schedule curves, histograms.

Every helper builds a new matplotlib Figure (without pyplot) and returns it; none changes
matplotlib's global settings. In a notebook, a returned figure displays itself.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from . import _checks
from .data import to_pil


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A fresh Figure, detached from pyplot (nothing global is touched)."""
    _checks.number(width, "width", above=0)
    _checks.number(height, "height", above=0)
    return Figure(figsize=(width, height), layout="constrained")


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure rendered to PNG bytes (for ipywidgets.Image and the static book)."""
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    _checks.number(dpi, "dpi", above=0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _register_ipython_display() -> None:
    """Let a returned Figure show itself as a PNG in Jupyter (no pyplot, no %matplotlib needed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(Figure, lambda fig: figure_png(fig, dpi=100))


_register_ipython_display()


def _as_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            return [images]
        if images.ndim != 4:
            raise ValueError(f"images must be (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")
        return list(images)
    if not isinstance(images, (list, tuple)) or not all(isinstance(x, torch.Tensor) for x in images):
        raise ValueError(f"images must be a tensor (C, H, W) or (B, C, H, W), or a list of (C, H, W) tensors, "
                         f"got {type(images).__name__}")
    return list(images)


def show_images(images: torch.Tensor | Sequence[torch.Tensor], titles: Sequence[str] | None = None,
                ncols: int | None = None, size: float = 1.6, suptitle: str | None = None) -> Figure:
    """A grid of images in [-1, 1] (values outside are clipped), one axis each, optional titles; `size` inches
    per picture's width."""
    items = _as_list(images)
    if not items:
        raise ValueError("images must hold at least one image")
    if titles is not None and len(titles) != len(items):
        raise ValueError(f"titles must have one entry per image ({len(items)}), got {len(titles)}")
    if ncols is not None:
        _checks.integer(ncols, "ncols", 1)
    _checks.number(size, "size", above=0)
    ncols = ncols or min(len(items), 8)
    nrows = math.ceil(len(items) / ncols)
    aspect = items[0].shape[-2] / items[0].shape[-1]       # height / width: wide pictures get shorter rows
    row = size if aspect >= 1 else size * aspect + (0.35 if titles is not None else 0)
    fig = new_figure(size * ncols, row * nrows + (0.3 if suptitle else 0))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < len(items):
            pil = to_pil(items[i])
            ax.imshow(pil, cmap="gray" if pil.mode == "L" else None, vmin=0, vmax=255,
                      interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_schedule_curves(schedules: Mapping[str, "object"], marker_t: int | None = None) -> Figure:
    """beta_t, alpha_bar_t and SNR_t (log axis) against t for named NoiseSchedules."""
    if not isinstance(schedules, Mapping) or not schedules or not all(
            hasattr(s, "num_steps") and hasattr(s, "snr") for s in schedules.values()):
        raise ValueError(f"schedules must be a non-empty dict of name -> NoiseSchedule, got {schedules!r}")
    if marker_t is not None:
        _checks.integer(marker_t, "marker_t", 0, max(s.num_steps for s in schedules.values()) - 1)
    fig = new_figure(12, 3.4)
    ax_beta, ax_abar, ax_snr = fig.subplots(1, 3)
    for name, s in schedules.items():
        t = np.arange(s.num_steps)
        ax_beta.plot(t, s.betas.numpy(), label=name)
        ax_abar.plot(t, s.alphas_cumprod.numpy(), label=name)
        snr = s.snr.double().numpy()
        ax_snr.plot(t[snr > 0], snr[snr > 0], label=name)
    ax_beta.set(title="beta_t (noise added per step)", xlabel="t", yscale="log")
    ax_abar.set(title="alpha_bar_t (signal kept)", xlabel="t", ylim=(-0.02, 1.02))
    ax_snr.set(title="SNR_t = alpha_bar / (1 - alpha_bar)", xlabel="t", yscale="log")
    if marker_t is not None:
        for ax in (ax_beta, ax_abar, ax_snr):
            ax.axvline(marker_t, color="k", lw=1, ls="--")
    ax_abar.legend(fontsize=8)
    return fig


def plot_histogram(values: torch.Tensor, bins: int = 60, normal: bool = True,
                   title: str = "", ax=None) -> Figure:
    """Histogram of values (as a density), with the standard normal density on top if normal."""
    _checks.tensor(values, "values")
    _checks.integer(bins, "bins", 1)
    v = values.detach().float().cpu().reshape(-1).numpy()
    fig = ax.figure if ax is not None else new_figure(5, 3.2)
    ax = ax if ax is not None else fig.subplots()
    ax.hist(v, bins=bins, density=True, alpha=0.6, label=f"samples (n={v.size:,})")
    if normal:
        x = np.linspace(-4, 4, 200)
        ax.plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), "k", lw=1.5, label="N(0, 1) density")
    ax.set(title=title or f"mean {v.mean():+.3f}, std {v.std():.3f}", xlabel="value", ylabel="density")
    ax.legend(fontsize=8)
    return fig


def plot_curve(x: Sequence[float], ys: Mapping[str, Sequence[float]], xlabel: str = "", ylabel: str = "",
               title: str = "", logx: bool = False, logy: bool = False) -> Figure:
    """One or more named curves on one axis: loss histories, quality against steps, and so on."""
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
        raise ValueError(f"x must be a sequence of numbers, got {type(x).__name__}")
    if not isinstance(ys, Mapping) or not ys:
        raise ValueError(f"ys must be a non-empty dict of name -> values, got {type(ys).__name__}")
    for name, y in ys.items():
        if not hasattr(y, "__len__") or len(y) != len(x):
            raise ValueError(f"ys must hold {len(x)} values per curve (one per x), got "
                             f"{len(y) if hasattr(y, '__len__') else type(y).__name__} for {name!r}")
    fig = new_figure(5.5, 3.4)
    ax = fig.subplots()
    for name, y in ys.items():
        ax.plot(x, y, marker="o" if len(x) <= 20 else None, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if len(ys) > 1:
        ax.legend(fontsize=8)
    return fig
