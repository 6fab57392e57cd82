"""Gradients: each compared with tf.GradientTape on the Keras model, a Keras tail model, or the
derivative computed by hand; never with graphscope itself."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from tests import models
from tests.conftest import assert_weights_unchanged, weights_snapshot


@pytest.fixture(scope="module")
def cnn():
    model = models.functional()  # conv -> bn -> relu -> pool -> flatten -> dense (tanh) -> probs (softmax)
    x = models.sample_inputs(model)[0]
    return model, gs.trace(model, quiet=True), x


def test_gradients_wrt_inputs_and_weights_equal_gradient_tape(cnn):
    model, scope, x = cnn
    before = weights_snapshot(model)
    dense_kernel = model.get_layer("dense").kernel
    got = scope.gradients("probs/Softmax:0", ["image", "conv/kernel", dense_kernel, "dense/bias"], x,
                          target=lambda p: tf.math.log(p[:, 1]))
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        loss = tf.reduce_sum(tf.math.log(model(xs, training=False)[:, 1]))
    want = tape.gradient(loss, [xs, model.get_layer("conv").kernel.value, dense_kernel.value,
                                model.get_layer("dense").bias.value])
    assert list(got) == ["image", "conv/kernel", "dense/kernel", "dense/bias"]  # keyed as given (a variable by path)
    for key, w in zip(got, want):
        assert got[key].shape == tuple(w.shape)
        np.testing.assert_allclose(got[key], w.numpy(), rtol=1e-4, atol=1e-6)
    assert_weights_unchanged(model, before)


def test_a_gradient_wrt_a_pre_activation_is_the_tail_models_times_the_activations_derivative(cnn):
    model, scope, x = cnn
    values = scope.run(["dense/BiasAdd:0", "dense/Tanh:0"], x)
    got = scope.gradients("probs/Softmax:0", "dense/BiasAdd:0", x, target=lambda p: p[:, 0])["dense/BiasAdd:0"]
    # the Keras tail: the layers after `dense`, on a new input of dense's output shape
    tail_in = keras.Input((6,))
    tail = keras.Model(tail_in, model.get_layer("probs")(tail_in))
    h = tf.constant(values["dense/Tanh:0"])
    with tf.GradientTape() as tape:
        tape.watch(h)
        p0 = tf.reduce_sum(tail(h)[:, 0])
    want = tape.gradient(p0, h).numpy() * (1.0 - np.tanh(values["dense/BiasAdd:0"]) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_gradients_through_a_map_fn_and_a_while_loop_by_hand():
    model = models.control_flow()  # h = running sum (while loop); m = map_fn(h**2 + 1); out = m @ W + b
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    h = "running_sum/transpose:0"
    got = scope.gradients("out/BiasAdd:0", [h, "x"], x, target=lambda v: v[:, 1])
    kernel = model.get_layer("out").kernel.numpy()
    hv = np.cumsum(x, axis=1)
    d_h = 2.0 * hv * kernel[:, 1]  # d/dh sum_b (h_b**2 + 1) @ W[:, 1]
    np.testing.assert_allclose(got[h], d_h, rtol=1e-5)
    d_x = np.cumsum(d_h[:, ::-1], axis=1)[:, ::-1]  # the running sum's transpose: suffix sums
    np.testing.assert_allclose(got["x"], d_x, rtol=1e-5)


def test_gradients_flow_through_edits(cnn):
    _, scope, x = cnn
    plain = scope.gradients("dense/Tanh:0", "flatten/Reshape:0", x)["flatten/Reshape:0"]
    doubled = scope.gradients("dense/Tanh:0", "flatten/Reshape:0", x,
                              edits={"dense/BiasAdd:0": lambda v: v * 0.5})["flatten/Reshape:0"]
    values = scope.run("dense/BiasAdd:0", x)["dense/BiasAdd:0"]
    kernel = scope.model.get_layer("dense").kernel.numpy()
    np.testing.assert_allclose(plain, (1 - np.tanh(values) ** 2) @ kernel.T, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(doubled, (0.5 * (1 - np.tanh(0.5 * values) ** 2)) @ kernel.T, rtol=1e-4, atol=1e-7)


def test_gradients_from_intermediate_feeds(cnn):
    _, scope, x = cnn
    flat = scope.run("flatten/Reshape:0", x)["flatten/Reshape:0"]
    fed = scope.gradients("dense/Tanh:0", ["flatten/Reshape:0", "dense/kernel"], flat, feeds=["flatten/Reshape:0"])
    full = scope.gradients("dense/Tanh:0", ["flatten/Reshape:0", "dense/kernel"], x)
    for key in full:
        np.testing.assert_allclose(fed[key], full[key], rtol=1e-5, atol=1e-7)


def test_gradient_executors_are_cached_and_run_on_new_inputs(cnn):
    model, scope, x = cnn
    run = scope.gradient_executor("probs/Softmax:0", "image", target=lambda p: p[:, 2])
    assert scope.gradient_executor("probs/Softmax:0", "image", target=run.target) is run
    other = x[::-1].copy()
    xs = tf.constant(other)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        p = tf.reduce_sum(model(xs)[:, 2])
    np.testing.assert_allclose(run(other)["image"], tape.gradient(p, xs).numpy(), rtol=1e-4, atol=1e-7)
    assert "d probs/Softmax:0 / d image" in repr(run)


def test_gradients_wrt_a_shared_variable_add_every_read():
    model = models.shared()
    scope = gs.trace(model, quiet=True)
    x = models.sample_inputs(model)
    shared = next(lay for lay in model.layers if len(lay._inbound_nodes) > 1)
    kernel = shared.weights[0]
    got = scope.gradients(scope.outputs[0], kernel, x)
    xs = [tf.constant(a) for a in x]
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(model(xs if len(xs) > 1 else xs[0]))
    want = tape.gradient(y, kernel.value)
    np.testing.assert_allclose(got[kernel.path], want.numpy(), rtol=1e-4, atol=1e-6)


class Scale(keras.layers.Layer):
    """x * w, elementwise: the gradient with respect to x is w itself (Grappler may hand back
    the variable's own value for it)."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return x * self.w


def test_a_gradient_that_is_a_weights_value_does_not_change_when_the_weight_does():
    x_in = keras.Input((4,), name="x")
    model = keras.Model(x_in, Scale(name="scale")(x_in))
    model.get_layer("scale").w.assign([1.0, 2.0, 3.0, 4.0])
    scope = gs.trace(model, quiet=True)
    got = scope.gradients(scope.outputs[0], "x", np.ones((2, 4), np.float32))["x"]
    np.testing.assert_array_equal(got, [[1, 2, 3, 4]] * 2)
    assert not got.flags.writeable
    model.get_layer("scale").w.assign([9.0, 9.0, 9.0, 9.0])
    np.testing.assert_array_equal(got, [[1, 2, 3, 4]] * 2)  # the returned array is the value it was
    again = scope.gradients(scope.outputs[0], "x", np.ones((2, 4), np.float32))["x"]
    np.testing.assert_array_equal(again, [[9, 9, 9, 9]] * 2)  # and a new call sees the new weight


def test_gradients_of_a_tf_keras_model_equal_its_gradient_tape():
    tf_keras = pytest.importorskip("tf_keras")
    from tests import models_keras2

    model = models_keras2.functional()
    scope = gs.trace(model, quiet=True)
    x = models.sample_inputs(model)[0]
    dense = next(lay for lay in model.layers if isinstance(lay, tf_keras.layers.Dense))
    got = scope.gradients(scope.outputs[0], [scope.inputs[0], dense.kernel], x)
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = tf.reduce_sum(model(xs, training=False))
    gx, gk = tape.gradient(y, [xs, dense.kernel])
    np.testing.assert_allclose(got[scope.inputs[0]], gx.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[dense.kernel.name.removesuffix(":0")], gk.numpy(), rtol=1e-4, atol=1e-6)


def test_fresh_targets_across_cache_evictions_get_their_own_gradient():
    """Gradient executors are cached by `target`; a key that held only `id(target)` let a fresh
    lambda, made after the executor of a collected one was evicted, get its compiled gradient."""
    from graphscope.runtime.cache import CACHE_SIZE

    init = keras.initializers.RandomNormal(seed=4)
    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, keras.layers.Dense(2, name="dense", kernel_initializer=init)(x_in))
    scope = gs.trace(model, quiet=True)
    kernel = model.get_layer("dense").kernel.numpy()
    x = np.ones((2, 3), np.float32)
    scope.gradients("dense/BiasAdd:0", "x", x, target=lambda v: v * 0.0)
    for round_ in range(3):
        for k in range(1, CACHE_SIZE + 2):  # evicts the gradient executor, not its compiled function
            scope.executor(["dense/BiasAdd:0"] * k)
        for k in range(4):  # a fresh lambda each time: d sum(f * y[:, 1]) / dx = f * kernel[:, 1]
            factor = 1.0 + round_ * 4 + k
            got = scope.gradients("dense/BiasAdd:0", "x", x, target=lambda v, f=factor: v[:, 1] * f)["x"]
            np.testing.assert_allclose(got, np.tile(factor * kernel[:, 1], (2, 1)), rtol=1e-5)


class Decay(keras.layers.Layer):
    """A running sum with a learnt per-feature decay, by `keras.ops.scan`: the weight is read
    inside the loop body."""

    def build(self, input_shape):
        self.decay = self.add_weight(shape=(input_shape[-1],), initializer="random_uniform", name="decay")

    def call(self, x):  # x: (batch, time, features)
        def step(carry, x_t):
            carry = carry * self.decay + x_t
            return carry, carry

        _, ys = keras.ops.scan(step, keras.ops.zeros_like(x[:, 0]), keras.ops.transpose(x, (1, 0, 2)))
        return keras.ops.transpose(ys, (1, 0, 2))


@pytest.mark.parametrize("make", [lambda: keras.layers.LSTM(4, name="rnn"), lambda: keras.layers.GRU(4, name="rnn"),
                                  lambda: Decay(name="rnn")], ids=["lstm", "gru", "scan"])
def test_gradients_wrt_weights_read_inside_a_loop_equal_gradient_tape(make):
    # Keras' LSTM/GRU pass the weights' handles into their While loop and read them in the body
    keras.utils.set_random_seed(0)
    x_in = keras.Input((5, 3), name="x")
    model = keras.Model(x_in, keras.layers.Dense(2, name="head")(make()(x_in)))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    weights = model.get_layer("rnn").weights
    before = weights_snapshot(model)
    got = scope.gradients(scope.outputs[0], ["x", *weights], x, target=lambda v: v[..., 0])
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = tf.reduce_sum(model(xs, training=False)[..., 0])
    want = tape.gradient(y, [xs, *(w.value for w in weights)])
    assert list(got) == ["x", *(w.path for w in weights)]
    for key, w in zip(got, want):
        np.testing.assert_allclose(got[key], w.numpy(), rtol=1e-5, atol=1e-6)
    assert_weights_unchanged(model, before)


def _tape_gradients(model, x, variables, **call):
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = tf.reduce_sum(model(xs, **call))
    return tape.gradient(y, [xs, *variables])


class SiluInALoop(keras.layers.Layer):
    """silu (a custom gradient) inside a map_fn body and inside a tf.function called twice."""

    @tf.function
    def twice(self, x):
        return tf.nn.silu(x) * 2.0

    def call(self, x):
        return tf.map_fn(lambda row: tf.nn.silu(row * 3.0), x) + self.twice(x) + self.twice(x * 0.5)


def test_gradients_through_swish_equal_gradient_tape():
    # swish/silu is a tf.custom_gradient, whose registered gradient reads the traced graph's
    # tensors: differentiating the executable copy must use the same gradient on the copy's
    keras.utils.set_random_seed(0)
    x_in = keras.Input((5, 3), name="x")
    hidden = keras.layers.Dense(4, activation="swish", name="hidden")
    model = keras.Model(x_in, keras.layers.Dense(2, name="head")(SiluInALoop(name="loops")(hidden(x_in))))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    before = weights_snapshot(model)
    got = scope.gradients(scope.outputs[0], ["x", hidden.kernel, hidden.bias], x)
    want = _tape_gradients(model, x, [hidden.kernel.value, hidden.bias.value], training=False)
    for key, w in zip(got, want):
        np.testing.assert_allclose(got[key], w.numpy(), rtol=1e-6, atol=1e-7)
    assert_weights_unchanged(model, before)


def test_gradients_through_a_tf_keras_swish_equal_gradient_tape():
    tf_keras = pytest.importorskip("tf_keras")
    x_in = tf_keras.Input((3,))
    hidden = tf_keras.layers.Dense(4, activation="swish")
    model = tf_keras.Model(x_in, tf_keras.layers.Dense(2)(hidden(x_in)))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    got = scope.gradients(scope.outputs[0], [scope.inputs[0], hidden.kernel], x)
    want = _tape_gradients(model, x, [hidden.kernel], training=False)
    for key, w in zip(got, want):
        np.testing.assert_allclose(got[key], w.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_gradients_through_efficientnet_equal_gradient_tape():
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=3)
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(2).normal(size=(1, 32, 32, 3)).astype(np.float32)
    stem = model.get_layer("stem_conv").kernel
    got = scope.gradients(scope.outputs[0], [scope.inputs[0], stem], x, target=lambda p: p[:, 1])
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = tf.reduce_sum(model(xs, training=False)[:, 1])
    want = tape.gradient(y, [xs, stem.value])
    for key, w in zip(got, want):
        np.testing.assert_allclose(got[key], w.numpy(), rtol=1e-4, atol=1e-6)


def test_wrt_an_input_name_that_is_also_an_output_key_means_the_input():
    """keras-hub's generate_step returns `token_ids`, its input's name: a gradient with respect
    to `token_ids` is with respect to the input (what is varied), as GradientTape's."""

    @tf.function(input_signature=[tf.TensorSpec((None, 3), name="tok")])
    def g(tok):
        sq = tok * tok
        return {"tok": sq, "out": sq * 3.0}

    scope = gs.trace(g, quiet=True)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = tf.reduce_sum(g(xs)["out"])
    want = tape.gradient(y, xs).numpy()  # [[6, 12, 18]]
    np.testing.assert_allclose(scope.gradients("out", "tok", x)["tok"], want, rtol=1e-6)
    np.testing.assert_allclose(scope.gradients("out", "tok:0", x)["tok:0"], want, rtol=1e-6)
    # the output stays reachable as a Tensor: d sum(3 sq) / d sq = 3
    np.testing.assert_allclose(scope.gradients("out", scope.output("tok"), x)[scope.output("tok").name],
                               np.full((1, 3), 3.0), rtol=1e-6)


class _LoopModule(tf.Module):
    """A signature that reads its variable `w` inside a `tf.while_loop` body."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal((3, 3), seed=(1, 2)), name="w")

    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32, name="x")])
    def f(self, x):
        _, h = tf.while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, tf.tanh(h @ self.w)), [tf.constant(0), x])
        return {"y": h}


def _export_lstm(path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, name="lstm"), keras.layers.Dense(2, name="head")],
                             name="seq")
    model.export(path, verbose=False)
    return [w.path for w in model.weights], (2, 5, 3)  # seq/lstm/lstm_cell/kernel, ..., seq/head/kernel


def _save_loop_module(path):
    module = _LoopModule()
    tf.saved_model.save(module, path, signatures={"serving_default": module.f})
    return ["w"], (2, 3)


@pytest.mark.parametrize("save", [_export_lstm, _save_loop_module], ids=["keras-export-lstm", "module-while-loop"])
def test_gradients_wrt_variables_read_inside_a_saved_models_loop_equal_gradient_tape(save, tmp_path):
    # a SavedModel's signature calls the function that reads the variables: once inlined, the
    # handle reaches the While through the call's argument (an Identity), not from the capture
    path = str(tmp_path / "saved")
    names, shape = save(path)
    scope = gs.trace(path, quiet=True)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    variables = {v.name.removesuffix(":0"): v for v in scope.function.graph.variables}
    before = {k: v.numpy() for k, v in variables.items()}
    (inp,) = scope.inputs
    got = scope.gradients(scope.outputs[0], [*names, inp], x, target=lambda v: v[..., 0])

    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    mine = {v.name.removesuffix(":0"): v for v in serve.graph.variables}
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        (y,) = serve(xs).values()
        total = tf.reduce_sum(y[..., 0])
    want = tape.gradient(total, [*(mine[n] for n in names), xs])
    assert list(got) == [*names, inp]
    for key, w in zip(got, want):
        np.testing.assert_allclose(got[key], w.numpy(), rtol=1e-5, atol=1e-6)
    for k, v in variables.items():
        np.testing.assert_array_equal(v.numpy(), before[k])


@tf.function(jit_compile=True)
def _inner(h):  # an XLA helper called from one
    return tf.sin(h) * h


@tf.function(jit_compile=True)
def _xla_helper(x, w):
    return tf.tanh(x @ w) + _inner(x @ w) + 1.0


class _XlaLayer(keras.layers.Layer):
    """Calls an XLA-compiled helper with its weight: the variable itself (a resource argument),
    its value (a tensor), or the variable from inside a loop body."""

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def build(self, input_shape):
        self.w = self.add_weight(shape=(3, 3), initializer="random_normal", name="w")

    def call(self, x):
        if self.mode == "loop":
            return tf.while_loop(lambda i, h: i < 2, lambda i, h: (i + 1, _xla_helper(h, self.w.value)), [0, x])[1]
        return _xla_helper(x, tf.convert_to_tensor(self.w) if self.mode == "value" else self.w.value)


@pytest.mark.parametrize("mode", ["variable", "value", "loop"])
def test_gradients_through_an_xla_helper_equal_gradient_tape(mode):
    # TensorFlow does not inline a jit_compile=True function: its call op is differentiated by
    # replaying the function (the registry's SymbolicGradient fails at run time, or at build
    # time in a loop body)
    keras.utils.set_random_seed(0)
    x_in = keras.Input((3,), name="x")
    h = keras.layers.Dense(3, name="pre")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="post")(_XlaLayer(mode, name="xl")(h)))
    scope = gs.trace(model, quiet=True)
    before = weights_snapshot(model)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    got = scope.gradients(scope.outputs[0], ["xl/w", "pre/kernel", "x"], x, target=lambda v: v[:, 0] ** 2)
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        total = tf.reduce_sum(model(xs, training=False)[:, 0] ** 2)
    want = tape.gradient(total, [model.get_layer("xl").w.value, model.get_layer("pre").kernel.value, xs])
    for key, w in zip(got, want):
        np.testing.assert_allclose(got[key], w.numpy(), rtol=1e-5, atol=1e-6)
    assert_weights_unchanged(model, before)


_CONTROL_W = tf.Variable([1.0, 0.5, -1.0], name="control_w")


@tf.function(jit_compile=True)
def _xla_loop(x):
    return tf.while_loop(lambda i, a: i < 2, lambda i, a: [i + 1, tf.sin(a + x * _CONTROL_W)],
                         [tf.constant(0), tf.zeros_like(x)], maximum_iterations=2)[1]


@tf.function(jit_compile=True)
def _xla_branch(x):
    return tf.cond(tf.reduce_sum(x) > 0, lambda: x * _CONTROL_W, lambda: x - _CONTROL_W)


@tf.function(jit_compile=True)
def _xla_loop_that_writes(x):
    def body(i, a):
        _CONTROL_W.assign_add(tf.zeros(3))  # a write a replay would redo
        return i + 1, tf.sin(a + x * _CONTROL_W)
    return tf.while_loop(lambda i, a: i < 2, body, [tf.constant(0), tf.zeros_like(x)], maximum_iterations=2)[1]


@tf.function(jit_compile=True)
def _xla_loop_that_draws(x):
    return tf.while_loop(lambda i, a: i < 2, lambda i, a: [i + 1, a + x * tf.random.uniform(tf.shape(x))],
                         [tf.constant(0), tf.zeros_like(x)], maximum_iterations=2)[1]


def _traced_call(helper):
    fn = tf.function(lambda x: helper(x) * 2.0, input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    return gs.trace(fn, quiet=True)


@pytest.mark.parametrize("helper", [_xla_loop, _xla_branch], ids=["loop", "branch"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradients_through_an_xla_helper_with_control_flow_equal_gradient_tape(helper, sign):
    # TensorFlow marks every While and If stateful: the replay looks inside their bodies, which
    # only read the variable
    scope = _traced_call(helper)
    before = _CONTROL_W.numpy().copy()
    x = sign * np.array([[0.3, -0.5, 0.9]], np.float32)
    got = scope.gradients(scope.outputs[0], ["x", _CONTROL_W], x)
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        total = tf.reduce_sum(helper.python_function(xs) * 2.0)
    want = tape.gradient(total, [xs, _CONTROL_W])
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_CONTROL_W.numpy(), before)


@pytest.mark.parametrize("helper, kind", [(_xla_loop_that_writes, "AssignAddVariableOp"),
                                          (_xla_loop_that_draws, "RandomUniform")], ids=["writes", "draws"])
def test_a_gradient_through_an_xla_helper_whose_loop_writes_or_draws_is_refused(helper, kind):
    scope = _traced_call(helper)
    before = _CONTROL_W.numpy().copy()
    with pytest.raises(gs.UnsupportedFetchError, match=rf"whose gradient would run its {kind} op .* again"):
        scope.gradients(scope.outputs[0], "x", np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(_CONTROL_W.numpy(), before)


def _loop_in_loop(x):
    def outer(i, acc):
        def inner(j, a):
            return j + 1, tf.sin(a + x * _CONTROL_W)
        return i + 1, tf.while_loop(lambda j, a: j < 2, inner, [tf.constant(0), acc])[1] * 1.1
    return tf.while_loop(lambda i, a: i < 2, outer, [tf.constant(0), tf.zeros_like(x)])[1]


def _cond_in_loop(x):
    def body(i, a):
        return i + 1, tf.cond(tf.reduce_sum(a) > -50.0, lambda: tf.sin(a + x * _CONTROL_W), lambda: a)
    return tf.while_loop(lambda i, a: i < 2, body, [tf.constant(0), tf.zeros_like(x)])[1]


def _map_fn_in_loop(x):
    def body(i, a):
        return i + 1, tf.map_fn(lambda r: tf.sin(r * _CONTROL_W), a + x)
    return tf.while_loop(lambda i, a: i < 2, body, [tf.constant(0), tf.zeros_like(x)])[1]


@pytest.mark.parametrize("fn", [_loop_in_loop, _cond_in_loop, _map_fn_in_loop], ids=["loop", "cond", "map_fn"])
def test_gradients_wrt_a_variable_read_in_nested_control_flow_equal_gradient_tape(fn):
    # the bodies TensorFlow rebuilds to differentiate the inner loop or branch get the variable's
    # handle data (it was silently zero, or a raw ValueError for the branch)
    scope = gs.trace(tf.function(fn, input_signature=[tf.TensorSpec((None, 3), tf.float32)]), quiet=True)
    before = _CONTROL_W.numpy().copy()
    x = np.array([[0.3, -0.5, 0.9], [0.1, 0.2, -0.4]], np.float32)
    got = scope.gradients(scope.outputs[0], ["x", _CONTROL_W], x, target=lambda v: v ** 2)
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        total = tf.reduce_sum(fn(xs) ** 2)
    want = tape.gradient(total, [xs, _CONTROL_W])
    for g, w in zip(got.values(), want):
        assert np.abs(w.numpy()).max() > 1e-3  # not a zero gradient that zeros would match
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_CONTROL_W.numpy(), before)


def test_gradients_through_a_cond_with_and_without_an_edit_on_one_scope():
    """TensorFlow's gradient of a branch registers `<branch>_rewritten` process-wide; a branch an
    edit leaves alone kept its name while its rewrite changed, so the second gradient failed
    ("Attempting to add a duplicate function"). Oracle: tf.GradientTape by hand."""
    w = tf.Variable(np.full((3,), 5.0, np.float32))

    def f(a, b, flag):
        a2, b2 = tf.identity(a * 1.5, name="AA"), tf.identity(b * 2.5, name="BB")
        return tf.cond(flag > 0, lambda: a2 * w + b2, lambda: a2 - b2)

    scope = gs.trace(f, [tf.TensorSpec((None, 3)), tf.TensorSpec((None, 3)), tf.TensorSpec(())], quiet=True)
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)
    feed = [a, b, np.float32(1.0)]
    read = next(t for t in scope.find("then/") if not t.is_handle and t.shape == (None, 3))
    for edits, scale in (({}, 1.0), ({read: lambda v: v * 0.0}, 0.0), ({}, 1.0)):
        got = scope.gradients(scope.outputs[0], ["a", "b"], feed, edits=edits)
        av, bv = tf.constant(a), tf.constant(b)
        with tf.GradientTape() as tape:
            tape.watch([av, bv])
            # the edit zeroes what the then-branch reads of `a`: by hand, a2 * scale
            y = tf.reduce_sum((av * 1.5 * scale) * w + bv * 2.5)
        want_a, want_b = tape.gradient(y, [av, bv])
        np.testing.assert_allclose(got["a"], want_a.numpy(), rtol=1e-6)
        np.testing.assert_allclose(got["b"], want_b.numpy(), rtol=1e-6)

class _TwoDense(keras.Model):
    """A subclassed model whose layers are built by its first call: Keras 3 names each of their
    TensorFlow variables after the model alone (`two_dense/kernel` four times over), while their
    Keras paths (`two_dense/a/kernel`) tell them apart."""

    def __init__(self):
        super().__init__(name="two_dense")
        self.a = keras.layers.Dense(4, bias_initializer="random_normal", name="a")
        self.b = keras.layers.Dense(4, bias_initializer="random_normal", name="b")
        self.c = keras.layers.Dense(4, bias_initializer="random_normal", name="c")

    def call(self, x):
        return self.c(tf.tanh(self.b(tf.tanh(self.a(x)))))


def _two_dense():
    keras.utils.set_random_seed(0)
    model = _TwoDense()
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    model(x)
    assert len({w.value.name for w in model.weights}) < len(model.weights)  # the premise: TF names collide
    return model, x


def test_gradients_wrt_variables_whose_tensorflow_names_collide_are_each_variables_own():
    model, x = _two_dense()
    scope = gs.trace(model, quiet=True)
    before = weights_snapshot(model)
    want = _tape_gradients(model, x, [w.value for w in model.weights])[1:]
    by_object = scope.gradients(scope.outputs[0], model.weights, x)
    by_path = scope.gradients(scope.outputs[0], [w.path for w in model.weights], x)
    assert list(by_object) == list(by_path) == [w.path for w in model.weights]
    for got in (by_object, by_path):
        for w, g in zip(model.weights, want):
            np.testing.assert_allclose(got[w.path], g.numpy(), rtol=1e-5, atol=1e-6, err_msg=w.path)
    assert_weights_unchanged(model, before)


def test_a_saved_models_variable_name_shared_by_several_is_ambiguous_and_its_objects_are_not(tmp_path):
    model, x = _two_dense()
    model.export(str(tmp_path / "saved"), verbose=False)
    scope = gs.trace(str(tmp_path / "saved"), quiet=True)
    with pytest.raises(gs.AmbiguousMatchError, match=r"two_dense/kernel. is the TensorFlow name of 3 variables"):
        scope.gradients(scope.outputs[0], "two_dense/kernel", x)
    variables = scope.function.graph.variables  # the SavedModel's own, in the order they were saved
    got = scope.gradients(scope.outputs[0], list(variables), x)
    want = _tape_gradients(model, x, [w.value for w in model.weights])[1:]
    by_value = {w.path: g.numpy() for w, g in zip(model.weights, want)}
    for (key, g), v in zip(got.items(), variables):
        # each loaded variable is one of the model's: its value says which
        (path,) = [w.path for w in model.weights if w.shape == v.shape and np.array_equal(w.numpy(), v.numpy())]
        np.testing.assert_allclose(g, by_value[path], rtol=1e-5, atol=1e-6, err_msg=key)


def test_gradients_through_a_grouped_convolution_equal_gradient_tape():
    """Keras runs a grouped convolution in a function XLA compiles (a CPU has no kernel of its
    own for it); its gradient is compiled too, not replayed without XLA (which TensorFlow
    refused: "Gradients for grouped convolutions are not supported on CPU")."""
    x_in = keras.Input((6, 6, 4), name="x")
    conv = keras.layers.Conv2D(4, 3, groups=2, padding="same", name="grouped")
    model = keras.Model(x_in, keras.layers.Activation("tanh", name="act")(conv(x_in)))
    x = np.random.default_rng(22).normal(size=(2, 6, 6, 4)).astype(np.float32)
    scope = gs.trace(model, quiet=True)
    before = weights_snapshot(model)
    got = scope.gradients(scope.outputs[0], ["x", conv.kernel, conv.bias], x)
    assert_weights_unchanged(model, before)
    xv = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xv)
        y = tf.reduce_sum(model(xv))
    want = tape.gradient(y, [xv, conv.kernel.value, conv.bias.value])
    for key, w in zip(["x", conv.kernel.path, conv.bias.path], want):
        assert np.abs(w.numpy()).max() > 0
        np.testing.assert_allclose(got[key], w.numpy(), rtol=1e-4, atol=1e-5)
