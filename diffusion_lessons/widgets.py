"""Interactive explorers built on ipywidgets.

Each explorer is a set of controls bound to an ipywidgets.Image that shows a rendered
figure. `explorer(...)` first displays a static figure (so a stored notebook, a headless
run and the rendered book show something), then the live controls. Moving a control calls
the render function again and swaps the picture.
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as W
from IPython.display import display
from matplotlib.figure import Figure

from . import _checks
from .plotting import figure_png


class Explorer(W.VBox):
    """Controls above a picture; `render(**values)` returns the Figure for the current values."""

    def __init__(self, render: Callable[..., Figure], controls: dict[str, W.ValueWidget], dpi: int = 80):
        _check_explorer(render, controls)
        _checks.integer(dpi, "dpi", 1)
        self.render, self.controls, self.dpi = render, controls, dpi
        self.image = W.Image(format="png")
        self.image.add_class("dl-explorer-image")
        for control in controls.values():
            control.continuous_update = False
            control.observe(self.update, names="value")
        super().__init__([W.HBox(list(controls.values())), self.image])
        self.add_class("dl-explorer")
        self.update()

    def values(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    def update(self, change=None) -> None:
        """Render the figure for the controls' current values into the picture."""
        self.image.value = figure_png(self.render(**self.values()), dpi=self.dpi)


def explorer(render: Callable[..., Figure], controls: dict[str, W.ValueWidget],
             static: Figure | None = None, show: bool = True) -> Explorer:
    """Display `static` (default: the figure at the controls' start values), then the live explorer."""
    _check_explorer(render, controls)
    if static is not None and not isinstance(static, Figure):
        raise ValueError(f"static must be a matplotlib Figure or None, got {type(static).__name__}")
    box = Explorer(render, controls)
    if show:
        display(static if static is not None else render(**box.values()))
        display(box)
    return box


def _check_explorer(render, controls) -> None:
    if not callable(render):
        raise ValueError(f"render must be a callable render(**values) -> Figure, got {type(render).__name__}")
    if not isinstance(controls, dict) or not all(isinstance(k, str) and isinstance(c, W.ValueWidget)
                                                 for k, c in controls.items()):
        raise ValueError(f"controls must be a dict of name -> widget (int_slider, float_slider, dropdown), got "
                         f"{controls!r}")


def _check_slider(description, value, lo, hi, step, number) -> None:
    _checks.text(description, "description")
    lo, hi = number(lo, "lo"), number(hi, "hi")
    if hi < lo:
        raise ValueError(f"hi must be >= lo = {lo}, got {hi}")
    number(value, "value", lo, hi)
    if number(step, "step") <= 0:
        raise ValueError(f"step must be > 0, got {step!r}")


def int_slider(description: str, value: int, lo: int, hi: int, step: int = 1) -> W.IntSlider:
    _check_slider(description, value, lo, hi, step, _checks.integer)
    return W.IntSlider(value=value, min=lo, max=hi, step=step, description=description,
                       style={"description_width": "initial"}, layout=W.Layout(width="420px"))


def float_slider(description: str, value: float, lo: float, hi: float, step: float) -> W.FloatSlider:
    _check_slider(description, value, lo, hi, step, _checks.number)
    return W.FloatSlider(value=value, min=lo, max=hi, step=step, description=description,
                         style={"description_width": "initial"}, layout=W.Layout(width="420px"))


def dropdown(description: str, options: list, value=None) -> W.Dropdown:
    _checks.text(description, "description")
    if not isinstance(options, (list, tuple)) or not options:
        raise ValueError(f"options must be a non-empty list, got {options!r}")
    values = [o[1] if isinstance(o, tuple) and len(o) == 2 else o for o in options]   # (label, value) pairs
    if value is not None and value not in values:
        raise ValueError(f"value must be one of the options {values}, got {value!r}")
    return W.Dropdown(options=options, value=value if value is not None else options[0],
                      description=description)
