"""query: find / ancestors / descendants / lookups, as plain functions and through Scope."""

import keras
import networkx as nx
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope import demo
from graphscope.ir import query
from tests import models


@pytest.fixture(scope="module")
def chain():
    return gs.trace(models.deep_chain(40))


def test_find_pattern_op_type_and_layer(functional_scope):
    scope = functional_scope
    assert scope.find(r"dense/BiasAdd:0").names == ["dense/BiasAdd:0"]
    assert "dense/BiasAdd/ReadVariableOp:0" in scope.find(r"dense/BiasAdd").names  # re.search
    assert scope.find(op_type="BiasAdd").names == ["conv/BiasAdd:0", "dense/BiasAdd:0", "probs/BiasAdd:0"]
    assert scope.find(op_type="Bias") == gs.Selection()  # op_type must match fully
    assert all(t.layer == "bn" for t in scope.find(layer="bn"))
    assert query.find(scope.graph, "Softmax").names == scope.find("Softmax").names


def test_results_are_deterministic_and_topological(chain):
    again = gs.trace(models.deep_chain(40))
    assert chain.find("MatMul").names == again.find("MatMul").names
    names = chain.find(op_type="MatMul").names
    assert names == [f"d{i}/MatMul:0" for i in range(40)]


def test_ancestors_have_no_depth_limit(chain):
    last = chain.layer("d39").output
    up = chain.ancestors(last, op_type="MatMul")
    assert len(up) == 40 and up[0].name == "d0/MatMul:0"
    assert last.name not in chain.ancestors(last).names
    assert chain.ancestors(last, r"^d0/").names[0].startswith("d0/")


def test_descendants_follow_only_the_named_output(chain):
    down = chain.descendants("d37/Tanh:0", op_type="Tanh")
    assert down.names == ["d38/Tanh:0", "d39/Tanh:0"]
    assert chain.descendants(chain.outputs, op_type="Tanh") == gs.Selection()


def test_ancestors_list_only_the_outputs_read_on_the_way():
    """Hunt: ancestors listed every output of each op upstream: `Split:1` beside the `Split:0` a
    Dense reads, all ten outputs of an LSTM's loop where its output reads one. Oracles: Keras'
    record of which split output the Dense takes; TensorFlow's graph walked by hand from the
    LSTM's output through op inputs."""
    inputs = keras.Input((8,), name="x")
    halves = keras.layers.Lambda(lambda t: tf.split(t, 2, axis=-1), name="halves")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(2, name="da")(halves[0]), keras.layers.Dense(2, name="db")(halves[1])])
    scope = gs.trace(model, quiet=True)
    for name in "da", "db":
        taken = model.get_layer(name)._inbound_nodes[0].input_tensors[0]._keras_history.tensor_index
        split = {t.index for t in scope.ancestors(scope.layer(name).output, op_type="Split")}
        assert split == {taken}, name

    model = models.recurrent("LSTM")
    scope = gs.trace(model, quiet=True)
    (out,) = scope.outputs
    graph = tf.function(model).get_concrete_function(tf.TensorSpec((None, 4, 3))).graph
    seen, stack = set(), [graph.get_tensor_by_name(out.raw_name)]
    while stack:  # the top-level tensors the output is computed from
        t = stack.pop()
        if t.name not in seen:
            seen.add(t.name)
            stack.extend(t.op.inputs)
    want = {t for t in seen if graph.get_tensor_by_name(t).op.type in ("While", "StatelessWhile")}
    assert want and {t.raw_name for t in scope.ancestors(out, op_type="(Stateless)?While")} == want


@tf.function
def _pair(a, b):
    return tf.tanh(a), tf.nn.relu(b)


class _Pair(keras.layers.Layer):
    def call(self, xs):
        a, b = _pair(xs[0], xs[1])
        return a * 2.0, b * 3.0


def test_walks_through_a_helper_follow_each_of_its_results():
    """Hunt: a `tf.function` helper taking two inputs and returning one result from each made
    every result depend on both: `ancestors` of `ha` listed input `b`, `descendants` of `a`
    listed `hb`. Oracle: Keras run again with one input changed (what changes depends on it)."""
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    pa, pb = _Pair(name="pair")([a, b])
    model = keras.Model([a, b], [keras.layers.Dense(2, name="ha")(pa), keras.layers.Dense(2, name="hb")(pb)])
    scope = gs.trace(model, quiet=True)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 3)).astype(np.float32) for _ in range(2)]
    base = [np.asarray(v) for v in model(x)]
    for i, name in enumerate("ab"):
        moved = [v + 1.0 if j == i else v for j, v in enumerate(x)]
        changed = {out for out, v, w in zip(("ha", "hb"), base, model(moved)) if not np.allclose(v, w)}
        assert changed == {("ha", "hb")[i]}  # the model: each output from one input
        down = {t.layer for t in scope.descendants(f"{name}:0") if t.layer in ("ha", "hb")}
        assert down == changed, name
        for out in "ha", "hb":
            up = {t.name for t in scope.ancestors(scope.layer(out).output)} & {"a:0", "b:0"}
            assert (f"{name}:0" in up) == (out in changed), (name, out)


def test_ancestor_walk_reaches_into_custom_layer_loops(map_fn_scope):
    scope = map_fn_scope
    nms = scope.ancestors(scope.layer("ROI").output, op_type=r"NonMaxSuppressionV\d")
    assert nms.names == ["ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"]
    assert scope.descendants("rpn_class/Softmax:0", op_type=r"NonMaxSuppressionV\d") == nms


def test_lookup_by_canonical_raw_and_op_name(functional_scope):
    scope = functional_scope
    t = scope.tensor("dense/BiasAdd:0")
    assert scope.tensor("dense/BiasAdd") is t
    assert scope.tensor(t.raw_name) is t
    assert scope.tensor(t.raw_name.rpartition(":")[0]) is t
    assert t.raw_name.startswith("functional_cnn")
    assert repr(t) == "<Tensor dense/BiasAdd:0 BiasAdd float32[?,6] layer=dense>"


def test_unknown_name_suggests_the_closest(functional_scope):
    scope = functional_scope
    with pytest.raises(gs.TensorNotFoundError, match=r"Did you mean 'dense/BiasAdd:0'") as e:
        scope.tensor("dense/BiasAd:0")
    assert isinstance(e.value, KeyError)
    assert "\\n" not in str(e.value) and not str(e.value).startswith('"')


def test_op_with_several_outputs_is_ambiguous():
    import keras
    import tensorflow as tf

    class Halves(keras.layers.Layer):
        def call(self, x):
            a, b = tf.split(x, 2, axis=-1)
            return a * b

        def compute_output_shape(self, s):
            return (s[0], s[1] // 2)

    x_in = keras.Input((4,))
    scope = gs.trace(keras.Model(x_in, Halves(name="halves")(x_in)))
    with pytest.raises(gs.AmbiguousMatchError, match=r"2 outputs.*halves/split:0, halves/split:1"):
        scope.tensor("halves/split")
    assert scope.tensor("halves/split:1").index == 1


def test_invalid_regex(functional_scope):
    scope = functional_scope
    with pytest.raises(gs.PatternError, match=r"not a valid regular expression"):
        scope.find("dense/(")
    with pytest.raises(gs.PatternError, match="op_type"):
        scope.find(op_type="[")


def test_layers_by_name_index_and_path():
    model = models.functional()
    scope = gs.trace(model)
    for i, lay in enumerate(model.layers):
        assert scope.layer(i).name == lay.name
    assert scope.layer(-1).name == "probs"
    with pytest.raises(gs.LayerNotFoundError, match=r"0\.\.7"):
        scope.layer(8)
    with pytest.raises(gs.LayerNotFoundError, match="Did you mean 'dense'"):
        scope.layer("dens")
    assert repr(scope) == "<Scope functional_cnn: 52 ops, 8 layers>"
    assert repr(scope.layer("dense")).startswith("<Layer dense Dense:")


def test_multi_output_layer_output_is_ambiguous():
    scope = gs.trace(models.with_tf_function())
    assert scope.layer("soft").output.op_type == "AddV2"
    scope2 = gs.trace(models.multi_input())
    assert len(scope2.outputs) == 2


TRICKY = [r"BiasAdd", r"^d1", r"d1\d/", r"(?i)matmul", r"Mat|Tanh", r"d3.*Tanh:0$", r"d[12]0/MatMul",
          r"\w+/MatMul:0", r"d1?0/", r"x{0}MatMul", r"(?:d1)?5/Tanh", r"Tanh:0\Z", r"\Ad2", r"a\nb"]


@pytest.mark.parametrize("pattern", TRICKY)
def test_find_matches_plain_re_search(chain, pattern):
    import re

    want = [t.name for t in query.find(chain.graph) if re.search(pattern, t.name)]
    assert chain.find(pattern).names == want


def test_find_literal_shortcut_property(chain):
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from(["d", "1", "2", "/", "Mat", "Mul", "Tanh", ":0", r"\d", ".", "*", "?", "^", "$",
                              "|", "(", ")", "[12]", "+", r"\w", "x{0}", "(?:d)", "a"])
    names = [t.name for t in query.find(chain.graph)]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(pieces, min_size=1, max_size=8).map("".join))
    def check(pattern):
        try:
            rx = re.compile(pattern)
        except re.error:
            return
        assert chain.find(pattern).names == [n for n in names if rx.search(n)]

    check()


# --------------------------------------------------------------------------- cut points


def test_cut_points_skip_forks_and_split_the_model():
    model = models.residual()
    scope = gs.trace(model)
    cuts = scope.cut_points()
    assert cuts.names == [
        "image:0", "stem_conv/BiasAdd:0", "block1_add/Add:0", "block1_out/Relu:0",
        "block2_add/Add:0", "block2_out/Relu:0", "pool/Mean:0", "logits/BiasAdd:0",
    ]
    assert cuts == gs.cut_points(scope.graph)
    x = models.sample_inputs(model)[0]
    full = model(x).numpy()
    for cut in cuts[1:]:  # head from the input, tail fed by the cut alone: together, the model
        head = scope.run(cut, x)[cut.name]
        layer = model.get_layer(cut.layer)
        np.testing.assert_allclose(head, keras.Model(model.input, layer.output)(x), rtol=1e-5, atol=1e-5)
        tail = scope.executor(scope.outputs, feeds=[cut])
        np.testing.assert_allclose(tail(head)[scope.outputs[0].name], full, rtol=1e-5, atol=1e-5)


def test_a_tensor_inside_a_fork_is_no_cut_point():
    scope = gs.trace(models.residual())
    inside = scope.layer("block1_1_conv").output
    assert inside not in scope.cut_points(every_tensor=True)
    with pytest.raises(gs.DisconnectedError, match="image"):  # the shortcut still needs the input
        scope.executor(scope.outputs, feeds=[inside])


def test_every_tensor_cut_points_include_chains_inside_layers(functional_scope):
    scope = functional_scope
    every = scope.cut_points(every_tensor=True)
    assert set(scope.cut_points()) < set(every)
    assert {"conv/convolution:0", "conv/BiasAdd:0", "dense/MatMul:0"} <= set(every.names)
    assert not any(t.op_type in ("Const", "ReadVariableOp") for t in every)


def test_cut_points_of_several_outputs_stop_before_they_part(demo_scope):
    model = models.multi_input()
    scope = gs.trace(model)
    assert scope.cut_points().names == ["add/Add:0"]  # where both inputs have met, before the outputs part
    x = models.sample_inputs(model)
    tail = scope.executor(scope.outputs, feeds=["add/Add:0"])
    np.testing.assert_allclose(tail(scope.run("add/Add:0", tuple(x))["add/Add:0"])[scope.outputs[1].name],
                               model(x)[1], rtol=1e-5)
    assert demo_scope.cut_points().names == ["input_image:0", "conv1/Relu:0", "conv2/Relu:0", "rpn_conv_shared/Relu:0"]


def test_every_cut_point_is_a_tail_that_gives_keras_output(tmp_path):
    """Hunt: `cut_points(every_tensor=True)` listed `Identity:0`, TensorFlow's copy of the output,
    which no path to `scope.outputs` passes through (its tail raised DisconnectedError); a
    SavedModel's cut points were its input, its call and that copy, never a layer's output. Each
    cut point, fed the head's value changed, must give what Keras computes from there."""
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(4, activation="relu", name="d1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="d2")(hidden))
    x = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    model.export(tmp_path / "saved", verbose=False)
    for scope in gs.trace(model, quiet=True), gs.trace(str(tmp_path / "saved"), quiet=True):
        assert [t.layer for t in scope.cut_points()[1:]] == ["d1", "d2"]  # Keras: a chain of two layers
        (out,) = scope.outputs
        for cut in scope.cut_points(every_tensor=True):
            value = scope.run(cut, x)[cut.name] * 1.5 + 0.25
            if cut.op_type == "Placeholder":  # the input (a SavedModel's call also has it as an argument)
                want = model(value)
            elif cut.layer is None:
                raise AssertionError(f"{cut.name} is listed as a cut point, but is no input or layer's tensor")
            elif cut.name.startswith("d2/"):  # inside the last layer: its BiasAdd by hand from MatMul
                want = value + model.get_layer("d2").bias if "MatMul" in cut.name else value
            elif cut.name.startswith("d1/") and "Relu" not in cut.name:
                pre = value + model.get_layer("d1").bias if "MatMul" in cut.name else value
                want = model.get_layer("d2")(keras.ops.relu(pre))
            else:
                want = model.get_layer("d2")(value)
            got = scope.executor(scope.outputs, feeds=[cut])(value)[out.name]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=cut.name)


@tf.function
def _softplus_twice(x):
    return tf.nn.softplus(x) * 2.0


class _Softplus(keras.layers.Layer):
    def call(self, x):
        return _softplus_twice(x) - 1.0


def test_cut_points_inside_a_helper_that_every_path_runs_through():
    """Hunt: a call's inputs counted as a path into the call beside its body, so no tensor of a
    `tf.function` helper's body was a cut point, though every path runs through it. Each one
    listed, fed alone, gives the model's output computed by hand from there."""
    inputs = keras.Input((5,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(3, name="d2")(_Softplus(name="l")(keras.layers.Dense(5, name="d")(inputs))))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    value = np.asarray(model.get_layer("d")(x)) * 1.5 + 0.25
    after = {  # by hand, from each tensor of the body to the model's output
        "l/PartitionedCall/x:0": lambda v: tf.nn.softplus(v) * 2.0 - 1.0,
        "l/PartitionedCall/Softplus:0": lambda v: v * 2.0 - 1.0,
        "l/PartitionedCall/mul:0": lambda v: v - 1.0,
    }
    every = scope.cut_points(every_tensor=True).names
    assert set(after) <= set(every)
    (out,) = scope.outputs
    for name, rest in after.items():
        got = scope.executor(out, feeds=[name])(value)[out.name]
        np.testing.assert_allclose(got, model.get_layer("d2")(rest(value)), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_first_15_layers_of_resnet50():
    """The seed: "the first 15 layers" of ResNet50 end inside conv2_block1's fork; the cut points
    on either side are pool1_pool's output and the block's output."""
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    scope = gs.trace(model)
    fifteenth = scope.layer(15)
    assert fifteenth.name == "conv2_block1_0_bn"
    cuts = scope.cut_points()
    positions = {lay.name: k for k, lay in enumerate(model.layers)}
    by_layer = {t.layer: t for t in cuts if t.layer}
    before = max((n for n in by_layer if positions[n] <= 15), key=positions.__getitem__)
    after = min((n for n in by_layer if positions[n] > 15), key=positions.__getitem__)
    assert (before, after) == ("pool1_pool", "conv2_block1_add")
    assert "conv2_block1_0_conv" not in by_layer and "conv2_block1_1_conv" not in by_layer
    assert len([t for t in cuts if (t.layer or "").endswith("_out")]) == 16  # one per residual block
    images = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype(np.float32)
    head = scope.run(by_layer[after], images)[by_layer[after].name]
    tail = scope.executor(scope.outputs, feeds=[by_layer[after]])(head)
    np.testing.assert_allclose(next(iter(tail.values())), model(images), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- issue 16's bugs


def test_queries_never_keep_state_in_a_graph_they_are_handed(demo_scope):
    """Removing every edge into the last op of a copy: the answers are the copy's, not the
    original's (the index once lived in G.graph and outlived the change)."""
    G = demo_scope.graph
    last = demo_scope.outputs[-1]
    assert len(gs.ancestors(G, last)) > 100
    H = G.copy()
    H.remove_edges_from(list(H.in_edges(last.op)))
    assert nx.ancestors(H, last.op) == set()
    assert gs.ancestors(H, last) == gs.Selection()
    assert "_index" not in H.graph and "_index" not in G.graph
    assert len(gs.ancestors(G, last)) > 100  # the original is untouched, its answers too


def test_queries_on_a_view_answer_for_the_view(demo_scope):
    G = demo_scope.graph
    last = demo_scope.outputs[-1]
    view = nx.restricted_view(G, [], list(G.in_edges(last.op)))  # shares G.graph with G
    assert view.graph is G.graph
    assert gs.ancestors(view, last) == gs.Selection()
    assert gs.find(view, "rpn_class").names == gs.find(G, "rpn_class").names
    smaller = nx.restricted_view(G, [demo_scope.tensor("rpn_class/Softmax:0").op], [])
    assert "rpn_class/Softmax:0" not in gs.find(smaller, "rpn_class").names


def test_a_scopes_graph_is_frozen_and_keeps_its_index(demo_scope):
    G = demo_scope.graph
    with pytest.raises(nx.NetworkXError, match="Frozen"):
        G.remove_edge(*next(iter(G.edges)))
    assert query._index(G) is query._index(G)  # built once, for the ModelGraph that froze it
    assert query._index(G.copy()) is not query._index(G.copy())  # any other graph: per query
    with pytest.raises(ValueError, match="frozen"):
        query.own(G.copy())


def test_every_facade_names_things_the_same_way(map_fn_scope, tmp_path):
    """A layer name, a tensor name, a Tensor and a Layer mean the same to Scope, Bundle and the
    CLI (Scope once refused layer names that a Bundle and the CLI took)."""
    scope = map_fn_scope
    roi = scope.layer("ROI")
    want = scope.ancestors(roi.output)
    assert scope.ancestors("ROI") == scope.ancestors(roi) == want
    assert scope.descendants("rpn_class") == scope.descendants(scope.layer("rpn_class"))
    x = demo.synthetic_images()
    bundle = scope.extract([roi.output], x, out=tmp_path / "run.zarr", quiet=True)
    assert bundle.ancestors("ROI").names == want.names
    assert bundle.ancestors(roi.output.name).names == want.names
    assert list(scope.executor("ROI")(x)) == roi.outputs.names  # layers run by name too
    with pytest.raises(gs.TensorNotFoundError, match="nor an input or layer.*Did you mean 'ROI'"):
        scope.ancestors("ROJ")


def test_one_count_of_layers(functional_scope):
    """repr and the layer tree count the same layers: a shared layer once (model.layers)."""
    shared = gs.trace(models.shared())
    assert repr(shared) == f"<Scope siam: {shared.graph.number_of_nodes()} ops, 5 layers>"
    assert len(shared.model.layers) == 5
    assert str(shared.layer_tree()).splitlines()[-2].startswith("5 layers · ")
    assert repr(functional_scope).endswith(f"{len(functional_scope.model.layers)} layers>")


def test_cut_points_are_computed_once_per_graph(demo_scope, monkeypatch):
    first = demo_scope.cut_points()
    calls = []
    monkeypatch.setattr(query, "cut_points", lambda *a, **k: calls.append(a) or gs.Selection())
    assert demo_scope.cut_points() is first
    str(demo_scope)  # the layer tree shows the cut marks
    demo_scope.layer_tree(depth=1)
    assert calls == []


# --------------------------------------------------------------------------- issue 24's bugs


def test_ancestors_and_descendants_never_list_their_seeds(chain):
    """#19: `descendants([a, b])` listed b (downstream of a); `ancestors` never lists a seed.
    Both against networkx by hand, the seeds left out."""
    G = chain.graph
    a, b = chain.tensor("d10/Tanh:0"), chain.tensor("d12/Tanh:0")

    def tensors_of(ops, seeds):
        return {n for op in ops for n in G.nodes[op]["op"].outputs} - {t.name for t in seeds}

    def down(seeds):  # the ops fed by a seed's own output, and every op after them
        ops = set()
        for t in seeds:
            consumers = {c for c, e in G.succ[t.op].items() if t.index in e["outputs"]}
            ops |= consumers.union(*(nx.descendants(G, c) for c in consumers))
        return tensors_of(ops, seeds)

    def up(seeds):
        return tensors_of(set().union(*(nx.ancestors(G, t.op) for t in seeds)), seeds)

    for seeds in ([a], [b], [a, b], [b, a]):
        assert set(chain.descendants(seeds).names) == down(seeds)
        assert set(chain.ancestors(seeds).names) == up(seeds)
    assert b.name not in chain.descendants([a, b]).names
    assert a.name not in chain.ancestors([b, a]).names
    assert b.name in chain.descendants(a).names and a.name in chain.ancestors(b).names


def test_cut_points_when_an_output_depends_on_no_input():
    """#10: an output computed from a variable alone made cut_points, the layer tree and
    str(scope) raise NetworkXError; only outputs the inputs reach have paths to cut."""
    v = tf.Variable(3.0)
    alone = gs.trace(tf.function(lambda x: v * 2.0), [tf.TensorSpec((None,), tf.float32)], quiet=True)
    assert alone.cut_points() == gs.Selection() == alone.cut_points(every_tensor=True)
    assert "<lambda>" in str(alone.layer_tree()) and "<lambda>" in str(alone)

    @tf.function
    def both(x):
        return {"a": tf.tanh(x * 2.0) + 1.0, "b": v * 2.0}

    scope = gs.trace(both, [tf.TensorSpec((None,), tf.float32)], quiet=True)
    G = scope.graph
    source = scope.model_graph.inputs[0].op
    sink = scope.output("a").op  # the output computed, not TensorFlow's Identity copy of it
    # by hand: the input, the output, and each op between them whose removal cuts every path
    between = (nx.ancestors(G, sink) & nx.descendants(G, source))
    by_hand = {source, sink} | {op for op in between if not nx.has_path(nx.restricted_view(G, [op], []), source, sink)}
    cuts = scope.cut_points(every_tensor=True)
    assert {t.op for t in cuts} == by_hand and len(cuts) >= 4  # input, mul, Tanh, add
    assert str(scope)


def test_an_output_key_that_is_an_input_name_means_the_output():
    """#3: keras-hub's generate_step returns `token_ids` and `padding_mask`, its inputs' names;
    fetching the keys gave the inputs back. A key fetches the output; the input stays reachable
    by its tensor name, and by its name where it is fed."""

    @tf.function
    def f(token_ids, padding_mask):
        return {"token_ids": token_ids + 1.0, "padding_mask": tf.logical_and(padding_mask, token_ids > 1.0)}

    scope = gs.trace(f, [tf.TensorSpec((None, 3), tf.float32, name="token_ids"),
                         tf.TensorSpec((None, 3), tf.bool, name="padding_mask")], quiet=True)
    assert scope.inputs == ["token_ids", "padding_mask"] and set(scope.output_keys) == {"token_ids", "padding_mask"}
    x = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], np.float32)
    mask = np.array([[True, True, False], [True, False, True]])
    want = {k: v.numpy() for k, v in f(x, mask).items()}  # the function called eagerly
    values = scope.run(list(scope.output_keys), (x, mask))
    for key in scope.output_keys:
        np.testing.assert_array_equal(values[key], want[key], err_msg=key)
    assert scope.tensor("token_ids") == scope.output("token_ids") != scope.tensor("token_ids:0")
    assert scope.op("token_ids").type == "AddV2" and scope.op("token_ids:0").type == "Placeholder"
    np.testing.assert_array_equal(scope.run("token_ids:0", (x, mask))["token_ids:0"], x)  # the input
    fed = scope.run(["token_ids"], {"token_ids": x}, feeds=["token_ids"])
    np.testing.assert_array_equal(fed["token_ids"], want["token_ids"])  # fed by name: the input
    with pytest.raises(gs.TensorNotFoundError, match="nor an input or layer or output key"):
        scope.tensor("token_id")


def _two_outputs() -> keras.Model:
    """out1 feeds out2: `h` is an output and the input of `y`."""
    init = keras.initializers.GlorotUniform(seed=7)
    x_in = keras.Input((3,), name="x")
    h = keras.layers.Dense(4, name="hidden", kernel_initializer=init, bias_initializer="ones")(x_in)
    y = keras.layers.Dense(2, name="head", kernel_initializer=init)(h)
    return keras.Model(x_in, {"h": h, "y": y})


def test_an_output_key_is_the_tensor_the_model_computes():
    """#13: an output key meant the function's Identity copy, which nothing downstream reads:
    an output that feeds another (an encoder's output) could not be differentiated with
    respect to, nor edited. The key means the tensor the model computes."""
    model = _two_outputs()
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    assert scope.outputs.names == ["hidden/BiasAdd:0", "head/BiasAdd:0"] and scope.outputs.keys == ("h", "y")
    assert [scope.output(k) for k in scope.output_keys] == list(scope.outputs) == scope.model_graph.resolve(["h", "y"])
    assert "hidden/BiasAdd:0" in str(scope.outputs) and "h " in str(scope.outputs)
    values = scope.run(["h", "y"], x)
    assert list(values) == ["h", "y"]
    for key, want in model(x).items():
        np.testing.assert_allclose(values[key], want, rtol=1e-6, atol=1e-6)

    # the gradient of y with respect to h: GradientTape on the head layer, fed h
    h = tf.constant(values["h"])
    with tf.GradientTape() as tape:
        tape.watch(h)
        y = tf.reduce_sum(model.get_layer("head")(h))
    grads = scope.gradients("y", ["h", "x"], x)
    np.testing.assert_allclose(grads["h"], tape.gradient(y, h), rtol=1e-6, atol=1e-6)
    xs = tf.constant(x)
    with tf.GradientTape() as tape:  # and with respect to the input: the whole model
        tape.watch(xs)
        y = tf.reduce_sum(model(xs)["y"])
    np.testing.assert_allclose(grads["x"], tape.gradient(y, xs), rtol=1e-5, atol=1e-6)

    # an edit at h's key: y is the head applied to the edited h (Keras, eagerly)
    edited = scope.run(["h", "y"], x, edits={"h": lambda v: v * 0.5 - 1.0})
    np.testing.assert_allclose(edited["h"], values["h"] * 0.5 - 1.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(edited["y"], model.get_layer("head")(values["h"] * 0.5 - 1.0), rtol=1e-5, atol=1e-6)



def test_an_output_key_of_a_saved_model_means_the_output_when_varied_too(tmp_path):
    """A SavedModel signature names its copy of each output after the key (`vec:0`): an edit or
    a gradient keyed `vec` meant that copy, which nothing reads (DisconnectedError), while a
    fetch of `vec` gave the output. Varied, the key means the output too, unless it is an
    input's name."""

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.Variable([[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]])

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.int32, name="ids")])
        def embed(self, ids):
            vec = tf.gather(self.table, ids)
            return {"vec": vec, "norm": tf.norm(vec, axis=-1)}

    module = Module()
    tf.saved_model.save(module, str(tmp_path), signatures={"embed": module.embed})
    scope = gs.trace(str(tmp_path), signature="embed", quiet=True)
    assert "vec:0" in scope.graph.graph["tensors"]  # the copy the key is also the name of
    ids = np.array([2, 0], np.int32)
    vec = tf.gather(module.table, ids)
    with tf.GradientTape() as tape:
        tape.watch(vec)
        norm = tf.reduce_sum(tf.norm(vec, axis=-1))
    grads = scope.gradients("norm", ["vec"], ids)
    np.testing.assert_allclose(grads["vec"], tape.gradient(norm, vec), rtol=1e-6)
    edited = scope.run(["norm"], ids, edits={"vec": lambda v: v * 2.0})
    np.testing.assert_allclose(edited["norm"], 2.0 * tf.norm(vec, axis=-1), rtol=1e-6)


def test_every_name_a_fetch_takes_names_the_same_thing_everywhere(tmp_path):
    """#15: scope.tensor refused an output key that scope.run took; a Bundle refused the key it
    was extracted with; `"Identity" in bundle` was False while `bundle["Identity"]` worked."""
    model = _two_outputs()
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    want = model(x)["y"].numpy()
    assert scope.tensor("y") == scope.output("y") == scope.model_graph.resolve("y")[0]
    assert scope.op("y").name == "head/BiasAdd"
    bundle = scope.extract(["y"], x, out=tmp_path / "run.zarr", quiet=True)
    copy = scope.graph.graph["outputs"][scope.output_keys.index("y")]  # TensorFlow's Identity copy of y
    for name in ("y", "head/BiasAdd:0", "head/BiasAdd", copy, copy.partition(":")[0], scope.tensor("y")):
        assert name in bundle, name
        np.testing.assert_allclose(np.asarray(bundle[name]), want, rtol=1e-6, atol=1e-6, err_msg=str(name))
    for name in ("h", "hidden/BiasAdd:0", "nothing", 3):
        assert name not in bundle
    with pytest.raises(gs.TensorNotFoundError, match="is not stored"):
        bundle["h"]
    small = _two_outputs()
    single = gs.trace(keras.Model(small.input, small.get_layer("head").output), quiet=True)  # one output, its copy `Identity`
    stored = single.extract(["Identity"], x, out=tmp_path / "single.zarr", quiet=True)
    assert single.graph.graph["outputs"] == stored.names == ["Identity:0"]
    for name in ("Identity", "Identity:0", single.outputs[0], single.output_keys[0] or "head/BiasAdd"):
        assert name in stored, name
        np.testing.assert_allclose(np.asarray(stored[name]), want, rtol=1e-6, atol=1e-6, err_msg=str(name))


def test_a_model_graph_leaves_the_graph_it_is_given_alone(functional_scope):
    """#18: ModelGraph froze the caller's graph; a copy with nodes removed shared the tables of
    the original and answered for what it no longer holds (ancestors raised KeyError)."""
    G = functional_scope.graph.copy()
    G.graph["tensors"] = before = dict(G.graph["tensors"])  # not the scope's own table
    graph = gs.ModelGraph(G)
    assert not nx.is_frozen(G)
    removed = functional_scope.tensor("dense/BiasAdd:0")
    G.remove_node(removed.op)  # the caller's graph is still the caller's to change
    G.graph["tensors"].clear()
    assert graph.tensor("dense/BiasAdd:0") == removed and graph.tensors == functional_scope.model_graph.tensors  # the ModelGraph's own copy
    H = functional_scope.graph.copy()
    H.remove_node(removed.op)
    for spelling in (removed, removed.name, removed.op, removed.raw_name):
        with pytest.raises(gs.TensorNotFoundError):
            gs.ancestors(H, spelling)
        with pytest.raises(gs.TensorNotFoundError):
            query.tensor(H, spelling)
    # what H still holds, answered from H's nodes (networkx by hand)
    probs = functional_scope.tensor("probs/BiasAdd:0")
    by_hand = {n for op in nx.ancestors(H, probs.op) for n in H.nodes[op]["op"].outputs}
    assert set(gs.ancestors(H, probs).names) == by_hand
    assert removed.name not in gs.find(H, "dense").names
    last = functional_scope.graph.graph["outputs"][0].partition(":")[0]
    H.remove_node(last)  # the output's own op: no path from the input reaches an output
    assert gs.cut_points(H) == gs.Selection()


def test_an_output_key_stops_at_a_custom_gradients_result():
    """#13: an output key follows TensorFlow's copies of the result, not a custom gradient's
    IdentityN (SiLU's), whose gradient is the model's own."""
    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, keras.layers.Dense(2, activation="swish", name="s")(x_in))
    scope = gs.trace(model, quiet=True)
    (out,) = scope.outputs
    assert out.op_type == "IdentityN" and out == scope.output(0) and scope.graph.graph["outputs"] == ["Identity:0"]
    x = np.random.default_rng(4).normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_allclose(scope.run(out, x)[out.name], model(x), rtol=1e-6, atol=1e-6)


def test_the_key_of_a_single_output_names_it():
    """A function that returns one tensor has the key `""`, and what output_keys lists fetches."""
    f = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec((None, 3))])
    scope = gs.trace(f, quiet=True)
    assert scope.output_keys == [""]
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    values = scope.run(list(scope.output_keys), x)
    np.testing.assert_array_equal(values[""], f(x).numpy())  # the function called eagerly
    assert scope.tensor("") == scope.output("") == scope.output(0)


# --------------------------------------------------------------------------- unused ops
# Ops no output depends on (Keras' call of an RNN's cell outside its loop, made only to learn
# shapes) are marked (`query.unused`), left out of queries unless `include_unused=True`, noted
# when fetched and refused when edited.


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _gates_by_hand(kind, cell, x, h):
    """The recurrent activations of every step, [steps, batch, units] each, in the order the
    cell computes them, by numpy from the cell's weights, the inputs and Keras' own outputs."""
    previous = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)  # h before each step
    kernel, recurrent, bias = cell.kernel.numpy(), cell.recurrent_kernel.numpy(), cell.bias.numpy()
    if kind == "LSTM":
        z = np.einsum("bti,ij->tbj", x, kernel) + np.einsum("bti,ij->tbj", previous, recurrent) + bias
        i, f, _, o = np.split(z, 4, axis=-1)
        return [_sigmoid(i), _sigmoid(f), _sigmoid(o)]
    x_z, x_r, _ = np.split(np.einsum("bti,ij->tbj", x, kernel) + bias[0], 3, axis=-1)
    h_z, h_r, _ = np.split(np.einsum("bti,ij->tbj", previous, recurrent) + bias[1], 3, axis=-1)
    return [_sigmoid(x_z + h_z), _sigmoid(x_r + h_r)]


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_an_rnn_s_shape_probe_is_unused_and_found_only_when_asked(kind):
    model = models.recurrent(kind)
    scope = gs.trace(model, quiet=True)
    layer = kind.lower()
    hits = scope.find("Sigmoid", layer=layer)
    assert hits and all(t.context == f"{layer}/while:body" for t in hits)  # the loop's, first one included
    assert not any(t.op in scope.unused for t in hits)
    # every hit offered by default runs, and holds what the cell computes at each step
    x = np.random.default_rng(3).normal(size=(2, 4, 3)).astype(np.float32)
    got = scope.run(hits, x)
    expected = _gates_by_hand(kind, model.get_layer(layer).cell, x, model(x).numpy())
    assert len(hits) == len(expected)
    for t, want in zip(hits, expected):
        np.testing.assert_allclose(got[t.name], want, rtol=1e-4, atol=1e-5)
    # the probe's ops come only when asked, and are marked
    everything = scope.find("Sigmoid", layer=layer, include_unused=True)
    probes = [t for t in everything if t.name not in hits.names]
    assert len(probes) == len(hits) and all(t.op in scope.unused and t.context is None for t in probes)
    # fetching one is noted (its value is real: the cell's first step, as the loop computes it)
    with pytest.warns(gs.UnusedTensorWarning, match="no output of the model depends on it"):
        probe_value = scope.run(probes[0], x)[probes[0].name]
    np.testing.assert_allclose(probe_value, got[hits[0].name][0], rtol=1e-5, atol=1e-6)
    # editing one changes nothing, and the error names the tensor the model uses instead
    with pytest.raises(gs.DisconnectedError, match="no output of the model depends on it") as caught:
        scope.run(scope.outputs, x, edits={probes[0]: lambda v: v * 0.0})
    assert hits[0].name in str(caught.value)
    # the layer tree marks the probe call, and lists none of its unused ops
    (call,) = [lay for lay in scope.layers if lay.outputs and all(t.op in scope.unused for t in lay.outputs)]
    rows = scope.layer_tree(ops=True).rows
    at = rows.index((2, call.name.rpartition("/")[2], f"{kind}Cell", "unused"))
    under = [r for r in rows[at + 1:]]
    under = under[:next((k for k, r in enumerate(under) if r[0] <= 2), len(under))]
    assert under and not any(r[2] == "Sigmoid" for r in under)
    assert all(r[3] != "unused" for r in rows[:at] + rows[at + 1:])


def _with_side_effects():
    """A function that computes things it never uses (at the top, in a loop body, in a nested
    function) beside things it needs only for their side effects or through a control
    dependency."""

    @tf.function
    def helper(x):
        tf.print("helper", tf.reduce_max(x))  # a nested function's side effect
        tf.cos(x)  # unused inside a function that runs
        return x * 2.0

    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    def f(x):
        tf.sin(x) * 3.0  # computed, never used
        total = tf.reduce_sum(tf.abs(x))
        with tf.control_dependencies([total]):  # needed only through a control dependency
            y = tf.identity(x)
        tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(x)), ["not finite"])  # kept by control outputs

        def body(i, a):
            tf.exp(a)  # unused inside a loop body that runs
            return i + 1, a + 1.0

        return helper(tf.while_loop(lambda i, a: i < 3, body, (0, y))[1])

    return f


def test_a_function_s_unused_ops_are_those_no_output_or_side_effect_needs():
    scope = gs.trace(_with_side_effects(), quiet=True)
    G = scope.graph
    # only what is computed and never used (and the constants only it reads)
    assert {G.nodes[n]["op"].type for n in scope.unused} == {"Sin", "Mul", "Exp", "Cos", "Const"}
    kept = {G.nodes[n]["op"].type for n in G if n not in scope.unused}
    # the control dependency's computation, the assert and its condition, the loop, the prints
    assert {"Abs", "Sum", "IsFinite", "All", "Assert", "PrintV2", "Max", "AddV2", "Less"} <= kept
    assert any(t.endswith("While") for t in kept)
    by_type = {G.nodes[n]["op"].type: n for n in scope.unused}
    exp, cos = scope.tensor(f"{by_type['Exp']}:0"), scope.tensor(f"{by_type['Cos']}:0")
    assert exp.context and exp.context.endswith(":body") and cos.function and cos.context is None
    for name in ("Sin", "Exp", "Cos"):
        assert not scope.find(op_type=name)
        assert len(scope.find(op_type=name, include_unused=True)) == 1
    sin = scope.find(op_type="Sin", include_unused=True)[0]
    assert sin not in scope.descendants(scope.inputs[0]) and sin in scope.descendants(scope.inputs[0], include_unused=True)
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    with pytest.warns(gs.UnusedTensorWarning):
        got = scope.run([sin, exp], x)
    np.testing.assert_allclose(got[sin.name], np.sin(x), rtol=1e-6)
    np.testing.assert_allclose(got[exp.name], np.exp(x + np.arange(3, dtype=np.float32)[:, None, None]), rtol=1e-5)
    with pytest.raises(gs.DisconnectedError, match="no output of the model depends on it"):
        scope.run(scope.outputs, x, edits={sin: lambda v: v + 1.0})
    # the used ones still run and still agree with the function
    used = scope.find(op_type="Abs")[0]
    np.testing.assert_allclose(scope.run(used, x)[used.name], np.abs(x))


def _tf_keras_gru():
    tf_keras = pytest.importorskip("tf_keras")
    x_in = tf_keras.Input((4, 3))
    return tf_keras.Model(x_in, tf_keras.layers.GRU(5, return_sequences=True, name="gru")(x_in))


_ROLES = (("body", "body"), ("cond", "cond"), ("then_branch", "then"), ("else_branch", "else"))


def _unused_by_tensorflow(graph, raw_prefix="", running=True):
    """The raw names of the ops of `graph` and of the bodies it calls that TensorFlow's own
    pruning (`extract_sub_graph` of each graph's GraphDef, towards its outputs and the ops it
    must run) leaves out, a body's arguments kept; every op of a body whose caller is left out."""
    from graphscope.backend import tf_internals as _tf

    dests = [t.op.name for t in graph.outputs] + [op.name for op in _tf.control_outputs(graph)]
    if running and dests:
        kept = {n.name for n in tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), dests).node}
    else:
        kept = set()
    if running:
        kept |= {t.op.name for t in graph.inputs}
    found = set()
    for op in graph.get_operations():
        raw = raw_prefix + op.name
        if op.name not in kept:
            found.add(raw)
        attrs = op.node_def.attr
        if op.type.endswith("PartitionedCall") and "f" in attrs:
            bodies = [("", attrs["f"].func.name)]
        else:
            bodies = [(role, attrs[a].func.name) for a, role in _ROLES if a in attrs and attrs[a].HasField("func")]
            if "branches" in attrs:
                bodies += [(f"branch{k}", fn.name) for k, fn in enumerate(attrs["branches"].list.func)]
        for role, name in bodies:
            body = _tf.function_graph(graph, name)
            found |= _unused_by_tensorflow(body, f"{raw}/{role}/" if role else f"{raw}/", op.name in kept)
    return found


def _named_like_keras():
    """Two layers named as Keras names them by default (`dense`, `dense_1`) called by a function:
    TensorFlow names the first one's ops `dense_1/...` and the second's `dense_1_2/...`, so a
    canonical name is another op's TensorFlow name (found by an outside review: ops the output
    needs were marked unused)."""
    d1 = keras.layers.Dense(8, activation="relu", name="dense")
    d2 = keras.layers.Dense(3, activation="softmax", name="dense_1")
    return tf.function(lambda x: d2(d1(x)), input_signature=[tf.TensorSpec((None, 4), tf.float32)])


class _TwoDense(tf.Module):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(8, activation="relu", name="dense")
        self.d2 = keras.layers.Dense(3, activation="softmax", name="dense_1")

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])
    def __call__(self, x):
        return self.d2(self.d1(x))


_BUILDS = {
    "layers named dense, dense_1": _named_like_keras, "saved module of two layers": None,
    "functional": models.functional, "nested": models.nested, "shared": models.shared,
    "with_tf_function": models.with_tf_function, "control_flow": models.control_flow,
    "loops_and_branches": models.loops_and_branches, "threshold_nms": models.threshold_nms,
    "map_fn demo": lambda: demo.proposal_model(variant="map_fn"), "side effects": _with_side_effects,
    "LSTM": lambda: models.recurrent("LSTM"), "GRU": lambda: models.recurrent("GRU"),
    "tf_keras GRU": _tf_keras_gru, "saved LSTM": None,  # traced without its Python classes
}


@pytest.mark.parametrize("which", list(_BUILDS))
def test_unused_ops_are_those_tensorflow_prunes(which, tmp_path):
    from graphscope.backend.mirror import mirror
    from graphscope.backend.trace import trace_function

    if which == "saved LSTM":
        models.recurrent("LSTM").export(tmp_path / "lstm")
        traced = trace_function(str(tmp_path / "lstm"))
    elif which == "saved module of two layers":
        tf.saved_model.save(_TwoDense(), str(tmp_path / "two"))
        traced = trace_function(str(tmp_path / "two"))
    else:
        traced = trace_function(_BUILDS[which]())
    G = mirror(traced).graph.graph
    expected = {G.graph["names"][raw] for raw in _unused_by_tensorflow(traced.function.graph)}
    assert query.unused(G) == expected
    if "LSTM" in which or "GRU" in which or which == "side effects":
        assert expected  # there is something to find
    # and no unused op feeds an output, through the mirrored graph's edges (bodies included)
    outputs = {G.graph["tensors"][n].op for n in G.graph["outputs"]}
    feeding = outputs.union(*(nx.ancestors(G, op) for op in outputs))
    assert not feeding & query.unused(G)


def test_a_gradient_of_an_unused_tensor_is_noted_and_right():
    model = models.recurrent("LSTM")
    scope = gs.trace(model, quiet=True)
    probe = scope.find(op_type="Sigmoid", include_unused=True)[0]  # the input gate of the probe call
    assert probe.op in scope.unused
    x = np.random.default_rng(5).normal(size=(2, 4, 3)).astype(np.float32)
    with pytest.warns(gs.UnusedTensorWarning):
        got = scope.gradients(probe, "sequence", x)["sequence"]
    cell = model.get_layer("lstm").cell
    kernel, bias = cell.kernel.numpy()[:, :cell.units], cell.bias.numpy()[:cell.units]
    xs = tf.constant(x)
    with tf.GradientTape() as tape:  # the probe: the cell's first step from zero state, by hand
        tape.watch(xs)
        total = tf.reduce_sum(tf.sigmoid(tf.matmul(xs[:, 0], kernel) + bias))
    np.testing.assert_allclose(got, tape.gradient(total, xs).numpy(), rtol=1e-5, atol=1e-6)
