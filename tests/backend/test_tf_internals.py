"""Guards for every internal TensorFlow/Keras API and naming convention in graphscope/backend/tf_internals.py.

When one of these fails after a TensorFlow or Keras upgrade, the behaviour graphscope relies on
changed: fix `tf_internals.py` (and only it) before anything else.
"""

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.ops import control_flow_util_v2

from graphscope.backend import tf_internals as _tf


def test_versions_are_keras_3():
    assert int(keras.__version__.split(".")[0]) == 3
    assert tuple(int(p) for p in tf.__version__.split(".")[:2]) >= (2, 16)


def test_op_ids_grow_with_graph_version():
    g = tf.Graph()
    with g.as_default():
        a = tf.constant(1.0)
        assert _tf.op_id(a.op) == _tf.last_op_id(g)
        b = a + 1.0  # two ops: a Const and an AddV2
        assert _tf.op_id(b.op) == _tf.last_op_id(g) == _tf.op_id(a.op) + 2
    assert [_tf.op_id(op) for op in g.get_operations()] == sorted(_tf.op_id(op) for op in g.get_operations())


def test_eager_captures_are_the_const_or_placeholder_an_eager_tensor_became():
    small, large, unused = tf.range(4), tf.range(200), tf.range(3)  # TensorFlow: Const up to 128 elements
    v = tf.Variable(1)

    @tf.function
    def f(x):
        return x + tf.reduce_sum(small) + tf.reduce_sum(large) + v  # a variable's handle is no value

    graph = f.get_concrete_function(tf.TensorSpec((), tf.int32)).graph
    captured = {id(value): tensor for value, tensor in _tf.eager_captures(graph)}
    assert captured[id(small)].op.type == "Const" and captured[id(large)].op.type == "Placeholder"
    assert id(unused) not in captured and len(captured) == 2
    with pytest.raises(AttributeError, match="eager execution"):  # why the mirror asks
        small.name


def test_unsuffixed_drops_the_suffix_tensorflow_gives_a_name_taken_in_the_graph():
    g = tf.Graph()
    with g.as_default():
        names = []
        for _ in range(2):  # a scope opened again, as tf_keras opens a shared layer's
            with tf.name_scope("shared/"):
                with tf.name_scope("Tensordot"):
                    names.append(tf.raw_ops.MatMul(a=tf.ones((1, 1)), b=tf.ones((1, 1))).op.name)
    assert names == ["shared/Tensordot/MatMul", "shared/Tensordot_1/MatMul"]
    assert {_tf.unsuffixed(n) for n in names} == {"shared/Tensordot/MatMul"}
    assert _tf.unsuffixed("MatMul_2") == "MatMul" and _tf.unsuffixed("out_1_1") == "out"
    assert _tf.unsuffixed("_1/x") == "_1/x"  # a segment that is only a suffix stays


def _helper_function():
    v = tf.Variable([1.0, 2.0])

    @tf.function
    def inner(x):
        return tf.nn.softplus(x) * v

    @tf.function
    def outer(x):
        return inner(x) + 1.0

    return v, outer.get_concrete_function(tf.TensorSpec((None, 2), tf.float32))


def test_function_graph_finds_called_bodies():
    _, cf = _helper_function()
    (call,) = [op for op in cf.graph.get_operations() if op.type.endswith("PartitionedCall")]
    body = _tf.function_graph(cf.graph, call.get_attr("f").name)
    assert any(op.type == "Softplus" for op in body.get_operations())
    assert len(body.inputs) == len(call.inputs)  # arguments then captures, by position
    assert len(body.outputs) == len(call.outputs)


def test_while_and_cond_bodies_are_found_too():
    @tf.function
    def f(x):
        y = tf.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a * 2.0), (0, x))[1]
        return tf.cond(tf.reduce_sum(y) > 0, lambda: y + 1.0, lambda: y - 1.0)

    cf = f.get_concrete_function(tf.TensorSpec((2,), tf.float32))
    ops = {op.type: op for op in cf.graph.get_operations()}
    loop = ops.get("While") or ops["StatelessWhile"]
    branch = ops.get("If") or ops["StatelessIf"]
    assert len(_tf.function_graph(cf.graph, loop.get_attr("body").name).inputs) == len(loop.inputs)
    assert len(_tf.function_graph(cf.graph, branch.get_attr("then_branch").name).inputs) == len(branch.inputs) - 1


def test_graphs_called_are_the_bodies_that_run_and_not_a_trace_thrown_away():
    made = []

    @tf.function
    def helper(x):  # its first trace creates a variable, so tf.function traces it twice
        if not made:
            made.append(tf.Variable(2.0))
        made_graphs.append(tf.compat.v1.get_default_graph())
        return tf.while_loop(lambda i, a: i < 2, lambda i, a: (i + 1, a * made[0]), (0, x))[1]

    made_graphs: list[tf.Graph] = []
    cf = tf.function(lambda x: tf.cond(tf.reduce_sum(x) > 0, lambda: helper(x), lambda: x)).get_concrete_function(
        tf.TensorSpec((2,), tf.float32))
    graphs = _tf.graphs_called(cf.graph)
    assert len(made_graphs) == 2 and made_graphs[0] is not made_graphs[1]
    assert made_graphs[1] in graphs and made_graphs[0] not in graphs
    kinds = {op.type for g in graphs for op in g.get_operations()}
    assert {"If", "StatefulPartitionedCall", "While", "Mul"} <= kinds or {"StatelessIf", "While", "Mul"} <= kinds
    assert len(graphs) == len({id(g) for g in graphs}) >= 5  # top, both branches, helper, loop body and cond


def test_inline_calls_names_inner_ops_under_the_call():
    _, cf = _helper_function()
    graph_def = _tf.inline_calls(cf)
    names = {n.name: n.op for n in graph_def.node}
    assert not any(op.endswith("PartitionedCall") for op in names.values())
    (call,) = [op for op in cf.graph.get_operations() if op.type.endswith("PartitionedCall")]
    assert any(n.startswith(call.name + "/") and op == "Softplus" for n, op in names.items())



def test_inline_calls_of_a_lookup_table_logs_no_serialization_warning():
    """TensorFlow's helper exports a MetaGraph, whose `table_initializer` collection it cannot
    serialize: it logged a WARNING on every executor built for a model with a StringLookup. The
    inlined graph still holds the lookup, and other warnings still pass."""
    import logging

    lookup = keras.layers.StringLookup(vocabulary=["a", "b"])
    f = tf.function(lambda text: lookup(text))
    cf = f.get_concrete_function(tf.TensorSpec([None], tf.string))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        graph_def = _tf.inline_calls(cf)
        logger.warning("another warning")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["another warning"]
    assert any(n.op == "LookupTableFindV2" for n in graph_def.node)


def test_inline_calls_copies_each_argument_into_the_body_through_an_identity():
    """The executor feeds and edits an inlined call's argument at this copy, which only the
    body reads (its input has other readers)."""
    @tf.function
    def helper(a, b):
        return tf.nn.softplus(a) * b

    @tf.function
    def f(x, y):
        return helper(x, y) + x

    cf = f.get_concrete_function(tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32))
    nodes = {n.name: n for n in _tf.inline_calls(cf).node}
    (call,) = [op.name for op in cf.graph.get_operations() if op.type.endswith("PartitionedCall")]
    copies = sorted((int(m["n"]), name) for name in nodes if (m := _tf.INLINED_ARGUMENT.fullmatch(name))
                    and m["call"] == call)
    assert [nodes[name].op for _, name in copies] == ["Identity", "Identity"]
    assert [list(nodes[name].input) for _, name in copies] == [["x"], ["y"]]  # in argument order
    softplus = next(n for n in nodes.values() if n.op == "Softplus")
    assert list(softplus.input) == [copies[0][1]]  # the body reads the copy, not the input


def test_flat_function_calls_without_keeping_the_traced_graph():
    v = tf.Variable(2.0)
    cf = tf.compat.v1.wrap_function(lambda x: [x * v, x + 1], [tf.TensorSpec([], tf.float32)])
    graph = weakref.ref(cf.graph)
    flat = _tf.FlatFunction(cf)
    del cf
    gc.collect()
    assert graph() is None, "the FuncGraph outlived its ConcreteFunction"
    assert [t.numpy() for t in flat(tf.constant(3.0))] == [6.0, 4.0]
    assert {n.op for n in flat.definition.node_def} >= {"Mul", "AddV2"}
    v.assign(5.0)  # the captured variable is the live one
    assert flat(tf.constant(1.0))[0].numpy() == 5.0
    with pytest.raises(tf.errors.InvalidArgumentError):
        _tf.FlatFunction(
            tf.compat.v1.wrap_function(lambda x: [tf.debugging.check_numerics(tf.math.log(x), "log")], [tf.TensorSpec([], tf.float32)])
        )(tf.constant(-1.0))


def test_bind_capture_feeds_an_imported_placeholder_from_a_live_variable():
    v = tf.Variable([1.0, 2.0])
    traced = tf.function(lambda x: x * v).get_concrete_function(tf.TensorSpec([2], tf.float32))
    graph_def = traced.graph.as_graph_def()
    ((handle, internal),) = traced.graph.captures

    def run(x):
        out, placeholder = tf.graph_util.import_graph_def(
            graph_def, input_map={"x:0": x}, return_elements=["mul:0", internal.name], name=""
        )
        _tf.bind_capture(handle, placeholder)
        return [out]

    flat = _tf.FlatFunction(tf.compat.v1.wrap_function(run, [tf.TensorSpec([2], tf.float32)]))
    np.testing.assert_array_equal(flat(tf.constant([3.0, 3.0]))[0], [3.0, 6.0])
    v.assign([0.0, 1.0])
    np.testing.assert_array_equal(flat(tf.constant([3.0, 3.0]))[0], [0.0, 3.0])


def test_bind_capture_lets_gradients_reach_a_variable_read_inside_a_while_loop():
    # the handle is a loop input (as Keras' LSTM passes its kernel): while_v2 gives it a
    # gradient only when the bound placeholder carries the variable's handle data
    v = tf.Variable([1.0, 2.0])

    def f(x):
        def body(i, acc, handle):
            return i + 1, acc * tf.raw_ops.ReadVariableOp(resource=handle, dtype=tf.float32), handle

        return tf.while_loop(lambda i, acc, handle: i < 3, body, [0, x, v.handle])[1]

    traced = tf.function(f).get_concrete_function(tf.TensorSpec([2], tf.float32))
    graph_def = traced.graph.as_graph_def()
    ((handle, internal),) = traced.graph.captures
    _assert_bound_gradient(traced, graph_def, handle, internal, v)


def test_bind_capture_gives_the_handle_data_to_an_inlined_calls_argument_too():
    # a SavedModel's signature calls the function that loops: once inlined, the handle reaches
    # the While through an Identity (the call's argument), made by import before the binding
    v = tf.Variable([1.0, 2.0])

    @tf.function
    def inner(x, handle):
        def body(i, acc, handle):
            return i + 1, acc * tf.raw_ops.ReadVariableOp(resource=handle, dtype=tf.float32), handle

        return tf.while_loop(lambda i, acc, handle: i < 3, body, [0, x, handle])[1]

    traced = tf.function(lambda x: inner(x, v.handle)).get_concrete_function(tf.TensorSpec([2], tf.float32))
    graph_def = _tf.inline_calls(traced)
    ((handle, internal),) = traced.graph.captures
    (loop,) = [n for n in graph_def.node if n.op == "While"]
    assert all(not i.startswith(internal.op.name) for i in loop.input)  # the handle comes through a copy
    _assert_bound_gradient(traced, graph_def, handle, internal, v)


def _assert_bound_gradient(traced, graph_def, handle, internal, v):
    """`graph_def` imported with its capture bound to `handle`: d/dv sum(x v**3) by tf.gradients."""
    out_name = traced.graph.outputs[0].name

    def run(x):
        out, placeholder = tf.graph_util.import_graph_def(
            graph_def, input_map={"x:0": x}, return_elements=[out_name, internal.name], name=""
        )
        _tf.bind_capture(handle, placeholder)
        return tf.gradients(tf.reduce_sum(out), [placeholder])

    flat = _tf.FlatFunction(tf.compat.v1.wrap_function(run, [tf.TensorSpec([2], tf.float32)]))
    x = tf.constant([3.0, 5.0])
    np.testing.assert_allclose(flat(x)[0], 3.0 * x * v**2, rtol=1e-6)


def test_failure_reason_is_tensorflows_reason_never_a_stack_trace_line():
    # a real error of a graph function: its text names where the op was defined, frame by frame
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        _tf.FlatFunction(
            tf.compat.v1.wrap_function(lambda x: [tf.debugging.check_numerics(tf.math.log(x), "log")], [tf.TensorSpec([], tf.float32)])
        )(tf.constant(-1.0))
    assert 'File "' in caught.value.message  # the trace is there to skip
    reason = _tf.failure_reason(caught.value)
    assert "NaN" in reason and "File" not in reason and "[Op:" not in reason
    # the text a failed SymbolicGradient gave (issue 24 trial): the reason is the line after the trace
    text = (
        "Graph execution error:\n\nDetected at node gradients/f/StatefulPartitionedCall_grad/SymbolicGradient defined at "
        '(most recent call last):\n  File "/tmp/t.py", line 17, in <module>\n\n  File "/g/compile.py", line 401, in run\n\n'
        "SymbolicGradient\n\t [[{{node gradients/f/StatefulPartitionedCall_grad/SymbolicGradient}}]] "
        "[Op:__inference_wrapped_function_58]"
    )
    assert _tf.failure_reason(tf.errors.InvalidArgumentError(None, None, text)) == "SymbolicGradient"
    # frames without their header, and nothing else: the error's kind
    frames = '  File "/tmp/t.py", line 17, in <module>\n  File "/g/compile.py", line 401, in run\n'
    assert _tf.failure_reason(tf.errors.UnknownError(None, None, frames)) == "UnknownError"
    # an eager op's error (a tf.data iterator's): the function it names before, the op after
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        list(tf.data.Dataset.from_tensor_slices(np.ones((10, 3), np.float32)).batch(4).batch(3))
    assert "{{function_node" in caught.value.message and "[Op:IteratorGetNext]" in caught.value.message
    assert _tf.failure_reason(caught.value) == (
        "Cannot batch tensors with different shapes in component 0. First element had shape [4,3] and element 2 had "
        "shape [2,3]."
    )


def test_calls_replayed_differentiates_an_xla_call_in_an_imported_graph():
    @tf.function(jit_compile=True)
    def inner(h):
        return tf.sin(h) * h

    @tf.function(jit_compile=True)
    def helper(x, w):
        return inner(x * w)

    v = tf.Variable([1.0, 2.0])
    traced = tf.function(lambda x: helper(x, v) * 2.0).get_concrete_function(tf.TensorSpec([2], tf.float32))
    graph_def = _tf.inline_calls(traced)
    assert any(n.op in ("PartitionedCall", "StatefulPartitionedCall") for n in graph_def.node)  # not inlined
    ((handle, internal),) = traced.graph.captures
    out_name = traced.graph.outputs[0].name

    def run(x):
        out, placeholder = tf.graph_util.import_graph_def(
            graph_def, input_map={"x:0": x}, return_elements=[out_name, internal.name], name=""
        )
        _tf.bind_capture(handle, placeholder)
        with _tf.calls_replayed():
            return tf.gradients(tf.reduce_sum(out), [x, placeholder])

    flat = _tf.FlatFunction(tf.compat.v1.wrap_function(run, [tf.TensorSpec([2], tf.float32)]))
    x = tf.constant([0.5, -1.5])
    dx, dv = flat(x)
    d = 2.0 * (tf.cos(x * v) * x * v + tf.sin(x * v))  # d/du 2 sin(u) u at u = x v
    np.testing.assert_allclose(dx, d * v, rtol=1e-6)
    np.testing.assert_allclose(dv, d * x, rtol=1e-6)
    for kind in ("PartitionedCall", "StatefulPartitionedCall"):  # the registry is as it was
        with pytest.raises(LookupError):
            tf_ops.gradient_registry.lookup(kind)


def test_bodies_typed_gives_gradients_of_a_variable_read_in_a_loop_inside_a_loop():
    # the rebuilt outer body's resource placeholder lacks handle data unless bodies_typed passes
    # it on: while_v2 then seeds the inner loop's resource gradient with nothing (a zero gradient)
    v = tf.Variable([1.0, 2.0])

    def f(x):
        def outer(i, acc):
            inner = tf.while_loop(lambda j, a: j < 2, lambda j, a: (j + 1, a * v), [0, acc])[1]
            return i + 1, inner
        return tf.while_loop(lambda i, acc: i < 2, outer, [0, x])[1]

    traced = tf.function(f).get_concrete_function(tf.TensorSpec([2], tf.float32))
    graph_def = traced.graph.as_graph_def()
    ((handle, internal),) = traced.graph.captures
    out_name = traced.graph.outputs[0].name

    def gradient(typed):
        def run(x):
            out, placeholder = tf.graph_util.import_graph_def(
                graph_def, input_map={"x:0": x}, return_elements=[out_name, internal.name], name=""
            )
            _tf.bind_capture(handle, placeholder)
            if not typed:
                return tf.gradients(tf.reduce_sum(out), [placeholder])
            with _tf.bodies_typed():
                return tf.gradients(tf.reduce_sum(out), [placeholder])

        return _tf.FlatFunction(tf.compat.v1.wrap_function(run, [tf.TensorSpec([2], tf.float32)]))

    original = control_flow_util_v2.get_func_graph
    x = tf.constant([3.0, 5.0])
    np.testing.assert_allclose(gradient(True)(x)[0], 4.0 * x * v**3, rtol=1e-6)  # d/dv sum(x v**4)
    assert control_flow_util_v2.get_func_graph is original  # put back
    np.testing.assert_allclose(gradient(False)(x)[0], 0.0)  # what TensorFlow alone gives: the bug


def test_custom_gradients_work_on_an_imported_copy_of_the_graph():
    # a gradient autodiff would not give (so the registered one must run), reading an
    # intermediate tensor of the forward pass (mapped by name) and the op's input (by position)
    @tf.custom_gradient
    def odd(x):
        s = tf.sin(x)
        y = tf.round(x * 10.0) + 0.0 * s

        def grad(dy):
            return dy * (3.0 + s * x)

        return y, grad

    traced = tf.function(lambda x: odd(x) * 2.0).get_concrete_function(tf.TensorSpec([3], tf.float32))
    graph_def = traced.graph.as_graph_def()
    custom = _tf.CustomGradients(traced.graph)
    assert [op.type for op in custom.ops.values()] == ["IdentityN"]
    (kind,) = custom.ops
    before = _gradient_entry(kind)

    def run(x):
        (y,) = tf.graph_util.import_graph_def(
            graph_def, input_map={"x:0": x}, return_elements=[traced.graph.outputs[0].name], name=""
        )
        with custom.active():
            assert _gradient_entry(kind) is not before
            return tf.gradients(tf.reduce_sum(y), [x])

    flat = _tf.FlatFunction(tf.compat.v1.wrap_function(run, [tf.TensorSpec([3], tf.float32)]))
    x = tf.constant([0.1, 0.2, 0.3])
    np.testing.assert_allclose(flat(x)[0], 2.0 * (3.0 + np.sin(x) * x), rtol=1e-6)
    assert _gradient_entry(kind) is before  # the process-wide registry is put back after the block


def _gradient_entry(kind):
    from tensorflow.python.framework import ops

    return ops.gradient_registry.lookup(kind)


def test_keras_training_sets_the_mode_of_keras_layers_called_without_one():
    from keras.src.backend.common import global_state

    tf_keras = pytest.importorskip("tf_keras")
    from tf_keras.src.engine import base_layer_utils

    x = tf.ones((4, 500))
    for drop in (keras.layers.Dropout(0.9, seed=1), tf_keras.layers.Dropout(0.9, seed=1)):
        with _tf.keras_training(True) as seen:
            dropped = tf.function(lambda v: drop(v))(x)
            explicit = tf.function(lambda v: drop(v, training=False))(x)
        assert seen.used and float(tf.reduce_mean(tf.cast(dropped == 0, tf.float32))) > 0.8
        np.testing.assert_array_equal(explicit, x)  # an explicit training= still wins
        np.testing.assert_array_equal(tf.function(lambda v: drop(v))(x), x)  # and after the block, inference again
    with _tf.keras_training(True) as seen:
        tf.function(lambda v: v * 2.0)(x)
    assert not seen.used  # no Keras layer read the mode
    assert global_state.get_global_attribute("current_call_ctx") is None
    assert not base_layer_utils.call_context().in_call and base_layer_utils.call_context().training is None


def test_tf_keras_safe_mode_decides_whether_a_lambda_layers_python_lambda_is_deserialized():
    """tf_keras' Lambda reads the safe mode from `serialization_lib.SafeModeScope`; its legacy
    `.h5` loader sets none, so without the scope a file's lambda is loaded in any mode."""
    tf_keras = pytest.importorskip("tf_keras")
    config = tf_keras.layers.Lambda(lambda t: t + 1.0).get_config()
    with _tf.tf_keras_safe_mode(True):
        with pytest.raises(ValueError, match="safe_mode"):
            tf_keras.layers.Lambda.from_config(dict(config))
    with _tf.tf_keras_safe_mode(False):
        layer = tf_keras.layers.Lambda.from_config(dict(config))
    np.testing.assert_array_equal(layer(tf.constant([1.0])), [2.0])


def test_an_anonymous_var_handle_is_a_fresh_variable_on_every_call():
    v = tf.Variable(5.0)

    def run(x):
        copy = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name=_tf.anonymous_resource_name(), container="")
        init = tf.raw_ops.AssignVariableOp(resource=copy, value=v.read_value())
        with tf.control_dependencies([init]):
            added = tf.raw_ops.AssignAddVariableOp(resource=copy, value=x)
        with tf.control_dependencies([added]):
            return [tf.raw_ops.ReadVariableOp(resource=copy, dtype=tf.float32)]

    flat = _tf.FlatFunction(tf.compat.v1.wrap_function(run, [tf.TensorSpec([], tf.float32)]))
    assert [float(flat(tf.constant(1.0))[0]) for _ in range(3)] == [6.0, 6.0, 6.0]
    assert float(v.numpy()) == 5.0


def test_variable_spec_reads_a_handle_s_dtype_and_shape():
    v = tf.Variable(np.zeros((2, 3), np.float16))
    assert _tf.variable_spec(v.handle) == (tf.float16, tf.TensorShape([2, 3]))
    assert _tf.variable_spec(tf.constant(1.0)) is None


def test_build_shapes_of_a_subclassed_model():
    class M(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    m = M()
    assert _tf.build_shapes(m) is None or not m.built
    m(np.zeros((1, 3), np.float32))
    shapes = _tf.build_shapes(m)
    assert list(shapes.values()) == [(1, 3)]


def _on_a_dict(k):
    """A subclassed model of Keras module `k`, called once on a dict of a float and an int input."""

    class M(k.Model):
        def __init__(self):
            super().__init__()
            self.d = k.layers.Dense(2)

        def call(self, inputs):
            return self.d(inputs["x"]) + tf.cast(inputs["ids"], tf.float32)[:, :1]

    m = M()
    m({"x": np.zeros((1, 3), np.float32), "ids": np.zeros((1, 2), np.int64)})
    return m


def test_build_shapes_of_models_built_on_a_dict_and_tf_keras_first_call_specs():
    """Keras 3 keeps a dict's shapes under the build argument; tf_keras keeps a dict of
    TensorShapes, and its first call's specs (dtypes included) in `_saved_model_arg_spec`."""
    m = _on_a_dict(keras)
    assert list(_tf.build_shapes(m).values()) == [{"x": (1, 3), "ids": (1, 2)}]
    assert _tf.first_call_specs(m) is None  # Keras 3 keeps no dtypes
    k = _on_a_dict(pytest.importorskip("tf_keras"))
    assert _tf.build_shapes(k) == {"inputs": {"ids": (1, 2), "x": (1, 3)}}
    (args, kwargs) = _tf.first_call_specs(k)
    assert kwargs == {} and len(args) == 1
    assert {key: (spec.dtype, tuple(spec.shape)) for key, spec in args[0].items()} == {
        "x": (tf.float32, (1, 3)), "ids": (tf.int64, (1, 2))}


def test_first_call_ragged_names_the_ragged_specs_a_tf_keras_model_was_called_with():
    """tf_keras keeps a RaggedTensorSpec for a ragged argument of the first call (which
    `first_call_specs` leaves out); Keras 3 keeps none, nor does a dense call."""
    tf_keras = pytest.importorskip("tf_keras")

    class Mean(tf_keras.Model):
        def call(self, v, w):
            return tf.reduce_mean(v, axis=1) + tf.reduce_mean(w, axis=1)

    model = Mean()
    model(tf.zeros((2, 3)), tf.ragged.constant([[4.0], [1.0, 3.0]]))
    found = _tf.first_call_ragged(model)
    assert list(found) == ["input_1"] and found["input_1"].dtype == tf.float32
    assert _tf.first_call_specs(model) is None
    assert _tf.first_call_ragged(_on_a_dict(tf_keras)) == {} and _tf.first_call_ragged(_on_a_dict(keras)) == {}


def test_sublayers_and_input_layers():
    a = keras.Input((2,), name="a")
    b = keras.Input((3,), name="b")
    out = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], out)
    assert [lay.name for lay in _tf.input_layers(model)] == ["a", "b"]

    class Holder(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.inner = keras.layers.Dense(1, name="inner")

        def call(self, x):
            return self.inner(x)

    assert [lay.name for lay in _tf.sublayers(Holder())] == ["inner"]


def test_node_numbers_follow_keras_execution_order():
    """A functional model runs its nodes by depth, deepest first, each depth's list in order; a
    shared layer's calls then run in another order than its `_inbound_nodes` (the code's)."""
    x_in = keras.Input((2,), name="x")
    conv0, conv1 = keras.layers.Dense(2, name="conv0"), keras.layers.Dense(2, name="conv1")
    b, c = conv1(x_in), conv1(conv0(x_in))
    model = keras.Model(x_in, [b, c])
    ran = []
    original = conv1.call
    conv1.call = lambda x: ran.append(x) or original(x)  # which input each call gets, as it runs
    try:
        model(np.ones((1, 2), np.float32))
    finally:
        del conv1.call
    assert [r.shape for r in ran] == [(1, 2), (1, 2)] and not np.array_equal(ran[0], np.ones((1, 2)))
    assert _tf.node_numbers(model) == {id(conv0): [1], id(conv1): [2, 1]}  # conv1(a) ran first
    assert b is conv1._inbound_nodes[0].outputs[0] and conv1.output is b
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    assert _tf.node_numbers(seq) == {id(seq.layers[0]): [1]}  # through its functional model
    assert _tf.node_numbers(keras.layers.Dense(2)) == {}


def test_tracked_layers_include_attribute_layers_outside_the_graph():
    """A functional model's `.layers` are its graph's; a layer it holds in an attribute without
    calling it in `call` (keras-hub's `prediction_decoder`) is tracked all the same."""
    x_in = keras.Input((3,))
    model = keras.Model(x_in, keras.layers.Dense(2, name="d")(x_in))
    model.decoder = keras.layers.Softmax(name="decoder")
    assert [lay.name for lay in _tf.sublayers(model)] == [model.layers[0].name, "d"]
    assert [lay.name for lay in _tf.tracked_layers(model)] == [model.layers[0].name, "d", "decoder"]
    dense = keras.layers.Dense(2)
    assert _tf.tracked_layers(dense) == _tf.sublayers(dense) == []


def test_a_layer_with_its_own_dunder_call_is_told_apart():
    class Direct(keras.layers.Layer):
        def __call__(self, x):  # computes here, never reaching Layer.__call__ or call
            return x * 2.0

    assert _tf.has_own_dunder_call(Direct())
    assert not _tf.has_own_dunder_call(keras.layers.Dense(2))
    assert not _tf.has_own_dunder_call(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]))
    tf_keras = pytest.importorskip("tf_keras")
    assert not _tf.has_own_dunder_call(tf_keras.Sequential([tf_keras.layers.Dense(2)]))  # tf_keras' own Model.__call__


def test_every_layers_call_goes_through_the_keras_layer_bases_own_dunder_call():
    """`recording` hooks `__call__` of `keras_layer_bases()` to record layers made while tracing:
    a plain layer, a preprocessing layer (its `DataLayer.__call__` calls Keras'), a model and
    tf_keras' (its `Model.__call__` calls its `Layer`'s) must all pass through it."""
    tf_keras = pytest.importorskip("tf_keras")
    bases = _tf.keras_layer_bases()
    assert bases[:1] == [keras.layers.Layer] and tf_keras.layers.Layer in bases
    seen = []
    saved = [(base, vars(base)["__call__"]) for base in bases]
    try:
        for base, original in saved:
            def spy(layer, *args, __original=original, **kwargs):
                seen.append(layer.name)
                return __original(layer, *args, **kwargs)
            type.__setattr__(base, "__call__", spy)
        x = tf.ones((1, 4, 4, 3))
        keras.layers.Dense(2, name="plain")(x)
        keras.layers.Resizing(2, 2, name="resizing")(x)
        keras.Sequential([keras.layers.Dense(2, name="inner")], name="model")(x)
        tf_keras.Sequential([tf_keras.layers.Dense(2, name="k2_inner")], name="k2_model")(x)
    finally:
        for base, original in saved:
            type.__setattr__(base, "__call__", original)
    assert {"plain", "resizing", "model", "inner", "k2_model", "k2_inner"} <= set(seen)


def test_keras_layer_call_is_looked_up_on_the_instance():
    """trace.py records calls by shadowing `call` on the instance for the trace's duration."""
    layer = keras.layers.Dense(2)
    seen = []
    original = layer.call

    def spy(*args, **kwargs):
        seen.append(args[0].shape)
        return original(*args, **kwargs)

    object.__setattr__(layer, "call", spy)
    try:
        layer(np.zeros((4, 3), np.float32))
    finally:
        object.__delattr__(layer, "call")
    assert seen == [(4, 3)]
    assert "call" not in layer.__dict__


# ---- what the loop/branch rewrite (graphscope/rewrite.py) relies on


def _control_flow_function():
    v = tf.Variable([1.0, -1.0])

    @tf.function(jit_compile=True)
    def compiled(x):
        return tf.nn.relu(x) * 3.0

    @tf.function
    def helper(x):  # a call inside a loop body: inlined into the body by Grappler
        return tf.tanh(x) * v

    @tf.function
    def f(x):
        y = tf.map_fn(helper, x)
        y = tf.switch_case(tf.cast(tf.reduce_sum(y) > 0, tf.int32), [lambda: y + 1.0, lambda: y * 2.0])
        return compiled(y)

    return f.get_concrete_function(tf.TensorSpec((None, 2), tf.float32))


def test_inline_calls_keeps_loops_branches_cases_and_xla_calls_functional():
    cf = _control_flow_function()
    graph_def = _tf.inline_calls(cf)
    ops = {n.op for n in graph_def.node}
    assert ops & {"While", "StatelessWhile"} and ops & {"Case", "StatelessCase"}
    assert not ops & {"Switch", "_SwitchN", "Merge", "Enter"}  # nothing lowered to v1 control flow
    (xla,) = [n for n in graph_def.node if n.op.endswith("PartitionedCall")]
    assert xla.attr["_XlaMustCompile"].b  # an XLA call is left in place: graphscope rewrites it
    # TensorFlow's own list is restored after the call
    from tensorflow.python.framework import convert_to_constants

    assert "Case" not in convert_to_constants._CONTROL_FLOW_OPS


def _inlined_loop_body():
    """The traced function, its inlined GraphDef's library, its loop node and the loop's body."""
    cf = _control_flow_function()
    graph_def = _tf.inline_calls(cf)
    library = {f.signature.name: f for f in graph_def.library.function}
    (loop,) = [n for n in graph_def.node if n.op in ("While", "StatelessWhile")]
    return cf, library, loop, library[loop.attr["body"].func.name]


def test_calls_inside_loop_bodies_are_inlined_with_the_same_naming():
    cf, _, loop, body = _inlined_loop_body()
    assert not [n for n in body.node_def if n.op.endswith("PartitionedCall")]
    graph = _tf.function_graph(cf.graph, loop.attr["body"].func.name)
    (call,) = [op for op in graph.get_operations() if op.type.endswith("PartitionedCall")]
    names = {n.name for n in body.node_def}
    assert any(n.startswith(call.name + "/") for n in names)  # `<call>/<op>`, as at the top level
    # the body's FunctionDef keeps the FuncGraph's op names, and its arguments are in the
    # FuncGraph's input order
    kept = [op.name for op in graph.get_operations() if op.type not in ("Placeholder",) and not op.type.endswith("PartitionedCall")]
    assert set(kept) - names <= {op.name for op in graph.get_operations() if op.type == "NoOp"}
    assert len(body.signature.input_arg) == len(graph.inputs)


def test_output_ref_names_outputs_the_function_def_way():
    _, library, _, body = _inlined_loop_body()
    by_name = {n.name: n for n in body.node_def}
    checked = 0
    for node in body.node_def:  # every `node:out_arg:k` reference the body itself makes
        for ref in node.input:
            if ref.startswith("^") or ref.count(":") != 2:
                continue
            producer = by_name[ref.split(":")[0]]
            assert ref in {_tf.output_ref(producer, j, library) for j in range(_outputs(producer, library))}
            checked += 1
    assert checked > 5


def _outputs(node, library):
    count = 0
    while True:
        try:
            _tf.output_ref(node, count, library)
        except LookupError:
            return count
        count += 1


def test_tensor_lists_and_optionals_carry_values_as_the_rewrite_uses_them():
    empty = tf.raw_ops.EmptyTensorList(element_shape=-1, max_num_elements=-1, element_dtype=tf.float32)
    lst = tf.raw_ops.TensorListPushBack(input_handle=empty, tensor=tf.ones((2,)))
    lst = tf.raw_ops.TensorListPushBack(input_handle=lst, tensor=tf.zeros((3,)))
    assert int(tf.raw_ops.TensorListLength(input_handle=lst)) == 2
    item = tf.raw_ops.TensorListGetItem(input_handle=lst, index=1, element_shape=-1, element_dtype=tf.float32)
    assert item.shape == (3,)
    try:  # differing shapes cannot be stacked: graphscope then returns a list
        tf.raw_ops.TensorListStack(input_handle=lst, element_shape=-1, element_dtype=tf.float32)
        raise AssertionError("TensorListStack stacked differing shapes")
    except tf.errors.InvalidArgumentError:
        pass
    some = tf.raw_ops.OptionalFromValue(components=[tf.ones((2,))])
    assert bool(tf.raw_ops.OptionalHasValue(optional=some))
    assert not bool(tf.raw_ops.OptionalHasValue(optional=tf.raw_ops.OptionalNone()))


def test_a_loaded_signature_feeds_its_keywords_to_one_call_in_declared_order(tmp_path):
    declared = ["x", "bias", "alpha", "m"]

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.float32, name=n) for n in declared])
        def f(self, x, bias, alpha, m):
            return {"y": x - bias * alpha + m}

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.f})
    signature = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    placeholders = [t.name for t in signature.inputs]
    assert placeholders == sorted(placeholders)  # TensorFlow's flat order: by keyword
    (call,) = [op for op in signature.graph.get_operations() if "PartitionedCall" in op.type]
    assert [t.name for t in call.inputs] == [f"{n}:0" for n in declared]
    assert [placeholders[k] for k in _tf.keyword_order(signature)] == [f"{n}:0" for n in declared]
    # no single call fed by the placeholders: unknown
    assert _tf.keyword_order(tf.function(lambda a, b: a * b).get_concrete_function(
        tf.TensorSpec(()), tf.TensorSpec(()))) is None


def test_a_static_table_s_initializer_is_an_import_of_that_name_and_a_no_op_once_run():
    """A `StaticHashTable` made inside a function imports its keys with a LookupTableImportV2 op
    named as `TABLE_INITIALIZER` says, which leaves an initialized table as it is; a
    `MutableHashTable` import (which replaces its contents) is named otherwise."""
    keys, values = tf.constant([1, 2], tf.int64), tf.constant([3.0, 4.0])

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.int64)])
    def static(k):
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1.0)
        return table.lookup(k)

    mutable = tf.lookup.experimental.MutableHashTable(tf.int64, tf.float32, default_value=0.0)

    @tf.function
    def replace():
        tf.raw_ops.LookupTableImportV2(table_handle=mutable.resource_handle, keys=keys, values=values)

    def imports(function):
        return [n.name for n in function.get_concrete_function().graph.as_graph_def().node
                if n.op == "LookupTableImportV2"]

    assert imports(static) and all(_tf.TABLE_INITIALIZER.fullmatch(name) for name in imports(static))
    replaced = imports(replace)
    assert replaced and not any(_tf.TABLE_INITIALIZER.fullmatch(name) for name in replaced)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1.0)
    tf.raw_ops.LookupTableImportV2(table_handle=table.resource_handle, keys=tf.constant([1, 9], tf.int64),
                                   values=tf.constant([7.0, 8.0]))
    np.testing.assert_array_equal(table.lookup(tf.constant([1, 2, 9], tf.int64)).numpy(), [3.0, 4.0, -1.0])


def test_builds_outside_graphs_builds_keras_3_layers_eagerly_and_puts_build_back():
    """Keras 3 gives each layer a per-instance `build` (its `build_wrapper`) that keeps
    `_is_default` when the class has no build of its own; under the context it runs eagerly."""

    class Keeps(keras.layers.Layer):
        def build(self, shape):
            self.ids = keras.ops.arange(shape[-1], dtype="float32")

        def call(self, x):
            return x + self.ids

    model = keras.Sequential([Keeps(name="keeps"), keras.layers.Dense(2, name="d")])
    layers = model._flatten_layers(include_self=True, recursive=True)
    before = {id(lay): lay.__dict__["build"] for lay in layers}
    assert not getattr(before[id(layers[1])], "_is_default", False)  # Keeps has its own build
    assert getattr(keras.layers.Layer().__dict__["build"], "_is_default", False)
    with _tf.builds_outside_graphs(model):
        assert all(lay.__dict__["build"] is not before[id(lay)] for lay in layers)
        tf.function(model).get_concrete_function(tf.TensorSpec((None, 3)))
    assert {id(lay): lay.__dict__["build"] for lay in layers} == before
    eager = type(tf.constant(0.0))
    assert model.built and isinstance(model.layers[0].ids, eager)
    plain = keras.Sequential([Keeps(name="keeps")])  # without it, Keras 3 builds inside the graph
    tf.function(plain).get_concrete_function(tf.TensorSpec((None, 3)))
    assert not isinstance(plain.layers[0].ids, eager)
    np.testing.assert_allclose(model(np.ones((1, 3), np.float32)), model.layers[1](np.ones((1, 3)) + np.arange(3)), rtol=1e-6)


def test_a_loaded_signature_is_told_apart_from_other_concrete_functions(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda v: v * 2.0, input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.f, "other": module.f})
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    assert _tf.is_saved_signature(loaded.signatures["serving_default"])
    assert _tf.is_saved_signature(loaded.signatures["other"])
    assert not _tf.is_saved_signature(module.f.get_concrete_function())
    assert not _tf.is_saved_signature(loaded.f.get_concrete_function())  # a restored function, not a signature
    call = tf.function(lambda v: module.f(v))  # the same shape of graph: placeholders and one call
    assert not _tf.is_saved_signature(call.get_concrete_function(tf.TensorSpec((None, 3), tf.float32)))


def test_control_outputs_are_the_side_effects_a_function_and_its_bodies_must_run(tmp_path):
    v = tf.Variable(1.0)

    @tf.function
    def f(x):
        tf.debugging.assert_positive(x, message="positive")
        v.assign_add(1.0)

        def body(i, a):
            tf.print(i)
            return i + 1, a * 2.0

        return tf.while_loop(lambda i, a: i < 2, body, (0, x))[1]

    cf = f.get_concrete_function(tf.TensorSpec((2,), tf.float32))
    kept = _tf.control_outputs(cf.graph)
    assert "AssignAddVariableOp" in {op.type for op in kept}
    # the assert runs in a branch (If) whose own control outputs hold it
    (check,) = [op for op in kept if op.type in ("If", "StatelessIf")]
    branches = [_tf.function_graph(cf.graph, check.get_attr(a).name) for a in ("then_branch", "else_branch")]
    assert "Assert" in {op.type for g in branches for op in _tf.control_outputs(g)}
    (loop,) = [op for op in cf.graph.get_operations() if op.type in ("While", "StatelessWhile")]
    body = _tf.function_graph(cf.graph, loop.get_attr("body").name)
    assert "PrintV2" in {op.type for op in _tf.control_outputs(body)}
    assert _tf.control_outputs(tf.Graph()) == []
    # a loaded SavedModel's function graph keeps them too
    module = tf.Module()
    module.v = v
    module.f = tf.function(f.python_function, input_signature=[tf.TensorSpec((2,), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    (call,) = [op for op in loaded.f.get_concrete_function().graph.get_operations() if op.type.endswith("PartitionedCall")]
    inner = _tf.function_graph(call.graph, call.get_attr("f").name)
    assert {"If", "AssignAddVariableOp"} <= {op.type for op in _tf.control_outputs(inner)}


def test_an_unnamed_keras_input_is_named_by_its_input_layer():
    named, unnamed = keras.Input((3,), name="pixels"), keras.Input((3,))
    assert _tf.keras_input_name(named) == named.name == "pixels"
    layer = unnamed._keras_history.operation  # Keras 3's record of the op that made the tensor
    assert type(layer).__name__ == "InputLayer" and _tf.keras_input_name(unnamed) == layer.name
    assert unnamed.name.startswith("keras_tensor") and layer.name.startswith("input_layer")
    tf_keras = pytest.importorskip("tf_keras")
    old = tf_keras.Input((3,))
    assert _tf.keras_input_name(old) == old._keras_history.layer.name == old.name  # tf_keras names both


def test_a_loaded_signature_names_the_function_it_wraps(tmp_path):
    def embed(v):
        return v * 2.0

    def serve(v):
        return v + 1.0

    module = tf.Module()
    module.embed = tf.function(embed, input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    module.serve = tf.function(serve, input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"),
                        signatures={"serving_default": module.serve, "other": module.embed})
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    assert _tf.saved_signature_function(loaded.signatures["other"]) == "embed"  # the function, not the key
    assert _tf.saved_signature_function(loaded.signatures["serving_default"]) == "serve"


def test_keras_name_scopes_are_kept_when_what_runs_inside_fails():
    """Keras 3 keeps its open name scopes on a global stack; a scope left on it by a failure
    inside would name every later variable under it."""
    from keras.src.backend.common import global_state

    with pytest.raises(RuntimeError):
        with _tf.keras_name_scopes_kept():
            # pushed by Keras, never entered in TensorFlow nor popped: as when TensorFlow refuses it
            global_state.get_global_attribute("name_scope_stack", default=[], set_to_default=True).append(
                keras.name_scope("leaked"))
            raise RuntimeError("inside")
    assert not global_state.get_global_attribute("name_scope_stack")
    layer = keras.layers.Dense(2, name="after")
    layer.build((None, 3))
    assert layer.kernel.path == "after/kernel"


def test_while_v2_names_its_stand_ins_after_the_cond_function_as_stand_in_name_expects():
    """TensorFlow names the placeholders a while cond gets for loop values it does not read
    `<cond function>___redundant_placeholder<k>` (for the tensors a body captures, which become
    loop values); `is_stand_in` and `stand_in_name` read that."""

    @tf.function
    def f(x):
        w = x + 1.0  # captured by the body
        return tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * w), (tf.constant(0), x))[1]

    graph = f.get_concrete_function(tf.TensorSpec((2,))).graph
    (loop,) = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    cond = _tf.function_graph(graph, loop.get_attr("cond").name)
    stand_ins = [op.name for op in cond.get_operations() if _tf.is_stand_in(op.name)]
    assert stand_ins, [op.name for op in cond.get_operations()]
    assert [_tf.stand_in_name(n) for n in stand_ins] == [f"redundant_placeholder{k}" for k in range(len(stand_ins))]
    assert _tf.stand_in_name("dense/BiasAdd") == "dense/BiasAdd"


def test_a_class_tf_function_bound_afresh_traces_anew_and_an_instance_one_copied_keeps_its_options():
    """`tf_function_attributes` finds a class's tf.function methods and an instance's own;
    `fresh_tf_function` gives ones whose traces are their own (the cached one was made
    elsewhere), bound to the instance, with the original's input signature and jit setting."""
    traces = []

    class Holder:
        @tf.function(input_signature=[tf.TensorSpec((None,))])
        def method(self, x):
            traces.append("method")
            return x * 2.0

    holder = Holder()
    holder.own = tf.function(lambda x: x + 1.0, jit_compile=False)
    holder.method(tf.constant([1.0]))
    found = {name: of_class for name, _, of_class in _tf.tf_function_attributes(holder)}
    assert found == {"method": True, "own": False}
    fresh = _tf.fresh_tf_function(Holder.method, holder)
    np.testing.assert_allclose(fresh(tf.constant([3.0])), [6.0])
    assert traces == ["method", "method"]  # traced anew, not handed the first trace
    assert fresh.input_signature == Holder.method.input_signature
    copy = _tf.fresh_tf_function(holder.own)
    assert copy is not holder.own and copy._jit_compile is False  # pylint: disable=protected-access
    np.testing.assert_allclose(copy(tf.constant([1.0])), [2.0])


def test_tf_keras_names_its_default_serving_function_as_keras2_default_serving_expects(tmp_path):
    """tf_keras' `model.save(path, save_format="tf")` without signatures serves the model's call
    through one call of `__inference__wrapped_model_<n>`; a serving function of the user's is
    not that."""
    tf_keras = pytest.importorskip("tf_keras")
    x_in = tf_keras.Input((3,), name="x")
    model = tf_keras.Model(x_in, tf_keras.layers.Dense(2, name="head")(x_in))
    model.save(str(tmp_path / "default"), save_format="tf")
    assert _tf.keras2_default_serving(tf.saved_model.load(str(tmp_path / "default")))
    serve = tf.function(lambda x: {"out": model(x) * 2.0}, input_signature=[tf.TensorSpec((None, 3))])
    model.save(str(tmp_path / "own"), save_format="tf", signatures={"serving_default": serve})
    assert not _tf.keras2_default_serving(tf.saved_model.load(str(tmp_path / "own")))


def test_keras_marks_a_layers_first_call_in_called_as_called_flag_reads():
    layer = keras.layers.Dense(2)
    assert _tf.called_flag(layer) is False
    layer(np.ones((1, 3), np.float32))
    assert _tf.called_flag(layer) is True
    _tf.restore_called_flag(layer, False)
    assert layer._called is False  # pylint: disable=protected-access


def test_a_branch_inside_an_inlined_call_is_specialised_with_renamed_ops_and_reordered_arguments():
    """`locate` reads a branch TensorFlow specialised for its caller by these names
    (`specialised_function`, `specialised_op_name`), and maps its arguments by their readers
    because the specialised branch takes its handles first."""
    import graphscope as gs

    dense = keras.layers.Dense(3, name="dense")
    dense.build((None, 3))
    helper = tf.function(lambda v, flag: tf.cond(flag > 0, lambda: dense(v), lambda: v * 2.0))
    scope = gs.trace(lambda v, flag: helper(v, flag) + 1.0, [tf.TensorSpec((None, 3)), tf.TensorSpec(())], quiet=True)
    library = scope._runtime.program.library
    specialised = [f for name, f in library.items() if _tf.specialised_function(name)]
    assert specialised, sorted(library)
    (branch,) = [f for f in specialised if any(_tf.specialised_op_name(n.name) == "cond/dense_1/MatMul"
                                               for n in f.node_def)]
    kinds = [a.type for a in branch.signature.input_arg]
    assert kinds == sorted(kinds, key=lambda k: k != tf.resource.as_datatype_enum), kinds  # handles first
    assert _tf.specialised_op_name("cond/mul") is None
    # a branch inside a specialised loop body is specialised again: the op is the first name
    twice = "while/cond/mul_tfg_inlined_while/cond_tfg_inlined_StatefulPartitionedCall/while_1_0"
    assert _tf.specialised_op_name(twice) == "while/cond/mul"
