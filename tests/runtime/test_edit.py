"""Edits: each compared with an independent computation (a Keras clone with the change made in
its weights, a run on other data, the loop computed by hand), never with graphscope itself."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope.runtime import expose
from tests import models
from tests.conftest import assert_weights_unchanged, weights_snapshot


def _two_convs(seed: int = 3) -> keras.Model:
    """conv1 -> conv2 (ReLU fused) -> global pooling -> dense: every value depends on the image alone."""
    init = keras.initializers.GlorotUniform(seed=seed)
    bias = keras.initializers.RandomNormal(stddev=0.2, seed=seed + 1)
    x_in = keras.Input((10, 10, 3), name="image")
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1", kernel_initializer=init, bias_initializer=bias)(x_in)
    x = keras.layers.Conv2D(5, 3, activation="relu", name="conv2", kernel_initializer=init, bias_initializer=bias)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(4, name="logits", kernel_initializer=init)(x)
    return keras.Model(x_in, out, name="two_convs")


@pytest.fixture(scope="module")
def convs():
    model = _two_convs()
    images = np.random.default_rng(5).normal(size=(3, 10, 10, 3)).astype(np.float32)
    return model, gs.trace(model, quiet=True), images


def test_zeroing_a_channel_of_a_pre_activation_equals_zeroing_its_weights(convs):
    model, scope, images = convs
    k = 2
    before = weights_snapshot(model)

    def zero_channel(v):
        return v * tf.one_hot(k, 5, on_value=0.0, off_value=1.0)

    got = scope.run(["conv2/BiasAdd:0", "logits/BiasAdd:0"], images, edits={"conv2/BiasAdd:0": zero_channel})
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    kernel, bias = clone.get_layer("conv2").get_weights()
    kernel[..., k], bias[k] = 0, 0
    clone.get_layer("conv2").set_weights([kernel, bias])
    np.testing.assert_allclose(got["logits/BiasAdd:0"], clone.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    # the fetched edited tensor is the edited value; the model itself is untouched
    assert np.all(got["conv2/BiasAdd:0"][..., k] == 0)
    assert_weights_unchanged(model, before)
    np.testing.assert_allclose(scope.run("logits/BiasAdd:0", images)["logits/BiasAdd:0"],
                               model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


def test_patching_a_layer_output_with_another_inputs_value_equals_running_that_input(convs):
    model, scope, images = convs
    clean, corrupt = images[:1], images[1:2]
    saved = scope.run("conv1/Relu:0", clean)["conv1/Relu:0"]
    patched = scope.run("logits/BiasAdd:0", corrupt, edits={"conv1/Relu:0": saved})["logits/BiasAdd:0"]
    np.testing.assert_allclose(patched, model.predict(clean, verbose=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(patched, model.predict(corrupt, verbose=0))
    # broadcast: one sample's value patched into a batch of three
    batch = scope.run("logits/BiasAdd:0", images, edits={"conv1/Relu:0": saved})["logits/BiasAdd:0"]
    np.testing.assert_allclose(batch, np.repeat(model.predict(clean, verbose=0), 3, axis=0), rtol=1e-5, atol=1e-6)


def test_everything_not_downstream_of_an_edit_is_as_before(convs):
    _, scope, images = convs
    fetches = ["conv1/BiasAdd:0", "conv2/BiasAdd:0", "conv2/Relu:0"]
    plain = scope.run(fetches, images)
    edited = scope.run(fetches, images, edits={"conv2/BiasAdd:0": lambda v: v + 1.0})
    np.testing.assert_array_equal(edited["conv1/BiasAdd:0"], plain["conv1/BiasAdd:0"])
    np.testing.assert_allclose(edited["conv2/BiasAdd:0"], plain["conv2/BiasAdd:0"] + 1.0, rtol=1e-6)
    np.testing.assert_allclose(edited["conv2/Relu:0"], np.maximum(plain["conv2/BiasAdd:0"] + 1.0, 0), rtol=1e-6)


def test_several_edits_at_once_compose(convs):
    model, scope, images = convs
    got = scope.run("logits/BiasAdd:0", images, edits={
        "conv1/Relu:0": lambda v: keras.ops.clip(v, 0.0, 0.1),  # keras.ops work too
        "pool/Mean:0": np.zeros((1, 5), np.float32),
    })["logits/BiasAdd:0"]
    bias = model.get_layer("logits").bias.numpy()
    np.testing.assert_allclose(got, np.broadcast_to(bias, (3, 4)), atol=1e-7)  # the pool edit overrides conv1's


def test_edits_steer_with_a_captured_vector_and_a_variable(convs):
    _, scope, images = convs
    direction = tf.constant(np.linspace(-1, 1, 5), tf.float32)
    scale = tf.Variable(3.0)
    plain = scope.run("pool/Mean:0", images)["pool/Mean:0"]
    got = scope.run("pool/Mean:0", images, edits={"pool/Mean:0": lambda v: v + scale * direction})["pool/Mean:0"]
    np.testing.assert_allclose(got, plain + 3.0 * direction.numpy(), rtol=1e-6)


def test_edited_executors_are_cached_by_their_edits(convs):
    _, scope, _ = convs
    def fn(v):
        return v * 2.0

    a = scope.executor("logits/BiasAdd:0", edits={"conv2/BiasAdd:0": fn})
    assert scope.executor("logits/BiasAdd:0", edits={"conv2/BiasAdd:0": fn}) is a
    assert scope.executor("logits/BiasAdd:0", edits={"conv2/BiasAdd:0": lambda v: v * 2.0}) is not a
    assert scope.executor("logits/BiasAdd:0") is not a
    zeros = np.zeros((1, 6, 6, 5), np.float32)
    b = scope.executor("logits/BiasAdd:0", edits={"conv2/BiasAdd:0": zeros})
    assert scope.executor("logits/BiasAdd:0", edits={"conv2/BiasAdd:0": zeros.copy()}) is b  # same contents
    assert scope.executor("logits/BiasAdd:0", edits={"conv2/BiasAdd:0": zeros + 1}) is not b
    assert "1 edit" in repr(a)


def test_an_array_changed_after_the_call_does_not_change_the_executor(convs):
    _, scope, images = convs
    value = np.zeros((1, 5), np.float32)
    run = scope.executor("logits/BiasAdd:0", edits={"pool/Mean:0": value})
    first = run(images)["logits/BiasAdd:0"]
    value += 10
    np.testing.assert_array_equal(run(images)["logits/BiasAdd:0"], first)


def test_an_edit_of_a_model_input(convs):
    model, scope, images = convs
    got = scope.run("logits/BiasAdd:0", images, edits={"image": lambda v: v * 0.5})["logits/BiasAdd:0"]
    np.testing.assert_allclose(got, model.predict(images * 0.5, verbose=0), rtol=1e-5, atol=1e-6)


def test_edits_with_intermediate_feeds(convs):
    model, scope, images = convs
    h = scope.run("conv1/Relu:0", images)["conv1/Relu:0"]
    got = scope.run("logits/BiasAdd:0", h, feeds=["conv1/Relu:0"], edits={"conv2/Relu:0": lambda v: v * 0})
    bias = model.get_layer("logits").bias.numpy()
    np.testing.assert_allclose(got["logits/BiasAdd:0"], np.broadcast_to(bias, (3, 4)), atol=1e-7)
    with pytest.raises(gs.DisconnectedError, match="changes nothing"):  # the feed cuts the edit off
        scope.executor("logits/BiasAdd:0", feeds=["conv2/Relu:0"], edits={"conv1/Relu:0": lambda v: v})


def test_an_edit_inside_a_map_fn_body_equals_the_loop_by_hand():
    model = models.control_flow()  # running_sum (while loop) -> map_square (map_fn: x**2 + 1) -> out
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    (square,) = scope.find(r"^map_square/map/while/Square:0$")
    got = scope.run([square, "map_square/map/TensorArrayV2Stack/TensorListStack:0", "out/BiasAdd:0"], x,
                    edits={square: lambda v: -v})
    h = np.cumsum(x, axis=1)  # the running sum over the features
    mapped = -(h**2) + 1.0  # the edit applies in every iteration of the map
    np.testing.assert_allclose(got["map_square/map/TensorArrayV2Stack/TensorListStack:0"], mapped, rtol=1e-5)
    kernel, bias = model.get_layer("out").get_weights()
    np.testing.assert_allclose(got["out/BiasAdd:0"], mapped @ kernel + bias, rtol=1e-5, atol=1e-6)
    # the edited value, fetched inside the loop: one per iteration
    np.testing.assert_allclose(got[square.name], -(h**2), rtol=1e-5)


@pytest.fixture(scope="module")
def flows():
    scope = gs.trace(models.loops_and_branches(), quiet=True)
    return scope, np.random.default_rng(1).normal(size=(2, 5)).astype(np.float32)


def _switch(x, y):
    """Branchy's tf.switch_case by hand, on the branch its (unedited) index picks."""
    index = int(np.clip(int(np.max(x) * 2.0), 0, 2))
    return [y + 1.0, np.sqrt(np.abs(y)), y * y][index]


def test_an_edit_inside_a_cond_branch_applies_when_the_branch_runs(flows):
    scope, x = flows
    for sign in (1.0, -1.0):  # the then-branch runs for a positive batch sum, the else-branch for a negative one
        xs = np.abs(x) * sign
        out = scope.layer("branchy").output
        got = scope.run([out, "branchy/cond/Relu:0"], xs, edits={"branchy/cond/Relu:0": lambda v: v + 1.0})
        y = (np.maximum(xs, 0) + 1.0) * 2.0 if sign > 0 else np.exp(xs) - 1.0
        np.testing.assert_allclose(got[out.name], _switch(xs, y), rtol=1e-5)
        if sign > 0:  # the edited value, fetched: there when its branch ran, None when not
            np.testing.assert_allclose(got["branchy/cond/Relu:0"], np.maximum(xs, 0) + 1.0, rtol=1e-6)
        else:
            assert got["branchy/cond/Relu:0"] is None


def test_an_edit_inside_an_xla_helper(flows):
    scope, x = flows
    out = scope.layer("xla_helper").output
    relu = scope.tensor("xla_helper/PartitionedCall/Relu:0")
    # the helper is not inlined (XLA): the edit goes into a clone of its function
    assert isinstance(scope._runtime.program.locator.locate(relu), expose.Target)
    got = scope.run(out, x, edits={relu: lambda v: v - 2.0})[out.name]
    np.testing.assert_allclose(got, (np.maximum(x, 0) - 2.0) * 3.0 + 1.0, rtol=1e-5)
    # one value per call: an array may replace it
    got = scope.run(out, x, edits={relu: np.full(5, 2.0, np.float32)})[out.name]
    np.testing.assert_allclose(got, np.full_like(x, 7.0), rtol=1e-6)


def test_an_edit_at_one_call_site_of_a_shared_function_leaves_the_other(flows):
    scope, x = flows
    out = scope.layer("shared_helper").output
    got = scope.run(out, x, edits={"shared_helper/PartitionedCall/Sigmoid:0": lambda v: v * 0.0})
    np.testing.assert_allclose(got[out.name], 4.0 / (1.0 + np.exp(x)), rtol=1e-5)  # sigmoid(-x) * 4


def test_an_array_edit_inside_a_loop_is_refused_with_the_way_out():
    scope = gs.trace(models.control_flow(), quiet=True)
    (square,) = scope.find(r"^map_square/map/while/Square:0$")
    with pytest.raises(gs.InputError, match="pass a callable"):
        scope.executor("out/BiasAdd:0", edits={square: np.zeros(5, np.float32)})


def test_the_model_is_never_changed_by_edits(convs):
    model, scope, images = convs
    before = weights_snapshot(model)
    graph_def = scope._runtime.program.graph_def.SerializeToString(deterministic=True)
    scope.run("logits/BiasAdd:0", images, edits={"conv1/Relu:0": lambda v: v * 0, "conv2/BiasAdd:0": np.ones(5, np.float32)})
    assert_weights_unchanged(model, before)
    assert scope._runtime.program.graph_def.SerializeToString(deterministic=True) == graph_def
    np.testing.assert_allclose(scope.run("logits/BiasAdd:0", images)["logits/BiasAdd:0"],
                               model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


def _dense(seed: int = 7) -> keras.Model:
    init = keras.initializers.RandomNormal(seed=seed)
    x_in = keras.Input((3,), name="x")
    out = keras.layers.Dense(2, name="dense", kernel_initializer=init, bias_initializer=init)(x_in)
    return keras.Model(x_in, out, name="one_dense")


def test_the_same_callable_reused_and_fresh_callables_across_cache_evictions():
    """Executors and compiled functions are cached by an edit's callable. A key that held only
    `id(fn)` let a fresh lambda, made after the executor of a collected one was evicted, reuse
    that id and get its compiled function (`v * 0` for `v * 100`). Every value is checked
    against numpy by hand."""
    from graphscope.runtime.cache import CACHE_SIZE

    model = _dense()
    scope = gs.trace(model, quiet=True)
    kernel, bias = model.get_layer("dense").get_weights()
    x = np.random.default_rng(2).normal(size=(2, 3)).astype(np.float32)

    def check(fn, factor):
        got = scope.run("dense/BiasAdd:0", x, edits={"dense/MatMul:0": fn})["dense/BiasAdd:0"]
        np.testing.assert_allclose(got, (x @ kernel) * factor + bias, rtol=1e-5, atol=1e-6)

    def evict_executors():  # as many executors of one fetch set: the compiled function stays cached
        for k in range(1, CACHE_SIZE + 2):
            scope.executor(["dense/BiasAdd:0"] * k)

    def evict_compiled():  # as many distinct compiled functions (array edits by their contents)
        for k in range(CACHE_SIZE + 1):
            scope.executor("dense/BiasAdd:0", edits={"dense/MatMul:0": np.full(2, k, np.float32)})

    double = lambda v: v * 2.0  # noqa: E731 - one object, reused throughout
    check(double, 2.0)
    check(lambda v: v * 0.0, 0.0)  # collected once its executor is evicted
    for round_, evict in enumerate([evict_executors, evict_compiled, evict_executors]):
        evict()
        for k in range(6):  # a fresh lambda each time: ids of collected ones come back
            factor = 100.0 + 10 * round_ + k
            check(lambda v, f=factor: v * f, factor)
        check(double, 2.0)
    check(lambda v: v * -3.0, -3.0)


def _accumulate(edit_c=None, edit_acc=None, edit_sum=None):
    """acc = 0; three times: acc = acc + c, with c = x * 1.0 computed before the loop. The
    `edit_*` hooks apply an edit by hand, eagerly, where each value is used in the body."""
    same = lambda v: v  # noqa: E731
    edit_c, edit_acc, edit_sum = edit_c or same, edit_acc or same, edit_sum or same

    def f(x):
        c = x * 1.0
        body = lambda i, acc: (i + 1, edit_sum(edit_acc(acc) + edit_c(c)))  # noqa: E731
        return tf.while_loop(lambda i, acc: i < 3, body, [tf.constant(0), tf.zeros_like(x)])[1]

    return f


def test_an_edit_inside_a_loop_applies_once_to_each_iterations_value():
    """A value computed before a loop and used in its body (`c`, captured: the body's argument
    `while/body/mul:0`) is edited afresh in each iteration, never compounded (each iteration sees
    2c: 6c in all, not 2c + 4c + 8c); an edited loop variable, or a value the body computes and
    carries on, feeds the next iteration, since the model computes that iteration from it.
    Each compared with the function re-run eagerly with the edit written into its body."""
    spec = tf.TensorSpec((None, 3), tf.float32)
    scope = gs.trace(tf.function(_accumulate(), input_signature=[spec]), quiet=True)
    x = np.array([[1.0, 2.0, -3.0], [0.5, 4.0, 1.5]], np.float32)
    twice = lambda v: v * 2.0  # noqa: E731
    (out,) = scope.outputs
    (c,) = scope.find(r"^while/body/mul:0$")
    (acc,) = scope.find(r"^while/body/Placeholder_1:0$")
    (total,) = scope.find(r"^while/add_1:0$")  # acc + c, the next acc
    cases = [
        ("mul:0", dict(edit_c=twice)),  # c edited before the loop: the same as in it
        (c.name, dict(edit_c=twice)),
        (acc.name, dict(edit_acc=twice)),
        (total.name, dict(edit_sum=twice)),
    ]
    for name, by_hand in cases:
        got = scope.run([out, c], x, edits={name: twice})
        want = _accumulate(**by_hand)(tf.constant(x)).numpy()
        np.testing.assert_allclose(got[out.name], want, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(scope.run(out, x, edits={c: twice})[out.name], 6 * x, rtol=1e-6)
    # the edited invariant, fetched: 2c in every iteration
    np.testing.assert_allclose(scope.run(c, x, edits={c: twice})[c.name], np.stack([2 * x] * 3), rtol=1e-6)


def _pass_on(edit_b=None, edit_next=None):
    """A loop variable the body passes on unchanged: (i, acc, b) -> (i + 1, acc + b, b), with
    b = x * 1.0, three times; the edits by hand where b is used and where it is passed on."""
    same = lambda v: v  # noqa: E731
    edit_b, edit_next = edit_b or same, edit_next or same

    def f(x):
        body = lambda i, acc, b: (i + 1, acc + edit_b(b), edit_next(b))  # noqa: E731
        return tf.while_loop(lambda i, acc, b: i < 3, body, [tf.constant(0), tf.zeros_like(x), x * 1.0])[1]

    return f


def test_a_loop_variable_passed_on_unchanged_is_edited_afresh_but_its_passed_on_copy_is_carried():
    """TensorFlow makes a captured value a loop variable the body passes on, so a declared loop
    variable passed on unchanged is the same thing: its edit applies afresh in each iteration
    (6x). The body's `Identity` that passes it on is a value the body computes for the next
    iteration: an edit of that one is carried (x + 2x + 4x). Each against an eager re-run."""
    spec = tf.TensorSpec((None, 3), tf.float32)
    scope = gs.trace(tf.function(_pass_on(), input_signature=[spec]), quiet=True)
    x = np.array([[1.0, 2.0, -3.0]], np.float32)
    (out,) = scope.outputs
    (b,) = scope.find(r"^while/body/Placeholder_2:0$")
    (passed,) = [t for t in scope.find(r"^while/Identity_\d+:0$") if scope.op(t.op).inputs == (b.name,)]
    twice = lambda v: v * 2.0  # noqa: E731
    for name, by_hand, times in [(b, dict(edit_b=twice), 6), (passed, dict(edit_next=twice), 7)]:
        got = scope.run(out, x, edits={name: twice})[out.name]
        np.testing.assert_allclose(got, _pass_on(**by_hand)(tf.constant(x)).numpy(), rtol=1e-6, err_msg=name.name)
        np.testing.assert_allclose(got, times * x, rtol=1e-6, err_msg=name.name)


def test_an_edit_array_is_refused_where_the_tensors_dtype_cannot_hold_it():
    """A float16 layer (its own mixed_float16 policy): 1e6 would become inf downstream, so it is
    refused with the dtype and the range; 0.1 rounds and is patched in, checked by hand."""
    init = keras.initializers.RandomNormal(seed=9)
    x_in = keras.Input((3,), name="x")
    half = keras.layers.Dense(2, name="half", dtype="mixed_float16", kernel_initializer=init, bias_initializer=init)
    model = keras.Model(x_in, half(x_in), name="half_model")
    scope = gs.trace(model, quiet=True)
    assert scope.tensor("half/MatMul:0").dtype == "float16"
    with pytest.raises(gs.InputError, match=r"expects float16, whose range is -65504 to 65504.*from 1e\+06 to 1e\+06"):
        scope.executor("half/BiasAdd:0", edits={"half/MatMul:0": np.full(2, 1e6, np.float32)})
    x = np.ones((2, 3), np.float32)
    got = scope.run("half/BiasAdd:0", x, edits={"half/MatMul:0": np.full(2, 0.1, np.float32)})["half/BiasAdd:0"]
    bias = half.bias.numpy().astype(np.float16)
    np.testing.assert_array_equal(got, np.broadcast_to(np.float16(0.1) + bias, (2, 2)))


def test_gradients_through_different_edits_of_one_loop_equal_gradient_tape():
    """Each edit of a loop clones its body, and its cond too: TensorFlow's gradient names the
    cond it rewrites after the cond, and two bodies sharing one cond clashed there."""
    spec = tf.TensorSpec((None, 3), tf.float32)
    scope = gs.trace(tf.function(_accumulate(), input_signature=[spec]), quiet=True)
    x = np.array([[1.0, 2.0, -3.0], [0.5, 4.0, 1.5]], np.float32)
    square = lambda v: v * v  # noqa: E731
    cases = [("while/body/mul:0", dict(edit_c=square)), ("while/add_1:0", dict(edit_sum=square)),
             ("while/body/Placeholder_1:0", dict(edit_acc=square))]
    for name, by_hand in cases:
        got = scope.gradients(scope.outputs[0], ["x"], x, edits={name: square})["x"]
        xs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = tf.reduce_sum(_accumulate(**by_hand)(xs))
        np.testing.assert_allclose(got, tape.gradient(y, xs).numpy(), rtol=1e-5, err_msg=name)


def test_a_reused_callable_reads_a_changed_variable_at_its_current_value():
    """A callable that reads a tf.Variable or a Keras weight is traced once, but the variables
    are read on every `run`/`gradients`: their current values, never a cached executor's stale
    ones. Checked against numpy and tf.GradientTape by hand."""
    model = _dense(seed=11)
    scope = gs.trace(model, quiet=True)
    layer = model.get_layer("dense")
    kernel, bias = (np.array(w) for w in layer.get_weights())
    x = np.random.default_rng(4).normal(size=(2, 3)).astype(np.float32)
    t = "dense/BiasAdd:0"
    scale = tf.Variable(2.0)
    scaled = lambda v: v * scale  # noqa: E731 - one object, reused
    for s in [2.0, 3.0, 3.0, -0.5]:
        scale.assign(s)
        got = scope.run(t, x, edits={t: scaled})[t]
        np.testing.assert_allclose(got, (x @ kernel + bias) * s, rtol=1e-5, atol=1e-6)
        grads = scope.gradients(t, "x", x, edits={t: scaled})["x"]
        with tf.GradientTape() as tape:
            xt = tf.constant(x)
            tape.watch(xt)
            y = tf.reduce_sum((xt @ kernel + bias) * s)
        np.testing.assert_allclose(grads, tape.gradient(y, xt).numpy(), rtol=1e-5, atol=1e-6)

    # a Keras weight of the model itself, changed (and restored: the model is left as it was)
    plus_bias = lambda v: v + layer.bias  # noqa: E731
    np.testing.assert_allclose(scope.run(t, x, edits={t: plus_bias})[t], x @ kernel + 2 * bias, rtol=1e-5, atol=1e-6)
    try:
        layer.bias.assign(bias + 1.0)
        got = scope.run(t, x, edits={t: plus_bias})[t]
        np.testing.assert_allclose(got, x @ kernel + 2 * (bias + 1.0), rtol=1e-5, atol=1e-6)
    finally:
        layer.bias.assign(bias)
    np.testing.assert_allclose(scope.run(t, x, edits={t: plus_bias})[t], x @ kernel + 2 * bias, rtol=1e-5, atol=1e-6)


def test_a_kept_executor_reads_its_callables_variables_live_and_stays_cached():
    """The variables a callable reads are bound to the executor like the model's weights: one
    executor object, kept, follows every assignment; the same callable gives the same executor
    whatever the variables hold. Checked against numpy by hand."""
    model = _dense(seed=12)
    before = weights_snapshot(model)
    scope = gs.trace(model, quiet=True)
    layer = model.get_layer("dense")
    kernel, bias = (np.array(w) for w in layer.get_weights())
    t = "dense/BiasAdd:0"
    x = np.random.default_rng(6).normal(size=(2, 3)).astype(np.float32)
    scale = tf.Variable(2.0)
    shift = tf.constant([1.0, -1.0])  # a captured tensor, not a variable: its value at the trace
    scaled = lambda v: v * scale + shift  # noqa: E731
    kept = scope.executor(t, edits={t: scaled})
    for s in [2.0, 3.0, -0.5]:
        scale.assign(s)
        assert scope.executor(t, edits={t: scaled}) is kept
        np.testing.assert_allclose(kept(x)[t], (x @ kernel + bias) * s + [1.0, -1.0], rtol=1e-5, atol=1e-6)
    # a Keras weight of the model itself, read by the callable (and by the model: one binding)
    plus_bias = lambda v: v + layer.bias  # noqa: E731
    with_bias = scope.executor(t, edits={t: plus_bias})
    try:
        for delta in [0.0, 1.0, -2.5]:
            layer.bias.assign(bias + delta)
            assert scope.executor(t, edits={t: plus_bias}) is with_bias
            np.testing.assert_allclose(with_bias(x)[t], x @ kernel + 2 * (bias + delta), rtol=1e-5, atol=1e-6)
    finally:
        layer.bias.assign(bias)
    assert_weights_unchanged(model, before)


def test_a_callable_inside_a_loop_body_reads_its_variables_live():
    spec = tf.TensorSpec((None, 3), tf.float32)
    scope = gs.trace(tf.function(_accumulate(), input_signature=[spec]), quiet=True)
    x = np.array([[1.0, 2.0, -3.0], [0.5, 4.0, 1.5]], np.float32)
    (out,) = scope.outputs
    scale = tf.Variable(2.0)
    scaled = lambda v: v * scale  # noqa: E731
    for name, hook in [("while/body/mul:0", "edit_c"), ("while/add_1:0", "edit_sum")]:
        kept = scope.executor(out, edits={name: scaled})
        for s in [2.0, 3.0, -0.5]:
            scale.assign(s)
            assert scope.executor(out, edits={name: scaled}) is kept
            want = _accumulate(**{hook: lambda v, s=s: v * s})(tf.constant(x)).numpy()
            np.testing.assert_allclose(kept(x)[out.name], want, rtol=1e-5, err_msg=name)
            # gradients through the edit in the loop, the variable read live there too
            got = scope.gradients(out, ["x"], x, edits={name: scaled})["x"]
            xs = tf.constant(x)
            with tf.GradientTape() as tape:
                tape.watch(xs)
                y = tf.reduce_sum(_accumulate(**{hook: lambda v, s=s: v * s})(xs))
            np.testing.assert_allclose(got, tape.gradient(y, xs).numpy(), rtol=1e-5, err_msg=name)


def test_a_callable_inside_a_loops_cond_reads_its_variables_live():
    """The loop's cond clone takes the handle as an argument, and its body passes it on."""
    spec = tf.TensorSpec((None, 3), tf.float32)
    scope = gs.trace(tf.function(_accumulate(), input_signature=[spec]), quiet=True)
    (out,) = scope.outputs
    x = np.array([[1.0, 2.0, -3.0]], np.float32)
    limit = tf.Variable(1)
    kept = scope.executor(out, edits={"while/Less:0": lambda v: tf.logical_and(v, 0 < limit)})
    for on in [1, 0, 1]:
        limit.assign(on)
        np.testing.assert_allclose(kept(x)[out.name], 3 * x if on else 0 * x, rtol=1e-6)  # three turns, or none


def test_a_callable_inside_a_cond_branch_and_an_xla_helper_reads_its_variables_live(flows):
    scope, x = flows
    xs = np.abs(x)  # the then-branch runs
    out = scope.layer("branchy").output
    offset = tf.Variable(1.0)
    shifted = lambda v: v + offset  # noqa: E731
    kept = scope.executor(out, edits={"branchy/cond/Relu:0": shifted})
    helper = scope.layer("xla_helper").output
    relu = "xla_helper/PartitionedCall/Relu:0"
    in_helper = scope.executor(helper, edits={relu: shifted})
    for o in [2.0, 3.0, -0.5]:
        offset.assign(o)
        assert scope.executor(out, edits={"branchy/cond/Relu:0": shifted}) is kept
        y = (np.maximum(xs, 0) + o) * 2.0
        np.testing.assert_allclose(kept(xs)[out.name], _switch(xs, y), rtol=1e-5)
        np.testing.assert_allclose(in_helper(x)[helper.name], (np.maximum(x, 0) + o) * 3.0 + 1.0, rtol=1e-5)


def test_gradients_through_an_edit_reading_a_variable_and_the_callables_lifetime():
    import gc
    import weakref

    model = _dense(seed=13)
    scope = gs.trace(model, quiet=True)
    kernel, bias = (np.array(w) for w in model.get_layer("dense").get_weights())
    t = "dense/BiasAdd:0"
    x = np.random.default_rng(8).normal(size=(2, 3)).astype(np.float32)
    scale = tf.Variable(4.0)
    squared = lambda v: v * v * scale  # noqa: E731
    for s in [4.0, -0.5]:
        scale.assign(s)
        got = scope.gradients(t, "x", x, edits={t: squared})["x"]
        xs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = xs @ kernel + bias
            total = tf.reduce_sum(y * y * s)
        np.testing.assert_allclose(got, tape.gradient(total, xs).numpy(), rtol=1e-5, atol=1e-5)
    gone = weakref.ref(squared)
    del squared
    for k in range(70):  # evict the scope's executors and compiled functions, which hold it
        scope.executor("dense/BiasAdd:0", edits={"dense/MatMul:0": np.full(2, k, np.float32)})
    gc.collect()
    assert gone() is None


def test_an_edit_keyed_by_an_input_name_that_is_also_an_output_key_edits_the_input():
    """SAM's input is `masks` and keras-hub's generate_step returns `token_ids`: an edit puts a
    value in, as a feed does, so the name means the input (as Keras fed that value computes)."""
    init = keras.initializers.GlorotUniform(seed=3)
    inp = keras.Input((4,), name="masks")
    h = keras.layers.Dense(4, activation="tanh", name="h", kernel_initializer=init)(inp)
    score = keras.layers.Dense(1, name="iou", kernel_initializer=init, bias_initializer="ones")(h)
    model = keras.Model(inp, {"masks": h, "iou": score})
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    ones = np.ones((2, 4), np.float32)
    got = scope.run(["iou"], x, edits={"masks": ones})["iou"]
    np.testing.assert_allclose(got, model(ones)["iou"], rtol=1e-6, atol=1e-6)  # Keras fed the edit
    # the output stays editable by its Tensor: the head computes from the patched h
    patched = scope.run(["iou"], x, edits={scope.output("masks"): ones})["iou"]
    np.testing.assert_allclose(patched, model.get_layer("iou")(ones), rtol=1e-6, atol=1e-6)


def test_a_callable_that_writes_a_variable_is_refused_and_nothing_moves():
    model = _dense(seed=14)
    before = weights_snapshot(model)
    scope = gs.trace(model, quiet=True)
    t = "dense/BiasAdd:0"
    bias = model.get_layer("dense").bias
    with pytest.raises(gs.InputError, match=r"changes state \(Assign\w*VariableOp\).*may not write them"):
        scope.run(t, np.ones((1, 3), np.float32), edits={t: lambda v: v + bias.assign_add(tf.ones_like(bias))})
    assert_weights_unchanged(model, before)


def _looped(w, edit=None):
    """tanh(x * w + acc) three times in a `tf.while_loop`, `edit` applied to the body's `a`."""

    def fn(x):
        def body(i, acc):
            a = tf.identity(x * w + acc, name="a")
            return i + 1, tf.tanh(edit(a) if edit else a)

        return tf.while_loop(lambda i, acc: i < 3, body, [tf.constant(0), tf.zeros_like(x)])[1]

    return fn


def test_the_gradient_wrt_a_variable_an_edit_in_a_loop_body_reads_has_the_edits_path():
    """The variable handles an edit passes down as loop variables are counted among the loop's
    own outputs (`_num_original_outputs`), not while_v2's accumulators, which its gradient
    gives no gradient: d/dw has the path through the edit too (the review's repro)."""
    w = tf.Variable([1.0, 2.0, 3.0], name="w")
    scope = gs.trace(tf.function(_looped(w), input_signature=[tf.TensorSpec((None, 3), tf.float32)]), quiet=True)
    (out,) = scope.outputs
    x = np.array([[0.1, -0.2, 0.3], [0.4, 0.2, -0.5]], np.float32)
    scaled = lambda v: v * w * 0.5  # noqa: E731
    np.testing.assert_allclose(scope.run(out, x, edits={"while/a:0": scaled})[out.name],
                               _looped(w, scaled)(tf.constant(x)).numpy(), rtol=1e-6)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(_looped(w, scaled)(tf.constant(x)))
    want = tape.gradient(y, w).numpy()
    got = scope.gradients(out, [w], x, edits={"while/a:0": scaled})["w"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:  # what the bug gave: the edit's w held constant
        y = tf.reduce_sum(_looped(w, lambda v: v * tf.stop_gradient(w) * 0.5)(tf.constant(x)))
    assert np.abs(tape.gradient(y, w).numpy() - want).max() > 1e-2  # the two differ: the test can fail
    np.testing.assert_allclose(w.numpy(), [1.0, 2.0, 3.0])


def test_the_gradient_wrt_a_variable_an_edit_in_a_savedmodels_loop_reads_equals_gradient_tape(tmp_path):
    class Loop(tf.Module):
        def __init__(self):
            self.w = tf.Variable([[0.5, -0.3], [0.2, 0.8]], name="w")
            self.b = tf.Variable([0.1, -0.1], name="b")

        @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32)])
        def __call__(self, x):
            def body(i, h):
                return i + 1, tf.tanh(h @ self.w + x + self.b)

            return {"h": tf.while_loop(lambda i, h: i < 3, body, [tf.constant(0), tf.zeros_like(x)])[1]}

    module = Loop()
    tf.saved_model.save(module, str(tmp_path), signatures=module.__call__)
    loaded = tf.saved_model.load(str(tmp_path))
    scope = gs.trace(loaded, quiet=True)
    (name,) = [n for n in scope.model_graph.tensors if "while" in n and n.endswith("Tanh:0")]
    x = np.array([[0.3, -1.0], [1.0, 0.5]], np.float32)
    scale = tf.Variable(2.0)
    edit = lambda v: v * scale * loaded.w[0]  # noqa: E731

    def by_hand(xs):
        h = tf.zeros_like(xs)
        for _ in range(3):
            h = edit(tf.tanh(h @ loaded.w + xs + loaded.b))
        return h

    before = loaded.w.numpy()
    for s in [2.0, -1.0]:
        scale.assign(s)
        np.testing.assert_allclose(scope.run("h", x, edits={name: edit})["h"], by_hand(tf.constant(x)).numpy(),
                                   rtol=1e-5, atol=1e-6)
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(by_hand(tf.constant(x)))
        want_w, want_b = tape.gradient(y, [loaded.w, loaded.b])
        got = scope.gradients("h", [loaded.w, loaded.b], x, edits={name: edit})
        got_w, got_b = got.values()
        np.testing.assert_allclose(got_w, want_w.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got_b, want_b.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(loaded.w.numpy(), before)


def _bumped(v, edit=None, loop=False):
    """`v.assign_add(1)`, then `x * v` (in a `tf.while_loop` body, twice, when `loop`), `edit`
    applied to the product: the call reads its own write back."""

    def fn(x):
        v.assign_add(1.0)
        if not loop:
            y = tf.identity(x * v, name="y")
            return edit(y) if edit else y

        def body(i, acc):
            a = tf.identity(x * v + acc, name="a")
            return i + 1, edit(a) if edit else a

        return tf.while_loop(lambda i, acc: i < 2, body, [tf.constant(0), tf.zeros_like(x)])[1]

    return fn


@pytest.mark.parametrize("loop", [False, True], ids=["top", "loop"])
def test_an_edit_reads_a_variable_the_call_writes_as_the_call_reads_it(loop):
    """A variable the call writes and reads back runs against a private copy (`writes`); an
    edit that reads it reads that copy, after the call's write, as the model's own read does.
    Checked against the model's function run eagerly on a copy of the state; `v` never moves."""
    v = tf.Variable(1.0, name="v")
    spec = tf.TensorSpec((None, 3), tf.float32)
    scope = gs.trace(tf.function(_bumped(v, loop=loop), input_signature=[spec]), quiet=True)
    (out,) = scope.outputs
    name = "while/a:0" if loop else "mul:0"
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], np.float32)
    shifted = lambda value: value + v  # noqa: E731
    for start in [1.0, -2.0]:
        v.assign(start)
        copy = tf.Variable(start)
        want = _bumped(copy, lambda value: value + copy, loop=loop)(tf.constant(x)).numpy()
        np.testing.assert_allclose(scope.run(out, x, edits={name: shifted})[out.name], want, rtol=1e-6)
        assert v.numpy() == start
        # the gradient with respect to v takes the edit's read of the copy too
        copy.assign(start)
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(_bumped(copy, lambda value: value * copy, loop=loop)(tf.constant(x)))
        got = scope.gradients(out, [v], x, edits={name: lambda value: value * v})["v"]
        np.testing.assert_allclose(got, tape.gradient(y, copy).numpy(), rtol=1e-5)
        assert v.numpy() == start


def test_an_edit_reads_a_variable_before_a_write_the_call_makes_after_the_edited_tensor():
    """The call writes its private copy after the edited tensor: the edit reads it before that
    write, as the model's read there does (not the value after it)."""
    v = tf.Variable(1.0, name="v")

    def model(variable, edit=None):
        def fn(x):
            y = tf.identity(x * variable, name="y")
            y = edit(y) if edit else y
            variable.assign_add(1.0)
            return y + variable

        return fn

    scope = gs.trace(tf.function(model(v), input_signature=[tf.TensorSpec((None, 3), tf.float32)]), quiet=True)
    (out,) = scope.outputs
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    for start in [1.0, 3.0]:
        v.assign(start)
        copy = tf.Variable(start)
        want = model(copy, lambda y: y + copy)(tf.constant(x)).numpy()  # (x + 1) * start + start + 1
        np.testing.assert_allclose(scope.run(out, x, edits={"mul:0": lambda y: y + v})[out.name], want, rtol=1e-6)
        assert v.numpy() == start
