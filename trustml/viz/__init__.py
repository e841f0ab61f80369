"""The three views of a trade-off, one call each (the notebook contract, item 5, in CONTRIBUTING.md).

1. ``static_figure`` — a matplotlib figure (always renders, in print and on the static site);
2. ``slider_figure`` — a plotly figure with a slider over a precomputed grid (moves on the static site,
   no kernel needed);
3. ``live_explorer`` — ipywidgets controls that recompute and redraw on every move (Jupyter/Colab).

All three take the same long-format table: one row per point, a column for the slider parameter, the
x and y columns and an optional ``hue`` column (one line per value).
"""

from __future__ import annotations

import html
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


def _is_categorical(column: pd.Series) -> bool:
    """Whether ``column`` names categories (group names, booleans) rather than measuring a quantity."""
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _categories(table: pd.DataFrame, x: str, hue: str | None) -> list:
    """The categories of ``x`` in the order the table lists them; one row per (category, hue) or an error."""
    keys = [x] if hue is None else [x, hue]
    repeated = table[table.duplicated(keys, keep=False)]
    if not repeated.empty:
        first = repeated.iloc[0][keys].tolist()
        raise ValueError(f"x={x!r} is categorical, so each ({', '.join(keys)}) needs exactly one row; "
                         f"{first} has {int((table[keys] == first).all(axis=1).sum())}: aggregate first")
    return list(pd.unique(table[x]))


def static_figure(table: pd.DataFrame, *, x: str, y: str, hue: str | None = None, title: str = "",
                  logx: bool = False, ax=None, marker: str = "o"):
    """``y`` against ``x``, one series per ``hue`` value; returns the matplotlib Figure.

    A numeric ``x`` gives lines. A categorical ``x`` (group names) gives grouped bars with rotated labels:
    a line would join categories that have no order.
    """
    _check_columns(table, x, y, hue)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    groups = list(table.groupby(hue, sort=True)) if hue else [(None, table)]
    if _is_categorical(table[x]):
        if logx:
            raise ValueError(f"logx=True needs a numeric x; {x!r} is categorical")
        categories = _categories(table, x, hue)
        position = {category: index for index, category in enumerate(categories)}
        width = 0.8 / len(groups)
        for k, (name, group) in enumerate(groups):
            offsets = [position[c] - 0.4 + (k + 0.5) * width for c in group[x]]
            ax.bar(offsets, group[y], width=width, label=None if name is None else f"{hue} = {name}")
        ax.set_xticks(range(len(categories)), [str(c) for c in categories],
                      rotation=45 if len(categories) > 4 else 0, ha="right" if len(categories) > 4 else "center")
    else:
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
    movement is visible. A categorical ``x`` gives grouped bars (categories in table order, labels rotated).
    """
    import plotly.graph_objects as go

    _check_columns(table, slider, x, y, hue)
    categorical = _is_categorical(table[x])
    if categorical and logx:
        raise ValueError(f"logx=True needs a numeric x; {x!r} is categorical")
    steps = sorted(table[slider].unique())
    hues = sorted(table[hue].unique()) if hue else [None]
    figure = go.Figure()
    for step_index, value in enumerate(steps):
        rows = table[table[slider] == value]
        if categorical:
            _categories(rows, x, hue)  # one row per bar
        for name in hues:
            part = rows[rows[hue] == name] if hue else rows
            label = str(name) if hue else y
            if categorical:
                figure.add_trace(go.Bar(x=part[x].astype(str), y=part[y], visible=step_index == 0, name=label,
                                        legendgroup=str(name)))
            else:
                part = part.sort_values(x)
                figure.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", visible=step_index == 0,
                                            name=label, legendgroup=str(name)))
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
    if categorical:  # bars start at zero
        y_min, y_max = min(y_min, 0.0), max(y_max, 0.0)
        figure.update_layout(barmode="group")
        figure.update_xaxes(type="category", tickangle=-45 if table[x].nunique() > 4 else 0,
                            categoryorder="array", categoryarray=[str(c) for c in pd.unique(table[x])])
    pad = 0.05 * (y_max - y_min or 1.0)
    figure.update_yaxes(range=[y_min - pad, y_max + pad])
    if logx:
        figure.update_xaxes(type="log")
    return figure


#: A live explorer's figure, in pixels (drawn at 100 dpi).
FIGURE_PX = (600, 350)
#: CSS classes of a live explorer's widgets, for the browser test and for styling.
EXPLORER_CLASS, EXPLORER_ERROR_CLASS = "trustml-live-explorer", "trustml-explorer-error"


def _render_png(table: pd.DataFrame, *, x: str, y: str, hue: str | None, title: str, logx: bool) -> bytes:
    """The static figure of ``table`` as PNG bytes, drawn on a Figure that pyplot never sees (so the inline
    backend does not show it a second time at the end of the cell)."""
    import io

    from matplotlib.figure import Figure

    figure = Figure(figsize=(FIGURE_PX[0] / 100, FIGURE_PX[1] / 100))
    static_figure(table, x=x, y=y, hue=hue, title=title, logx=logx, ax=figure.subplots())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _control(name: str, abbreviation, default):
    """One explorer control from an ``interact`` abbreviation, its label shown in full."""
    import ipywidgets

    import inspect

    widget = ipywidgets.interactive.widget_from_abbrev(abbreviation, default)
    if widget is None:
        raise ValueError(f"{name}={abbreviation!r} is not a slider: give (lo, hi, step), a list of values or a widget")
    if default is not inspect.Parameter.empty and not isinstance(abbreviation, ipywidgets.Widget) \
            and widget.value != default:  # ipywidgets would clip it to the range without a word
        raise ValueError(f"{name}: compute's default {default!r} is outside the slider's range {abbreviation!r}")
    if not widget.description:
        widget.description = name
    widget.style.description_width = "initial"  # the whole name, not "max_grad..."
    widget.layout.width, widget.layout.max_width = "100%", "640px"
    if hasattr(widget, "continuous_update"):
        widget.continuous_update = False  # one recomputation per move, not one per pixel dragged
    return widget


def live_explorer(compute: Callable[..., pd.DataFrame], *, x: str, y: str, hue: str | None = None,
                  title: str = "", logx: bool = False, **sliders):
    """A live explorer: one control per slider; each move calls ``compute(**values)`` and redraws the figure.

    ``sliders`` are ipywidgets ``interact`` abbreviations (``(lo, hi, step)`` tuples, lists, or widgets);
    controls start at ``compute``'s defaults. Returns an ``ipywidgets.VBox``: the controls, the figure (an
    ``Image`` widget) and a status line that reports each redraw's time or the error of a failed move.

    Why not ``ipywidgets.interactive``: it redraws inside an ``Output`` widget, and capturing output during a
    cell makes nbclient (papermill, nbconvert, myst-nb) send comm messages on the shell channel while it waits
    for the cell's reply there; with pyzmq 27 that reply's wake-up can be lost and the run hangs
    (jupyter/nbclient#312). Setting an ``Image`` widget's value only sends kernel-to-frontend messages. Only
    APIs common to ipywidgets 7.7 (Colab) and 8 are used.
    """
    import inspect
    import time

    import ipywidgets

    if not sliders:
        raise ValueError("live_explorer needs at least one slider, e.g. epsilon=(0.5, 8.0, 0.5)")
    parameters = inspect.signature(compute).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [name for name in sliders if name not in parameters and not takes_any]
    if unknown:
        raise ValueError(f"compute has no parameter(s) {unknown}; it takes {list(parameters)}")
    controls = {name: _control(name, abbreviation, parameters[name].default if name in parameters
                               else inspect.Parameter.empty) for name, abbreviation in sliders.items()}

    def draw() -> bytes:
        return _render_png(compute(**{name: c.value for name, c in controls.items()}), x=x, y=y, hue=hue,
                           title=title, logx=logx)

    # errors of the first draw fail the cell; the figure keeps its own size (not stretched to the cell's width)
    image = ipywidgets.Image(value=draw(), format="png", layout=ipywidgets.Layout(
        width=f"{FIGURE_PX[0]}px", max_width="100%", height="auto", align_self="flex-start"))
    status = ipywidgets.HTML(value="")
    box = ipywidgets.VBox([*controls.values(), image, status])
    box.add_class(EXPLORER_CLASS)

    redraws = [0]

    def redraw(_change=None) -> None:
        start = time.perf_counter()
        redraws[0] += 1
        status.remove_class(EXPLORER_ERROR_CLASS)
        status.value = "<i>computing…</i>"
        try:
            image.value = draw()
        except Exception as error:  # shown under the figure: a comm handler's traceback would go nowhere
            status.add_class(EXPLORER_ERROR_CLASS)
            status.value = f"<pre>{html.escape(f'{type(error).__name__}: {error}')}</pre>"
            return
        # data-redraw counts the moves answered (a move may redraw the same figure: the browser test tells)
        status.value = (f'<small data-redraw="{redraws[0]}">redrawn in {time.perf_counter() - start:.1f} s'
                        "</small>")

    for control in controls.values():
        control.observe(redraw, names="value")
    return box


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


__all__ = [
    "EXPLORER_CLASS", "EXPLORER_ERROR_CLASS", "PLOTLY_RENDERER", "glue", "live_explorer", "setup_plotly",
    "slider_figure", "static_figure",
]
