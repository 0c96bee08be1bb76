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

from .plotting import figure_png


class Explorer(W.VBox):
    """Controls above a picture; `render(**values)` returns the Figure for the current values."""

    def __init__(self, render: Callable[..., Figure], controls: dict[str, W.ValueWidget], dpi: int = 80):
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
    box = Explorer(render, controls)
    if show:
        display(static if static is not None else render(**box.values()))
        display(box)
    return box


def int_slider(description: str, value: int, lo: int, hi: int, step: int = 1) -> W.IntSlider:
    return W.IntSlider(value=value, min=lo, max=hi, step=step, description=description,
                       style={"description_width": "initial"}, layout=W.Layout(width="420px"))


def float_slider(description: str, value: float, lo: float, hi: float, step: float) -> W.FloatSlider:
    return W.FloatSlider(value=value, min=lo, max=hi, step=step, description=description,
                         style={"description_width": "initial"}, layout=W.Layout(width="420px"))


def dropdown(description: str, options: list, value=None) -> W.Dropdown:
    return W.Dropdown(options=options, value=value if value is not None else options[0],
                      description=description)
