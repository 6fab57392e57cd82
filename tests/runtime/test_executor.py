"""Executors: values compared with Keras itself, or with plain TF applied by hand."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from tests import models
from tests.conftest import assert_weights_unchanged, weights_snapshot

KERAS_CAN_ANSWER = {"functional", "sequential", "nested", "shared", "shared_out_of_order", "multi_input",
                    "with_tf_function", "control_flow", "misleading_names"}


def _keras_call_output(model, lay):
    """What Keras itself says a top-level layer call outputs: the KerasTensors of the layer's
    node for that call (`shared@2`: its second node in this model, in the order the model's code
    made them). Nested models too: their node in the outer model, not their own `.output`."""
    functional = getattr(model, "_functional", None) or model
    own = {id(node) for nodes in functional._nodes_by_depth.values() for node in nodes}
    nodes = [node for node in lay.keras_layer._inbound_nodes if id(node) in own]
    _, _, number = lay.name.partition("@")
    return nodes[int(number or 1) - 1].outputs


def _eager_layer_output(layer, values):
    """Call the Keras layer eagerly on its own recorded (fetched) inputs, positional and keyword."""
    args = tf.nest.map_structure(lambda n: values[n], layer.input_structure)
    kwargs = {k: tf.nest.map_structure(lambda n: values.get(n, n), v) for k, v in layer.input_keywords.items()}
    return keras.ops.convert_to_numpy(layer.keras_layer(*args, **kwargs))


def test_every_layer_output_matches_keras(zoo_model):
    name, model = zoo_model
    before = weights_snapshot(model)
    scope = gs.trace(model)
    inputs = models.sample_inputs(model)
    layers = [lay for lay in scope.layers if lay.outputs]
    fetches = [t for lay in layers for t in lay.outputs] + [t for lay in layers for t in lay.inputs]
    values = scope.run(fetches, inputs)  # every layer output, in one execution
    compared = 0
    for lay in layers:
        # Keras answers for every call of a top-level layer (its node in the model); layers inside
        # nested models are called eagerly on their recorded inputs.
        top_level = "/" not in lay.name
        if name in KERAS_CAN_ANSWER and top_level and lay.type != "InputLayer":
            want = keras.Model(model.inputs, _keras_call_output(model, lay))(inputs)
            want = [want] if not isinstance(want, (list, tuple)) else want
        elif lay.input_structure is not None:
            want = tf.nest.flatten(_eager_layer_output(lay, values))
        else:  # an InputLayer of a nested model: stands for what was passed in
            continue
        got = [values[t.name] for t in lay.outputs]
        assert len(got) == len(want), lay.name
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, keras.ops.convert_to_numpy(w), rtol=1e-5, atol=1e-5, err_msg=lay.name)
        compared += 1
    assert compared >= 2
    assert_weights_unchanged(model, before)


def test_model_outputs_match_model_call(zoo_model):
    _, model = zoo_model
    scope = gs.trace(model)
    inputs = models.sample_inputs(model)
    values = scope.run(scope.outputs, inputs)
    want = model(inputs if len(inputs) > 1 else inputs[0])
    for got, w in zip(values.values(), tf.nest.flatten(want)):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_nested_tf_function_values_by_hand():
    model = models.with_tf_function()
    scope = gs.trace(model)
    (softplus,) = scope.find("Softplus", op_type="Softplus")
    assert softplus.function and softplus.layer == "soft"
    pre = scope.layer("pre").output
    x = models.sample_inputs(model)[0]
    values = scope.run([pre, softplus], x)
    np.testing.assert_allclose(values[softplus.name], tf.nn.softplus(values[pre.name]), rtol=1e-6)


@pytest.mark.slow
def test_vgg19_preactivations_without_cloning():
    model = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    before = weights_snapshot(model)
    scope = gs.trace(model)
    pre = scope.find(r"^block\d_conv\d/BiasAdd:0$")
    post = scope.find(r"^block\d_conv\d/Relu:0$")
    assert len(pre) == len(post) == 16
    assert scope.find(r"block4_conv3/BiasAdd").names == ["block4_conv3/BiasAdd:0"]
    layer_inputs = [scope.layer(t.layer).inputs[0] for t in pre]
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    values = scope.run([*pre, *post, *layer_inputs], images)  # one executor, one execution
    for p, q, x in zip(pre, post, layer_inputs):
        np.testing.assert_allclose(np.maximum(values[p.name], 0), values[q.name], rtol=1e-6)
        conv = model.get_layer(p.layer)
        linear = tf.nn.conv2d(values[x.name], conv.kernel, 1, "SAME") + conv.bias  # by hand
        np.testing.assert_allclose(values[p.name], linear, rtol=1e-4, atol=1e-2)
        keras_post = keras.Model(model.input, conv.output)(images)
        np.testing.assert_allclose(values[q.name], keras_post, rtol=1e-4, atol=1e-3)
    assert_weights_unchanged(model, before)


@pytest.mark.slow
def test_resnet50_fed_at_an_intermediate_tensor():
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    scope = gs.trace(model)
    cut = scope.layer("conv3_block1_out").output
    later = scope.layer("conv4_block2_out").output
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    full = scope.run([cut, later], images)
    ex = scope.executor([later], feeds=[cut])
    assert ex.inputs == [cut.name]
    assert "conv1_conv/Conv2D" not in ex.ops and len(ex.ops) < scope.graph.number_of_nodes() / 2
    part = ex(full[cut.name])
    np.testing.assert_allclose(part[later.name], full[later.name], rtol=1e-4, atol=1e-4)
    want = keras.Model(model.input, model.get_layer("conv4_block2_out").output)(images)
    np.testing.assert_allclose(part[later.name], want, rtol=1e-4, atol=1e-4)


@tf.function
def _inner_helper(x):
    return tf.tanh(x)


@tf.function
def _outer_helper(x):
    y = tf.nn.softplus(x) * 2.0
    return y, _inner_helper(y) + 1.0 + x


class _Helped(keras.layers.Layer):
    def call(self, x):
        y, z = _outer_helper(x)
        return y * 3.0 + z + x  # the call's input and the helper's result read outside it too


def test_a_helpers_argument_fed_or_edited_reaches_only_the_helper():
    """Hunt: feeding (or editing) the argument of a `tf.function` helper the inliner inlined
    replaced the value it is called with everywhere: the layer's own reads of that value took
    the fed value too, silently, and no model input was asked for. Oracle: the helpers called
    eagerly, by hand."""
    inputs = keras.Input((5,), name="x")
    model = keras.Model(inputs, _Helped(name="helped")(keras.layers.Dense(5, name="d")(inputs)))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    h = model.get_layer("d")(x)
    value = np.asarray(h) * 1.5 + 0.25
    (out,) = scope.outputs
    outer, inner = "helped/PartitionedCall/x:0", "helped/PartitionedCall/PartitionedCall/x:0"
    y = tf.nn.softplus(value) * 2.0
    want_outer = y * 3.0 + tf.tanh(y) + 1.0 + value + h  # the layer's `+ x` reads the call's input
    got = scope.run(out, {"x": x, outer: value}, feeds=["x", outer])[out.name]
    np.testing.assert_allclose(got, want_outer, rtol=1e-5, atol=1e-5)
    got = scope.run(out, x, edits={outer: value})[out.name]
    np.testing.assert_allclose(got, want_outer, rtol=1e-5, atol=1e-5)
    with pytest.raises(gs.DisconnectedError, match="x:0"):  # the layer still reads its input
        scope.executor(out, feeds=[outer])
    hv = tf.constant(h)
    with tf.GradientTape() as tape:  # the gradient with respect to the argument: through the helper alone
        tape.watch(hv)
        y, z = _outer_helper(hv)
        total = tf.reduce_sum(y * 3.0 + z)
    np.testing.assert_allclose(scope.gradients(out, outer, x)[outer], tape.gradient(total, hv), rtol=1e-5, atol=1e-6)
    y = tf.nn.softplus(h) * 2.0
    want_inner = y * 3.0 + tf.tanh(value) + 1.0 + h + h  # the helper's `y` is returned as it was
    got = scope.run(out, {"x": x, inner: value}, feeds=["x", inner])[out.name]
    np.testing.assert_allclose(got, want_inner, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scope.run(inner, x)[inner], y, rtol=1e-6)  # fetched, it is the value passed


def test_shallow_fetch_runs_a_fraction_of_the_model():
    model = models.functional()
    scope = gs.trace(model)
    ex = scope.executor("conv/BiasAdd:0")
    assert "conv/convolution" in ex.ops and "dense/MatMul" not in ex.ops
    assert len(ex.ops) < scope.graph.number_of_nodes() / 3
    assert not any("probs" in op for op in ex.ops)


def test_results_are_keyed_as_given_read_only_and_cached():
    model = models.functional()
    scope = gs.trace(model)
    t = scope.tensor("dense/Tanh:0")
    ex = scope.executor(["conv/BiasAdd", t, "image"])
    assert scope.executor(["conv/BiasAdd", t, "image"]) is ex
    x = models.sample_inputs(model)[0]
    values = ex(x)
    assert list(values) == ["conv/BiasAdd", "dense/Tanh:0", "image"]
    np.testing.assert_array_equal(values["image"], x)
    assert values[t] is values["dense/Tanh:0"]  # the Tensor fetched looks up its value too
    for v in values.values():
        assert not v.flags.writeable
        with pytest.raises(ValueError):
            v[...] = 0
    assert ex({"image": x}).keys() == values.keys()
    assert ex([x]).keys() == values.keys()


def test_fetched_variable_reads_never_alias_weights():
    model = models.functional()
    scope = gs.trace(model)
    (kernel_read,) = scope.find(r"^dense/Cast/ReadVariableOp:0$") or scope.find(r"^dense/.*ReadVariableOp:0$")[:1]
    value = scope.run([kernel_read], models.sample_inputs(model))[kernel_read.name]
    np.testing.assert_array_equal(value, model.get_layer("dense").kernel)
    assert not value.flags.writeable
    assert not np.shares_memory(value, model.get_layer("dense").kernel.numpy())


def test_multi_input_by_list_and_dict():
    model = models.multi_input()
    scope = gs.trace(model)
    img, meta = models.sample_inputs(model)
    ex = scope.executor(["add/Add:0", "out_b/Sigmoid:0"])
    assert ex.inputs == ["img", "meta"]
    a = ex([img, meta])
    b = ex({"meta": meta, "img": img})
    c = ex(img, meta)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    # a fetch that needs only one input still takes the model's inputs, and only runs its branch
    only_meta = scope.executor("meta_dense/BiasAdd:0")
    assert not any(op.startswith("img_dense") for op in only_meta.ops)
    only_meta([img, meta])


def test_one_input_takes_nested_lists_as_its_value_and_a_list_of_one_array_as_that_array():
    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(inp))
    scope = gs.trace(model)
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    x = np.array(rows, np.float32)
    want = keras.ops.convert_to_numpy(model(x))  # Keras, on the 2x3 array
    out = scope.outputs[0].name
    ex = scope.executor(out)
    spellings = [rows, tuple(map(tuple, rows)), x, [x], (x,), [tf.constant(x)]]
    for given in spellings:
        np.testing.assert_allclose(ex(given)[out], want, rtol=1e-6)
        np.testing.assert_allclose(scope.run(out, given)[out], want, rtol=1e-6)
    # one row of rank 1 in a list is a batch of one, as numpy reads it
    np.testing.assert_allclose(scope.run(out, [x[0]])[out], want[:1], rtol=1e-6)
    with pytest.raises(gs.InputError, match="takes 1 input.*got 2"):
        ex(x, x)
    with pytest.raises(gs.InputError, match=r"expects shape \[\?,3\].*got \[2,2,3\]"):
        ex([x, x])  # one input: a list of two arrays is one array, of the wrong shape

    # an input of unknown rank: a list of one array holds that array
    doubled = gs.trace(tf.function(lambda v: v * 2.0), [tf.TensorSpec(None, tf.float32)])
    (twice,) = doubled.outputs.names
    np.testing.assert_allclose(doubled.run(twice, [x])[twice], x * 2.0)
    np.testing.assert_allclose(doubled.run(twice, rows)[twice], x * 2.0)


def test_training_mode_never_moves_weights():
    model = models.functional()
    before = weights_snapshot(model)
    scope = gs.trace(model, training=True)
    x = models.sample_inputs(model, batch=4)[0]
    bn = scope.layer("bn").output
    values = scope.run([bn], x)
    # training-mode batch norm normalises with the batch's own statistics
    np.testing.assert_allclose(values[bn.name].mean(axis=(0, 1, 2)), 0, atol=1e-4)
    scope.run([bn], x)
    assert_weights_unchanged(model, before)
    inference = gs.trace(model)
    moving = inference.run([inference.layer("bn").output], x)[bn.name]  # moving statistics
    assert not np.allclose(moving, values[bn.name])


def test_training_mode_dropout_is_active():
    model = models.sequential()
    scope = gs.trace(model, training=True)
    x = np.ones((64, 5), np.float32)
    drop = scope.layer("dropout").output
    hidden = scope.layer("hidden").output
    values = scope.run([hidden, drop], x)
    zeroed = (values[drop.name] == 0) & (values[hidden.name] != 0)
    assert zeroed.any()
    kept = values[drop.name] != 0
    np.testing.assert_allclose(values[drop.name][kept], 2 * values[hidden.name][kept], rtol=1e-6)
    # the seed advances as in Keras: every call draws a new mask (Monte-Carlo dropout works)
    again = scope.run([hidden, drop], x)
    assert not np.array_equal(again[drop.name] == 0, zeroed)
    np.testing.assert_array_equal(again[hidden.name], values[hidden.name])


def test_executors_can_be_called_from_threads():
    model = models.functional()
    scope = gs.trace(model)
    ex = scope.executor("probs/Softmax:0")
    xs = [models.sample_inputs(model, seed=i)[0] for i in range(8)]
    want = [ex(x)["probs/Softmax:0"] for x in xs]
    got = [None] * len(xs)

    def work(i):
        got[i] = ex(xs[i])["probs/Softmax:0"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_values_are_views_except_those_that_may_share_state():
    model = models.functional()
    scope = gs.trace(model)
    bias_reshape = [t for t in scope.find(r"^conv/", op_type="Reshape")]
    fetches = ["conv/BiasAdd:0", "dense/Tanh:0", *bias_reshape, scope.find(r"^dense/.*ReadVariableOp:0$")[0]]
    values = scope.run(fetches, models.sample_inputs(model))
    assert not values["conv/BiasAdd:0"].flags.owndata  # zero-copy view of TensorFlow's buffer
    for t in fetches[2:]:
        name = t if isinstance(t, str) else t.name
        assert values[name].flags.owndata, name  # may alias a variable: copied
    for v in values.values():
        assert not v.flags.writeable


def test_executors_share_the_live_variables():
    model = models.functional()
    scope = gs.trace(model)
    ex = scope.executor("dense/BiasAdd:0")
    x = models.sample_inputs(model)[0]
    before = ex(x)["dense/BiasAdd:0"].copy()
    bias = model.get_layer("dense").bias
    original = np.array(bias)
    try:
        bias.assign(original + 1.0)  # the executor reads the model's variable, not a copy
        # float32: adding 1.0 rounds to ~1e-7 (an ulp of 1.0), which is relative error near zero
        np.testing.assert_allclose(ex(x)["dense/BiasAdd:0"], before + 1.0, rtol=1e-6, atol=5e-7)
    finally:
        bias.assign(original)


def test_the_same_fetch_set_reuses_the_compiled_function():
    model = models.functional()
    scope = gs.trace(model)
    a = scope.executor(["conv/BiasAdd:0", "dense/Tanh:0"])
    b = scope.executor(["dense/Tanh", scope.tensor("conv/BiasAdd:0")])
    assert a is not b and a._function is b._function
    x = models.sample_inputs(model)[0]
    np.testing.assert_array_equal(a(x)["dense/Tanh:0"], b(x)["dense/Tanh"])
    assert scope.executor(["conv/BiasAdd:0"])._function is not a._function


def test_a_graph_tensorflows_optimizer_cannot_read_is_refused_saying_so_not_with_its_traceback():
    """Grappler cannot convert a float8_e5m2 tensor while inlining: an ExecutionError that says
    what still works, not TensorFlow's UnimplementedError."""

    @tf.function
    def f8(x):
        return tf.cast(tf.cast(x, tf.as_dtype("float8_e5m2")), tf.float32) * 2.0

    scope = gs.trace(f8, [tf.TensorSpec((None, 3))], quiet=True)
    assert "Cast:0" in [t.name for t in scope.find("Cast")]
    with pytest.raises(gs.ExecutionError, match=r"TensorFlow could not prepare the traced function 'f8' to run "
                                                r"parts of it: .*f8E5M2.*; its tensors can be listed and searched"):
        scope.run(scope.outputs[0], np.ones((2, 3), np.float32))
