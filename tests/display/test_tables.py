"""display.tables (and format): exact text at 80 columns, no colour; the views and reprs."""


import numpy as np

import graphscope as gs
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
    assert _text(scope.find(r"top_anchors:1$|NonMaxSuppressionV3:0$")) == (
        "2 tensors                                                                       \n"
        "                                                                                \n"
        " name                     layer           op type               shape     dtype \n"
        " ────────────────────────────────────────────────────────────────────────────── \n"
        " ROI/top_anchors:1        ROI             TopKV2                [2,200]   int32 \n"
        " ROI/map/while/rpn_non_   ROI             NonMaxSuppressionV3   [?]       int32 \n"
        " max_suppression/NonMax   body of while                                         \n"
        " SuppressionV3:0                                                                \n"
        "                                                                                \n"
    )


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
