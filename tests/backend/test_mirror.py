"""graph: the mirrored networkx graph, nested bodies included, with layers from the real calls."""

import re

import keras
import networkx as nx
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope import demo
from tests import models


def test_graph_is_a_dag_with_unique_names(zoo_model):
    _, model = zoo_model
    scope = gs.trace(model)
    G = scope.graph
    assert nx.is_directed_acyclic_graph(G)
    records = [G.nodes[n]["op"] for n in G]
    assert len({r.raw_name for r in records}) == len(records)
    assert all(r.name == n for r, n in zip(records, G))
    for n in G:  # each node carries its output tensors, with dtype and static shape
        assert [t.name for t in G.nodes[n]["tensors"]] == list(G.nodes[n]["op"].outputs)
    # insertion order is topological: every producer comes before its consumers
    position = {n: k for k, n in enumerate(G)}
    assert all(position[u] < position[v] for u, v in G.edges)


def test_every_op_of_every_body_is_mirrored_once():
    scope = gs.trace(models.with_tf_function())
    G = scope.graph
    cf = scope.function
    top = len(cf.graph.get_operations())
    inner = [n for n in G if G.nodes[n]["op"].function]
    assert G.number_of_nodes() > top and inner
    outer_call = scope.op("soft/StatefulPartitionedCall")
    assert outer_call.type == "StatefulPartitionedCall"
    # a tf.function calling a tf.function: two levels of nesting
    (softplus,) = scope.find(op_type="Softplus")
    assert softplus.name == "soft/StatefulPartitionedCall/PartitionedCall/Softplus:0"
    assert softplus.function == ("soft/StatefulPartitionedCall", "soft/StatefulPartitionedCall/PartitionedCall")
    assert softplus.raw_name.endswith("StatefulPartitionedCall/PartitionedCall/Softplus:0")
    assert softplus.layer == "soft"


def test_bodies_are_wired_into_the_calling_op():
    scope = gs.trace(models.with_tf_function())
    G = scope.graph
    call = "soft/StatefulPartitionedCall"
    args = [n for n in G.predecessors(call) if G.nodes[n]["op"].function]
    assert args, "body results feed the calling op"
    body_args = [n for n in G if n.startswith(call + "/") and G.nodes[n]["op"].type == "Placeholder"]
    assert body_args
    # the first argument takes its edge from the producer of the call's first input
    first_input = scope.tensor(G.nodes[call]["op"].inputs[0])
    assert any(G.has_edge(first_input.op, a) for a in body_args)
    assert nx.has_path(G, "pre/BiasAdd", "soft/StatefulPartitionedCall/PartitionedCall/Softplus")


def test_loop_bodies_keep_their_scoped_names_and_cond_clashes_are_qualified():
    scope = gs.trace(demo.proposal_model(variant="map_fn"))
    (nms,) = scope.find(op_type="NonMaxSuppressionV3")
    assert nms.name == "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"
    assert nms.layer == "ROI"
    (loop,) = [n for n in scope.graph if scope.op(n).type in ("While", "StatelessWhile")]
    assert nms.function == (f"{loop}:body",)
    conds = [n for n in scope.graph if scope.op(n).function == (f"{loop}:cond",)]
    assert conds and any(n.startswith(f"{loop}/cond/") for n in conds)  # qualified on clash


def test_layers_come_from_the_call_structure_not_names():
    scope = gs.trace(models.misleading_names())
    # the op sits in a tf.name_scope called "decoy", but the layer "scoped" created it
    (matmul,) = scope.find(r"^scoped/", op_type="MatMul")
    assert matmul.name == "scoped/decoy/MatMul:0"
    assert matmul.layer == "scoped"
    assert scope.find(op_type="MatMul", layer="decoy").names == ["decoy/MatMul:0"]


def test_shared_layer_calls_are_numbered_in_call_order():
    scope = gs.trace(models.shared())
    first, second = scope.layer("shared_dense"), scope.layer("shared_dense@2")
    assert first.inputs.names == ["left:0"] and second.inputs.names == ["right:0"]
    assert {op.layer for op in second.ops} == {"shared_dense@2"}
    assert "shared_dense@2/MatMul:0" in scope.find("MatMul").names
    assert first.keras_layer is second.keras_layer


def test_shared_layer_calls_are_numbered_in_the_models_node_order():
    """Keras runs `conv1(a)` before `conv1(x)` (by depth), but the code made `conv1(x)` first, and
    so `model.get_layer("conv1").output` is that call's: so is graphscope's `conv1` (issue 20)."""
    model = models.shared_out_of_order()
    scope = gs.trace(model)
    assert scope.layer("conv1").inputs.names == ["x:0"]
    assert scope.layer("conv1@2").inputs.names == ["conv0/BiasAdd:0"]
    # the trace ran them the other way round: Keras' `_1` scope suffix went to the second call
    assert scope.tensor("conv1@2/MatMul:0").raw_name.startswith("reordered_1/conv1_1/")
    assert scope.layer("block").inputs.names == ["conv1/Tanh:0"]
    assert scope.layer("block@2").inputs.names == ["conv2/BiasAdd:0"]
    assert scope.layer("block@2/inner").output.name == "block@2/inner/BiasAdd:0"
    assert [lay.name for lay in scope.layers if "conv1" in lay.name] == ["conv1", "conv1@2"]
    x = models.sample_inputs(model)[0]
    got = scope.run([scope.layer("conv1").output, scope.layer("conv1@2").output], x)
    want = keras.Model(model.input, [model.get_layer("conv1").output])(x)
    np.testing.assert_allclose(got["conv1/Tanh:0"], want, rtol=1e-6)
    assert not np.allclose(got["conv1@2/Tanh:0"], want)


def test_a_shared_layers_call_no_output_needs_keeps_its_node_number():
    """The outer model uses only the inner model's second output, so `conv1(x)` (the inner
    model's node 1 of conv1) feeds nothing: still `inner/conv1`, as Keras numbers it; only an
    RNN's shape probe, whose numbers are not Keras' nodes', is numbered after its loop's call."""
    x_in = keras.Input((2,), name="x")
    conv0, conv1 = keras.layers.Dense(2, name="conv0"), keras.layers.Dense(2, name="conv1")
    b, c = conv1(x_in), conv1(conv0(x_in))
    inner = keras.Model(x_in, [b, c], name="inner")
    outer_in = keras.Input((2,), name="outer_x")
    outer = keras.Model(outer_in, inner(outer_in)[1], name="outer")
    scope = gs.trace(outer, quiet=True)
    x = np.random.default_rng(1).normal(size=(3, 2)).astype("float32")
    got = scope.run([scope.layer("inner/conv1").output, scope.layer("inner/conv1@2").output], x)
    want_b, want_c = keras.Model(x_in, [b, c])(x)
    np.testing.assert_allclose(got[scope.layer("inner/conv1").output.name], want_b, rtol=1e-6)
    np.testing.assert_allclose(got[scope.layer("inner/conv1@2").output.name], want_c, rtol=1e-6)


def test_issue_20_example():
    x_in = keras.Input((2,), name="x")
    conv0, conv1 = keras.layers.Dense(2, name="conv0"), keras.layers.Dense(2, name="conv1")
    a = conv0(x_in)
    b, c = conv1(x_in), conv1(a)
    model = keras.Model(x_in, [b, c])
    scope = gs.trace(model)
    assert scope.layer("conv1").inputs.names == ["x:0"]
    assert scope.layer("conv1@2").inputs.names == ["conv0/BiasAdd:0"]
    x = np.random.default_rng(0).normal(size=(3, 2)).astype("float32")
    got = scope.run([scope.layer("conv1").output, scope.layer("conv1@2").output], x)
    want_b, want_c = keras.Model(x_in, [b, c])(x)
    np.testing.assert_allclose(got["conv1/BiasAdd:0"], want_b, rtol=1e-6)
    np.testing.assert_allclose(got["conv1@2/BiasAdd:0"], want_c, rtol=1e-6)


def test_calls_without_nodes_keep_call_order():
    """A subclassed model has no nodes: its layers' calls are numbered in the order they ran."""

    class Twice(keras.Model):
        def __init__(self):
            super().__init__(name="twice")
            self.dense = keras.layers.Dense(2, name="dense")

        def call(self, x):
            return self.dense(self.dense(x) * 3.0)

    model = Twice()
    model(np.zeros((1, 2), np.float32))
    scope = gs.trace(model)
    assert scope.layer("dense").inputs[0].op_type == "Placeholder"
    assert scope.layer("dense@2").inputs[0].op_type == "Mul"


def test_nested_models_keep_their_name_as_a_segment():
    scope = gs.trace(models.nested())
    conv = scope.layer("backbone/conv1")
    assert conv.output.name == "backbone/conv1/Relu:0"
    assert conv.output.layer == "backbone/conv1"
    assert scope.layer("backbone/backbone_input").output.name == "pixels:0"
    assert [lay.name for lay in scope.layers][:3] == ["pixels", "backbone", "backbone/backbone_input"]
    backbone_ops = {op.name for op in scope.layer("backbone").ops}
    assert {op.name for op in conv.ops} < backbone_ops


def test_subclassed_model_own_ops_have_no_layer():
    scope = gs.trace(models.subclassed())
    own = [t for t in scope.find(op_type="Mul|AddV2")]
    assert own and all(t.layer is None for t in own)
    assert scope.layer("encoder").output.layer == "encoder"


@pytest.mark.slow
def test_resnet_names_match_model_summary():
    import keras

    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    scope = gs.trace(model)
    keras_names = {lay.name for lay in model.layers}
    ours = {t.layer for t in scope.find() if t.layer}
    assert ours <= keras_names
    assert len(keras_names - ours) <= 1  # only the InputLayer owns no op
    assert scope.layer("conv2_block1_add").output.name == "conv2_block1_add/Add:0"


def test_every_op_holding_a_function_is_one_the_mirror_opens():
    """The mirror reads NodeDefs only of the op types in `_BODY_OPS`; an op type TF adds (or
    renames) that holds a body would go unopened, so every function-valued attribute TF writes
    for loops, branches, switches and calls must be on an op of those types."""
    from graphscope.backend import tf_internals as _tf
    from graphscope.backend.mirror import _BODY_OPS, _CALL_OPS

    @tf.function
    def helper(x):
        return tf.nn.softplus(x)

    @tf.function(input_signature=[tf.TensorSpec((None, 3)), tf.TensorSpec((), tf.int32)])
    def f(x, k):
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
        y = tf.switch_case(k, [lambda: y, lambda: y + 1.0, lambda: helper(y)])
        _, y = tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 0.5), (0, y))
        return tf.map_fn(lambda row: tf.reduce_max(row), y)

    seen, todo = set(), [f.get_concrete_function().graph]
    while todo:
        graph = todo.pop()
        for op in graph.get_operations():
            for attr in op.node_def.attr.values():
                names = [attr.func.name] if attr.HasField("func") else [fn.name for fn in attr.list.func]
                for name in names:
                    seen.add(op.type)
                    assert op.type in _BODY_OPS, f"{op.type} holds function {name} but the mirror would not open it"
                    todo.append(_tf.function_graph(op.graph, name))
    # a loop, a branch, a switch and a call (TF picks the stateless forms of pure bodies)
    assert {"While", "StatelessWhile"} & seen and {"If", "StatelessIf"} & seen
    assert {"Case", "StatelessCase"} & seen and _CALL_OPS & seen
    scope = gs.trace(f)  # and the mirror opens them all: the helper's Softplus is there
    assert scope.find(op_type="Softplus")


def _called(layer, values):
    """The Keras layer called eagerly on its recorded arguments, by position and by keyword."""
    args = tf.nest.map_structure(lambda n: values.get(n, n), layer.input_structure)
    kwargs = {k: tf.nest.map_structure(lambda n: values.get(n, n), v) for k, v in layer.input_keywords.items()}
    return layer.keras_layer(*args, **kwargs)


def test_tensors_passed_by_keyword_are_layer_inputs():
    rng = np.random.default_rng(0)
    qi, vi = keras.Input((4, 8), name="q"), keras.Input((6, 8), name="v")
    q = keras.layers.Dense(8, name="q_proj")(qi)
    h = keras.layers.Dense(8, name="h")(vi)
    v = keras.layers.Dense(8, name="r")(inputs=h)
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(query=q, value=v)
    model = keras.Model([qi, vi], attended)
    x = [rng.normal(size=(2, 4, 8)).astype("float32"), rng.normal(size=(2, 6, 8)).astype("float32")]
    scope = gs.trace(model)
    for name, keyword in (("r", "inputs"), ("mha", "query")):
        layer = scope.layer(name)
        node = model.get_layer(name)._inbound_nodes[0]
        assert len(layer.inputs) == len(node.input_tensors) and keyword in layer.input_keywords
        values = scope.run([*layer.inputs, *layer.outputs], x)
        # Keras: what the layer's node reads, computed by a sub-model
        want = keras.Model(model.inputs, node.input_tensors)(x)
        for t, w in zip(layer.inputs, tf.nest.flatten(want)):
            np.testing.assert_allclose(values[t.name], w, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(values[layer.output.name], _called(layer, values), rtol=1e-5, atol=1e-6)
    assert scope.layer("mha").inputs.names == [scope.layer("q_proj").output.name, scope.layer("r").output.name]


def test_keyword_inputs_follow_the_call_signature():
    class Shift(keras.layers.Layer):
        def call(self, x, bias, scale=None):
            return x * scale - bias

    inp = keras.Input((3,))
    a, b, c = (keras.layers.Dense(3, name=n)(inp) for n in "abc")
    model = keras.Model(inp, Shift(name="shift")(scale=c, bias=b, x=a))
    scope = gs.trace(model)
    shift = scope.layer("shift")
    assert shift.inputs.names == [scope.layer(n).output.name for n in "abc"]  # x, bias, scale
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    values = scope.run(shift.inputs, x)
    want = keras.Model(inp, [a, b, c])(x)
    for t, w in zip(shift.inputs, want):
        np.testing.assert_allclose(values[t.name], w, rtol=1e-6)


def test_a_mask_keras_passes_is_a_layer_input():
    inp = keras.Input((5,), dtype="int32")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True, name="emb")(inp)
    model = keras.Model(inp, keras.layers.LSTM(3, name="lstm")(embedded))
    scope = gs.trace(model)
    lstm = scope.layer("lstm")
    assert len(lstm.inputs) == len(model.get_layer("lstm")._inbound_nodes[0].input_tensors) == 2
    x = np.array([[3, 1, 0, 0, 0], [4, 4, 4, 2, 0]], np.int32)
    values = scope.run(lstm.inputs, x)
    np.testing.assert_array_equal(values[lstm.inputs[1].name], x != 0)  # the mask, by hand


def _positions(k):
    """keras-hub ViT's embedding, reduced: position ids made eagerly in `build()`, an Embedding
    called on them in `call()` (the ids are an EagerTensor while the model is traced)."""

    class Positions(k.layers.Layer):
        def __init__(self, count, **kwargs):
            super().__init__(**kwargs)
            self.count = count
            self.embedding = k.layers.Embedding(count, 5, name="pos")

        def build(self, input_shape):
            self.ids = tf.expand_dims(tf.range(self.count), 0)
            self.embedding.build(self.ids.shape)
            self.built = True

        def call(self, x):
            return x + self.embedding(self.ids)

    return Positions


@pytest.mark.parametrize("count, captured", [(4, "Const"), (200, "Placeholder")])  # TensorFlow: <= 128 elements
@pytest.mark.parametrize("kind", ["keras", "tf_keras"])  # Keras 3 passes the EagerTensor, tf_keras its capture
def test_an_eager_tensor_made_in_build_is_the_input_it_was_captured_as(kind, count, captured):
    k = keras if kind == "keras" else pytest.importorskip("tf_keras")
    inp = k.Input((count, 3))
    out = k.layers.Dense(2, name="head")(_positions(k)(count, name="pe")(k.layers.Dense(5, name="d")(inp)))
    model = k.Model(inp, out)
    scope = gs.trace(model, quiet=True)
    pos = scope.layer("pe/pos")
    ids = pos.inputs[0]
    # named by the attribute holding it, in the holder's call; the Embedding's input
    assert pos.inputs.names == ["pe/ids:0"] and ids.op_type == captured and ids.layer == "pe"
    assert pos.input_structure == (ids.name,) and len(scope.inputs) == 1  # not a model input
    x = np.random.default_rng(0).normal(size=(2, count, 3)).astype("float32")
    values = scope.run([ids, pos.output, scope.output()], x)
    np.testing.assert_array_equal(values[ids.name], model.get_layer("pe").ids)
    np.testing.assert_allclose(values[pos.output.name], _called(pos, values), rtol=1e-6)  # the Embedding, eagerly
    np.testing.assert_allclose(values[scope.output().name], model(x), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- RNN shape probes
# Keras calls an RNN's cell once outside its loop only to learn shapes (the probe: no output
# needs it), then in the loop's body. The call the model runs is the cell's first
# (`lstm/lstm_cell`, ops `lstm/while/lstm_cell/...`), the probe comes after it (`@2`).


def _np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _lstm_by_hand(cell, x, activation=np.tanh):
    """h and c of every step, [steps, batch, units] each, by numpy from the cell's weights."""
    kernel, recurrent, bias = cell.kernel.numpy(), cell.recurrent_kernel.numpy(), cell.bias.numpy()
    h = c = np.zeros((x.shape[0], cell.units), np.float32)
    hs, cs = [], []
    for t in range(x.shape[1]):
        i, f, g, o = np.split(x[:, t] @ kernel + h @ recurrent + bias, 4, axis=-1)
        c = _np_sigmoid(f) * c + _np_sigmoid(i) * activation(g)
        h = _np_sigmoid(o) * activation(c)
        hs.append(h)
        cs.append(c)
    return np.stack(hs), np.stack(cs)


def _rnn(kind):
    """(model, inputs, [(rnn layer path, cell path, Keras cell, the inputs as its loop sees them,
    h of each loop step from Keras' own output)]) for a tiny model, built on the inputs."""
    x = np.random.default_rng(7).normal(size=(2, 4, 3)).astype(np.float32)
    if kind == "tf_keras LSTM":  # not cuDNN's kernel (relu): tf_keras calls the cell, and probes it
        tf_keras = pytest.importorskip("tf_keras")
        x_in = tf_keras.Input((4, 3), name="sequence")
        lstm = tf_keras.layers.LSTM(5, activation="relu", return_sequences=True, name="lstm")
        model = tf_keras.Model(x_in, lstm(x_in))
    elif kind == "Bidirectional":
        x_in = keras.Input((4, 3), name="sequence")
        bi = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True), name="bi")
        model = keras.Model(x_in, bi(x_in))
    else:
        model = models.recurrent(kind)
    y = np.asarray(model(x))
    if kind == "Bidirectional":
        bi = model.get_layer("bi")
        return model, x, [("bi/forward_lstm", "bi/forward_lstm/lstm_cell", bi.forward_layer.cell, x,
                           y[..., :5].transpose(1, 0, 2)),
                          ("bi/backward_lstm", "bi/backward_lstm/lstm_cell", bi.backward_layer.cell, x[:, ::-1],
                           y[:, ::-1, 5:].transpose(1, 0, 2))]  # Keras flips the backward half back
    rnn = kind.split()[-1].lower()
    return model, x, [(rnn, f"{rnn}/{rnn}_cell", model.get_layer(rnn).cell, x, y.transpose(1, 0, 2))]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "Bidirectional", "tf_keras LSTM"])
def test_an_rnn_cell_is_the_call_its_loop_runs_and_the_shape_probe_comes_after_it(kind):
    model, x, cells = _rnn(kind)
    scope = gs.trace(model, quiet=True)
    tree = str(scope.layer_tree(depth=4))
    for rnn, path, cell, seen, keras_h in cells:
        used, probe = scope.layer(path), scope.layer(f"{path}@2")
        assert used.keras_layer is probe.keras_layer is cell
        base = path.rpartition("/")[2]
        # the call the model runs: in the loop's body, named by it, needed by the output
        assert f"{rnn}/while/{base}/Sigmoid" in {op.name for op in used.ops}
        assert {t.context for t in used.outputs} == {f"{rnn}/while:body"}
        assert not any(t.op in scope.unused for t in used.outputs)
        # the probe: outside the loop, after it, unused
        assert f"{rnn}/{base}@2/Sigmoid" in {op.name for op in probe.ops}
        assert probe.outputs and all(t.op in scope.unused and t.context is None for t in probe.outputs)
        assert [lay.name for lay in scope.layers if lay.name.startswith(path)] == [path, f"{path}@2"]
        # a cell returns `h, [h, c]` (GRU: `h, [h]`): each output listed once
        assert len(used.outputs) == len(set(used.outputs.names)) == (1 if kind == "GRU" else 2)
        # its values, each step: h as Keras' layer outputs it; an LSTM's h and c by numpy too
        got = scope.run(used.outputs, x)
        h_name = used.outputs.names[0]
        np.testing.assert_allclose(got[h_name], keras_h, rtol=1e-4, atol=1e-5)
        probe_h = keras_h[0]  # the cell's step from zero state on the inputs' first step (as given)
        if kind != "GRU":
            activation = (lambda v: np.maximum(v, 0)) if kind.startswith("tf_keras") else np.tanh
            hs, cs = _lstm_by_hand(cell, seen, activation)
            np.testing.assert_allclose(got[h_name], hs, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(got[used.outputs.names[1]], cs, rtol=1e-4, atol=1e-5)
            probe_h = _lstm_by_hand(cell, x[:, :1], activation)[0][0]  # a backward layer's too
        # the probe's value is real (noted when fetched)
        with pytest.warns(gs.UnusedTensorWarning):
            first = scope.run(probe.outputs[0], x)[probe.outputs.names[0]]
        np.testing.assert_allclose(first, probe_h, rtol=1e-4, atol=1e-5)
        # the tree gives the cell's parameters to the call the model runs; marks the probe
        counted = re.search(rf"─ {base}\s+\w+Cell\s+[^a-z]*?\s(\d+)\s+\d+\s*$", tree, re.M)
        assert counted and int(counted.group(1)) == cell.count_params()
        assert re.search(rf"─ {base}@2\s+\w+Cell\s+[^a-z]*?\s\d+\s+unused\s*$", tree, re.M)


def test_tf_keras_fused_lstm_calls_no_cell_and_keeps_its_names():
    """tf_keras' default LSTM runs its own loop (`standard_lstm`) without calling the cell: no
    cell call, no `@2`; its gates are named under the loop inside the function call."""
    tf_keras = pytest.importorskip("tf_keras")
    x_in = tf_keras.Input((4, 3), name="sequence")
    model = tf_keras.Model(x_in, tf_keras.layers.LSTM(5, return_sequences=True, name="lstm")(x_in))
    scope = gs.trace(model, quiet=True)
    assert not [lay.name for lay in scope.layers if "@" in lay.name]
    gates = [f"lstm/PartitionedCall/while/Sigmoid{s}:0" for s in ("", "_1", "_2")]
    assert scope.find("Sigmoid", layer="lstm").names == gates


@pytest.mark.parametrize("kind", ["keras", "tf_keras"])
def test_a_call_no_output_needs_is_numbered_after_the_one_that_is_needed(kind):
    k = keras if kind == "keras" else pytest.importorskip("tf_keras")

    class Wasteful(k.Model):
        def __init__(self):
            super().__init__()
            self.d = k.layers.Dense(2, name="d")

        def call(self, x):
            self.d(x * 2.0)  # computed first, never used
            return self.d(x)

    model = Wasteful()
    x = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    model(x)
    scope = gs.trace(model, input_signature=[tf.TensorSpec((None, 3), tf.float32)], quiet=True)
    used, wasted = scope.layer("d"), scope.layer("d@2")
    assert not any(t.op in scope.unused for t in used.outputs) and all(t.op in scope.unused for t in wasted.outputs)
    np.testing.assert_allclose(scope.run(used.output, x)[used.output.name], model(x), rtol=1e-5, atol=1e-6)
    with pytest.warns(gs.UnusedTensorWarning):
        got = scope.run(wasted.output, x)[wasted.output.name]
    kernel, bias = (w.numpy() for w in model.d.weights)
    np.testing.assert_allclose(got, (x * 2.0) @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_a_saved_layer_no_output_needs_has_the_output_it_computes(tmp_path):
    """A SavedModel signature that calls a model and keeps one of its heads: the other head's
    layer, guessed from its name scope, has as output what it computes (the tensor nothing
    reads), as when the same call is traced live, instead of none ("not called"). The oracle: a
    Keras sub-model to that head."""
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(5, name="trunk")(x_in)
    model = keras.Model(x_in, {"kept": keras.layers.Dense(2, name="kept")(h),
                               "dropped": keras.layers.Dense(3, activation="softmax", name="dropped")(h)})
    module = tf.Module()
    module.model = model
    serve = tf.function(lambda x: {"kept": model(x)["kept"]}, input_signature=[tf.TensorSpec((None, 4), name="x")])
    tf.saved_model.save(module, str(tmp_path / "one_head"), signatures={"serving_default": serve})
    scope = gs.trace(tmp_path / "one_head", quiet=True)
    dropped = scope.layer("dropped")
    assert dropped.source == "name scope" and dropped.output.name == "dropped/Softmax:0"
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    with pytest.warns(gs.UnusedTensorWarning):
        got = scope.run(dropped.output, x)[dropped.output.name]
    np.testing.assert_allclose(got, keras.Model(x_in, model.get_layer("dropped").output)(x), rtol=1e-6)
    assert scope.layer("trunk").outputs.names == ["trunk/BiasAdd:0"]  # a layer read outside keeps only that



class _Wrapped(tf.Module):
    """The way SavedModels are often made: a signature that only calls the module's own
    tf.function, which calls the Keras model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function
    def __call__(self, x):
        return self.model(x)

    @tf.function(input_signature=[tf.TensorSpec((None, 4), name="x")])
    def serve(self, x):
        return {"scores": self(x)}


def test_a_signature_that_only_calls_another_function_is_named_as_that_function(tmp_path):
    """A signature whose function only calls another one (a tf.Module's `serve` returning
    `self(x)`; a Keras `ExportArchive` endpoint given a tf.function) runs the model two calls
    down: neither call's `StatefulPartitionedCall/` nor the model's scope is kept, and the layers
    come from the name scopes, as for a model exported directly. Oracles: Keras sub-models and
    the loaded signature called eagerly."""
    keras.utils.set_random_seed(0)
    x_in = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")
    model = keras.Model(x_in, keras.layers.Dense(3, name="head")(hidden(x_in)), name="net")
    module = _Wrapped(model)
    tf.saved_model.save(module, str(tmp_path / "wrapped"), signatures={"serving_default": module.serve})
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", tf.function(lambda x: model(x)), input_signature=[tf.TensorSpec((None, 4), name="x")])
    archive.write_out(str(tmp_path / "archive"), verbose=False)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    for folder, signature in (("wrapped", "serving_default"), ("archive", "serve")):
        scope = gs.trace(tmp_path / folder, signature=signature, quiet=True)
        assert [(lay.name, lay.source) for lay in scope.layers] == [("hidden", "name scope"), ("head", "name scope")]
        assert scope.layer("hidden").output.name == "hidden/Relu:0", folder
        assert scope.outputs.names == ["head/BiasAdd:0"], folder
        computed = [t.name for t in scope.find() if t.op_type not in ("Placeholder", "Identity", "StatefulPartitionedCall")]
        assert len(computed) >= 8 and not [n for n in computed if "PartitionedCall" in n or "net" in n or "_1/" in n]
        (key,) = scope.output_keys
        got = scope.run(["hidden/Relu:0", key], x)
        np.testing.assert_allclose(got["hidden/Relu:0"], keras.Model(x_in, hidden.output)(x), rtol=1e-6)
        want = tf.saved_model.load(str(tmp_path / folder)).signatures[signature](x=tf.constant(x))[key]
        np.testing.assert_allclose(got[key], want, rtol=1e-6)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "tf_keras LSTM"])
def test_with_a_mask_the_rnn_cell_is_still_the_call_its_loop_runs(kind):
    """With a mask, Keras makes its masked steps' zeros with `zeros_like` of the probe's output,
    so the probe is used, but only for its shape: it is still numbered after the loop's call (it
    came first, and took the cell's name, with a mask only). The oracle: Keras' own output at the
    steps the mask keeps."""
    k = pytest.importorskip("tf_keras") if kind.startswith("tf_keras") else keras
    x = np.random.default_rng(3).normal(size=(2, 4, 3)).astype(np.float32)
    x[1, 3] = -99.0  # the last step of the second sample is masked
    x_in = k.Input((4, 3), name="sequence")
    relu = {"activation": "relu"} if k is not keras else {}  # not cuDNN's kernel: tf_keras calls the cell
    rnn = getattr(k.layers, kind.split()[-1])(5, return_sequences=True, name="rnn", **relu)
    model = k.Model(x_in, rnn(k.layers.Masking(mask_value=-99.0, name="mask")(x_in)))
    want = np.asarray(model(x)).transpose(1, 0, 2)  # [steps, batch, units]
    scope = gs.trace(model, quiet=True)
    assert scope.find(op_type="ZerosLike")  # the mask's zeros: the probe is read
    base = f"{kind.split()[-1].lower()}_cell"
    used, probe = scope.layer(f"rnn/{base}"), scope.layer(f"rnn/{base}@2")
    assert {t.context for t in used.outputs} == {"rnn/while:body"}
    assert {t.context for t in probe.outputs} == {None}
    h = scope.run(used.outputs[0], x)[used.outputs.names[0]]  # the cell's h, each step
    np.testing.assert_allclose(h[:3], want[:3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h[3, 0], want[3, 0], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- mixed precision


def test_the_casts_keras_makes_of_a_layers_inputs_are_the_layers():
    """Under mixed precision Keras 3 casts a layer's inputs to its compute dtype in
    `Layer.__call__`, before it opens the layer's name scope: the casts were root-level
    `Cast:0`, `Cast_1:0` with no layer, and each layer's inputs were those casts. Now each cast
    is its layer's (`d1/autocast:0`; two inputs: `add/autocast:0`, `add/autocast_1:0`), the
    layer's inputs are what Keras passed it (the model's input, the inner model's float16
    logits), as `layer.input` says. The oracle: numpy casts and Keras sub-models."""
    x1_in, x2_in = keras.Input((5,), name="x1"), keras.Input((5,), name="x2")
    summed = keras.layers.Add(dtype="mixed_float16", name="add")([x1_in, x2_in])
    h = keras.layers.Dense(4, activation="relu", dtype="mixed_float16", name="d1")(x1_in)
    inner_in = keras.Input((4,), name="inner_x", dtype="float16")
    inner = keras.Model(inner_in, keras.layers.Dense(3, dtype="mixed_float16", name="logits")(inner_in), name="inner")
    logits = inner(h)
    probs = keras.layers.Softmax(dtype="float32", name="probs")(logits)
    model = keras.Model([x1_in, x2_in], [probs, summed])
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
    scope = gs.trace(model, quiet=True)

    assert not scope.find(r"^Cast(_\d+)?:0$")  # no cast left at the root
    casts = {t.name: (t.layer, t.dtype) for t in scope.find("autocast")}
    assert casts == {"d1/autocast:0": ("d1", "float16"), "probs/autocast:0": ("probs", "float32"),
                     "add/autocast:0": ("add", "float16"), "add/autocast_1:0": ("add", "float16")}
    assert scope.layer("d1").inputs.names == ["x1:0"]
    assert scope.layer("add").inputs.names == ["x1:0", "x2:0"]
    assert scope.layer("probs").inputs.names == [f"{scope.layer('inner').output.name}"]
    assert scope.layer("inner").inputs.names == ["d1/Relu:0"]
    for name in ("d1", "probs", "add"):
        assert {f"{name}/autocast"} <= {op.name for op in scope.layer(name).ops}

    got = scope.run([*casts, "probs/Softmax:0", "add/Add:0"], [x1, x2])
    np.testing.assert_array_equal(got["d1/autocast:0"], x1.astype(np.float16))
    np.testing.assert_array_equal(got["add/autocast_1:0"], x2.astype(np.float16))
    want_logits = np.asarray(keras.Model([x1_in, x2_in], logits)([x1, x2]))
    np.testing.assert_array_equal(got["probs/autocast:0"], want_logits.astype(np.float32))
    want_probs, want_sum = (np.asarray(v) for v in model([x1, x2]))
    np.testing.assert_allclose(got["probs/Softmax:0"], want_probs, rtol=1e-6)
    np.testing.assert_array_equal(got["add/Add:0"], want_sum)
    # an edit at a cast: d1 on zeros is relu(bias)
    edited = scope.run("d1/Relu:0", [x1, x2], edits={"d1/autocast:0": lambda v: tf.zeros_like(v)})["d1/Relu:0"]
    bias = model.get_layer("d1").bias.numpy().astype(np.float16)
    np.testing.assert_array_equal(edited, np.broadcast_to(np.maximum(bias, 0), edited.shape))


def test_a_cast_keras_did_not_make_for_a_layer_is_not_its_autocast():
    """Keras casts only floating-point inputs to a layer's compute dtype, and a model's own cast of
    its inputs is the model's: a caller's `tf.cast(ids, tf.float32)` (or `keras.ops.cast`) before a
    Dense was taken for the Dense's autocast (`d/autocast:0`, and the Dense's input was the int ids),
    and a float32 model traced on float16 inputs named its own cast `None/autocast:0` and gave its
    Dense the float16 input, though Keras passed it the cast. The oracle: Keras' `layer.input` (a
    sub-model), numpy casts and tf.GradientTape at what the Dense was passed."""

    class Ids(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3, name="d")

        def call(self, ids):
            return self.d(tf.cast(ids, tf.float32))

    ids = np.array([[1, 2], [3, 4]], np.int32)
    scope = gs.trace(Ids(), input_signature=[tf.TensorSpec((None, 2), tf.int32)], quiet=True)
    (passed,) = scope.layer("d").inputs
    assert passed.dtype == "float32" and not scope.find("autocast")
    np.testing.assert_array_equal(scope.run(passed, ids)[passed.name], ids.astype(np.float32))

    ids_in = keras.Input((2,), dtype="int32", name="ids")
    functional = keras.Model(ids_in, keras.layers.Dense(3, name="d")(keras.ops.cast(ids_in, "float32")))
    scope = gs.trace(functional, quiet=True)
    (passed,) = scope.layer("d").inputs
    want = np.asarray(keras.Model(ids_in, functional.get_layer("d").input)(ids))
    assert passed.dtype == "float32" and not scope.find("autocast")
    np.testing.assert_array_equal(scope.run(passed, ids)[passed.name], want)

    class Plain(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3, name="d")

        def call(self, x):
            return self.d(x)

    model = Plain()
    x = np.array([[1.5, -2], [3, 4.25]], np.float16)
    scope = gs.trace(model, input_signature=[tf.TensorSpec((None, 2), tf.float16)], quiet=True)
    assert [t.name for t in scope.find("autocast")] == ["autocast:0"]  # the model's own, at the root
    (passed,) = scope.layer("d").inputs
    assert passed.name == "autocast:0" and passed.dtype == "float32"
    with tf.GradientTape() as tape:
        h = tf.cast(tf.constant(x), tf.float32)
        tape.watch(h)
        total = tf.reduce_sum(model.d(h))
    got = scope.gradients(scope.outputs[0], [passed.name], x)[passed.name]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, tape.gradient(total, h).numpy(), rtol=1e-6)


def test_a_loop_conds_unread_arguments_are_named_without_the_cond_functions_name():
    """TensorFlow names a while cond's argument for a loop variable the cond does not read after
    the cond function (`rnn_1_lstm_1_while_cond_129___redundant_placeholder0`): the model's name
    and a trace counter, in no name a person should read."""
    x_in = keras.Input((4, 2))
    model = keras.Model(x_in, keras.layers.LSTM(3, name="lstm")(x_in), name="rnn")
    scope = gs.trace(model, quiet=True)
    names = [t.name for t in scope.find("lstm/while/cond/")]
    assert "lstm/while/cond/redundant_placeholder0:0" in names
    assert not [n for n in names if "rnn" in n or "___" in n]


class _Holder(keras.layers.Layer):
    """A layer whose ops are all its sublayer's: it owns no op of its own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(3, activation="tanh", name="inner")

    def build(self, shape):
        self.inner.build(shape)

    def call(self, x):
        return self.inner(x)


def test_a_helper_called_twice_copies_a_layer_that_owns_no_op_and_its_sublayer_goes_under_the_copy():
    """The helper's second place holds a call of the holder too (`holder@2`), its sublayer's
    call under it (`holder@2/inner`), not under the first call of the holder; each with that
    place's values, as Keras computes them eagerly."""
    holder = _Holder(name="holder")
    holder.build((None, 3))
    rng = np.random.default_rng(21)
    for w in holder.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    helper = tf.function(lambda v: holder(v))
    scope = gs.trace(lambda v: helper(v) + 10.0 * helper(2.0 * v), [tf.TensorSpec((None, 3))], quiet=True)
    assert [lay.name for lay in scope.layers] == ["holder", "holder/inner", "holder@2", "holder@2/inner"]
    x = rng.normal(size=(4, 3)).astype(np.float32)
    want = {"holder": holder(x), "holder/inner": holder.inner(x),
            "holder@2": holder(2.0 * x), "holder@2/inner": holder.inner(2.0 * x)}
    got = scope.run([scope.layer(k).output for k in want], x)
    for k, w in want.items():
        layer = scope.layer(k)
        np.testing.assert_allclose(got[layer.output.name], w.numpy(), rtol=1e-5, atol=1e-6)
        assert {op.layer for op in layer.ops} <= {k, f"{k}/inner"}, k  # none of the other place's ops


def test_a_helper_called_inside_a_layer_and_then_at_the_top_is_not_under_that_layer_at_the_top():
    """`inner` calls `a`; the layer `p` calls `inner`; `outer` calls `p`. Called twice through
    `outer`, then once directly: the direct call of `a` is a top-level call (`a`), not a call
    under the last copy of `p` (`p@2/a@2`, which listed that op among `p@2`'s)."""
    a = keras.layers.Dense(3, activation="tanh", name="a")
    a.build((None, 3))
    rng = np.random.default_rng(22)
    for w in a.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    inner = tf.function(lambda v: a(v))

    class P(keras.layers.Layer):
        def call(self, v):
            return inner(v) * 2.0

    p = P(name="p")
    outer = tf.function(lambda v: p(v))
    scope = gs.trace(lambda v: outer(v) + 10.0 * outer(2.0 * v) + 100.0 * inner(3.0 * v),
                     [tf.TensorSpec((None, 3))], quiet=True)
    assert [lay.name for lay in scope.layers] == ["p", "p/a", "p@2", "p@2/a", "a"]
    x = rng.normal(size=(4, 3)).astype(np.float32)
    want = {"p": 2.0 * a(x), "p/a": a(x), "p@2": 2.0 * a(2.0 * x), "p@2/a": a(2.0 * x), "a": a(3.0 * x)}
    got = scope.run([scope.layer(k).output for k in want], x)
    for k, w in want.items():
        np.testing.assert_allclose(got[scope.layer(k).output.name], w.numpy(), rtol=1e-5, atol=1e-6)
    assert {op.layer for op in scope.layer("p@2").ops} == {"p@2", "p@2/a"}
