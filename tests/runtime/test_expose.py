"""rewrite: values inside loops, branches and nested functions, against independent computations
(plain TF run by hand, loops unrolled in numpy, Keras' own outputs)."""

import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope import demo
from tests import models


@pytest.fixture(scope="module")
def zoo():
    model = models.loops_and_branches()
    scope = gs.trace(model)
    x = np.random.default_rng(3).normal(size=(3, 5)).astype(np.float32)
    return model, scope, x


def _numeric(scope, pattern=""):
    return [t for t in scope.find(pattern) if not t.is_handle]


def _entries_fit(t, value):
    """Each of a value's entries has `t`'s static shape: a loop level (`:body`, `:cond`) adds one
    entry per iteration (an axis, or a list), a branch level none (the value, or None)."""
    loops = sum(f.rpartition(":")[2] in ("body", "cond") for f in t.function if ":" in f)
    entries = [value]
    for _ in range(loops):
        entries = [e for v in entries if v is not None for e in (v if isinstance(v, list) else list(v))]
    return all(e is None or tf.TensorShape(t.shape).is_compatible_with(np.shape(e)) for e in entries)


def test_every_numeric_tensor_is_fetchable_at_once_and_the_model_is_unchanged(zoo):
    model, scope, x = zoo
    tensors = _numeric(scope)
    inside = [t for t in tensors if t.context]
    assert len(inside) > 150  # the zoo's loops and branches hold most of its ops
    values = scope.executor(tensors)(x)
    assert set(values) == {t.name for t in tensors}
    # the loops' own results are unchanged by fetching from inside them
    np.testing.assert_allclose(values[scope.outputs.names[0]], model(x).numpy(), rtol=1e-5, atol=1e-6)
    for t in tensors:  # one entry per iteration (array or list), or None for a branch not run
        v = values[t.name]
        in_branch = any(f.rpartition(":")[2] in ("then", "else") or f.rpartition(":")[2].startswith("branch")
                        for f in t.function if ":" in f)
        assert v is not None or in_branch, t.name  # only a branch that did not run has no value
        if v is not None:
            assert _entries_fit(t, v), (t.name, t.shape, np.shape(v) if not isinstance(v, list) else len(v))


def test_each_fetch_alone_gives_what_the_joint_fetch_gives(zoo):
    _, scope, x = zoo
    tensors = [t for t in _numeric(scope) if t.context][::9]
    together = scope.executor(tensors)(x)
    for t in tensors:
        alone = scope.executor([t])(x)[t.name]
        _assert_same(alone, together[t.name])


def _assert_same(a, b):
    if a is None or b is None:
        assert a is None and b is None
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same(u, v)
    else:
        np.testing.assert_array_equal(a, b)


def test_while_loop_values_have_one_entry_per_iteration(zoo):
    _, scope, x = zoo
    got = scope.run(
        ["running_sum/while/add_1:0", "running_sum/while/body/loop_counter:0", "running_sum/while/Less:0"], x
    )
    # total + x[:, i] at iteration i: the running sum, unrolled by hand
    np.testing.assert_allclose(got["running_sum/while/add_1:0"], np.cumsum(x, axis=1).T, rtol=1e-6)
    np.testing.assert_array_equal(got["running_sum/while/body/loop_counter:0"], np.arange(5))
    # the cond runs once more than the body: its last value is the False that ended the loop
    np.testing.assert_array_equal(got["running_sum/while/Less:0"], [True] * 5 + [False])
    values = got["running_sum/while/add_1:0"]
    assert not values.flags.writeable


def test_scan_steps(zoo):
    _, scope, x = zoo
    got = scope.run("scan/scan/while/add:0", x)["scan/scan/while/add:0"]
    acc, expected = np.zeros(3, np.float32), []
    for column in x.T:
        acc = acc * 0.5 + np.tanh(column)
        expected.append(acc)
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_branch_gives_its_value_when_it_ran_and_none_when_it_did_not(zoo, sign):
    _, scope, x = zoo
    x = np.abs(x) * sign
    got = scope.run(["branchy/cond/mul:0", "branchy/cond/Exp:0"], x)
    if sign > 0:  # tf.cond(sum > 0): then relu(x) * 2, else exp(x) - 1
        np.testing.assert_allclose(got["branchy/cond/mul:0"], np.maximum(x, 0) * 2, rtol=1e-6)
        assert got["branchy/cond/Exp:0"] is None
    else:
        assert got["branchy/cond/mul:0"] is None
        np.testing.assert_allclose(got["branchy/cond/Exp:0"], np.exp(x), rtol=1e-6)


def test_switch_case_branches(zoo):
    _, scope, x = zoo
    names = ["branchy/switch_case/indexed_case/add:0", "branchy/switch_case/indexed_case/Sqrt:0",
             "branchy/switch_case/indexed_case/mul:0"]
    for scale in (0.01, 0.3, 10.0):
        v = x * scale
        y = np.maximum(v, 0) * 2 if v.sum() > 0 else np.exp(v) - 1
        index = int(np.clip(np.int32(v.max() * 2), 0, 2))
        expected = [y + 1, np.sqrt(np.abs(y)), y * y]
        got = scope.run(names, v)
        for k, name in enumerate(names):
            if k == index:
                np.testing.assert_allclose(got[name], expected[k], rtol=1e-5)
            else:
                assert got[name] is None


def test_a_cond_inside_a_loop_gives_none_for_iterations_that_took_the_other_branch(zoo):
    _, scope, x = zoo
    x = x.copy()
    x[:, 0] = [1.0, -1.0, 2.0]
    got = scope.run(["cond_in_loop/map/while/cond/Log1p:0", "cond_in_loop/map/while/cond/sub:0"], x)
    then, other = got["cond_in_loop/map/while/cond/Log1p:0"], got["cond_in_loop/map/while/cond/sub:0"]
    assert isinstance(then, list) and [v is None for v in then] == [False, True, False]
    assert [v is None for v in other] == [True, False, True]
    for row, a, b in zip(x, then, other):
        np.testing.assert_allclose(a if a is not None else b, np.log1p(row * row) if row[0] > 0 else row - 3, rtol=1e-6)


def test_loops_inside_a_function_inside_a_loop_nest_the_axes(zoo):
    model, scope, x = zoo
    name = "nested_loops/StatefulPartitionedCall/map/while/while/Tanh:0"
    got = scope.run(name, x)[name]
    w = model.get_layer("nested_loops").w.numpy()
    expected = []
    for row in x:  # tf.map_fn over rows, an inner while_loop of 3 steps: unrolled by hand
        acc, steps = np.zeros_like(row), []
        for i in range(3):
            acc = np.tanh(acc * w + row * i)
            steps.append(acc)
        expected.append(steps)
    assert got.shape == (3, 3, 5)
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5, atol=1e-6)


def test_a_function_called_twice_is_mirrored_once_per_call_site(zoo):
    _, scope, x = zoo
    sigmoids = scope.find("^shared_helper/", op_type="Sigmoid")
    assert len(sigmoids) == 2
    calls = {scope.op(t.op).function[-1] for t in sigmoids}
    assert len(calls) == 2  # two call sites, each with its own names
    got = scope.run(sigmoids, x)
    by_hand = sorted([1 / (1 + np.exp(-x)), 1 / (1 + np.exp(x))], key=lambda a: a[0, 0])
    fetched = sorted([got[t.name] for t in sigmoids], key=lambda a: a[0, 0])
    for a, b in zip(fetched, by_hand):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    # one function body in the traced graph, mirrored twice: no op counted twice
    body_ops = [n for n in scope.graph if n.startswith("shared_helper/") and scope.op(n).function]
    assert len(body_ops) == len(set(body_ops))


def test_an_xla_helper_runs_and_its_inside_is_fetchable(zoo):
    _, scope, x = zoo
    (relu,) = scope.find("^xla_helper/", op_type="Relu")
    call = scope.op(relu.function[-1])
    got = scope.run([relu, call.outputs[0]], x)
    np.testing.assert_allclose(got[relu.name], np.maximum(x, 0), rtol=1e-6)
    np.testing.assert_allclose(got[call.outputs[0]], np.maximum(x, 0) * 3, rtol=1e-6)


def test_nms_with_a_score_threshold_gives_a_list_when_counts_differ():
    model = models.threshold_nms()
    scope = gs.trace(model)
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 0.6, size=(4, 12, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(0.1, 0.4, size=(4, 12, 2)).astype(np.float32)], -1)
    scores = rng.uniform(0, 1, size=(4, 12)).astype(np.float32)
    scores[1] *= 0.5  # fewer boxes over the threshold in image 1
    (nms,) = scope.find(op_type=r"NonMaxSuppressionV\d")
    got = scope.run([nms, scope.outputs[0]], [boxes, scores])
    kept = got[nms.name]
    assert isinstance(kept, list) and len(kept) == 4
    by_hand = [tf.image.non_max_suppression(b, s, 6, 0.5, score_threshold=0.4).numpy() for b, s in zip(boxes, scores)]
    assert len({len(k) for k in by_hand}) > 1
    for a, b in zip(kept, by_hand):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(got[scope.outputs.names[0]], model([boxes, scores]).numpy(), rtol=1e-6)


def test_demo_map_fn_nms_equals_nms_by_hand_per_image():
    model = demo.proposal_model(variant="map_fn")
    scope = gs.trace(model)
    images = demo.synthetic_images()
    nms = scope.tensor("ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0")
    boxes = scope.tensor("ROI/refined_anchors_clipped:0")  # outside the loop: the batch's boxes
    scores = scope.op(scope.tensor("ROI/GatherV2:0").op).outputs[0]
    got = scope.run([nms, boxes, scores, "ROI/map/TensorArrayV2Stack/TensorListStack:0"], images)
    assert got[nms.name].shape == (2, 32)
    for image in range(2):
        by_hand = tf.image.non_max_suppression(got[boxes.name][image], got[scores][image], 32, 0.5).numpy()
        np.testing.assert_array_equal(got[nms.name][image], by_hand)
    # the loop's own result (the ROI output) is unchanged by fetching from inside it
    np.testing.assert_allclose(got["ROI/map/TensorArrayV2Stack/TensorListStack:0"], model(images)[3].numpy(), rtol=1e-6)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_layer_steps_against_keras(kind):
    model = models.recurrent(kind)
    scope = gs.trace(model)
    x = np.random.default_rng(1).normal(size=(2, 4, 3)).astype(np.float32)
    inside = [t for t in scope.find(op_type="MatMul") if t.context]
    assert len(inside) == 2
    got = scope.run(inside, x)
    cell = model.get_layer(kind.lower()).cell
    kernel, recurrent = cell.kernel.numpy(), cell.recurrent_kernel.numpy()
    h = model(x).numpy()  # Keras' own per-step outputs (return_sequences=True)
    previous = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
    x_part, h_part = sorted(inside, key=lambda t: t.name)
    np.testing.assert_allclose(got[x_part.name], np.einsum("bti,ij->tbj", x, kernel), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[h_part.name], np.einsum("bti,ij->tbj", previous, recurrent), rtol=1e-4, atol=1e-5)


def test_resource_and_variant_tensors_are_refused(zoo):
    _, scope, _ = zoo
    variant = next(t for t in scope.find("^cond_in_loop/") if t.dtype == "variant")
    with pytest.raises(gs.UnsupportedFetchError, match="variant tensor"):
        scope.executor([variant])


def test_records_say_which_loop_or_branch_computes_them(zoo):
    _, scope, _ = zoo
    nested = scope.tensor("nested_loops/StatefulPartitionedCall/map/while/while/Tanh:0")
    assert nested.context == "nested_loops/StatefulPartitionedCall/map/while/while:body"
    assert nested.function == (
        "nested_loops/StatefulPartitionedCall",
        "nested_loops/StatefulPartitionedCall/map/while:body",
        "nested_loops/StatefulPartitionedCall/map/while/while:body",
    )
    assert scope.op("nested_loops/StatefulPartitionedCall/map/while/while").type in ("While", "StatelessWhile")
    assert scope.tensor("branchy/cond/Exp:0").context == "branchy/cond:else"
    assert scope.tensor("branchy/Sum:0").context is None
    assert scope.op("branchy/cond/Exp").context == "branchy/cond:else"


def test_a_loop_that_never_runs_gives_empty_lists(zoo):
    _, scope, _ = zoo
    empty = np.zeros((0, 5), np.float32)  # tf.map_fn over an empty batch: zero iterations
    got = scope.run(["cond_in_loop/map/while/add:0", "cond_in_loop/map/while/cond/Log1p:0",
                     "cond_in_loop/map/while/Less:0"], empty)
    assert got["cond_in_loop/map/while/add:0"] == [] and got["cond_in_loop/map/while/cond/Log1p:0"] == []
    np.testing.assert_array_equal(got["cond_in_loop/map/while/Less:0"], [False])  # the cond ran once


def test_an_xla_helper_stays_compiled_unless_fetched_from(zoo):
    _, scope, x = zoo
    runtime_node = lambda ex: [n for n in ex._function.definition.node_def if n.op.endswith("PartitionedCall")]
    outside = scope.executor(["xla_helper/add:0"])
    (relu,) = scope.find("^xla_helper/", op_type="Relu")
    inside = scope.executor([relu])
    assert [n.attr["_XlaMustCompile"].b for n in runtime_node(outside)] == [True]
    assert [n.attr["_XlaMustCompile"].b for n in runtime_node(inside)] == [False]
    np.testing.assert_allclose(outside(x)["xla_helper/add:0"], np.maximum(x, 0) * 3 + 1, rtol=1e-6)


def _inputs_for(model, rng):
    return [rng.normal(size=(2, *t.shape[1:])).astype(np.float32) for t in model.inputs]


@pytest.mark.parametrize(
    "build",
    [
        lambda: demo.proposal_model(variant="map_fn"),
        models.threshold_nms,
        lambda: models.recurrent("LSTM"),
        lambda: models.recurrent("GRU"),
        models.control_flow,
    ],
    ids=["demo_map_fn", "threshold_nms", "lstm", "gru", "control_flow"],
)
def test_every_numeric_tensor_of_each_control_flow_model_is_fetchable(build):
    model = build()
    scope = gs.trace(model)
    rng = np.random.default_rng(0)
    inputs = _inputs_for(model, rng)
    tensors = _numeric(scope)
    values = scope.executor(tensors)(inputs)
    assert len(values) == len(tensors)
    expected = model(inputs if len(inputs) > 1 else inputs[0])
    for name, want in zip(scope.outputs.names, tf.nest.flatten(expected)):
        np.testing.assert_allclose(values[name], np.asarray(want), rtol=1e-5, atol=1e-6)


def test_every_numeric_tensor_of_a_saved_model_is_fetchable(tmp_path, zoo):
    model, _, x = zoo
    model.export(str(tmp_path / "zoo"), verbose=False)
    scope = gs.trace(tmp_path / "zoo")
    assert {layer.source for layer in scope.layers} == {"name scope"}
    # a name-scope layer's outputs are the tensors leaving it: the last one feeds the model output
    (last,) = scope.layer("sum").outputs
    assert scope.outputs.names == [last.name]  # the tensor the model computes, not the serving call's
    returned = scope.model_graph.graph.graph["outputs"][0]  # the signature's copy of it
    assert scope.ancestors(returned, "^sum/").names[-1] == last.name
    tensors = _numeric(scope)
    values = scope.executor(tensors)(x)
    np.testing.assert_allclose(values[scope.outputs.names[0]], model(x).numpy(), rtol=1e-5, atol=1e-6)
    name = "nested_loops/StatefulPartitionedCall/map/while/while/Tanh:0"
    assert scope.tensor(name).layer == "nested_loops"
    np.testing.assert_allclose(values[name], gs.trace(model).run(name, x)[name], rtol=1e-6)


def test_a_call_inside_a_loop_body_runs_and_tensorflow_can_still_differentiate_the_model():
    """The inliner keeps a changed loop body's name (or adds `_rewritten`); registered under it,
    graphscope's copy clashed with TensorFlow's own ("Attempting to add a duplicate function")."""
    v = tf.Variable([1.0, 2.0, 3.0])

    @tf.function
    def helper(x):
        return tf.tanh(x) * v

    @tf.function
    def f(x):
        _, y = tf.while_loop(lambda i, a: i < 2, lambda i, a: (i + 1, a + helper(a)), [tf.constant(0), x])
        return y

    x = tf.constant([[0.5, -1.0, 2.0]])
    with tf.GradientTape() as tape:  # TensorFlow registers its optimized functions
        tape.watch(x)
        want = f(x)
    want_grad = tape.gradient(want, x)
    scope = gs.trace(f, [tf.TensorSpec((None, 3), tf.float32)], quiet=True)
    (got,) = scope.run(scope.outputs, x.numpy()).values()
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)
    np.testing.assert_allclose(scope.gradients(scope.outputs[0], scope.inputs[0], x.numpy())[scope.inputs[0]],
                               want_grad.numpy(), rtol=1e-5)
    with tf.GradientTape() as tape:  # and TensorFlow runs and differentiates its model after graphscope
        tape.watch(x)
        again = f(x)
    np.testing.assert_allclose(tape.gradient(again, x).numpy(), want_grad.numpy(), rtol=1e-6)


class _Branchy(tf.Module):
    """A branch reading three of the caller's values and two variables, saved: TensorFlow takes
    the signature's call apart and specialises the branch for it, its handles first."""

    def __init__(self):
        self.w = tf.Variable(np.full((3,), 5.0, np.float32))
        self.b = tf.Variable(np.full((3,), 7.0, np.float32))

    @tf.function(input_signature=[tf.TensorSpec((None, 3))] * 3 + [tf.TensorSpec(())])
    def __call__(self, a, b, c, flag):
        a2, b2, c2 = a * 1.5, b * 2.5, c * 3.5
        return tf.cond(flag > 0, lambda: c2 * self.w + a2 - b2 * self.b, lambda: a2 + b2 + c2)


@pytest.mark.parametrize("how", ["saved model", "helper"])
def test_a_branchs_arguments_are_the_values_it_reads_where_tensorflow_reorders_them(tmp_path, how):
    """Each of the branch's arguments, fetched and edited, is the value the branch reads
    (numpy by hand), not its neighbour's: the specialised branch takes them in another order."""
    module = _Branchy()
    if how == "saved model":
        tf.saved_model.save(module, str(tmp_path / "branchy"))
        scope = gs.trace(tmp_path / "branchy", quiet=True)
    else:  # the same function called from a function: a helper, inlined, its branch specialised
        scope = gs.trace(lambda a, b, c, flag: module(a, b, c, flag) * 1.0, [tf.TensorSpec((None, 3))] * 3
                         + [tf.TensorSpec(())], quiet=True)
    rng = np.random.default_rng(21)
    a, b, c = (rng.normal(size=(2, 3)).astype(np.float32) for _ in range(3))
    read = {"a": a * 1.5, "b": b * 2.5, "c": c * 3.5}
    arguments = [t for t in scope.find(r"/then/") if not t.is_handle]
    assert len(arguments) == 3
    feed = [a, b, c, np.float32(1.0)]
    got = scope.run(arguments, feed)
    matched = {next(k for k, v in read.items() if np.allclose(got[t.name], v, rtol=1e-6)) for t in arguments}
    assert matched == {"a", "b", "c"}, {t.name: got[t.name][0] for t in arguments}
    by_value = {next(k for k, v in read.items() if np.allclose(got[t.name], v, rtol=1e-6)): t for t in arguments}
    out = scope.outputs[0]
    for key, t in by_value.items():  # zero one argument where the branch reads it: by hand
        values = dict(read, **{key: 0 * read[key]})
        edited = scope.run([out], feed, edits={t: lambda v: v * 0.0})
        np.testing.assert_allclose(edited[out.name], values["c"] * 5.0 + values["a"] - values["b"] * 7.0,
                                   rtol=1e-5, atol=1e-5)


_W = np.array([5.0, 6.0, 7.0], np.float32)


def _named(a, b, c):
    return tf.identity(a * 1.5, name="AA"), tf.identity(b * 2.5, name="BB"), tf.identity(c * 3.5, name="CC")


def _values(seed=22):
    rng = np.random.default_rng(seed)
    a, b, c = (rng.normal(size=(2, 3)).astype(np.float32) for _ in range(3))
    return [a, b, c], {"AA": a * 1.5, "BB": b * 2.5, "CC": c * 3.5}


@pytest.mark.parametrize("how", ["helper", "plain"])
def test_a_loop_bodys_arguments_are_the_values_it_reads_where_a_branch_in_it_is_specialised(how):
    """In a loop whose body holds a cond (the traced function's own, or a helper's), TensorFlow
    specialises both and reorders the cond's inputs with its branches' arguments: the body's
    arguments, fetched and edited, are still the values the body reads, and so are the
    branch's (numpy by hand)."""
    w = tf.Variable(_W)

    @tf.function
    def helper(a, b, c, flag):
        a2, b2, c2 = _named(a, b, c)

        def body(i, acc):
            return i + 1, acc + tf.cond(flag > 0, lambda: c2 * w + b2 * 2.0, lambda: a2 - c2)

        return tf.while_loop(lambda i, acc: i < 2, body, [tf.constant(0), tf.zeros_like(a2)])[1]

    spec = [tf.TensorSpec((None, 3))] * 3 + [tf.TensorSpec(())]
    call, prefix = (helper, "StatefulPartitionedCall/") if how == "helper" else (helper.python_function, "")
    scope = gs.trace(lambda a, b, c, flag: call(a, b, c, flag) * 1.0, spec, quiet=True)
    inputs, read = _values()
    feed = [*inputs, np.float32(1.0)]
    names = {f"{prefix}while/{where}/{key}:0": key
             for where, keys in (("body", "AA BB CC"), ("cond/then", "BB CC")) for key in keys.split()}
    for name, key in names.items():  # one entry per iteration
        got = scope.run([name], feed)
        np.testing.assert_allclose(got[name], np.stack([read[key]] * 2), rtol=1e-6, err_msg=name)
    out = scope.outputs.names[0]
    for name in (f"{prefix}while/body/CC:0", f"{prefix}while/cond/then/CC:0"):
        edited = scope.run([out], feed, edits={name: lambda v: v * 0.0})  # the branch reads zeros for c2
        np.testing.assert_allclose(edited[out], 2 * (read["BB"] * 2.0), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("how", ["saved model", "helper"])
def test_a_cond_inside_a_specialised_branch_runs_and_is_edited(tmp_path, how):
    """The inner cond's op in the specialised outer branch is renamed: its values are reached
    through it (numpy by hand)."""

    class Nested(tf.Module):
        def __init__(self):
            self.w = tf.Variable(_W)

        @tf.function(input_signature=[tf.TensorSpec((None, 3))] * 3 + [tf.TensorSpec(())])
        def __call__(self, a, b, c, flag):
            a2, b2, c2 = _named(a, b, c)
            inner = lambda: tf.cond(flag > 1, lambda: tf.identity(c2 * self.w, name="P") - a2, lambda: b2 + 0.0)
            return tf.cond(flag > 0, lambda: inner() + b2 * c2, lambda: a2 - b2)

    module = Nested()
    spec = [tf.TensorSpec((None, 3))] * 3 + [tf.TensorSpec(())]
    if how == "saved model":
        tf.saved_model.save(module, str(tmp_path / "nested"))
        scope = gs.trace(tmp_path / "nested", quiet=True)
    else:
        scope = gs.trace(lambda a, b, c, flag: module(a, b, c, flag) * 1.0, spec, quiet=True)
    inputs, read = _values()
    feed = [*inputs, np.float32(2.0)]
    (p,) = scope.find(r"cond/cond/P:0$")
    args = scope.find(r"cond/cond/then/.*(aa|AA|cc|CC):0$")
    assert len(args) == 2, args
    got = scope.run([p, *args], feed)
    np.testing.assert_allclose(got[p.name], read["CC"] * _W, rtol=1e-6)
    for t in args:  # by the name of what it captured: `AA` (saved: `cond_cond_sub_aa`)
        np.testing.assert_allclose(got[t.name], read[t.name[-4:-2].upper()], rtol=1e-6, err_msg=t.name)
    out = scope.outputs.names[0]
    edited = scope.run([out], feed, edits={p: lambda v: v * 0.0})
    np.testing.assert_allclose(edited[out], read["BB"] * read["CC"] - read["AA"], rtol=1e-5)
