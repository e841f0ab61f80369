"""The three views of a trade-off, one call each (the notebook contract, item 5, in CONTRIBUTING.md).

1. ``static_figure`` — a matplotlib figure (always renders, in print and on the static site);
2. ``slider_figure`` — a plotly figure with a slider over a precomputed grid (moves on the static site,
   no kernel needed);
3. ``live_explorer`` — an ``ipywidgets.interact`` explorer that recomputes on every move (Jupyter/Colab).

All three take the same long-format table: one row per point, a column for the slider parameter, the
x and y columns and an optional ``hue`` column (one line per value).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import matplotlib.pyplot as plt
import pandas as pd

PLOTLY_RENDERER = "plotly_mimetype+notebook_connected"


def setup_plotly() -> str:
    """Choose the plotly renderer: Colab's in Colab, else one that works in Jupyter and on the built site."""
    import plotly.io as pio

    pio.renderers.default = "colab" if "google.colab" in sys.modules else PLOTLY_RENDERER
    return pio.renderers.default


def _check_columns(table: pd.DataFrame, *columns: str | None) -> None:
    missing = [c for c in columns if c is not None and c not in table.columns]
    if missing:
        raise KeyError(f"table has no column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError("table is empty: nothing to plot")


def static_figure(table: pd.DataFrame, *, x: str, y: str, hue: str | None = None, title: str = "",
                  logx: bool = False, ax=None, marker: str = "o"):
    """Line plot of ``y`` against ``x`` (one line per ``hue`` value); returns the matplotlib Figure."""
    _check_columns(table, x, y, hue)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    groups = table.groupby(hue, sort=True) if hue else [(None, table)]
    for name, group in groups:
        group = group.sort_values(x)
        ax.plot(group[x], group[y], marker=marker, label=None if name is None else f"{hue} = {name}")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    if hue:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    ax.figure.tight_layout()
    return ax.figure


def slider_figure(table: pd.DataFrame, *, slider: str, x: str, y: str, hue: str | None = None, title: str = "",
                  logx: bool = False):
    """A plotly figure whose slider steps through the values of ``slider`` (precomputed; no kernel needed).

    Each slider step shows the rows with that value: one trace per ``hue`` value, fixed axes so the
    movement is visible.
    """
    import plotly.graph_objects as go

    _check_columns(table, slider, x, y, hue)
    steps = sorted(table[slider].unique())
    hues = sorted(table[hue].unique()) if hue else [None]
    figure = go.Figure()
    for step_index, value in enumerate(steps):
        rows = table[table[slider] == value]
        for name in hues:
            part = (rows[rows[hue] == name] if hue else rows).sort_values(x)
            figure.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", visible=step_index == 0,
                                        name=str(name) if hue else y, legendgroup=str(name)))
    per_step = len(hues)
    figure.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, height=420,
        sliders=[{
            "active": 0, "currentvalue": {"prefix": f"{slider} = "},
            "steps": [{
                "label": f"{value:g}" if isinstance(value, (int, float)) else str(value), "method": "update",
                "args": [{"visible": [i // per_step == k for i in range(len(steps) * per_step)]}],
            } for k, value in enumerate(steps)],
        }],
    )
    y_min, y_max = table[y].min(), table[y].max()
    pad = 0.05 * (y_max - y_min or 1.0)
    figure.update_yaxes(range=[y_min - pad, y_max + pad])
    if logx:
        figure.update_xaxes(type="log")
    return figure


def live_explorer(compute: Callable[..., pd.DataFrame], *, x: str, y: str, hue: str | None = None,
                  title: str = "", **sliders):
    """An ``ipywidgets.interact`` explorer: every slider move calls ``compute(**values)`` and redraws.

    ``sliders`` are ipywidgets abbreviations (``(lo, hi, step)`` tuples, lists, or widgets), as in
    ``interact``; only APIs common to ipywidgets 7.7 (Colab) and 8 are used.
    """
    import ipywidgets

    if not sliders:
        raise ValueError("live_explorer needs at least one slider, e.g. epsilon=(0.5, 8.0, 0.5)")

    @functools.wraps(compute)  # the sliders start at compute's defaults, not at the middle of their range
    def redraw(**values):
        figure = static_figure(compute(**values), x=x, y=y, hue=hue, title=title)
        plt.show()
        return figure

    return ipywidgets.interactive(redraw, **sliders)


def glue(name: str, value, *, display: bool = False):
    """Record ``value`` under ``name`` for other pages of the book (myst-nb's glue: the front page shows
    headline results this way, from the notebooks' own outputs). Without myst-nb (Colab) it only returns
    ``value``."""
    try:
        from myst_nb import glue as myst_nb_glue
    except ImportError:
        return value
    myst_nb_glue(name, value, display=display)
    return value


__all__ = ["PLOTLY_RENDERER", "glue", "live_explorer", "setup_plotly", "slider_figure", "static_figure"]
