"""display.plot: the pictures' pixel data are the values (the image in axis k is channel k),
not only that a figure exists."""

import sys

import numpy as np
import pytest

import graphscope as gs

pytest.importorskip("matplotlib")


def _image(ax, k=0):
    return np.asarray(ax.images[k].get_array())


def _panels(fig):
    """The figure's axes: the panels alone (colorbars are insets of a panel)."""
    return fig.axes


def _colorbars(fig):
    return [child for ax in fig.axes for child in ax.child_axes]


def test_feature_maps_axis_k_is_channel_k_of_the_sample():
    value = np.random.default_rng(0).normal(size=(2, 5, 6, 70)).astype(np.float32)
    fig = gs.Results({"conv/BiasAdd:0": value}).plot("conv/BiasAdd:0", sample=1, max_channels=10)
    assert len(_panels(fig)) == 10
    for k, ax in enumerate(_panels(fig)):
        np.testing.assert_array_equal(_image(ax), value[1, :, :, k])
        assert ax.get_title() == f"channel {k}"
    assert len(_panels(gs.Results({"x": value}).plot("x"))) == 64  # max_channels by default


def test_attention_gets_one_heatmap_per_head():
    logits = np.random.default_rng(1).normal(size=(2, 3, 4, 5))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    fig = gs.Results({"attn/Softmax:0": probs}).plot("attn/Softmax:0")
    assert len(_panels(fig)) == 3
    for h, ax in enumerate(_panels(fig)):
        np.testing.assert_array_equal(_image(ax), probs[0, h])
        assert ax.get_title() == f"head {h}" and ax.get_xlabel() == "key"


def test_two_d_values_are_a_heatmap_and_one_d_a_bar_chart_or_line():
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    (ax,) = _panels(gs.Results({"m": matrix}).plot("m"))
    np.testing.assert_array_equal(_image(ax), matrix)
    bars = np.array([3.0, -1.0, 2.0])
    (ax,) = gs.Results({"b": bars}).plot("b").axes
    assert [p.get_height() for p in ax.patches] == [3.0, -1.0, 2.0]
    long = np.linspace(0, 1, 200)
    (ax,) = gs.Results({"l": long}).plot("l").axes
    np.testing.assert_allclose(ax.lines[0].get_ydata(), long)


def test_values_inside_loops_get_one_row_per_iteration(map_fn_scope):
    from graphscope import demo

    nms = "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"
    values = map_fn_scope.run(nms, demo.synthetic_images())
    assert values.per_iteration == {nms}
    fig = values.plot(nms)
    assert len(fig.axes) == len(values[nms]) == 2  # two images: two iterations of the map
    for k, ax in enumerate(fig.axes):
        assert [p.get_height() for p in ax.patches] == values[nms][k].tolist()
    ragged = gs.Results({"kept:0": [np.array([3, 1]), None, np.array([0])]}).plot("kept:0")
    assert [len(ax.patches) for ax in ragged.axes] == [2, 0, 1] and ragged.axes[1].texts[0].get_text() == "not run"


def test_overlay_draws_the_heatmap_scaled_up_over_the_image():
    image = np.random.default_rng(2).uniform(0, 255, (1, 8, 12, 3))
    heat = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    (ax,) = gs.overlay(heat, image).axes
    np.testing.assert_allclose(_image(ax, 0), (image[0] - image.min()) / (image.max() - image.min()))
    np.testing.assert_allclose(_image(ax, 1), np.kron(heat / 5.0, np.ones((4, 4))))
    with pytest.raises(gs.InputError, match="does not divide the image"):
        gs.overlay(np.ones((3, 5)), image)


def test_clear_errors():
    r = gs.Results({"a:0": np.ones((2, 3)), "gone:0": None})
    with pytest.raises(gs.TensorNotFoundError, match="Did you mean 'a:0'"):
        r.plot("a:1")
    with pytest.raises(gs.InputError, match="its branch did not run"):
        r.plot("gone:0")
    with pytest.raises(gs.OptionError, match="unknown picture kind 'pie'"):
        r.plot("a:0", kind="pie")
    with pytest.raises(gs.InputError, match="sample 5 is out of range"):
        gs.Results({"x": np.ones((2, 3, 3, 1))}).plot("x", sample=5)


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if it were not installed
    with pytest.raises(gs.MissingDependencyError, match=r'pip install "tf-graphscope\[plot\]"') as caught:
        gs.Results({"a": np.ones(3)}).plot("a")
    assert isinstance(caught.value, ImportError)


def test_sample_picks_that_sample_in_each_iterations_value():
    # [iterations, batch, units] (an RNN's state per step): row k is iteration k's `sample`
    value = np.random.default_rng(3).normal(size=(3, 2, 5)).astype(np.float32)
    for sample in (0, 1):
        fig = gs.Results({"rnn/while/h:0": value}, per_iteration={"rnn/while/h:0"}).plot("rnn/while/h:0", sample=sample)
        assert len(_panels(fig)) == 3
        for k, ax in enumerate(_panels(fig)):
            assert [p.get_height() for p in ax.patches] == value[k, sample].astype(np.float64).tolist()
    # [iterations, batch, h, w] per iteration as a list: row k is the heatmap of iteration k's sample,
    # all rows on one color scale (the picked values' range), with one colorbar
    maps = [np.random.default_rng(k).normal(size=(2, 3, 4)) for k in range(2)]
    fig = gs.Results({"m:0": maps}).plot("m:0", sample=1)
    for k, ax in enumerate(_panels(fig)):
        np.testing.assert_array_equal(_image(ax), maps[k][1])
        assert ax.images[0].get_clim() == (min(m[1].min() for m in maps), max(m[1].max() for m in maps))
    assert len(_colorbars(fig)) == 1
    with pytest.raises(gs.InputError, match="sample 2 is out of range"):
        gs.Results({"m:0": maps}).plot("m:0", sample=2)


def test_grids_share_one_color_scale_with_a_colorbar():
    value = np.random.default_rng(4).normal(size=(2, 4, 4, 3)) * np.array([1.0, 10.0, 100.0])
    fig = gs.Results({"x": value}).plot("x", sample=1)
    (bar,) = _colorbars(fig)
    lo, hi = value[1].min(), value[1].max()  # the drawn channels' range, by hand
    for ax in _panels(fig):
        assert ax.images[0].get_clim() == (lo, hi)
    assert bar.get_ylim() == (lo, hi)
    logits = np.random.default_rng(5).normal(size=(1, 2, 3, 3))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    fig = gs.Results({"a": probs}).plot("a")
    assert len(_colorbars(fig)) == 1 and _colorbars(fig)[0].get_ylim() == (0.0, 1.0)
    matrix = np.arange(6.0).reshape(2, 3)
    fig = gs.Results({"m": matrix}).plot("m")
    assert len(_colorbars(fig)) == 1 and _colorbars(fig)[0].get_ylim() == (0.0, 5.0)


@pytest.mark.parametrize("value", [np.ones((1, 4, 4, 2)), np.ones((3, 4)), np.ones(5), [np.ones(2)]])
def test_long_names_are_shown_whole(value):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    name = "/".join(["very_long_scope_name_%d" % k for k in range(12)]) + "/BiasAdd:0"
    fig = gs.Results({name: value}).plot(name)
    FigureCanvasAgg(fig).draw()
    title = fig._suptitle
    whole = {2: name, 1: name}.get(np.ndim(value), f"{name} (sample 0)") if not isinstance(value, list) else f"{name}: 1 iteration"
    assert title.get_text() == whole
    box, page = title.get_window_extent(), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
    assert box.width > 0.5 * page.width  # not shrunk to nothing: the name spans the figure


# --------------------------------------------------------------------------- statistics over a dataset


def _statistics(**options):
    from tests.display.test_tables import _relu_values, _stats  # a Statistics made with numpy

    return _relu_values(), _stats(_relu_values(), **options)


def test_statistics_plot_draws_each_channels_mean_std_and_range():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    values, stats = _statistics()
    conv = values["block1_conv/Relu:0"].reshape(-1, 6)
    fig = stats.plot("block1_conv/Relu:0")
    FigureCanvasAgg(fig).draw()
    (ax,) = fig.axes
    (bars,) = ax.containers  # the errorbar: points at the means, bars of ± std
    line, _, (ranges,) = bars
    np.testing.assert_array_equal(line.get_xdata(), np.arange(6))
    np.testing.assert_allclose(line.get_ydata(), conv.mean(0))
    segments = np.array(ranges.get_segments())  # each channel's bar: mean - std .. mean + std
    np.testing.assert_allclose(segments[:, :, 1], np.stack([conv.mean(0) - conv.std(0), conv.mean(0) + conv.std(0)], 1))
    whiskers = np.array(ax.collections[0].get_segments())  # min .. max
    np.testing.assert_allclose(whiskers[:, :, 1], np.stack([conv.min(0), conv.max(0)], 1))
    (dead,) = [line for line in ax.lines if line.get_label().startswith("dead")]
    assert dead.get_xdata().tolist() == [1, 4] and dead.get_label() == "dead (2)"
    assert fig._suptitle.get_text() == "block1_conv/Relu:0: 6 channels of axis 3"
    few = stats.plot("block1_conv/Relu:0", max_channels=3)
    np.testing.assert_allclose(few.axes[0].containers[0][0].get_ydata(), conv.mean(0)[:3])
    assert few._suptitle.get_text() == "block1_conv/Relu:0: 6 channels of axis 3 (the first 3 drawn)"
    with pytest.raises(gs.OptionError, match="max_channels must be a whole number >= 1"):
        stats.plot("block1_conv/Relu:0", max_channels=0)


def test_statistics_plot_draws_histograms():
    values, stats = _statistics(axis=None, bins=5)
    dense = values["dense/BiasAdd:0"]
    finite = dense[np.isfinite(dense)]
    (ax,) = stats.plot("dense/BiasAdd:0").axes
    counts, edges = np.histogram(finite, 5)  # numpy's, by hand
    assert [p.get_height() for p in ax.patches[:5]] == counts.tolist()
    np.testing.assert_allclose([p.get_x() for p in ax.patches[:5]], edges[:-1])
    np.testing.assert_allclose([p.get_width() for p in ax.patches[:5]], np.diff(edges))
    assert ax.lines[0].get_xdata()[0] == pytest.approx(finite.mean())
    # per channel: each channel's histogram as a column of the fractions of its values per bin
    values, stats = _statistics(bins=4)
    conv = values["block1_conv/Relu:0"].reshape(-1, 6)
    fig = stats.plot("block1_conv/Relu:0")
    assert len(fig.axes) == 2
    want = np.stack([np.histogram(c, 4 if c.max() > c.min() else [c.min() - 0.5 + k * 0.25 for k in range(5)])[0]
                     for c in conv.T]) / len(conv)
    np.testing.assert_allclose(np.asarray(fig.axes[1].images[0].get_array()), want.T)
