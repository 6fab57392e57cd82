"""render: exact text at 80 columns, no colour."""

import io
import shutil

import numpy as np
import pytest
from rich.console import Console

import graphscope as gs
from graphscope import demo, render
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


# --------------------------------------------------------------------------- layer trees


def test_layer_tree_marks_forks_joins_and_cut_points():
    tree = gs.trace(models.residual()).layer_tree()
    assert _text(tree) == (
        "                                                                     \n"
        " layer                type            output   params  ops           \n"
        " ─────────────────────────────────────────────────────────────────── \n"
        " residual             Functional      ?×3         759   80           \n"
        " ├─ image             InputLayer      ?×8×8×3       0    0  cut      \n"
        " ├─ stem_conv         Conv2D          ?×8×8×4     112    9  cut fork \n"
        " ├─ block1            5 layers        ?×8×8×4     316   30  cut      \n"
        " │  ├─ block1_1_conv  Conv2D          ?×8×8×4     148   10           \n"
        " │  ├─ block1_0_conv  Conv2D          ?×8×8×4      20    9           \n"
        " │  ├─ block1_2_conv  Conv2D          ?×8×8×4     148    9           \n"
        " │  ├─ block1_add     Add             ?×8×8×4       0    1  cut join \n"
        " │  └─ block1_out     ReLU            ?×8×8×4       0    1  cut fork \n"
        " ├─ block2            5 layers        ?×8×8×4     316   30  cut      \n"
        " │  ├─ block2_1_conv  Conv2D          ?×8×8×4     148   10           \n"
        " │  ├─ block2_0_conv  Conv2D          ?×8×8×4      20    9           \n"
        " │  ├─ block2_2_conv  Conv2D          ?×8×8×4     148    9           \n"
        " │  ├─ block2_add     Add             ?×8×8×4       0    1  cut join \n"
        " │  └─ block2_out     ReLU            ?×8×8×4       0    1  cut      \n"
        " ├─ pool              GlobalAverage…  ?×4           0    2  cut      \n"
        " └─ logits            Dense           ?×3          15    6  cut      \n"
        "                                                                     \n"
        "14 layers · 80 ops · 759 params\n"
        "cut: every path from the inputs passes through this output\n"
    )
    model = models.residual()
    assert sum(w.size for w in model.get_weights()) == 759  # params agree with Keras


def test_layer_tree_of_nested_and_shared_layers():
    tree = gs.tree(models.nested())
    assert [(d, label, kind) for d, label, kind, _ in tree.rows] == [
        (0, "outer", "Functional"),
        (1, "pixels", "InputLayer"),
        (1, "backbone", "Functional"),
        (2, "backbone_input", "InputLayer"),
        (2, "conv1", "Conv2D"),
        (2, "conv2", "Conv2D"),
        (1, "gap", "GlobalAveragePooling2D"),
        (1, "head", "Dense"),
    ]
    shared = _text(gs.tree(models.shared()))
    assert " ├─ shared_dense    Dense        ?×5         25    7" in shared
    assert " ├─ shared_dense@2  Dense        ?×5               5" in shared  # weights counted once
    assert " ├─ join            Concatenate  ?×10         0    2  cut join" in shared


def test_layer_tree_folds_a_long_model_and_opens_on_request():
    scope = gs.trace(models.many_blocks(30))
    tree = scope.layer_tree()
    lines = _text(tree).splitlines()
    assert len(lines) < 45 and max(len(line) for line in lines) <= 80
    assert " ├─ block7a ▸   3 layers    ?×4         60   19  cut " in lines
    assert "93 layers · 585 ops · 1830 params · ▸ folded: depth= or pattern= opens" in lines
    opened = scope.layer_tree(pattern="block7a")
    assert [label for _, label, _, _ in opened.rows] == [
        "many_blocks", "block7a", "block7a_expand", "block7a_act", "block7a_project"
    ]
    assert len(scope.layer_tree(depth=2).rows) == 1 + 33 + 90
    assert len(scope.layer_tree(depth=1).rows) == 1 + 33
    assert len(scope.layer_tree(limit=200).rows) == 1 + 33 + 90


def test_layer_tree_ops_show_loops_and_branches_as_such():
    tree = gs.tree(models.loops_and_branches(), pattern="branchy", ops=True)
    text = _text(tree)
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = [(d, label, kind) for d, label, kind, _ in tree.rows]
    assert (2, "cond", "StatelessIf") in rows and (3, "then of cond", "") in rows and (3, "else of cond", "") in rows
    assert (4, "Relu", "Relu") in rows and (4, "Exp", "Exp") in rows
    assert (3, "branch1 of indexed_case", "") in rows and (4, "Sqrt", "Sqrt") in rows
    assert not any(kind == "Const" for _, _, kind in rows)
    demo_tree = gs.tree(demo.proposal_model(variant="map_fn"), pattern="ROI", ops=True)
    demo_rows = [(d, label, kind) for d, label, kind, _ in demo_tree.rows]
    assert (2, "map/while", "StatelessWhile") in demo_rows
    assert (3, "body of while", "") in demo_rows
    assert (4, "rpn_non_max_suppression/NonMaxSuppressionV3", "NonMaxSuppressionV3") in demo_rows


def test_a_pattern_matching_nothing_says_so():
    scope = gs.trace(models.residual())
    with pytest.raises(gs.PatternError, match=r"matches no layer path of 'residual'. Did you mean 'block1_add'"):
        scope.layer_tree(pattern="block1_ad$")
    with pytest.raises(gs.PatternError, match="not a valid regular expression"):
        scope.layer_tree(pattern="(")


def test_long_names_fold_under_their_own_guides():
    tree = gs.tree(demo.proposal_model(variant="map_fn"), pattern="NonMaxSuppression", ops=True)
    text = _text(tree)
    assert "│     ├─ rpn_non_max_suppression/NonMaxSuppressionV3" not in text  # too long for 80
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    k = next(i for i, line in enumerate(lines) if "└─ rpn_non_max_sup" in line)
    assert lines[k].startswith("          └─ rpn_non_max_sup")  # under "body of while"
    rest = "".join(line.split()[0] for line in lines[k + 1:k + 3])
    assert lines[k + 1].startswith("                ") and rest == "pression/NonMaxSuppressionV3"


# --------------------------------------------------------------------------- notebooks


def test_mimebundles_hold_text_and_html():
    scope = gs.trace(models.functional())
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


def test_one_line_reprs():
    scope = gs.trace(models.functional())
    for obj in (scope, scope.tensor("dense/BiasAdd:0"), scope.find("BiasAdd"), scope.layer("dense"), scope.layer_tree()):
        assert "\n" not in repr(obj) and len(repr(obj)) < 120


# --------------------------------------------------------------------------- pictures


def test_picture_of_a_tensor_in_a_loop_groups_by_layer_and_body():
    scope = gs.trace(demo.proposal_model(variant="map_fn"))
    nms = scope.find(op_type="NonMaxSuppressionV3")[0]
    picture = scope.draw(nms, radius=4)
    source = picture.source
    assert 'label=ROI;' in source and 'label="body of while";' in source
    assert f'"{nms.op}" [label="NonMaxSuppressionV3\\n?", tooltip="{nms.op}", fillcolor="#ffe08a"];' in source
    assert '"ROI/map/while/TensorArrayV2Read/TensorListGetItem" -> "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3";' in source
    assert "Const" not in source  # constants left out
    # the radius bounds the walk: every op drawn is at most 4 ops upstream of the NMS
    drawn = {n for n in scope.graph if f'"{n}" [' in source}
    assert nms.op in drawn and len(drawn) == picture.n_ops
    near = {nms.op}
    for _ in range(4):
        near |= {p for n in near for p in scope.graph.pred[n]}
    assert drawn <= near
    layer_picture = scope.draw("rpn_class", radius=2)
    assert repr(layer_picture) == "<Picture layer rpn_class: 3 ops>"
    assert '"rpn_class_raw/BiasAdd" -> "rpn_class_logits/Reshape";' in layer_picture.source


def test_picture_svg_needs_graphviz_and_says_how_to_get_it(monkeypatch, tmp_path):
    picture = gs.trace(models.functional()).draw("dense/BiasAdd:0", radius=2)
    if shutil.which("dot"):
        svg = picture.svg()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "dense/BiasAdd" in svg
        assert picture._repr_mimebundle_()["image/svg+xml"] == svg
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    with pytest.raises(gs.GraphvizNotFoundError, match="apt install graphviz"):
        picture.svg()
    bundle = picture._repr_mimebundle_()  # a notebook still shows something useful
    assert "image/svg+xml" not in bundle and "graphviz" in bundle["text/plain"]
    assert "digraph" in bundle["text/html"]
    picture.save(str(tmp_path / "p.dot"))  # DOT needs no Graphviz
    assert (tmp_path / "p.dot").read_text().startswith("digraph")


def test_picture_of_an_unknown_name_suggests_names():
    scope = gs.trace(models.functional())
    with pytest.raises(gs.TensorNotFoundError, match="dense/BiasAdd:0"):
        scope.draw("dense/BiasAd:0")
    with pytest.raises(ValueError, match="radius"):
        scope.draw("dense/BiasAdd:0", radius=-1)


@pytest.mark.slow
def test_efficientnetb7_tree_folds_to_one_screen():
    import keras

    model = keras.applications.EfficientNetB7(weights=None, input_shape=(64, 64, 3))
    tree = gs.trace(model).layer_tree()
    lines = _text(tree).splitlines()
    assert len(lines) < 75 and max(len(line) for line in lines) <= 80  # 816 layers, 7 331 ops
    # (the input layer's name, hence column widths, depends on what Keras built before)
    assert (1, "block4a", "14 layers", "cut") in tree.rows
    assert any(line.split() == ["├─", "block4a", "▸", "14", "layers", "?×4×4×160", "143.7K", "135", "cut"] for line in lines)
    assert lines[-2].startswith("816 layers · 7331 ops · 66.7M params")
