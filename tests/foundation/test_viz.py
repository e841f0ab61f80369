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
