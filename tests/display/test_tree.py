"""display.tree: layer trees, exact text at 80 columns, no colour."""


import keras
import pytest

import graphscope as gs
from graphscope import demo
from tests import models
from tests.conftest import text_at as _text


def test_layer_tree_marks_forks_joins_and_cut_points():
    tree = gs.trace(models.residual()).layer_tree()
    assert _text(tree) == (
        "                                                                       \n"
        " layer                type            output     params  ops           \n"
        " ───────────────────────────────────────────────────────────────────── \n"
        " residual             Functional      [?,3]         759   80           \n"
        " ├─ image             InputLayer      [?,8,8,3]       0    0  cut      \n"
        " ├─ stem_conv         Conv2D          [?,8,8,4]     112    9  cut fork \n"
        " ├─ block1            5 layers        [?,8,8,4]     316   30  cut      \n"
        " │  ├─ block1_1_conv  Conv2D          [?,8,8,4]     148   10           \n"
        " │  ├─ block1_0_conv  Conv2D          [?,8,8,4]      20    9           \n"
        " │  ├─ block1_2_conv  Conv2D          [?,8,8,4]     148    9           \n"
        " │  ├─ block1_add     Add             [?,8,8,4]       0    1  cut join \n"
        " │  └─ block1_out     ReLU            [?,8,8,4]       0    1  cut fork \n"
        " ├─ block2            5 layers        [?,8,8,4]     316   30  cut      \n"
        " │  ├─ block2_1_conv  Conv2D          [?,8,8,4]     148   10           \n"
        " │  ├─ block2_0_conv  Conv2D          [?,8,8,4]      20    9           \n"
        " │  ├─ block2_2_conv  Conv2D          [?,8,8,4]     148    9           \n"
        " │  ├─ block2_add     Add             [?,8,8,4]       0    1  cut join \n"
        " │  └─ block2_out     ReLU            [?,8,8,4]       0    1  cut      \n"
        " ├─ pool              GlobalAverage…  [?,4]           0    2  cut      \n"
        " └─ logits            Dense           [?,3]          15    6  cut      \n"
        "                                                                       \n"
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
    assert " ├─ shared_dense    Dense        [?,5]       25    7" in shared
    assert " ├─ shared_dense@2  Dense        [?,5]             5" in shared  # weights counted once
    assert " ├─ join            Concatenate  [?,10]       0    2  cut join" in shared
    assert "5 layers · 24 ops · 36 params" in shared  # a shared layer is one layer (model.layers)


def test_a_layer_shared_by_a_nested_model_and_its_outer_model_is_counted_once():
    """As BART's token embedding, called in the backbone and again by the Task for its logits."""
    embed = keras.layers.Dense(3, name="embed")
    x = keras.Input((3,), name="x")
    backbone = keras.Model(x, keras.layers.Dense(3, name="mix")(embed(x)), name="backbone")
    outer = keras.Model(x, embed(backbone(x)), name="outer")
    tree = gs.tree(outer)
    assert [(d, label) for d, label, _, _ in tree.rows if label == "embed"] == [(2, "embed"), (1, "embed")]
    assert f"· {outer.count_params()} params" in tree.caption  # 24, not 36


def test_layer_tree_folds_a_long_model_and_opens_on_request():
    scope = gs.trace(models.many_blocks(30))
    tree = scope.layer_tree()
    lines = _text(tree).splitlines()
    assert len(lines) < 45 and max(len(line) for line in lines) <= 80
    assert " ├─ block7a ▸   3 layers    [?,4]       60   19  cut " in lines
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
    k = next(i for i, line in enumerate(lines) if "└─ rpn_non_max_s" in line)
    assert lines[k].startswith("          └─ rpn_non_max_s")  # under "body of while"
    rest = "".join(line.split()[0] for line in lines[k + 1:k + 4])
    assert all(line.startswith("                ") for line in lines[k + 1:k + 4])
    assert lines[k].split()[1] + rest == "rpn_non_max_suppression/NonMaxSuppressionV3"


# --------------------------------------------------------------------------- notebooks


@pytest.mark.slow
def test_efficientnetb7_tree_folds_to_one_screen():
    import keras

    model = keras.applications.EfficientNetB7(weights=None, input_shape=(64, 64, 3))
    tree = gs.trace(model).layer_tree()
    lines = _text(tree).splitlines()
    assert len(lines) < 75 and max(len(line) for line in lines) <= 80  # 816 layers, 7 331 ops
    # (the input layer's name, hence column widths, depends on what Keras built before)
    assert (1, "block4a", "14 layers", "cut") in tree.rows
    assert any(line.split() == ["├─", "block4a", "▸", "14", "layers", "[?,4,4,160]", "143.7K", "135", "cut"] for line in lines)
    assert lines[-2].startswith("816 layers · 7331 ops · 66.7M params")
