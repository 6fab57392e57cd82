"""display.tables (and format): exact text at 80 columns, no colour; the views and reprs."""


import numpy as np

import graphscope as gs
from graphscope import demo
from graphscope.display import format
from tests import models
from tests.conftest import text_at as _text


def test_selection_table(functional_scope):
    scope = functional_scope
    text = _text(scope.find(op_type="BiasAdd"))
    assert text == (
        "3 tensors                                                \n"
        "                                                         \n"
        " name              layer   op type   shape       dtype   \n"
        " ─────────────────────────────────────────────────────── \n"
        " conv/BiasAdd:0    conv    BiasAdd   [?,8,8,4]   float32 \n"
        " dense/BiasAdd:0   dense   BiasAdd   [?,6]       float32 \n"
        " probs/BiasAdd:0   probs   BiasAdd   [?,3]       float32 \n"
        "                                                         \n"
    )
    assert str(scope.find(op_type="Softmax")).startswith("1 tensor\n")
    assert repr(scope.find(op_type="BiasAdd")) == "<Selection 3 tensors: conv/BiasAdd:0, dense/BiasAdd:0, probs/BiasAdd:0>"


def test_results_table():
    results = gs.Results({"a:0": np.array([0.0, 1.0, 1.0, 3.0], np.float32), "idx:0": np.array([2, 0], np.int32)})
    assert _text(results) == (
        "2 values                                           \n"
        "                                                   \n"
        " name    value        min   max   mean   histogram \n"
        " ───────────────────────────────────────────────── \n"
        " a:0     float32[4]     0     3   1.25   ▅ █    ▅  \n"
        " idx:0   int32[2]       0     2      1   █      █  \n"
        "                                                   \n"
    )


def test_sparkline():
    assert format.sparkline(np.array([0, 0, 0, 1])) == "█      ▄"
    assert format.sparkline(np.array([np.nan])) == ""


def test_results_of_loops_and_branches():
    results = gs.Results({
        "kept:0": [np.array([3, 1], np.int32), np.array([0], np.int32)],  # one entry per iteration
        "then/x:0": None,  # the branch did not run
    })
    assert _text(results) == (
        "2 values                                                    \n"
        "                                                            \n"
        " name       value              min   max   mean   histogram \n"
        " ────────────────────────────────────────────────────────── \n"
        " kept:0     list[2] of int32     0     3   1.33   █ █    █  \n"
        " then/x:0   None (not run)                                  \n"
        "                                                            \n"
    )


def test_selection_table_says_which_loop_or_branch(map_fn_scope):
    scope = map_fn_scope
    selection = scope.find(r"top_anchors:1$|NonMaxSuppressionV3:0$")
    assert _text(selection, 120) == (
        "2 tensors" + " " * 108 + "\n"
        + " " * 117 + "\n"
        " name                                                          layer           op type               shape     dtype \n"
        " " + "─" * 115 + " \n"
        " ROI/top_anchors:1                                             ROI             TopKV2                [2,200]   int32 \n"
        " ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0   ROI             NonMaxSuppressionV3   [?]       int32 \n"
        "                                                               body of while                                         \n"
        + " " * 117 + "\n"
    )


# --------------------------------------------------------------------------- whole names at any width


def test_at_80_columns_the_other_columns_give_way(map_fn_scope):
    selection = map_fn_scope.find(r"top_anchors:1$|NonMaxSuppressionV3:0$")
    assert _text(selection, 80) == (
        "2 tensors                                                              \n"
        "                                                                       \n"
        " name                                                          shape   \n"
        " ───────────────────────────────────────────────────────────────────── \n"
        " ROI/top_anchors:1                                             [2,200] \n"
        " ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0   [?]     \n"
        "                                                                       \n"
    )


def test_at_60_columns_a_long_name_gets_a_line_of_its_own(map_fn_scope):
    selection = map_fn_scope.find(r"top_anchors:1$|NonMaxSuppressionV3:0$")
    assert _text(selection, 60) == (
        "2 tensors\n"
        "ROI/top_anchors:1\n"
        "    ROI  TopKV2  [2,200]  int32\n"
        "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0\n"
        "    ROI, body of while  NonMaxSuppressionV3  [?]  int32\n"
    )


def test_results_keep_names_whole_histograms_then_statistics_give_way():
    name = "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"
    results = gs.Results({name: np.array([0, 1, 1, 3], np.int32), "a:0": np.array([0.5, 1.5], np.float32)})
    assert _text(results, 120) == (
        "2 values" + " " * 97 + "\n"
        + " " * 105 + "\n"
        " name                                                          value        min   max   mean   histogram \n"
        " " + "─" * 103 + " \n"
        " ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0   int32[4]       0     3   1.25   ▅ █    ▅  \n"
        " a:0                                                           float32[2]   0.5   1.5      1   █      █  \n"
        + " " * 105 + "\n"
    )
    assert _text(results, 80) == (
        "2 values" + " " * 66 + "\n"
        + " " * 74 + "\n"
        " name                                                          value      \n"
        " " + "─" * 72 + " \n"
        " ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0   int32[4]   \n"
        " a:0                                                           float32[2] \n"
        + " " * 74 + "\n"
    )
    assert _text(results, 60) == (
        "2 values\n"
        f"{name}\n"
        "    int32[4]  0  3  1.25  ▅ █    ▅\n"
        "a:0\n"
        "    float32[2]  0.5  1.5  1  █      █\n"
    )


def _names_whole(text, names):
    lines = text.splitlines()
    return all(any(n in line for line in lines) for n in names)


def _printed(renderable, width):
    """What graphscope prints (str(), the CLI): not cropped at the width, so that a name longer
    than the terminal stays one line, which the terminal wraps and a copy takes whole."""
    from graphscope.display.format import to_text

    return to_text(renderable, width=width)


def test_no_table_ever_splits_a_name(map_fn_scope, tmp_path):
    from graphscope.check.validate import Mismatch, Validation

    scope = map_fn_scope
    selection = gs.Selection(t for t in scope.find(r"NonMaxSuppressionV3|top_anchors|rpn_class") if not t.is_handle)
    values = scope.run(list(selection), demo.synthetic_images())
    layer = scope.layer("ROI")
    long = "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"
    report = Validation(checked=3, mismatches=[Mismatch(long, "replay", "max |difference| 0.5 at [3]; " * 3)],
                        skipped={long.rpartition(":")[0]: "inside a loop or branch: replayed with it"})
    cases = [(selection, selection.names), (values, list(values)), (layer, [*layer.inputs.names, *layer.outputs.names]),
             (report, [long, long.rpartition(":")[0]])]
    for width in (30, 45, 60, 72, 80, 100, 120, 160):
        for renderable, names in cases:
            assert _names_whole(_printed(renderable, width), names), (width, type(renderable).__name__)


# --------------------------------------------------------------------------- layer trees


def test_mimebundles_hold_text_and_html(functional_scope):
    scope = functional_scope
    values = scope.run("dense/BiasAdd:0", models.sample_inputs(scope.model)[0])
    for obj in (scope, scope.find("BiasAdd"), scope.layer("dense"), values, scope.layer_tree()):
        bundle = obj._repr_mimebundle_()
        assert bundle["text/plain"] == repr(obj)
        assert bundle["text/html"].startswith("<!DOCTYPE html>") or "<pre" in bundle["text/html"]
    html = scope.find("BiasAdd")._repr_html_()
    assert "conv/BiasAdd:0" in html and "<span" in html
    assert "dense" in scope._repr_html_() and "cut" in scope._repr_html_()
    assert "ops: Placeholder ×2, ReadVariableOp ×2, BiasAdd ×1, MatMul ×1, Tanh ×1" in str(scope.layer("dense"))
    assert repr(values) == "<Results 1 value: dense/BiasAdd:0 float32[3,6]>"


def test_one_line_reprs(functional_scope):
    scope = functional_scope
    for obj in (scope, scope.tensor("dense/BiasAdd:0"), scope.find("BiasAdd"), scope.layer("dense"), scope.layer_tree()):
        assert "\n" not in repr(obj) and len(repr(obj)) < 120


def test_str_is_as_wide_as_the_terminal(map_fn_scope, monkeypatch):
    """`print(result)` fits the terminal it prints to (`COLUMNS` where set); 100 columns where
    there is no terminal (pytest's captured output). A new user's 80-column terminal got tables
    made for 100."""
    selection = map_fn_scope.find(r"top_anchors:1$|NonMaxSuppressionV3:0$")
    monkeypatch.setenv("COLUMNS", "80")
    assert str(selection) == format.to_text(selection, width=80) != format.to_text(selection, width=100)
    assert max(len(line) for line in str(selection).splitlines()) <= 80
    monkeypatch.delenv("COLUMNS")
    assert str(selection) == format.to_text(selection, width=100)


# --------------------------------------------------------------------------- statistics over a dataset


def _stats(values, *, axis=-1, bins=None, samples=8, batches=2):
    """A Statistics of `values` ({name: array}) made with numpy, as Scope.statistics would give it."""
    from graphscope.ir.statistics import Moments, Statistics, TensorStats, histogram_edges

    out = {}
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        rows = v.reshape(-1, 1) if axis is None else np.moveaxis(v, axis, -1).reshape(-1, v.shape[axis])
        finite = np.isfinite(rows)
        cols = [rows[finite[:, c], c] for c in range(rows.shape[1])]
        count = np.array([len(c) for c in cols], np.float64)
        mean = np.array([c.mean() if len(c) else 0.0 for c in cols])
        m2 = np.array([((c - c.mean()) ** 2).sum() if len(c) else 0.0 for c in cols])
        lo = np.array([c.min() if len(c) else np.inf for c in cols])
        hi = np.array([c.max() if len(c) else -np.inf for c in cols])
        zeros = np.array([(c == 0).sum() for c in cols], np.float64)
        moments = Moments(count, mean, m2, lo, hi, zeros, (~finite).sum(0).astype(np.float64))
        edges = None
        if bins:
            edges = histogram_edges(lo, hi, bins)
            moments = moments.with_histogram(np.stack([np.histogram(c, e)[0] for c, e in zip(cols, edges)]))
        out[name] = TensorStats.of(name, moments, axis=None if axis is None else axis % v.ndim, dtype="float32",
                                   edges=edges)
    return Statistics(out, samples=samples, batches=batches)


def _relu_values():
    rng = np.random.default_rng(0)
    conv = np.maximum(rng.normal(size=(8, 3, 3, 6)) + np.array([0.5, -9, 0.2, 0.0, -9, 1.0]), 0.0)  # two dead
    dense = rng.normal(size=(8, 4))
    dense[1, 2] = np.nan
    return {"block1_conv/Relu:0": conv, "dense/BiasAdd:0": dense}


def test_statistics_table():
    stats = _stats(_relu_values())
    assert repr(stats) == "<Statistics of 2 tensors over 8 samples>"
    assert _text(stats, 120) == (
        "statistics of 2 tensors over 8 samples (2 batches)                                                            \n"
        "                                                                                                              \n"
        " name                 entries   count    mean     std     min    max   zeros   nan/inf   dead   channel means \n"
        " ──────────────────────────────────────────────────────────────────────────────────────────────────────────── \n"
        " block1_conv/Relu:0         6      72   0.443   0.688       0   3.26   0.583         0      2   █ █  ▅ ▅      \n"
        " dense/BiasAdd:0            4    7..8   0.224    0.94   -1.94      2       0         1      0   █ █   ██      \n"
        "                                                                                                              \n"
        "over all entries' finite values; zeros: fraction of 0s; dead: entries never > 0\n"
    )
    # 80 columns: the histogram, the counts, then the zero fractions give way; a NaN keeps nan/inf
    assert _text(stats, 80) == (
        "statistics of 2 tensors over 8 samples (2 batches)                            \n"
        "                                                                              \n"
        " name                 entries    mean     std     min    max   nan/inf   dead \n"
        " ──────────────────────────────────────────────────────────────────────────── \n"
        " block1_conv/Relu:0         6   0.443   0.688       0   3.26         0      2 \n"
        " dense/BiasAdd:0            4   0.224    0.94   -1.94      2         1      0 \n"
        "                                                                              \n"
        "over all entries' finite values; zeros: fraction of 0s; dead: entries never > 0\n"
    )
    values = _relu_values()
    conv = values["block1_conv/Relu:0"]
    assert stats.dead()["block1_conv/Relu:0"].tolist() == [1, 4] == np.flatnonzero(conv.max((0, 1, 2)) <= 0).tolist()
    whole = stats["dense/BiasAdd:0"].whole()  # the row's figures: numpy's over the finite values
    finite = values["dense/BiasAdd:0"][np.isfinite(values["dense/BiasAdd:0"])]
    np.testing.assert_allclose([whole.mean, whole.std, whole.min, whole.max], [finite.mean(), finite.std(),
                                                                               finite.min(), finite.max()])
    assert (whole.count, whole.nonfinite) == (31, 1)
    assert "block1_conv/Relu:0" in stats._repr_html_() and str(stats).startswith("statistics of 2 tensors")
    assert stats._repr_mimebundle_()["text/plain"] == repr(stats) and "<pre" in stats["dense/BiasAdd:0"]._repr_html_()
    long = _stats({"/".join(f"scope_{k}" for k in range(8)) + "/Relu:0": conv})
    text = _text(long, 80)  # a name wider than the table leaves room for: whole, on a line of its own
    assert "\nscope_0/scope_1/scope_2/scope_3/scope_4/scope_5/scope_6/scope_7/Relu:0\n" in text


def test_statistics_per_tensor_table_with_histograms():
    stats = _stats(_relu_values(), axis=None, bins=4)
    assert _text(stats, 80) == (
        "statistics of 2 tensors over 8 samples (2 batches)                          \n"
        "                                                                            \n"
        " name                  mean     std     min    max   zeros   nan/inf   dead \n"
        " ────────────────────────────────────────────────────────────────────────── \n"
        " block1_conv/Relu:0   0.443   0.688       0   3.26   0.583         0      0 \n"
        " dense/BiasAdd:0      0.224    0.94   -1.94      2       0         1      0 \n"
        "                                                                            \n"
        "over all entries' finite values; zeros: fraction of 0s; dead: entries never > 0\n"
    )
    assert " histogram \n" in _text(stats, 100)  # the values' own histogram, with room for it
    one = stats["dense/BiasAdd:0"]
    assert repr(one) == "<TensorStats dense/BiasAdd:0: per tensor>"
    assert _text(one, 80) == (
        "dense/BiasAdd:0 (float32): one figure for the tensor                           \n"
        "                                                                               \n"
        " channel   count    mean    std     min   max   zeros   nan/inf      histogram \n"
        " ───────────────────────────────────────────────────────────────────────────── \n"
        "     all      31   0.224   0.94   -1.94     2       0         1      ▄██▇      \n"
        "                                                                               \n"
    )
    counts, edges = one.histogram
    finite = _relu_values()["dense/BiasAdd:0"]
    assert counts.tolist() == np.histogram(finite[np.isfinite(finite)], edges)[0].tolist()
    assert format.bars(counts) == "▄██▇" and format.bars(np.arange(20), width=4) == "▂▄▆█"


def test_tensor_stats_table_one_row_per_channel():
    stats = _stats(_relu_values())
    one = stats["block1_conv/Relu:0"]
    assert repr(one) == "<TensorStats block1_conv/Relu:0: 6 entries on axis 3>"
    assert _text(one, 80) == (
        "block1_conv/Relu:0 (float32): 6 channels of axis 3                     \n"
        "                                                                       \n"
        " channel   count    mean     std   min    max   zeros   nan/inf        \n"
        " ───────────────────────────────────────────────────────────────────── \n"
        "       0      72   0.753   0.792     0   3.26   0.292         0        \n"
        "       1      72       0       0     0      0       1         0   dead \n"
        "       2      72   0.423   0.559     0   2.02     0.5         0        \n"
        "       3      72   0.349   0.597     0   3.07   0.597         0        \n"
        "       4      72       0       0     0      0       1         0   dead \n"
        "       5      72    1.13   0.754     0   2.96   0.111         0        \n"
        "                                                                       \n"
        "all channels: mean 0.443, std 0.688, min 0, max 3.26; 2 dead\n"
    )
    wide = _stats({"x:0": np.random.default_rng(1).normal(size=(5, 40))})["x:0"]
    lines = _text(wide, 80).splitlines()
    assert lines[4].split()[0] == "0" and lines[35].split()[0] == "31"  # the first 32 channels
    assert lines[-2:] == ["... 8 more channels", "all channels: mean -0.0737, std 0.924, min -2.71, max 2.87; 0 dead"]
