"""Functions and methods that call layers: `gs.trace(fn, input_signature)` records every Keras
layer they call, so their ops have layers and canonical names, exactly as for a model."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from tests import models


class Detector(keras.Model):
    """Like keras-hub's detectors: `call` runs the network; `predict_step` runs it and then a
    decoder layer that `call` never touches (keras-hub's NMS lives there)."""

    def __init__(self):
        super().__init__(name="detector")
        self.backbone = keras.layers.Dense(6, activation="relu", name="backbone")
        self.head = keras.layers.Dense(4, name="head")
        self.decoder = keras.layers.Softmax(name="decoder")

    def call(self, x):
        return self.head(self.backbone(x))

    def predict_step(self, x):
        raw = self(x)
        return {"scores": self.decoder(raw), "raw": raw}


@pytest.fixture(scope="module")
def detector():
    model = Detector()
    model(np.zeros((1, 3), np.float32))
    return model


SPEC = [tf.TensorSpec((None, 3), tf.float32)]


def test_a_models_method_is_named_as_the_model_is(detector):
    scope = gs.trace(detector.predict_step, SPEC, quiet=True)
    whole = gs.trace(detector, quiet=True)
    assert scope.name == "detector" and scope.model is detector
    inside = {t.name for t in whole.find() if t.layer}
    assert inside <= set(scope.model_graph.tensors)  # the model's ops keep the names trace(model) gives
    assert scope.layer("backbone").output.name == whole.layer("backbone").output.name == "backbone/Relu:0"
    decoder = scope.layer("decoder")  # called by the method, outside the model's call
    assert decoder.type == "Softmax" and decoder.inputs.names == ["head/BiasAdd:0"]
    assert all(op.layer == "decoder" for op in decoder.ops)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    values = scope.run([decoder.output, "scores", "backbone"], x)
    want = detector.predict_step(x)
    np.testing.assert_allclose(values[decoder.output.name], want["scores"], rtol=1e-6)
    np.testing.assert_allclose(values["scores"], want["scores"], rtol=1e-6)
    hidden = keras.ops.convert_to_numpy(detector.backbone(x))
    np.testing.assert_allclose(values["backbone/Relu:0"], hidden, rtol=1e-6)
    assert "call" not in vars(detector) and "call" not in vars(detector.decoder)  # left as it was


def test_a_lambda_names_each_model_it_calls_as_a_first_segment():
    model = models.functional()
    scope = gs.trace(lambda x: model(x) * 2.0, [tf.TensorSpec((None, 8, 8, 3))], quiet=True)
    dense = scope.layer("functional_cnn/dense")
    assert dense.output.name == "functional_cnn/dense/Tanh:0" and dense.output.layer == "functional_cnn/dense"
    suffixed = {f"{name}_{k}" for name in [model.name, *(lay.name for lay in model.layers)] for k in range(1, 4)}
    assert suffixed.isdisjoint(seg for t in scope.find() for seg in t.name.split("/"))  # no Keras suffixes
    assert any(seg in suffixed for t in scope.find() for seg in t.raw_name.split("/"))  # which raw names have
    x = models.sample_inputs(model)[0]
    got = scope.run(dense.output, x)[dense.output.name]
    np.testing.assert_allclose(got, keras.Model(model.input, model.get_layer("dense").output)(x), rtol=1e-5)
    np.testing.assert_allclose(scope.run(scope.outputs, x)[scope.outputs[0].name], model(x) * 2.0, rtol=1e-5)


backbone = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, activation="tanh", name="feature")],
                            name="backbone")
head = keras.layers.Dense(2, name="classifier")


@tf.function
def pipeline(x):
    """A tf.function calling a model and a layer it finds in its module's globals."""
    return head(backbone(x))


def test_a_tf_function_records_the_layers_it_calls_even_after_it_was_traced():
    x = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    pipeline(x)  # traced already: its cached trace recorded nothing
    scope = gs.trace(pipeline, SPEC, quiet=True)
    assert [lay.name for lay in scope.layers] == ["backbone", "backbone/feature", "classifier"]
    assert scope.layer("classifier").inputs.names == ["backbone/feature/Tanh:0"]
    values = scope.run(["backbone/feature/Tanh:0", scope.layer("classifier").output], x)
    np.testing.assert_allclose(values["backbone/feature/Tanh:0"], backbone(x), rtol=1e-6)
    np.testing.assert_allclose(values[scope.layer("classifier").output.name], pipeline(x), rtol=1e-6)


def test_a_callable_without_an_input_signature_is_refused_with_the_fix(detector):
    with pytest.raises(gs.UnsupportedModelError, match="input_signature="):
        gs.trace(lambda x: detector(x))


def test_a_model_built_by_the_trace_itself_is_recorded_once():
    """An unbuilt model builds on its first call, so tf.function traces twice (the first trace
    creates the variables and is thrown away): only the kept trace's calls count."""
    model = models.unbuilt_subclassed()
    scope = gs.trace(lambda x: model(x), [tf.TensorSpec((None, 4))], quiet=True)
    assert [lay.name for lay in scope.layers] == ["subclassed", "subclassed/encoder", "subclassed/decoder"]
    assert scope.layer("subclassed/encoder").output.name == "subclassed/encoder/Relu:0"
    x = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(scope.run(scope.outputs, x)[scope.outputs[0].name], model(x), rtol=1e-5)


encoder = keras.layers.Dense(4, activation="relu", name="encoder")
scorer = keras.layers.Dense(1, name="scorer")


@tf.function
def encode(x):
    """A helper tf.function that calls a layer: what a function traced by graphscope reaches
    only through the helper."""
    return encoder(x)


class Wrapper(tf.Module):
    """A tf.Module holding a layer, called by a function through one of its tf.functions."""

    def __init__(self):
        super().__init__()
        self.scorer = scorer

    @tf.function
    def score(self, h):
        return self.scorer(h)


def test_a_function_records_the_layers_its_helper_tf_functions_and_modules_call():
    wrapper = Wrapper()
    x = np.random.default_rng(3).normal(size=(2, 3)).astype(np.float32)
    encode(x)  # traced already, outside any graph; `scorer` is built by the trace itself
    scope = gs.trace(lambda x: wrapper.score(encode(x)) * 2.0, SPEC, quiet=True)
    assert [lay.name for lay in scope.layers] == ["encoder", "scorer"]
    relu = scope.layer("encoder").output
    assert relu.layer == "encoder" and relu.name.endswith("encoder/Relu:0")
    assert "encoder_1" not in relu.name  # Keras' scope suffix is dropped, as in the helper's caller
    assert scope.layer("scorer").inputs.names == ["StatefulPartitionedCall_1/h:0"]  # its helper's argument
    values = scope.run([relu, scope.layer("scorer").output], x)
    np.testing.assert_allclose(values[relu.name], keras.ops.convert_to_numpy(encoder(x)), rtol=1e-6)
    np.testing.assert_allclose(values[scope.layer("scorer").output.name], scorer(encoder(x)), rtol=1e-6)


def test_a_tf_module_s_tf_function_method_records_the_layers_the_module_holds():
    class Head(tf.Module):
        def __init__(self):
            super().__init__()
            self.proj = keras.layers.Dense(2, name="proj")  # reached only through the module

        @tf.function
        def project(self, h):
            return self.proj(h)

    module = Head()
    h = np.random.default_rng(4).normal(size=(2, 4)).astype(np.float32)
    module.project(h)
    scope = gs.trace(module.project, [tf.TensorSpec((None, 4))], quiet=True)
    assert [lay.name for lay in scope.layers] == ["proj"]
    out = scope.layer("proj").output
    assert out.name.startswith("proj/") and out.layer == "proj" and scope.outputs.names == [out.name]
    np.testing.assert_allclose(scope.run(out, h)[out.name], module.proj(h), rtol=1e-6)


def test_a_helper_tf_function_called_twice_makes_two_calls_of_its_layers():
    """One trace of the helper, called from two places: each place is a call of its layer
    (`encoder`, `encoder@2`), each with that place's values, inputs, edits and gradients (once
    the layer's output was the last place's, `encoder(2x)` for `encoder(x)`)."""
    layer = keras.layers.Dense(3, activation="relu", name="encoder")
    layer.build((None, 3))
    rng = np.random.default_rng(11)
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    helper = tf.function(lambda v: layer(v))
    scope = gs.trace(lambda v: helper(v) + 10.0 * helper(2.0 * v), SPEC, quiet=True)
    assert [lay.name for lay in scope.layers] == ["encoder", "encoder@2"]
    x = rng.normal(size=(4, 3)).astype(np.float32)
    first, second = scope.layer("encoder"), scope.layer("encoder@2")
    assert first.output.layer == "encoder" and second.output.layer == "encoder@2"
    assert {op.layer for op in first.ops} == {"encoder"} and {op.layer for op in second.ops} == {"encoder@2"}
    values = scope.run([first.output, second.output, *first.inputs, *second.inputs], x)
    np.testing.assert_allclose(values[first.output.name], layer(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(values[second.output.name], layer(2.0 * x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(values[first.inputs[0].name], x, rtol=1e-6)
    np.testing.assert_allclose(values[second.inputs[0].name], 2.0 * x, rtol=1e-6)
    out = scope.outputs[0].name
    edited = scope.run(out, x, edits={second.output: lambda v: v * 0.0})[out]
    np.testing.assert_allclose(edited, layer(x).numpy(), rtol=1e-6)  # only the second place zeroed
    with tf.GradientTape() as tape:
        h = layer(tf.constant(x))
        tape.watch(h)
        y = tf.reduce_sum(h + 10.0 * layer(2.0 * x))
    np.testing.assert_allclose(scope.gradients(out, first.output, x)[first.output.name], tape.gradient(y, h), rtol=1e-6)


class _Wrapped(keras.layers.Layer):
    """A layer whose call goes through a tf.function method that calls a sublayer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(3, activation="tanh", name="inner")

    def build(self, shape):
        self.inner.build(shape)

    @tf.function
    def _helper(self, x):
        return self.inner(x) * 2.0

    def call(self, x):
        return self._helper(x) + 1.0


def test_a_layers_tf_function_method_traced_when_keras_built_the_model_records_its_sublayer_at_each_call():
    """Keras traced `_helper` when it built the functional model; a trace of the model records
    the sublayer it calls anyway (it was listed, not called), once per call of the shared layer,
    each with that call's values, and leaves no attribute behind."""
    x_in = keras.Input((3,), name="x")
    wrapped = _Wrapped(name="wrapped")
    a = wrapped(x_in)
    b = wrapped(keras.layers.Dense(3, name="pre")(a))
    model = keras.Model(x_in, b)
    rng = np.random.default_rng(12)
    for w in model.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    attributes = dict(vars(wrapped))
    scope = gs.trace(model, quiet=True)
    assert vars(wrapped).keys() == attributes.keys() and all(vars(wrapped)[k] is v for k, v in attributes.items())
    assert [lay.name for lay in scope.layers] == ["x", "wrapped", "wrapped/inner", "wrapped@2", "wrapped@2/inner", "pre"]
    x = rng.normal(size=(2, 3)).astype(np.float32)
    pre = keras.Model(x_in, model.get_layer("pre").output)(x)
    want = {"wrapped/inner": wrapped.inner(x), "wrapped@2/inner": wrapped.inner(pre),
            "wrapped": keras.Model(x_in, a)(x), "wrapped@2": model(x)}
    got = scope.run([scope.layer(k).output for k in want], x)
    for k, w in want.items():
        np.testing.assert_allclose(got[scope.layer(k).output.name], keras.ops.convert_to_numpy(w), rtol=1e-5, atol=1e-6)


_helper_layer = keras.layers.Dense(3, activation="relu", name="encoder")
_helper = tf.function(lambda v: _helper_layer(v))  # a global helper, as in a user's module


def test_a_helper_tf_function_traced_by_an_earlier_trace_records_its_layers_again():
    """A REPL runs `gs.trace` again, or traces another function calling the same helper: the
    helper's cached trace (made by the first) recorded nothing, so each trace traces a copy of
    it anew; the global and the closure hold the helper itself afterwards."""
    held = _helper
    x = np.random.default_rng(13).normal(size=(2, 3)).astype(np.float32)
    for fn in (lambda v: _helper(v) * 2.0, lambda v: _helper(v) * 2.0, lambda v: held(v) + 1.0):
        scope = gs.trace(fn, SPEC, quiet=True)
        assert [lay.name for lay in scope.layers] == ["encoder"]
        out = scope.layer("encoder").output
        assert out.name == "StatefulPartitionedCall/encoder/Relu:0" and out.layer == "encoder"
        np.testing.assert_allclose(scope.run(out, x)[out.name], _helper_layer(x).numpy(), rtol=1e-6)
    assert globals()["_helper"] is held


_looped = keras.layers.Dense(3, activation="tanh", name="step")


def test_a_layer_a_function_calls_only_inside_a_lambda_it_passes_to_a_loop_is_recorded():
    """`_looped` is named only by the body lambda handed to `tf.while_loop` (code nested in the
    function): it is recorded, its output one value per iteration, each the eager layer's."""

    def unrolled(v):
        return tf.while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, _looped(h)), (0, v))[1]

    scope = gs.trace(unrolled, SPEC, quiet=True)
    assert [lay.name for lay in scope.layers] == ["step"]
    out = scope.layer("step").output
    assert out.name == "while/step/Tanh:0" and out.layer == "step"
    x = np.random.default_rng(14).normal(size=(2, 3)).astype(np.float32)
    want, h = [], x
    for _ in range(3):
        h = _looped(h).numpy()
        want.append(h)
    got = scope.run(out, x)[out.name]
    assert len(got) == 3
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_a_layer_called_inside_a_dataset_map_is_not_a_call_without_tensors():
    """A `Dataset.map` function runs inside the op that iterates it, which graphscope does not
    mirror: its call of `proj` is not listed (it was, as `proj@2` with no tensor); the direct
    call is `proj`, with Keras' value."""
    proj = keras.layers.Dense(2, name="proj")

    def mapped(v):
        ds = tf.data.Dataset.from_tensor_slices(v).map(lambda r: proj(r[None])[0])
        return proj(v) + ds.reduce(tf.constant(0.0), lambda a, r: a + tf.reduce_sum(r))

    scope = gs.trace(mapped, SPEC, quiet=True)
    assert [lay.name for lay in scope.layers] == ["proj"]
    x = np.random.default_rng(15).normal(size=(2, 3)).astype(np.float32)
    out = scope.layer("proj").output.name
    np.testing.assert_allclose(scope.run(out, x)[out], proj(x).numpy(), rtol=1e-6)


def test_a_layers_calls_through_a_helper_and_directly_are_numbered_in_the_order_they_ran():
    """`d` is called by a helper at two places and then directly: `d`, `d@2`, `d@3` in that
    order (the direct call was recorded second, before the helper's second place was known),
    each with its own value."""
    layer = keras.layers.Dense(3, name="d")
    layer.build((None, 3))
    helper = tf.function(lambda v: layer(v))
    scope = gs.trace(lambda v: helper(v) + 10.0 * helper(2.0 * v) + 100.0 * layer(3.0 * v), SPEC, quiet=True)
    assert [lay.name for lay in scope.layers] == ["d", "d@2", "d@3"]
    x = np.random.default_rng(16).normal(size=(2, 3)).astype(np.float32)
    got = scope.run([scope.layer(k).output for k in ("d", "d@2", "d@3")], x)
    for k, scale in (("d", 1.0), ("d@2", 2.0), ("d@3", 3.0)):
        out = scope.layer(k).output
        assert out.layer == k and {op.layer for op in scope.layer(k).ops} == {k}
        np.testing.assert_allclose(got[out.name], layer(scale * x).numpy(), rtol=1e-6)


@pytest.mark.parametrize("helper_first", [True, False])
def test_a_layer_making_no_ops_called_through_a_helper_and_directly_passes_each_place_its_own_input(helper_first):
    """Dropout at inference makes no ops, so its calls have no place in the walk: each keeps its
    recorded place, and its input and output are that place's (here, 6x, then `dense(x)`, 2x)."""
    drop, dense = keras.layers.Dropout(0.5, name="drop"), keras.layers.Dense(3, name="dense")
    dense.build((None, 3))
    helper = tf.function(lambda v: drop(v * 2.0))

    def f(x):
        first, direct = (helper(x * 3.0), drop(dense(x))) if helper_first else (drop(dense(x)), helper(x * 3.0))
        return first + direct + helper(x)

    scope = gs.trace(f, SPEC, quiet=True)
    assert [lay.name for lay in scope.layers if lay.name.startswith("drop")] == ["drop", "drop@2", "drop@3"]
    x = np.random.default_rng(17).normal(size=(2, 3)).astype(np.float32)
    want = [6 * x, dense(x).numpy()] if helper_first else [dense(x).numpy(), 6 * x]
    calls = [scope.layer(k) for k in ("drop", "drop@2", "drop@3")]
    got = scope.run([t for lay in calls for t in (*lay.inputs, *lay.outputs)], x)
    for lay, value in zip(calls, [*want, 2 * x]):
        np.testing.assert_allclose(got[lay.inputs.names[0]], value, rtol=1e-6)
        np.testing.assert_allclose(got[lay.outputs.names[0]], value, rtol=1e-6)


def test_a_helper_calling_a_functional_model_twice_numbers_its_shared_calls_as_keras_does_at_each_place():
    """`reordered` runs its shared `conv1`'s calls in another order than Keras numbers them; a
    helper calling the model from two places makes `reordered` and `reordered@2`, and inside
    each, `conv1` is Keras' node 1 (on the input) and `conv1@2` node 2, as in the direct call
    `reordered@3` (the copies were numbered in the order their ops ran, swapping the two)."""
    model = models.shared_out_of_order()
    helper = tf.function(lambda v: model(v)[0])
    scope = gs.trace(lambda v: helper(v) + helper(2.0 * v) + model(3.0 * v)[1], SPEC, quiet=True)
    conv1 = model.get_layer("conv1")
    nodes = keras.Model(model.input, [node.output_tensors[0] for node in conv1._inbound_nodes[:2]])
    x = np.random.default_rng(17).normal(size=(2, 3)).astype(np.float32)
    for prefix, scale in (("reordered", 1.0), ("reordered@2", 2.0), ("reordered@3", 3.0)):
        want = [w.numpy() for w in nodes(scale * x)]
        names = [scope.layer(f"{prefix}/{token}").output.name for token in ("conv1", "conv1@2")]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gs.UnusedTensorWarning)  # the model's first output leaves one out
            got = scope.run(names, x)
        for name, w in zip(names, want):
            np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6, err_msg=f"{prefix}: {name}")


def test_a_layer_inside_a_cond_inside_a_helper_runs_and_is_edited():
    """The helper is inlined, then Grappler specialises the branch for its caller and renames
    its ops (`..._tfg_inlined_StatefulPartitionedCall/cond_0`): the layer's output is found
    there, fetched and edited; numpy by hand is the oracle."""
    dense = keras.layers.Dense(3, name="dense")
    dense.build((None, 3))
    helper = tf.function(lambda v, flag: tf.cond(flag > 0, lambda: dense(v), lambda: v * 2.0))
    scope = gs.trace(lambda v, flag: helper(v, flag) + 1.0, [SPEC[0], tf.TensorSpec((), tf.float32)], quiet=True)
    out = scope.layer("dense").output
    assert out.name == "StatefulPartitionedCall/cond/dense/BiasAdd:0"
    # its input: the branch's capture of the helper's `v` (the lambda's closure), not none
    assert scope.layer("dense").inputs.names == ["StatefulPartitionedCall/cond/then/v:0"]
    x = np.random.default_rng(18).normal(size=(2, 3)).astype(np.float32)
    kernel, bias = dense.kernel.numpy(), dense.bias.numpy()
    got = scope.run([out, *scope.layer("dense").inputs, *scope.outputs], [x, np.float32(1.0)])
    np.testing.assert_allclose(got[out.name], x @ kernel + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["StatefulPartitionedCall/cond/then/v:0"], x, rtol=0)
    edited = scope.run(scope.outputs, [x, np.float32(1.0)], edits={out: lambda v: v * 0.0})
    np.testing.assert_allclose(edited[scope.outputs.names[0]], np.ones((2, 3)), rtol=1e-6)
    other = scope.run(scope.outputs, [x, np.float32(-1.0)])  # the other branch: the layer does not run
    np.testing.assert_allclose(other[scope.outputs.names[0]], 2 * x + 1, rtol=1e-6)
