"""Figure helpers (diffusion_lessons.plotting) and the ipywidgets explorers (diffusion_lessons.widgets)."""

from __future__ import annotations

import copy

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

from diffusion_lessons import plotting, widgets
from diffusion_lessons.schedules import make_schedule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def unchanged_globals():
    """Fails the test if it changed matplotlib's rcParams or left figures registered with pyplot."""
    import matplotlib.pyplot as plt

    before, figures = copy.deepcopy(dict(matplotlib.rcParams)), plt.get_fignums()
    yield
    after = dict(matplotlib.rcParams)
    changed = {k for k in before if before[k] != after[k]}
    assert not changed, f"rcParams changed: {sorted(changed)}"
    assert plt.get_fignums() == figures


def images(n: int, channels: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(n)) * 2 - 1


def test_new_figure_and_png(unchanged_globals):
    fig = plotting.new_figure(3, 2)
    assert isinstance(fig, Figure)
    assert tuple(fig.get_size_inches()) == (3, 2)
    fig.subplots().plot([0, 1], [1, 0])
    png = plotting.figure_png(fig, dpi=50)
    assert png.startswith(PNG_MAGIC)


@pytest.mark.parametrize("n, channels, ncols, cells", [(1, 3, None, 1), (5, 3, None, 5), (5, 1, 2, 6), (10, 3, None, 16)])
def test_show_images_grid(unchanged_globals, n, channels, ncols, cells):
    batch = images(n, channels)
    fig = plotting.show_images(batch if n > 1 else batch[0], titles=[f"#{i}" for i in range(n)],
                               ncols=ncols, suptitle="grid")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == cells
    assert [ax.get_title() for ax in fig.axes[:n]] == [f"#{i}" for i in range(n)]
    assert sum(len(ax.images) for ax in fig.axes) == n
    assert fig.get_suptitle() == "grid"


def test_show_images_accepts_a_list_and_checks_its_input(unchanged_globals):
    assert len(plotting.show_images(list(images(3))).axes) == 3
    with pytest.raises(ValueError, match="titles"):
        plotting.show_images(images(3), titles=["a"])
    with pytest.raises(ValueError, match="images"):
        plotting.show_images([])
    with pytest.raises(ValueError, match="images"):
        plotting.show_images(torch.zeros(2, 2, 3, 8, 8))


def test_plot_schedule_curves(unchanged_globals):
    schedules = {k: make_schedule(k) for k in ("linear", "cosine")}
    schedules["zero"] = make_schedule("scaled_linear", zero_terminal_snr=True)
    fig = plotting.plot_schedule_curves(schedules, marker_t=300)
    assert isinstance(fig, Figure)
    ax_beta, ax_abar, ax_snr = fig.axes
    assert ax_snr.get_yscale() == "log" and ax_beta.get_yscale() == "log"
    assert all(ax.get_title() and ax.get_xlabel() == "t" for ax in fig.axes)
    assert len(ax_abar.lines) == 3 + 1  # three curves and the marker
    marker = ax_abar.lines[-1]
    assert list(marker.get_xdata()) == [300, 300]
    # the SNR curve of the zero-terminal-SNR schedule drops the last point (SNR = 0 has no log)
    assert len(ax_snr.lines[2].get_xdata()) == 999
    assert plotting.figure_png(fig).startswith(PNG_MAGIC)


def test_plot_histogram(unchanged_globals):
    values = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    fig = plotting.plot_histogram(values)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "value" and ax.get_ylabel() == "density"
    mean, std = (float(word) for word in ax.get_title().replace(",", "").split()[1::2])
    assert abs(mean) < 0.05 and abs(std - 1) < 0.05  # the default title states the sample's statistics
    assert len(ax.lines) == 1  # the N(0, 1) density
    assert len(plotting.plot_histogram(values, normal=False, title="t").axes[0].lines) == 0
    fig2 = plotting.new_figure(8, 3)
    axes = fig2.subplots(1, 2)
    assert plotting.plot_histogram(values, ax=axes[1], title="right") is fig2
    assert axes[1].get_title() == "right" and not axes[0].patches


def test_plot_curve(unchanged_globals):
    fig = plotting.plot_curve([1, 2, 3], {"a": [3, 2, 1], "b": [1, 2, 3]}, xlabel="step", ylabel="loss",
                              title="curves", logy=True)
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title(), ax.get_yscale()) == ("step", "loss", "curves", "log")
    assert len(ax.lines) == 2 and ax.get_legend() is not None


# ---- widgets ----


def render_square(size: int, brightness: float = 0.0, kind: str = "a") -> Figure:
    return plotting.show_images(torch.full((3, size, size), brightness), titles=[f"{kind} {size}"])


def test_explorer_rerenders_when_a_control_changes(unchanged_globals):
    controls = {"size": widgets.int_slider("size", 4, 2, 8), "brightness": widgets.float_slider("b", 0.0, -1, 1, 0.1),
                "kind": widgets.dropdown("kind", ["a", "b"])}
    box = widgets.explorer(render_square, controls, show=False)
    assert isinstance(box, widgets.Explorer)
    first = bytes(box.image.value)
    assert first.startswith(PNG_MAGIC)
    assert box.values() == {"size": 4, "brightness": 0.0, "kind": "a"}
    seen = {first}
    for name, value in [("brightness", 0.8), ("size", 7), ("kind", "b")]:
        controls[name].value = value
        now = bytes(box.image.value)
        assert now not in seen, name
        seen.add(now)
    assert all(c.continuous_update is False for c in controls.values())  # one render per release


def test_explorer_shows_a_static_figure_first(monkeypatch):
    shown = []
    monkeypatch.setattr(widgets, "display", lambda obj: shown.append(obj))
    box = widgets.explorer(render_square, {"size": widgets.int_slider("size", 4, 2, 8)})
    assert isinstance(shown[0], Figure) and shown[1] is box
    static = plotting.new_figure(1, 1)
    shown.clear()
    widgets.explorer(render_square, {"size": widgets.int_slider("size", 4, 2, 8)}, static=static)
    assert shown[0] is static


def test_control_builders():
    s = widgets.int_slider("t", 10, 0, 999, step=5)
    assert (s.value, s.min, s.max, s.step, s.description) == (10, 0, 999, 5, "t")
    f = widgets.float_slider("beta", 0.5, 0.0, 1.0, 0.01)
    assert (f.value, f.min, f.max) == (0.5, 0.0, 1.0)
    d = widgets.dropdown("kind", ["linear", "cosine"])
    assert d.value == "linear" and widgets.dropdown("kind", ["linear", "cosine"], "cosine").value == "cosine"


def test_a_returned_figure_displays_as_png_in_ipython():
    """Without pyplot or %matplotlib, Jupyter must still draw a Figure that a cell returns."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        plotting._register_ipython_display()
        data, _ = shell.display_formatter.format(plotting.plot_curve([0, 1], {"a": [1, 0]}))
        assert data["image/png"].startswith(PNG_MAGIC)
    finally:
        InteractiveShell.clear_instance()
