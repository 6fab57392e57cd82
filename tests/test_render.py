"""render: exact text at 80 columns, no colour."""

import io

import numpy as np
from rich.console import Console

import graphscope as gs
from graphscope import render
from tests import models


def _text(renderable):
    console = Console(width=80, color_system=None, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_selection_table():
    scope = gs.trace(models.functional())
    text = _text(scope.find(op_type="BiasAdd"))
    assert text == (
        "3 tensors                                                   \n"
        "                                                            \n"
        " name              layer   op type   shape          dtype   \n"
        " ────────────────────────────────────────────────────────── \n"
        " conv/BiasAdd:0    conv    BiasAdd   (?, 8, 8, 4)   float32 \n"
        " dense/BiasAdd:0   dense   BiasAdd   (?, 6)         float32 \n"
        " probs/BiasAdd:0   probs   BiasAdd   (?, 3)         float32 \n"
        "                                                            \n"
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
    assert render.sparkline(np.array([0, 0, 0, 1])) == "█      ▄"
    assert render.sparkline(np.array([np.nan])) == ""


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


def test_selection_table_says_which_loop_or_branch():
    from graphscope import demo

    scope = gs.trace(demo.proposal_model(variant="map_fn"))
    assert _text(scope.find(r"top_anchors:1$|NonMaxSuppressionV3:0$")) == (
        "2 tensors                                                                       \n"
        "                                                                                \n"
        " name                    layer           op type               shape      dtype \n"
        " ────────────────────────────────────────────────────────────────────────────── \n"
        " ROI/top_anchors:1       ROI             TopKV2                (2, 200)   int32 \n"
        " ROI/map/while/rpn_non   ROI             NonMaxSuppressionV3   (?,)       int32 \n"
        " _max_suppression/NonM   body of while                                          \n"
        " axSuppressionV3:0                                                              \n"
        "                                                                                \n"
    )
