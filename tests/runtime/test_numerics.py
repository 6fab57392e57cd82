"""Numerics: where NaN and Inf start. Every answer is checked against values fetched one by one
(`scope.run` of each tensor alone) or Keras sub-models, judged by numpy; backward against
tf.GradientTape."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from rich.console import Console

import graphscope as gs
from graphscope.runtime.numerics import passes_along
from tests.conftest import assert_weights_unchanged, weights_snapshot

FLOATS = ("float16", "bfloat16", "float32", "float64")


class Log(keras.layers.Layer):
    """log of its input (NaN where a Dense made it negative), then scaled."""

    def call(self, x):
        return tf.math.log(x) * 2.0


class Sqrt(keras.layers.Layer):
    def call(self, x):
        return tf.sqrt(x)


class LogInLoop(keras.layers.Layer):
    """A tf.while_loop of 5 iterations adding log(2 - i) to a running sum: log(0) = -Inf first
    appears in iteration 2 (log(-1) = NaN follows in iteration 3)."""

    def call(self, x):
        def body(i, acc):
            step = tf.math.log(tf.cast(2 - i, tf.float32) + 0.0 * acc)
            return i + 1, acc + step

        return tf.while_loop(lambda i, _: i < 5, body, (tf.constant(0), x))[1]


def _counts(value):
    """(nan, +inf, -inf) of a fetched value by numpy: an array, a list of them (a loop whose
    iterations differ in shape) or None (a branch that did not run)."""
    if value is None:
        return 0, 0, 0
    if isinstance(value, list):
        parts = [_counts(v) for v in value]
        return tuple(int(sum(p[k] for p in parts)) for k in range(3))
    a = np.asarray(value, np.float64)
    return int(np.isnan(a).sum()), int(np.isposinf(a).sum()), int(np.isneginf(a).sum())


def _one_by_one(scope, x, names):
    """Each tensor fetched by an executor of its own, judged by numpy: {name: counts} of those
    holding non-finite values."""
    bad = {}
    for name in names:
        counts = _counts(scope.run(name, x)[name])
        if any(counts):
            bad[name] = counts
    return bad


def _first_bad_iteration(value, loops):
    """The first iteration index (outermost loop first) at which a value fetched per iteration
    holds NaN or Inf, by numpy; None where it never does (a branch that did not run: None)."""
    if value is None:
        return None
    if not loops:
        return () if not np.isfinite(np.asarray(value, np.float64)).all() else None
    for i, item in enumerate(value):
        found = _first_bad_iteration(item, loops - 1)
        if found is not None:
            return (i, *found)
    return None


def _float_names(scope):
    unused = scope.model_graph.unused
    return [t.name for t in scope.model_graph.tensors.values() if t.dtype in FLOATS and t.op not in unused]


def _log_model(depth=0):
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, name="d1", kernel_initializer="glorot_uniform")(x_in)
    h = Log(name="log")(h)
    for k in range(depth):
        h = keras.layers.Dense(3, activation="tanh", name=f"after{k}")(h)
    return keras.Model(x_in, keras.layers.Dense(2, name="out")(h))


def test_a_nan_inside_a_custom_layer_starts_at_its_log():
    keras.utils.set_random_seed(1)
    model = _log_model()
    scope = gs.trace(model, quiet=True)
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    # the oracle: the Dense's output from a Keras sub-model holds negatives; numpy's log of it NaN
    dense = keras.Model(model.input, model.get_layer("d1").output)(x).numpy()
    assert (dense < 0).any() and np.isfinite(dense).all()
    before = weights_snapshot(model)
    report = scope.numerics(x)
    assert_weights_unchanged(model, before)
    assert not report.ok
    assert report.first.name == "log/Log:0" and report.first.layer == "log" and report.iteration == ()
    assert report.origins.names == ["log/Log:0"]
    want = _one_by_one(scope, x, _float_names(scope))
    assert {n: (c.nan, c.posinf, c.neginf) for n, c in report.bad.items()} == want
    assert want["log/Log:0"] == (int((dense < 0).sum()), 0, int((dense == 0).sum()))
    downstream = [n for n in want if n != "log/Log:0"]
    assert downstream and not set(downstream) & set(report.origins.names)  # consequences, not origins
    (origin,) = report.details
    ((name, counts),) = origin.inputs
    assert name == "d1/BiasAdd:0" and np.isclose(counts.min, dense.min()) and np.isclose(counts.max, dense.max())
    assert origin.chain[0] == "d1/BiasAdd:0" and origin.chain[-1] == "log/Log:0"


def test_a_nan_first_appearing_in_iteration_two_of_a_while_loop():
    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, LogInLoop(name="looped")(x_in))
    scope = gs.trace(model, quiet=True)
    x = np.ones((2, 3), "float32")
    report = scope.numerics(x)
    assert report.first.op_type == "Log" and report.first.layer == "looped"
    assert report.first.context == "looped/while:body"
    # the oracle: the log's value per iteration, fetched alone; numpy finds its first bad iteration
    per_iteration = scope.run(report.first.name, x)[report.first.name]
    bad_iterations = [i for i, v in enumerate(per_iteration) if not np.isfinite(v).all()]
    assert bad_iterations[0] == 2 and report.iteration == (2,)
    # its inputs are finite at that iteration (fetched alone too)
    for name, _ in report.details[0].inputs:
        value = scope.run(name, x)[name]
        assert np.isfinite(np.asarray(value)[2] if name in scope.run(name, x).per_iteration else value).all()
    assert report.origins.names == [report.first.name]  # the sum it spoils, and the loop's output, are not
    want = _one_by_one(scope, x, _float_names(scope))
    assert {n: (c.nan, c.posinf, c.neginf) for n, c in report.bad.items()} == want
    assert any(passes_along(scope.model_graph.tensors[n]) for n in want)  # the body's argument holds -Inf too


def test_a_nan_spreading_through_a_whole_network_has_one_origin_and_many_bad_tensors():
    keras.utils.set_random_seed(2)
    model = _log_model(depth=6)
    scope = gs.trace(model, quiet=True)
    x = np.random.RandomState(3).randn(4, 4).astype("float32") * 3
    report = scope.numerics(x)
    want = _one_by_one(scope, x, _float_names(scope))
    assert len(want) > 15
    assert set(report.bad) == set(want)
    assert report.origins.names == ["log/Log:0"]
    for k in range(6):  # every later layer's output is bad, from a Keras sub-model too
        assert not np.isfinite(keras.Model(model.input, model.get_layer(f"after{k}").output)(x).numpy()).all()


def _tail_gradients(model, relu, x):
    """The oracle: tf.GradientTape on the model's tail (layers `root`, then `out`, summed) from
    the relu's output, and from the root's (the sqrt's) output."""
    h = tf.constant(keras.Model(model.input, relu)(x).numpy())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(h)
        r = model.get_layer("root")(h)
        y = tf.reduce_sum(model.get_layer("out")(r))
    return tape.gradient(y, h).numpy(), tape.gradient(y, r).numpy()


def test_backward_finds_the_input_of_a_sqrt_at_zero():
    keras.utils.set_random_seed(4)
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="d1")(x_in)
    h = Sqrt(name="root")(h)
    model = keras.Model(x_in, keras.layers.Dense(2, name="out")(h))
    scope = gs.trace(model, quiet=True)
    x = np.random.RandomState(5).randn(3, 4).astype("float32")
    assert scope.numerics(x).ok  # forward: sqrt(0) = 0, finite
    report = scope.numerics(x, backward="out/BiasAdd:0")
    assert report.direction == "backward" and report.examined and not report.ok
    relu = model.get_layer("d1").output
    assert report.first.name == "d1/Relu:0" and report.first.layer == "d1"
    g_relu, g_root = _tail_gradients(model, relu, x)
    assert np.isfinite(g_root).all() and not np.isfinite(g_relu).all()
    c = report.bad["d1/Relu:0"]
    assert (c.nan, c.posinf, c.neginf) == _counts(g_relu)
    assert "root/Sqrt:0" not in report.bad
    assert report.origins.names == ["d1/Relu:0"]
    ((name, counts),) = report.details[0].inputs  # the sqrt's input, at 0
    assert name == "d1/Relu:0" and counts.min == 0


def test_backward_after_a_non_finite_forward_pass_reports_the_forward_origins():
    keras.utils.set_random_seed(1)
    scope = gs.trace(_log_model(), quiet=True)
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    report = scope.numerics(x, backward="out/BiasAdd:0")
    assert not report.examined and report.direction == "forward"
    assert report.first.name == "log/Log:0"
    assert "backward pass was not examined" in str(report)


def test_an_ok_model(functional_scope):
    from tests import models

    x = models.sample_inputs(models.functional())[0]
    values = functional_scope.run(_float_names(functional_scope), x)
    assert all(np.isfinite(v).all() for v in values.values())
    report = functional_scope.numerics(x)
    assert report.ok and report.first is None and report.iteration == () and not report.origins and not report.bad
    assert report.checked == len(values)
    assert repr(report).startswith("<Numerics ok:")
    assert functional_scope.numerics(x, backward="probs/Softmax:0").ok


def test_an_edit_injects_a_nan_whose_origin_is_the_edited_tensor(functional_scope):
    from tests import models

    x = models.sample_inputs(models.functional())[0]
    report = functional_scope.numerics(x, edits={"dense/MatMul:0": lambda v: v + np.nan})
    assert report.origins.names == ["dense/MatMul:0"] and report.first.layer == "dense"


def test_the_table_names_each_origin_its_layer_op_counts_inputs_and_chain():
    keras.utils.set_random_seed(1)
    model = _log_model()
    scope = gs.trace(model, quiet=True)
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    report = scope.numerics(x)
    dense = keras.Model(model.input, model.get_layer("d1").output)(x).numpy()  # the Log's input, by Keras
    bad = sum(any(_counts(scope.run(n, x)[n])) for n in _float_names(scope))
    nan = int((dense < 0).sum())
    inputs = f"d1/BiasAdd:0 {dense.min():.4g}..{dense.max():.4g}"
    console = Console(width=80, color_system=None, record=True, file=io.StringIO())
    console.print(report)
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    width = len(inputs) + 2
    assert lines == [
        f"{bad} of {len(_float_names(scope))} tensors hold NaN or Inf; 1 origin(s)",
        "first: log/Log:0",
        "origins",
        "┏━━━━━━━━━━━┳━━━━━━━┳━━━━━┳━━━━━━━━━━━━━━━┳" + "━" * width + "┓",
        "┃ origin    ┃ layer ┃ op  ┃ nan/+inf/-inf ┃ " + "inputs: min..max".ljust(width - 1) + "┃",
        "┡━━━━━━━━━━━╇━━━━━━━╇━━━━━╇━━━━━━━━━━━━━━━╇" + "━" * width + "┩",
        f"│ log/Log:0 │ log   │ Log │ {f'{nan}/0/0':>13} │ {inputs} │",
        "└───────────┴───────┴─────┴───────────────┴" + "─" * width + "┘",
        "chains from the nearest layer boundary",
        "log/Log:0: d1/BiasAdd:0 → log/Log:0",
    ]
    html = report._repr_html_()
    assert "log/Log:0" in html and "d1/BiasAdd:0 → log/Log:0" in html


@pytest.fixture(scope="module")
def control_flow():
    from tests import models

    model = models.loops_and_branches()
    return gs.trace(model, quiet=True), models.sample_inputs(model)


@pytest.mark.parametrize("edited", [
    "running_sum/while/add_1:0",  # a loop body's sum, carried to the next iteration
    "branchy/cond/Exp:0",  # one branch of a tf.cond (it may not run)
    "cond_in_loop/map/while/cond/Log1p:0",  # a branch inside a loop: some iterations only
    "nested_loops/StatefulPartitionedCall/map/while/while/mul_1:0",  # a loop in a loop in a function
    "xla_helper/PartitionedCall/Relu:0",  # inside a call TensorFlow does not inline
])
def test_a_nan_injected_inside_control_flow_is_found_where_it_was_put(control_flow, edited):
    scope, x = control_flow
    edits = {edited: lambda v: v + np.float32("nan")}
    report = scope.numerics(x, edits=edits)
    names = _float_names(scope)
    values = scope.run(names, x, edits=edits)  # the values themselves, judged by numpy
    want = {name: _counts(values[name]) for name in names if any(_counts(values[name]))}
    assert {n: (c.nan, c.posinf, c.neginf) for n, c in report.bad.items()} == want
    if edited in want:
        assert report.first.name == edited and report.origins.names == [edited]
        value = scope.run(edited, x, edits=edits)
        loops = sum(f.endswith((":body", ":cond")) for f in scope.model_graph.tensors[edited].function)
        assert report.iteration == _first_bad_iteration(value[edited], loops)  # every index, outermost first
    else:  # the branch did not run
        assert report.ok


def test_backward_sees_a_non_finite_forward_value_that_its_target_does_not_depend_on():
    keras.utils.set_random_seed(1)
    x_in = keras.Input((4,), name="x")
    spoiled = Log(name="log")(keras.layers.Dense(3, name="d1")(x_in))
    clean = keras.layers.Dense(2, name="d2")(x_in)
    scope = gs.trace(keras.Model(x_in, [spoiled, clean]), quiet=True)
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    assert not np.isfinite(scope.run("log/Log:0", x)["log/Log:0"]).all()
    report = scope.numerics(x, backward="d2/BiasAdd:0")
    assert not report.examined and report.first.name == "log/Log:0"
    assert scope.numerics(x, backward="d2/BiasAdd:0", edits={"log/Log:0": lambda v: tf.zeros_like(v)}).ok


def test_backward_with_an_edit_its_target_depends_on_and_another_output_does_not():
    keras.utils.set_random_seed(4)
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="d1")(x_in)
    other = keras.layers.Dense(2, name="other")(x_in)
    scope = gs.trace(keras.Model(x_in, [keras.layers.Dense(2, name="out")(Sqrt(name="root")(h)), other]), quiet=True)
    x = np.random.RandomState(5).randn(3, 4).astype("float32")
    # the relu's zeros moved away from 0 by an edit: the sqrt's gradient is finite everywhere
    assert not scope.numerics(x, backward="out/BiasAdd:0").ok
    assert scope.numerics(x, backward="out/BiasAdd:0", edits={"d1/Relu:0": lambda v: v + 1.0}).ok


def test_numerics_from_an_intermediate_feed():
    keras.utils.set_random_seed(1)
    scope = gs.trace(_log_model(), quiet=True)
    fed = np.array([[1.0, 2.0, 3.0], [4.0, -1.0, 0.5]], "float32")
    report = scope.numerics(fed, feeds=["d1/BiasAdd:0"])
    downstream = ["d1/BiasAdd:0", *(t.name for t in scope.descendants("d1/BiasAdd:0") if t.dtype == "float32")]
    values = scope.run(downstream, fed, feeds=["d1/BiasAdd:0"])  # judged by numpy
    assert set(report.bad) == {n for n in downstream if not np.isfinite(values[n]).all()}
    assert report.origins.names == ["log/Log:0"] and report.bad["log/Log:0"].nan == 1
    fed[0, 0] = np.inf  # a fed value is where it starts: what the feed replaces is not run
    assert scope.numerics(fed, feeds=["d1/BiasAdd:0"]).first.name == "d1/BiasAdd:0"


def test_half_precision_values_are_counted_and_an_overflow_is_an_origin():
    keras.utils.set_random_seed(1)
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, name="d1", dtype="float16")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="out", dtype="float16")(Log(name="log", dtype="float16")(h)))
    scope = gs.trace(model, quiet=True)
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    report = scope.numerics(x)
    want = _one_by_one(scope, x, _float_names(scope))
    assert {n: (c.nan, c.posinf, c.neginf) for n, c in report.bad.items()} == want
    assert report.first.name == "log/Log:0" and scope.model_graph.tensors["log/Log:0"].dtype == "float16"
    # 70000 does not fit float16: the cast of the input to the layer's dtype is where +Inf starts
    big = np.full((1, 4), 7e4, "float32")
    report = scope.numerics(big)
    assert report.first.op_type == "Cast" and report.bad[report.first.name].posinf == 4
    (source,) = scope.model_graph.op(report.first.op).inputs
    values = scope.run([source, report.first.name], big)  # judged by numpy
    assert np.isfinite(values[source]).all() and np.isposinf(values[report.first.name]).all()


def test_a_nan_in_a_weight_starts_at_the_read_of_that_weight():
    kernel = np.ones((4, 3), "float32")
    kernel[2, 1] = np.nan
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, name="d1", kernel_initializer=keras.initializers.Constant(kernel))(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="out")(h))
    scope = gs.trace(model, quiet=True)
    x = np.ones((2, 4), "float32")
    report = scope.numerics(x)
    assert report.first.op_type == "ReadVariableOp" and report.first.layer == "d1"
    assert report.origins.names == [report.first.name] and report.bad[report.first.name].nan == 1
    assert np.isnan(scope.run(report.first.name, x)[report.first.name]).sum() == 1  # judged by numpy
    assert np.isnan(keras.Model(x_in, h)(x).numpy()).all(axis=0).tolist() == [False, True, False]


class LogInNestedLoops(keras.layers.Layer):
    """Two nested tf.while_loops (3 x 4 iterations) adding log(1 - [i == 1 and j == 2]): -Inf first
    at outer iteration 1, inner iteration 2."""

    def call(self, x):
        def outer(i, acc):
            def inner(j, acc):
                hit = tf.cast(tf.logical_and(tf.equal(i, 1), tf.equal(j, 2)), tf.float32)
                return j + 1, acc + tf.math.log(1.0 - hit + 0.0 * acc)

            return i + 1, tf.while_loop(lambda j, _: j < 4, inner, (tf.constant(0), acc))[1]

        return tf.while_loop(lambda i, _: i < 3, outer, (tf.constant(0), x))[1]


def test_iteration_is_outermost_first_in_nested_loops():
    x_in = keras.Input((2,), name="x")
    scope = gs.trace(keras.Model(x_in, LogInNestedLoops(name="nested")(x_in)), quiet=True)
    x = np.ones((2, 2), "float32")
    report = scope.numerics(x)
    assert report.first.op_type == "Log" and report.origins.names == [report.first.name]
    value = np.asarray(scope.run(report.first.name, x)[report.first.name])  # [outer, inner, batch, features]
    assert value.shape[:2] == (3, 4)
    bad = [(i, j) for i in range(3) for j in range(4) if not np.isfinite(value[i, j]).all()]
    assert bad[0] == (1, 2) and report.iteration == (1, 2)
    want = _one_by_one(scope, x, _float_names(scope))
    assert {n: (c.nan, c.posinf, c.neginf) for n, c in report.bad.items()} == want


def test_backward_checks_the_forward_pass_once_and_still_sees_an_edited_copy_of_its_target(monkeypatch):
    """The model's output (`Identity:0`, a copy of `out/BiasAdd:0`) is not upstream of the target,
    but it is finite exactly when its input is: no second forward pass for it, unless an edit
    replaces it, and then its NaN is found where the edit put it (judged by numpy on its value)."""
    from graphscope.runtime import numerics as numerics_module

    keras.utils.set_random_seed(4)
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="d1")(x_in)
    scope = gs.trace(keras.Model(x_in, keras.layers.Dense(2, name="out")(h)), quiet=True)
    x = np.random.RandomState(5).randn(3, 4).astype("float32")
    graph = scope.model_graph
    copy = graph.tensors["Identity:0"]
    assert copy.op_type == "Identity" and list(graph.op(copy.op).inputs) == ["out/BiasAdd:0"]
    passes = []
    for cls in (numerics_module._Reduced, numerics_module._ReducedGradient):
        original = cls.__call__
        monkeypatch.setattr(cls, "__call__", lambda self, *a, _o=original: passes.append(self) or _o(self, *a))
    report = scope.numerics(x, backward="out/BiasAdd:0")
    assert report.ok and report.examined and len(passes) == 1  # the gradient function alone
    assert np.isfinite(scope.run("Identity:0", x)["Identity:0"]).all()
    edits = {"Identity:0": lambda v: v + np.nan}
    value = scope.run("Identity:0", x, edits=edits)["Identity:0"]
    assert np.isnan(value).all()
    report = scope.numerics(x, backward="out/BiasAdd:0", edits=edits)
    assert not report.ok and not report.examined and report.first.name == "Identity:0"
    assert report.bad["Identity:0"].nan == value.size


class PassThenSqrt(keras.layers.Layer):
    """sqrt of its input after an op that only passes it along: an Identity, a while loop, or a
    branch of a tf.cond (an If)."""

    def __init__(self, how, **kwargs):
        super().__init__(**kwargs)
        self.how = how

    def call(self, x):
        if self.how == "identity":
            y = tf.identity(x)
        elif self.how == "while":
            y = tf.while_loop(lambda i, _: i < 2, lambda i, a: (i + 1, a * 1.0), (tf.constant(0), x))[1]
        else:
            y = tf.cond(tf.reduce_sum(x) > -1e30, lambda: tf.identity(x), lambda: x * 2.0)
        return tf.sqrt(y)


@pytest.mark.parametrize("how", ["identity", "while", "if"])
def test_backward_looks_through_an_op_that_passes_the_value_along_to_the_sqrt(how):
    keras.utils.set_random_seed(4)
    x_in = keras.Input((4,), name="x")
    relu = keras.layers.Dense(6, activation="relu", name="d1")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="out")(PassThenSqrt(how, name="root")(relu)))
    scope = gs.trace(model, quiet=True)
    passing = {"identity": "Identity", "while": "While", "if": "If"}[how]
    assert any(t.op_type.endswith(passing) and t.layer == "root" for t in scope.model_graph.tensors.values())
    x = np.random.RandomState(5).randn(3, 4).astype("float32")
    report = scope.numerics(x, backward="out/BiasAdd:0")
    g_relu, g_root = _tail_gradients(model, relu, x)
    assert np.isfinite(g_root).all() and not np.isfinite(g_relu).all()
    assert report.direction == "backward" and report.examined and not report.ok
    assert report.first.name == "d1/Relu:0" and report.origins.names == ["d1/Relu:0"]
    c = report.bad["d1/Relu:0"]
    assert (c.nan, c.posinf, c.neginf) == _counts(g_relu)
    assert repr(report).endswith("non-finite, first d1/Relu:0>")


def test_backward_looks_through_a_tf_keras_dropout_at_inference():
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(4)
    x_in = tf_keras.Input((4,), name="x")
    relu = tf_keras.layers.Dense(6, activation="relu", name="d1")(x_in)
    dropped = tf_keras.layers.Dropout(0.5, name="drop")(relu)
    root = tf_keras.layers.Lambda(tf.sqrt, name="root")(dropped)
    model = tf_keras.Model(x_in, tf_keras.layers.Dense(2, name="out")(root))
    scope = gs.trace(model, quiet=True)
    assert scope.model_graph.tensors["drop/Identity:0"].op_type == "Identity"  # Dropout at inference
    x = np.random.RandomState(5).randn(3, 4).astype("float32")
    report = scope.numerics(x, backward="out/BiasAdd:0")
    h = tf.constant(tf_keras.Model(model.input, relu)(x).numpy())  # the oracle: tf.GradientTape on the tail
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(h)
        r = model.get_layer("root")(model.get_layer("drop")(h))
        y = tf.reduce_sum(model.get_layer("out")(r))
    g_relu, g_root = tape.gradient(y, h).numpy(), tape.gradient(y, r).numpy()
    assert np.isfinite(g_root).all() and not np.isfinite(g_relu).all()
    assert report.first.name == "d1/Relu:0" and report.origins.names == ["d1/Relu:0"]
    c = report.bad["d1/Relu:0"]
    assert (c.nan, c.posinf, c.neginf) == _counts(g_relu)


def test_a_sum_that_overflows_float32_is_no_false_alarm_and_the_backward_pass_is_examined():
    x_in = keras.Input((2,), name="x")
    h = keras.layers.Dense(2, name="d", kernel_initializer="identity")(x_in)
    model = keras.Model(x_in, Sqrt(name="root")(h))
    scope = gs.trace(model, quiet=True)
    x = np.array([[3e38, 0.0], [3e38, 0.0]], "float32")  # every value finite; their float32 sum is not
    assert not _one_by_one(scope, x, _float_names(scope))  # judged by numpy: all finite
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum(scope.run("d/BiasAdd:0", x)["d/BiasAdd:0"], dtype=np.float32))
    assert scope.numerics(x).ok
    report = scope.numerics(x, backward="root/Sqrt:0")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:  # the oracle: the gradient at sqrt(0) is +Inf
        tape.watch(xt)
        hidden = model.get_layer("d")(xt)
        tape.watch(hidden)
        y = tf.reduce_sum(model.get_layer("root")(hidden))
    g = tape.gradient(y, hidden).numpy()
    assert not np.isfinite(g).all()
    assert report.direction == "backward" and report.examined and not report.ok
    assert report.first.name == "d/BiasAdd:0"
    c = report.bad["d/BiasAdd:0"]
    assert (c.nan, c.posinf, c.neginf) == _counts(g)


def test_numerics_on_a_savedmodel_forward_and_backward(tmp_path):
    keras.utils.set_random_seed(1)
    logged = _log_model()
    tf.saved_model.save(logged, str(tmp_path / "log"))
    scope = gs.trace(str(tmp_path / "log"), quiet=True)
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    report = scope.numerics(x)
    want = _one_by_one(scope, x, _float_names(scope))  # judged by numpy
    assert want and {n: (c.nan, c.posinf, c.neginf) for n, c in report.bad.items()} == want
    assert report.first.op_type == "Log" and report.origins.names == [report.first.name]
    dense = keras.Model(logged.input, logged.get_layer("d1").output)(x).numpy()  # the log's input, by Keras
    assert report.bad[report.first.name].nan == int((dense < 0).sum())

    keras.utils.set_random_seed(4)
    x_in = keras.Input((4,), name="x")
    relu = keras.layers.Dense(6, activation="relu", name="d1")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="out")(Sqrt(name="root")(relu)))
    tf.saved_model.save(model, str(tmp_path / "sqrt"))
    scope = gs.trace(str(tmp_path / "sqrt"), quiet=True)
    x = np.random.RandomState(5).randn(3, 4).astype("float32")
    assert scope.numerics(x).ok
    (sqrt,) = scope.find(op_type="Sqrt")
    (after,) = [t for t in scope.model_graph.tensors.values() if t.op_type == "BiasAdd" and "out" in t.name]
    report = scope.numerics(x, backward=after.name)
    h = tf.constant(keras.Model(model.input, relu)(x).numpy())  # the oracle: tf.GradientTape on Keras
    with tf.GradientTape() as tape:
        tape.watch(h)
        y = tf.reduce_sum(model.get_layer("out")(model.get_layer("root")(h)))
    g = tape.gradient(y, h).numpy()
    assert not report.ok and report.examined and report.first.op_type == "Relu"
    assert report.origins.names == [report.first.name] and list(scope.model_graph.op(sqrt.op).inputs) == [report.first.name]
    c = report.bad[report.first.name]
    assert (c.nan, c.posinf, c.neginf) == _counts(g)


def _counts_by_hand(a):
    a = np.asarray(a, np.float64)
    finite = a[np.isfinite(a)]
    return [np.isnan(a).sum(), np.isposinf(a).sum(), np.isneginf(a).sum(),
            finite.min() if finite.size else np.inf, finite.max() if finite.size else -np.inf, a.size]


@pytest.mark.parametrize("values_per_group", [None, 12])
def test_the_counting_pass_counts_each_tensor_as_numpy_does_in_groups_of_few_ops(values_per_group, monkeypatch):
    """The counting pass reduces its tensors in groups (segments of one vector): every row is
    numpy's count of that tensor alone, across groups, precisions, empty and all-NaN tensors and
    entries no gradient reaches, and groups cut short by their values per example (some of one
    tensor); and it builds a few ops per tensor, not the thirty of a reduction per tensor (a
    first call's cost on a real model)."""
    from graphscope.runtime import numerics
    from graphscope.runtime.numerics import _counts_many

    if values_per_group:
        monkeypatch.setattr(numerics, "_GROUP_VALUES", values_per_group)

    rng = np.random.default_rng(3)
    arrays = []
    for i in range(90):  # more than one group, groups broken by precision and absent entries
        shape = [(3, 4), (0, 5), (), (7,), (2, 0), (5, 5, 2), (1,)][i % 7]
        dtype = [np.float32, np.float16, np.float64][i % 3 if i % 4 else 0]
        a = np.array(rng.normal(size=shape) * 1e3, dtype)
        if a.size and i % 2:
            a.flat[rng.integers(a.size)] = [np.nan, np.inf, -np.inf][i % 3]
        if a.size and i % 5 == 0:
            a[...] = [np.nan, np.inf][i % 2]
        if dtype == np.float64 and a.size and i % 4 == 1:
            a.flat[0] = 1e300  # beyond float32: counted in float64
        arrays.append(None if i % 13 == 4 else a)
    graph = tf.Graph()
    with graph.as_default():
        placeholders = [None if a is None else tf.compat.v1.placeholder(a.dtype, (None, *a.shape[1:])[:a.ndim])
                        for a in arrays]
        before = len(graph.get_operations())
        rows = _counts_many(placeholders)
        built = len(graph.get_operations()) - before
        with tf.compat.v1.Session(graph=graph) as session:
            got = session.run(rows, {p: a for p, a in zip(placeholders, arrays) if p is not None})
    want = [[0, 0, 0, np.inf, -np.inf, -1] if a is None else _counts_by_hand(a) for a in arrays]
    np.testing.assert_array_equal(got, np.array(want, np.float64))
    if not values_per_group:
        assert built < 5 * len(arrays), built  # a reduction per tensor built about 30 ops each


def test_numerics_takes_inputs_in_the_nests_the_arguments_are_as_an_executor_does():
    """A function `f(batch, bias)` whose `batch` is a dict is fed `[batch, bias]` (one nest per
    argument) by `run`; numerics refused it ("this executor takes 3 inputs ..., got 2"), forward
    and backward. The oracle: the log's input computed by hand, negative in row 1 only, and
    sqrt's gradient at 0 (infinite) where the bias makes the input 0."""
    dense = keras.layers.Dense(2, name="d", kernel_initializer="ones", bias_initializer="zeros")

    def f(batch, bias):
        pre = dense(batch["x"]) * batch["s"] + bias
        return tf.math.log(pre) + tf.sqrt(pre - 1.0)

    scope = gs.trace(f, [{"x": tf.TensorSpec((None, 3)), "s": tf.TensorSpec((None, 1))}, tf.TensorSpec((None, 2))],
                     quiet=True)
    batch = {"x": np.ones((2, 3), np.float32), "s": np.array([[1.0], [-1.0]], np.float32)}
    bias = np.array([[0.0, 0.0], [2.0, 2.0]], np.float32)  # pre = [[3, 3], [-1, -1]]: log(-1) is NaN
    found = scope.numerics([batch, bias])
    assert found.first.op_type == "Log" and found.bad[found.first.name].nan == 2
    assert found.first.name == scope.numerics({"batch": batch, "bias": bias}).first.name
    fine = {"x": np.ones((2, 3), np.float32), "s": np.ones((2, 1), np.float32)}
    rooted = scope.numerics([fine, np.array([[-2.0, 0.0], [0.0, 0.0]], np.float32)], backward=scope.outputs[0])
    # pre = 3 + bias = [[1, 3], [3, 3]]: sqrt(pre - 1) is 0 at [0, 0], its gradient inf there
    assert not rooted.ok and rooted.first.op_type == "Sub"


class ComplexLog(keras.layers.Layer):
    """The real part of the log of its input as a complex number: log(0 + 0j) = -Inf."""

    def call(self, x):
        return tf.math.real(tf.math.log(tf.complex(x, tf.zeros_like(x))))


class ComplexSqrt(keras.layers.Layer):
    """The real part of the square root of its input as a complex number: finite at 0, its
    gradient there not."""

    def call(self, x):
        return tf.math.real(tf.math.sqrt(tf.complex(x, tf.zeros_like(x))))


def _complex_model(layer):
    keras.utils.set_random_seed(0)
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="d1")(x_in)
    return keras.Model(x_in, keras.layers.Dense(2, name="out")(layer(h)))


def test_a_non_finite_complex_value_is_an_origin_where_a_complex_op_makes_it():
    """Complex tensors (FNet's FFT) are checked, counted as their real and imaginary parts: the
    origin is the complex log, not the `Real` that takes its real part (was: complex tensors were
    never counted, so `Real` looked like an op making -Inf from finite inputs)."""
    model = _complex_model(ComplexLog(name="clog"))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    relu = keras.Model(model.input, model.get_layer("d1").output)(x).numpy()  # the oracle: Keras, then numpy
    with np.errstate(divide="ignore"):
        logs = np.log(relu.astype(np.complex64))
    assert (relu == 0).any() and np.isfinite(relu).all()
    report = scope.numerics(x)
    assert report.origins.names == ["clog/Log:0"] and report.first.op_type == "Log"
    parts = np.concatenate([logs.real.ravel(), logs.imag.ravel()])
    c = report.bad["clog/Log:0"]
    assert (c.nan, c.posinf, c.neginf) == _counts(parts) == (0, 0, int((relu == 0).sum()))
    assert c.size == parts.size
    assert "clog/Complex:0" not in report.bad and "clog/Real:0" in report.bad  # its input finite, its consumer not
    ((name, counts),) = [i for i in report.details[0].inputs]
    assert name == "clog/Complex:0" and counts.min == 0 and counts.size == 2 * relu.size


def test_backward_finds_the_complex_input_of_a_complex_sqrt_at_zero():
    """The gradient through a complex sqrt at 0: the first non-finite gradient is the sqrt's
    complex input, as for a float sqrt (was: `zeros_like`, the imaginary part's maker, since no
    complex tensor's gradient was checked)."""
    model = _complex_model(ComplexSqrt(name="root"))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    assert scope.numerics(x).ok
    report = scope.numerics(x, backward="out/BiasAdd:0")
    assert report.examined and report.origins.names == ["root/Complex:0"]
    # the oracle: tf.GradientTape through the layer's ops written again, from the relu's output
    h = tf.constant(keras.Model(model.input, model.get_layer("d1").output)(x).numpy())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(h)
        z = tf.complex(h, tf.zeros_like(h))
        tape.watch(z)
        r = tf.math.sqrt(z)
        y = tf.reduce_sum(model.get_layer("out")(tf.math.real(r)))
    g_z, g_r = tape.gradient(y, z).numpy(), tape.gradient(y, r).numpy()
    assert np.isfinite(g_r).all() and not np.isfinite(g_z).all()
    c = report.bad["root/Complex:0"]
    assert (c.nan, c.posinf, c.neginf) == _counts(np.concatenate([g_z.real.ravel(), g_z.imag.ravel()]))
