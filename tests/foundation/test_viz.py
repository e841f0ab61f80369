import matplotlib
import pandas as pd
import pytest

from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

matplotlib.use("Agg")
TABLE = pd.DataFrame({
    "epsilon": [1, 1, 2, 2, 8, 8], "epoch": [1, 2] * 3, "accuracy": [0.2, 0.3, 0.4, 0.5, 0.7, 0.8],
    "model": ["a"] * 6,
})


def test_static_figure_plots_each_hue():
    figure = static_figure(TABLE, x="epoch", y="accuracy", hue="epsilon")
    lines = figure.axes[0].get_lines()
    assert len(lines) == 3 and list(lines[2].get_ydata()) == [0.7, 0.8]


def test_slider_figure_steps_show_their_own_data():
    figure = slider_figure(TABLE, slider="epsilon", x="epoch", y="accuracy", hue="model")
    steps = figure.layout.sliders[0].steps
    assert [s.label for s in steps] == ["1", "2", "8"]
    for k, step in enumerate(steps):
        visible = [i for i, v in enumerate(step.args[0]["visible"]) if v]
        assert len(visible) == 1 and list(figure.data[visible[0]].y) == list(TABLE.accuracy[2 * k : 2 * k + 2])


def test_live_explorer_recomputes():
    calls = []

    def compute(epsilon=1.0):
        calls.append(epsilon)
        return TABLE[TABLE.epsilon == 8]

    widget = live_explorer(compute, x="epoch", y="accuracy", epsilon=(1.0, 8.0, 1.0))
    assert widget.children[0].value == 1.0, "the slider starts at compute's default"
    widget.children[0].value = 3.0
    assert calls[-1] == 3.0
    with pytest.raises(ValueError, match="slider"):
        live_explorer(compute, x="epoch", y="accuracy")


def test_errors_name_the_column():
    with pytest.raises(KeyError, match="acc"):
        static_figure(TABLE, x="epoch", y="acc")
    with pytest.raises(ValueError, match="empty"):
        slider_figure(TABLE.iloc[:0], slider="epsilon", x="epoch", y="accuracy")


def test_plotly_renderer():
    assert setup_plotly() == "plotly_mimetype+notebook_connected"


GROUPS = pd.DataFrame({
    "group": [f"group {k}" for k in range(12) for _ in range(2)], "metric": ["FPR", "FNR"] * 12,
    "error rate": [0.1 + 0.01 * k for k in range(24)], "threshold": 0.5,
})


def test_categorical_x_gives_grouped_bars_with_rotated_labels_not_lines():
    figure = static_figure(GROUPS, x="group", y="error rate", hue="metric")
    ax = figure.axes[0]
    assert ax.get_lines() == [], "a line would join unrelated groups"
    assert len(ax.patches) == 24
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == [f"group {k}" for k in range(12)]
    assert all(t.get_rotation() == 45 for t in labels)
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == sorted(round(v, 6) for v in GROUPS["error rate"])


def test_categorical_slider_twin_uses_bars_in_table_order():
    figure = slider_figure(GROUPS, slider="threshold", x="group", y="error rate", hue="metric")
    assert {trace.type for trace in figure.data} == {"bar"}
    assert list(figure.layout.xaxis.categoryarray) == [f"group {k}" for k in range(12)]
    assert figure.layout.xaxis.tickangle == -45 and figure.layout.yaxis.range[0] < 0 < 0.1


def test_categorical_x_refuses_duplicates_and_logx():
    with pytest.raises(ValueError, match="exactly one row"):
        static_figure(pd.concat([GROUPS, GROUPS]), x="group", y="error rate", hue="metric")
    with pytest.raises(ValueError, match="logx"):
        static_figure(GROUPS, x="group", y="error rate", hue="metric", logx=True)
    with pytest.raises(ValueError, match="logx"):
        slider_figure(GROUPS, slider="threshold", x="group", y="error rate", logx=True)


def test_live_explorer_redraws_an_image_and_reports_errors_under_it():
    import ipywidgets

    from trustml.viz import EXPLORER_CLASS, EXPLORER_ERROR_CLASS

    def compute(epsilon=1.0, name="a"):
        if epsilon > 7:
            raise RuntimeError("too large")
        return TABLE.assign(accuracy=TABLE.accuracy * epsilon)

    box = live_explorer(compute, x="epoch", y="accuracy", hue="epsilon", epsilon=(1.0, 8.0, 1.0),
                        name=ipywidgets.Dropdown(options=["a", "b"]))
    slider, dropdown, image, status = box.children
    assert EXPLORER_CLASS in box._dom_classes
    assert not any(isinstance(w, ipywidgets.Output) for w in box.children), "no Output widget (nbclient#312)"
    assert slider.description == "epsilon" and dropdown.description == "name"
    assert slider.style.description_width == "initial" and slider.layout.width == "100%"
    assert slider.continuous_update is False
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    slider.value = 3.0
    assert image.value != first and "redrawn in" in status.value
    slider.value = 8.0
    assert EXPLORER_ERROR_CLASS in status._dom_classes and "RuntimeError: too large" in status.value
    slider.value = 2.0
    assert EXPLORER_ERROR_CLASS not in status._dom_classes


def test_live_explorer_refuses_unknown_sliders_and_bad_abbreviations():
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['delta'\]"):
        live_explorer(lambda epsilon=1.0: TABLE, x="epoch", y="accuracy", delta=(0.1, 1.0, 0.1))
    with pytest.raises(ValueError, match="not a slider"):
        live_explorer(lambda epsilon=1.0: TABLE, x="epoch", y="accuracy", epsilon=object())
    with pytest.raises(ValueError, match="outside the slider's range"):
        live_explorer(lambda epsilon=9.0: TABLE, x="epoch", y="accuracy", epsilon=(1.0, 8.0, 1.0))
    with pytest.raises(KeyError, match="acc"):  # the first draw runs in the cell, so its errors fail the cell
        live_explorer(lambda epsilon=1.0: TABLE, x="epoch", y="acc", epsilon=(1.0, 8.0, 1.0))
