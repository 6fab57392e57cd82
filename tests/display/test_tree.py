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



def test_a_tf_keras_lookup_adapted_to_data_counts_its_parameters_as_keras_does():
    """An adapted tf_keras StringLookup holds a `VocabWeightHandler` among its weights (no
    shape): the tree lists it and the model's parameters as Keras counts them."""
    tf_keras = pytest.importorskip("tf_keras")
    lookup = tf_keras.layers.StringLookup(name="lookup")
    lookup.adapt([["a"], ["b"], ["a"]])
    text = tf_keras.Input((1,), dtype="string", name="text")
    embed = tf_keras.layers.Embedding(4, 2, name="embed")
    model = tf_keras.Model(text, embed(lookup(text)), name="words")
    tree = gs.tree(model)
    assert [label for _, label, _, _ in tree.rows] == ["words", "text", "lookup", "embed"]
    assert f"· {model.count_params()} params" in tree.caption
    assert "lookup" in _text(gs.trace(model, quiet=True))  # the scope's view is its tree


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
    assert lines[k].startswith("          └─ rpn_non_max_suppression/ ")  # under "body of while", cut at its "/"
    assert lines[k + 1].startswith("                NonMaxSuppressionV3 ")


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
    assert lines[-3].startswith("816 layers · 7331 ops · 66.7M params")
    assert lines[-2] == "⋮ 5 of 64 rows left out at limit=60: limit=64 shows them"  # its 55 blocks
    assert len(tree.rows) == 59 and len(gs.trace(model).layer_tree(limit=64).rows) == 64


# --------------------------------------------------------------------------- 80 columns (issue 25)


def _body(text):
    """The table's lines below its header rule, and where its first column ends (the header's
    `type` starts)."""
    lines = text.splitlines()
    header = next(k for k, line in enumerate(lines) if line.lstrip().startswith("layer "))
    end = next(k for k in range(header + 2, len(lines)) if not lines[k].strip())
    return lines[header + 2:end], lines[header].index(" type ") + 1


def _names_whole(tree, text, room):
    """Each row's name, found whole on one line of the first column (in row order) wherever its
    guide and name fit in `room` columns; where it does not, broken only after a `_` or `/`."""
    body, first = _body(text)
    cells = [line[:first].rstrip() for line in body]
    k = 0
    for depth, label, _, _ in tree.rows:
        while k < len(cells) and not cells[k].lstrip(" │").startswith(("├", "└")) and depth:
            k += 1  # continuation lines
        assert k < len(cells), f"{label!r} not shown:\n{text}"
        name = cells[k].lstrip(" │├└─").removesuffix(" ▸")
        if name != label:  # broken: the rest follows on the lines under it
            assert 3 * depth + len(label) > room, f"{label!r} broken though it fits:\n{text}"
            rest = []
            while k + 1 < len(cells) and not cells[k + 1].lstrip(" │").startswith(("├", "└")):
                k += 1
                rest.append(cells[k].lstrip(" │").removesuffix(" ▸"))
            parts = [name, *[r for r in rest if r]]
            assert "".join(parts) == label, (parts, label)
            assert all(p.endswith(("_", "/")) for p in parts[:-1]), f"{label!r} broken within a word: {parts}"
        k += 1


def _guides_continue(text):
    """A guide's vertical line runs on through every line between a row and its next sibling."""
    body, first = _body(text)
    for k in range(1, len(body) - 1):
        for c in range(first):
            above, here = body[k - 1][c:c + 1], body[k][c:c + 1]
            below = next((line[c:c + 1] for line in body[k + 1:] if line[c:c + 1] != " "), " ")
            if above in ("│", "├") and below in ("│", "├", "└"):
                assert here in ("│", "├", "└", "⋮"), f"guide broken at line {k}, column {c}:\n" + "\n".join(body)


def _deep_model():
    """keras-hub-like nesting: a Task around a backbone around transformer layers around their
    attention, each a functional model, with keras-hub's long layer names."""
    def wrap(inner, name, extra):
        x = keras.Input((4,), name=f"{name}_input")
        y = inner(x)
        for layer_name in extra:
            y = keras.layers.Dense(4, name=layer_name)(y)
        return keras.Model(x, y, name=name)

    x = keras.Input((4,), name="query_input")
    q = keras.layers.Dense(4, name="query_projection")(x)
    attention = keras.Model(x, keras.layers.Dense(4, name="attention_output_dense")(q), name="self_attention_layer")
    layer = wrap(attention, "transformer_layer_0", ["feedforward_intermediate_dense", "feedforward_output_dense"])
    encoder = wrap(layer, "encoder_stack", ["encoder_final_layer_norm_dense"])
    backbone = wrap(encoder, "distil_bert_backbone", ["pooled_output_projection"])
    return wrap(backbone, "distil_bert_text_classifier", ["classification_head_logits_dense"])


def test_names_come_first_at_80_columns():
    """The trial's `feedforward_intermediate_` / `dense` while the type column was cut, and
    keras-hub's deep trees with 9-column names: the type column gives way first."""
    model = _deep_model()
    tree = gs.tree(model)
    text = _text(tree)
    assert max(len(line) for line in text.splitlines()) <= 80
    def count(m):
        return sum(1 + (count(lay) if isinstance(lay, keras.Model) else 0) for lay in m.layers)

    assert len(tree.rows) == 1 + count(model) == 17  # everything open
    _names_whole(tree, text, room=80 - 30)  # type, output, params, ops and the box take < 30
    assert "feedforward_intermediate_dense" in text and "classification_head_logits_dense" in text


def test_a_long_name_breaks_after_an_underscore_under_its_guides():
    x = keras.Input((4,), name="x")
    y = x
    for k in range(3):
        y = keras.layers.Dense(4, name=f"an_uncommonly_long_layer_name_for_a_tree_at_eighty_columns_{k}")(y)
    tree = gs.tree(keras.Model(x, y, name="long_names"))
    text = _text(tree)
    assert max(len(line) for line in text.splitlines()) <= 80
    _names_whole(tree, text, room=80 - 30)
    assert "an_uncommonly_long_layer_name_for_a_tree_at_eighty_columns_0" not in text  # it had to break
    _guides_continue(text)


class _Three(keras.layers.Layer):
    def call(self, x):
        return x, 2.0 * x, x + 1.0


def test_guides_go_on_beside_a_multi_output_rows_other_lines():
    x = keras.Input((2, 3, 4), name="x")
    a, b, c = _Three(name="three")(x)
    inner = keras.Model(x, [a, b, c], name="inner")
    y = keras.Input((2, 3, 4), name="y")
    outer = keras.Model(y, keras.layers.Add(name="sum")(inner(y)), name="outer")
    tree = gs.tree(outer)
    text = _text(tree)
    body, _ = _body(text)
    k = next(i for i, line in enumerate(body) if "three" in line)
    assert body[k + 1].split()[0] == "│"  # its shapes take 2 lines, `sum` still to come
    assert "[?,2,3,4]" in body[k + 1]
    _guides_continue(text)


def _interleaved(n):
    """NASNet-like: layers whose names share a prefix only in pairs, interleaved, too many to fit
    a screen even grouped."""
    x = keras.Input((2,), name="x")
    y = x
    for k in range(n):
        y = keras.layers.Dense(2, name=f"separable_conv_{k}")(y)
        y = keras.layers.Dense(2, name=f"separable_bn_{k}")(y)
        y = keras.layers.Activation("relu", name=f"activation_{k}")(y)
    return keras.Model(x, keras.layers.Dense(2, name="predictions")(y), name="interleaved")


def _groups(rows):
    """Each group row with the rows of its children (from the rows' depths)."""
    out = []
    for k, (depth, label, kind, _) in enumerate(rows):
        if not kind.endswith("layers"):
            continue
        children = []
        for d, child, child_kind, _ in rows[k + 1:]:
            if d <= depth:
                break
            if d == depth + 1:
                children.append((child, child_kind))
        out.append((label, children))
    return out


def test_the_row_limit_is_kept_and_the_footer_says_what_it_left_out():
    model = _interleaved(40)
    scope = gs.trace(model)
    tree = scope.layer_tree()
    text = _text(tree)
    lines = text.splitlines()
    body, _ = _body(text)
    assert len(tree.rows) <= 60 and len(body) == 60 and max(len(line) for line in lines) <= 80
    every = scope.layer_tree(limit=10_000)
    total = len(every.rows)
    assert total > 60
    assert f"⋮ {total - len(tree.rows)} of {total} rows left out at limit=60: limit={total} shows them" in lines
    assert [label for _, label, _, _ in tree.rows[-3:]] == [layer.name for layer in model.layers[-3:]]  # its end
    shown = [label for _, label, _, _ in every.rows]
    assert [lay.name for lay in model.layers] == [x for x in shown if x in {lay.name for lay in model.layers}]
    assert len(scope.layer_tree(limit=30).rows) <= 30
    assert len(scope.layer_tree(depth=1).rows) == total  # a depth asked for shows it all


def test_groups_hold_more_than_two_and_never_just_one_group():
    model = _interleaved(5)
    rows = gs.tree(model).rows
    for label, children in _groups(rows):  # no `activation ▸` of 2
        assert len(children) > 2, (label, children)
    # ConvNeXt-like: every name one prefix deep and deeper (convnext > convnext_tiny > ..._stage_0)
    x = keras.Input((2,), name="input_layer")
    y = x
    for stage in range(2):
        for block in range(3):
            for part in ("depthwise", "layernorm", "pointwise"):
                y = keras.layers.Dense(2, name=f"convnext_tiny_stage_{stage}_block_{block}_{part}")(y)
    y = keras.layers.Dense(2, name="convnext_tiny_head_dense")(y)
    convnext = keras.Model(x, y, name="convnext")
    rows = gs.tree(convnext, depth=9).rows
    groups = _groups(rows)
    assert groups
    for label, children in groups:
        assert len(children) > 2 and not (len(children) == 1 and children[0][1].endswith("layers")), (label, children)
        assert [c for c, _ in children if c.startswith(label)] == [c for c, _ in children], (label, children)
    top = [(label, kind) for d, label, kind, _ in rows if d == 1]
    assert top[0] == ("input_layer", "InputLayer") and len(top) == 4  # no `convnext_tiny` holding all
    assert [label for label, _ in top[1:3]] == ["convnext_tiny_stage_0_block", "convnext_tiny_stage_1_block"]


@pytest.mark.slow
def test_nasnetmobile_tree_at_80_columns():
    model = keras.applications.NASNetMobile(weights=None, input_shape=(32, 32, 3), classes=5)
    tree = gs.trace(model).layer_tree()
    text = _text(tree)
    assert len(tree.rows) <= 60 and max(len(line) for line in text.splitlines()) <= 80
    for label, children in _groups(gs.trace(model).layer_tree(depth=2).rows):
        assert len(children) > 2 and not (len(children) == 1 and children[0][1].endswith("layers")), (label, children)
    _guides_continue(text)
    assert "rows left out at limit=60" in text


class Block(keras.layers.Layer):
    """A layer holding a Dense, as a keras-hub encoder holds its sublayers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(4, name="inner")

    def call(self, x):
        return self.inner(x)


def test_the_layers_inside_a_shared_layers_later_call_show_no_parameters_again():
    """ALBERT calls each group's encoder twice: the second call's row shows no parameters, and
    neither do the rows of the layers inside it (they showed their weights again, so the rows
    added up to more than the model has)."""
    block = Block(name="block")
    x = keras.Input((4,), name="x")
    model = keras.Model(x, block(block(x)), name="twice")
    text = _text(gs.tree(model, depth=3))
    assert " ├─ block     Block       [?,4]       20    6  cut " in text
    assert " │  └─ inner  Dense       [?,4]       20    6  cut " in text
    assert " └─ block@2   Block       [?,4]             4  cut " in text
    assert "    └─ inner  Dense       [?,4]             4  cut " in text  # was: 20 again
    assert f"· {model.count_params()} params" in text
