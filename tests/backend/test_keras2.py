"""Keras 2 (tf_keras) models get what Keras 3 models get: inputs from the model, layer calls
recorded from tf_keras' own `Layer.__call__`, canonical names, layers, parameters, trees, cut
points, validate and extract; every value compared with tf_keras itself."""

import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf

tf_keras = pytest.importorskip("tf_keras")

import graphscope as gs  # noqa: E402
from graphscope.backend import tf_internals as _tf  # noqa: E402
from tests import models_keras2 as zoo  # noqa: E402
from tests.conftest import assert_weights_unchanged, weights_snapshot  # noqa: E402

FUNCTIONAL = {"functional", "sequential", "nested", "shared_out_of_order", "with_tf_function", "padded_proposals"}


@pytest.fixture(params=sorted(zoo.ZOO))
def keras2_model(request):
    return request.param, zoo.ZOO[request.param]()


def _keras_call_output(model, lay):
    """tf_keras' own symbolic output of a top-level layer call: its node's, in node order."""
    _, _, number = lay.name.partition("@")
    return _tf.node_outputs(model, lay.keras_layer)[int(number or 1) - 1]


def test_every_layer_output_matches_tf_keras(keras2_model):
    name, model = keras2_model
    before = weights_snapshot(model)
    scope = gs.trace(model, quiet=True)  # no input_signature: the model knows its inputs
    assert scope.layers and all(t.layer is None or not t.layer.startswith(model.name) for t in scope.find())
    inputs = zoo.sample_inputs(model)
    layers = [lay for lay in scope.layers if lay.outputs]
    values = scope.run([t for lay in layers for t in (*lay.outputs, *lay.inputs)], inputs)
    compared = 0
    for lay in layers:
        if name in FUNCTIONAL and "/" not in lay.name and lay.type != "InputLayer":
            want = tf_keras.Model(model.inputs, _keras_call_output(model, lay))(inputs)
        elif lay.input_structure is not None:  # inside a nested or subclassed model: call it eagerly
            kwargs = {k: tf.nest.map_structure(lambda n: values.get(n, n), v) for k, v in lay.input_keywords.items()}
            want = lay.keras_layer(*tf.nest.map_structure(lambda n: values[n], lay.input_structure), **kwargs)
        else:
            continue
        got = [values[t.name] for t in lay.outputs]
        want = tf.nest.flatten(want)
        assert len(got) == len(want), lay.name
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-5, err_msg=lay.name)
        compared += 1
    assert compared >= 2
    out = scope.run(scope.outputs, inputs)
    for got, want in zip(out.values(), tf.nest.flatten(model(inputs if len(inputs) > 1 else inputs[0]))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert_weights_unchanged(model, before)
    assert "call" not in vars(model) and all("call" not in vars(lay) for lay in model.submodules
                                               if isinstance(lay, tf_keras.layers.Layer))


def test_vgg19_from_tf_keras_applications_has_keras_names_and_layers():
    model = tf_keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    scope = gs.trace(model, quiet=True)
    assert repr(scope) == f"<Scope vgg19: {scope.graph.number_of_nodes()} ops, {len(model.layers)} layers>"
    pre, post = scope.tensor("block4_conv3/BiasAdd:0"), scope.tensor("block4_conv3/Relu:0")
    assert pre.raw_name == "vgg19/block4_conv3/BiasAdd:0" and pre.layer == "block4_conv3"
    assert scope.layer("block4_conv3").output == post and scope.layer(9).name == model.layers[9].name
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    values = scope.run([pre, post], x)
    np.testing.assert_array_equal(np.maximum(values[pre.name], 0), values[post.name])
    want = tf_keras.Model(model.input, model.get_layer("block4_conv3").output)(x)
    np.testing.assert_allclose(values[post.name], want, rtol=1e-5, atol=1e-5)
    tree = scope.layer_tree()
    assert tree.rows[0][:3] == (0, "vgg19", "Functional")
    assert f"{model.count_params() / 1e6:.1f}M params" in tree.caption
    assert "block5_pool/MaxPool:0" in scope.cut_points().names


def test_shared_calls_follow_tf_keras_node_order():
    model = zoo.shared_out_of_order()
    scope = gs.trace(model, quiet=True)
    assert scope.layer("conv1").inputs.names == ["x:0"]
    assert scope.layer("conv1@2").inputs.names == ["conv0/BiasAdd:0"]
    assert scope.layer("block@2").inputs.names == ["conv2/BiasAdd:0"]
    assert scope.tensor("conv1@2/MatMul:0").raw_name.startswith("reordered/conv1/")  # tf_keras ran it first
    assert _tf.node_numbers(model)[id(model.get_layer("conv1"))] == [2, 1]


def test_a_subclassed_tf_keras_model_takes_its_inputs_from_its_build():
    model = zoo.subclassed()
    scope = gs.trace(model, quiet=True)
    assert [t.shape for t in scope.model_graph.inputs] == [(None, 4)]
    assert scope.layer("encoder").output.layer == "encoder"
    assert [t for t in scope.find(op_type="Mul|AddV2") if t.layer is None]  # the model's own code


def test_a_subclassed_tf_keras_model_built_by_a_call_on_a_dict_traces_without_a_signature():
    """tf_keras keeps the shapes of the dict a subclassed model was first called with as a dict
    of TensorShapes; reading them as one shape raised a raw TypeError ("Failed to convert ... to
    a shape"). The oracle: the model and its layers called."""

    class OnDict(tf_keras.Model):
        def __init__(self):
            super().__init__(name="on_dict")
            self.a = tf_keras.layers.Dense(2, name="a")
            self.b = tf_keras.layers.Dense(2, activation="tanh", name="b")

        def call(self, inputs):
            return self.a(inputs["x"]) * self.b(inputs["y"])

    rng = np.random.default_rng(0)
    x = {"x": rng.normal(size=(3, 3)).astype(np.float32), "y": rng.normal(size=(3, 4)).astype(np.float32)}
    model = OnDict()
    want = model(x).numpy()
    scope = gs.trace(model, quiet=True)
    assert scope.inputs == ["x", "y"] and [t.shape for t in scope.model_graph.inputs] == [(None, 3), (None, 4)]
    (out,) = scope.outputs.names
    got = scope.run([out, "a/BiasAdd:0", "b/Tanh:0"], x)
    np.testing.assert_allclose(got[out], want, rtol=1e-6)
    np.testing.assert_allclose(got["a/BiasAdd:0"], model.a(x["x"]), rtol=1e-6)
    np.testing.assert_allclose(got["b/Tanh:0"], model.b(x["y"]), rtol=1e-6)


def test_a_subclassed_tf_keras_model_is_traced_as_it_was_first_called_with_its_dtypes_and_arguments():
    """tf_keras records the tensors a subclassed model was first called with, dtypes and all
    positional arguments, where its build kept only the first argument's shape. The trace took
    the ids as float32, which rounds 123456789 to 123456792 (another hashed bucket, silently),
    and called `call(inputs, bias=None)` without the bias it was called with (the model without
    it, silently). The oracle: the model called."""

    class Hashed(tf_keras.Model):
        def __init__(self):
            super().__init__(name="hashed")
            self.embed = tf_keras.layers.Embedding(1000, 3, name="embed")

        def call(self, inputs, bias=None):
            rows = self.embed(tf.math.floormod(inputs["ids"], 1000))
            rows = rows * tf.cast(inputs["mask"], rows.dtype)[..., None]
            return rows if bias is None else rows + bias[:, None, :]

    ids = np.array([[123456789, 5, 999999937]], np.int32)
    x = {"ids": ids, "mask": np.array([[True, True, False]])}
    bias = np.array([[1.0, 2.0, 3.0]], np.float32)
    model = Hashed()
    want = model(x, bias).numpy()
    scope = gs.trace(model, quiet=True)
    assert [t.dtype for t in scope.model_graph.inputs] == ["int32", "bool", "float32"]
    (out,) = scope.outputs.names
    got = scope.run(out, [x, bias])[out]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[0, 0] - bias[0], model.embed.embeddings.numpy()[789], atol=1e-6)


def test_a_subclassed_tf_keras_model_first_called_with_a_tensor_by_keyword_is_refused_with_how_to_trace_it():
    """A tensor passed by keyword (`model(x, bias=b)`) is not passed by a trace of the model,
    which then ran without it: refused, naming it and the function to trace instead."""

    class Biased(tf_keras.Model):
        def __init__(self):
            super().__init__(name="biased")
            self.a = tf_keras.layers.Dense(2, name="a")

        def call(self, x, bias=None):
            return self.a(x) if bias is None else self.a(x) + bias

    model = Biased()
    model(np.ones((2, 3), np.float32), bias=np.ones((2, 2), np.float32))
    with pytest.raises(gs.UnsupportedModelError, match=r"called with tensors by keyword \(bias\).*lambda x, bias=\.\.\.: model\(x, bias=bias\)"):
        gs.trace(model, quiet=True)


def test_padded_nms_loops_inside_the_roi_generator_are_found_and_run():
    """Model Garden's shape of problem: NMS as `while` loops inside a layer, no NMS op."""
    model = zoo.padded_proposals()
    scope = gs.trace(model, quiet=True)
    assert not scope.find(op_type="NonMaxSuppression.*")
    roi = scope.layer("multilevel_roi_generator")
    loops = scope.ancestors(roi.output, op_type="While|StatelessWhile")
    assert {t.layer for t in loops} == {"multilevel_roi_generator"} and len({t.op for t in loops}) == 2
    (iou,) = [t for t in scope.ancestors(roi.output, "padded_nms", op_type="RealDiv") if t.context]
    assert iou.context.endswith(":body")
    x = zoo.sample_inputs(model, batch=2)[0]
    values = scope.run([iou, "corners", "scores", roi.output], x)
    for k in range(2):  # per image (map_fn), per iteration of the NMS loop: IoU of box i with all
        order = np.argsort(-values["scores/Reshape:0"][k], kind="stable")
        boxes = values["corners/concat:0"][k][order]
        per_iteration = values[iou.name][k]
        assert len(per_iteration) >= 1
        for i, got in enumerate(per_iteration):
            np.testing.assert_allclose(got, _iou(boxes[i], boxes), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(values[roi.output.name], model(x), rtol=1e-5, atol=1e-6)


def _iou(box, boxes):
    y1, x1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    y2, x2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + areas - inter + 1e-9)


def test_validate_and_extract_a_tf_keras_model(tmp_path):
    model = zoo.functional()
    scope = gs.trace(model, quiet=True)
    x = zoo.sample_inputs(model, batch=4)[0]
    report = scope.validate(x)
    assert report.ok, report
    assert report.checked + len(report.skipped) == scope.graph.number_of_nodes()  # each op: replayed or why not
    assert report.layers == len(model.layers) - 1  # every layer but the input, against tf_keras
    bundle = scope.extract(["dense/Tanh:0", "conv"], x, out=tmp_path / "run.zarr", batch_size=2, quiet=True)
    want = tf_keras.Model(model.input, [model.get_layer("dense").output, model.get_layer("conv").output])(x)
    np.testing.assert_allclose(np.asarray(bundle["dense/Tanh:0"]), want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bundle["conv/BiasAdd:0"]), want[1], rtol=1e-5, atol=1e-6)
    assert bundle.layer("dense").inputs.names == scope.layer("dense").inputs.names


def test_a_keras_3_model_never_imports_tf_keras():
    script = (
        "import sys, keras, numpy as np, graphscope as gs\n"
        "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name='d')])\n"
        "gs.trace(m, quiet=True).run('d/BiasAdd:0', np.ones((1, 3), 'float32'))\n"
        "assert 'tf_keras' not in sys.modules, 'tf_keras was imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


class Direct(tf_keras.layers.Layer):
    """Computes in a `__call__` of its own, as Model Garden's DetectionGenerator does."""

    def __call__(self, x, scale=2.0):
        return tf.nn.relu(x) * scale


def test_a_layer_computing_in_its_own_dunder_call_is_recorded_and_left_as_it_was():
    x_in = tf_keras.Input((3,), name="x")
    h = tf_keras.layers.Dense(3, name="pre")(x_in)
    model = tf_keras.Model(x_in, h, name="wrapped")
    direct = Direct(name="direct")
    scope = gs.trace(lambda x: direct(model(x)), [tf.TensorSpec((None, 3))], quiet=True)
    lay = scope.layer("direct")
    assert lay.type == "Direct" and lay.inputs.names == ["wrapped/pre/BiasAdd:0"]
    assert {op.type for op in lay.ops} >= {"Relu", "Mul"}
    assert type(direct) is Direct  # its class is its own again
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_allclose(scope.run(lay.output, x)[lay.output.name], direct(model(x)), rtol=1e-6)


def test_tf_keras_tensors_passed_by_keyword_are_layer_inputs():
    rng = np.random.default_rng(0)
    qi, vi = tf_keras.Input((4, 8), name="q"), tf_keras.Input((6, 8), name="v")
    q = tf_keras.layers.Dense(8, name="q_proj")(qi)
    v = tf_keras.layers.Dense(8, name="r")(inputs=tf_keras.layers.Dense(8, name="h")(vi))
    attended = tf_keras.layers.MultiHeadAttention(2, 4, name="mha")(query=q, value=v)
    model = tf_keras.Model([qi, vi], attended)
    x = [rng.normal(size=(2, 4, 8)).astype("float32"), rng.normal(size=(2, 6, 8)).astype("float32")]
    scope = gs.trace(model, quiet=True)
    assert scope.inputs == ["q", "v"]
    for name in ("r", "mha"):
        layer = scope.layer(name)
        node = model.get_layer(name).inbound_nodes[0]
        assert len(layer.inputs) == len(node.keras_inputs)
        values = scope.run(layer.inputs, x)
        want = tf_keras.Model(model.inputs, node.keras_inputs)(x)  # what tf_keras says the call reads
        for t, w in zip(layer.inputs, tf.nest.flatten(want)):
            np.testing.assert_allclose(values[t.name], w, rtol=1e-6, err_msg=name)
    assert scope.layer("mha").inputs.names == [scope.layer("q_proj").output.name, scope.layer("r").output.name]


def _shared_calls(k):
    """A Dense called three times and a layer whose one call makes two MatMuls, called twice."""

    class TwoMatMuls(k.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(3, 3), initializer=k.initializers.GlorotUniform(seed=1))

        def call(self, x):
            return tf.matmul(tf.matmul(x, self.w), self.w) + 1.0

    x = k.Input((3,), name="x")
    shared = k.layers.Dense(3, name="shared", kernel_initializer=k.initializers.GlorotUniform(seed=2),
                            bias_initializer=k.initializers.RandomNormal(stddev=0.3, seed=3))
    two = TwoMatMuls(name="two")
    h = shared(shared(shared(x)))
    return k.Model(x, [h, two(two(h))], name="m")


@pytest.mark.parametrize("build", [_shared_calls, zoo.models.shared_out_of_order], ids=["shared", "out_of_order"])
def test_a_shared_layers_later_calls_are_named_as_in_keras_3(build):
    """tf_keras opens a shared layer's name scope again for each call, so TensorFlow names its
    second call's ops `shared/BiasAdd_1`; Keras 3 opens `shared_3`, which reads `shared@2/BiasAdd`
    (issue 25, item 4). `MatMul_1` beside `MatMul` in one call stays."""
    computed = "MatMul|BiasAdd|AddV2|Tanh"
    model = build(tf_keras)
    scope = gs.trace(model, quiet=True)
    names = set(scope.find(op_type=computed).names)
    assert names == set(gs.trace(build(keras), quiet=True).find(op_type=computed).names)
    if build is _shared_calls:
        assert {"shared@2/BiasAdd:0", "shared@3/MatMul:0", "two@2/MatMul:0", "two@2/MatMul_1:0"} <= names
    x = zoo.sample_inputs(model)
    layers = [lay for lay in scope.layers if "/" not in lay.name and lay.type != "InputLayer"]
    values = scope.run([t for lay in layers for t in lay.outputs], x)
    for lay in layers:  # each call's output vs tf_keras' sub-model up to its node
        want = tf.nest.flatten(tf_keras.Model(model.inputs, _keras_call_output(model, lay))(x))
        assert len(want) == len(lay.outputs), lay.name
        for t, w in zip(lay.outputs, want):
            np.testing.assert_allclose(values[t.name], np.asarray(w), rtol=1e-5, atol=1e-5, err_msg=t.name)


def test_the_casts_tf_keras_makes_of_a_layers_inputs_are_the_layers_and_named_as_in_keras_3():
    """tf_keras casts a mixed-precision layer's inputs in its name scope but outside `call`:
    `d1/Cast:0` had no layer and was the layer's input. Now it is the layer's, named as in
    Keras 3 (`d1/autocast:0`), and the inputs are what the layer was passed. The oracle: numpy's
    cast and tf_keras' own output."""
    x_in = tf_keras.Input((5,), name="x")
    h = tf_keras.layers.Dense(4, activation="relu", dtype="mixed_float16", name="d1")(x_in)
    model = tf_keras.Model(x_in, tf_keras.layers.Softmax(dtype="float32", name="probs")(h))
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    scope = gs.trace(model, quiet=True)
    casts = {t.name: (t.layer, t.dtype) for t in scope.find("autocast")}
    assert casts == {"d1/autocast:0": ("d1", "float16"), "probs/autocast:0": ("probs", "float32")}
    assert scope.layer("d1").inputs.names == ["x:0"] and scope.layer("probs").inputs.names == ["d1/Relu:0"]
    got = scope.run([*casts, "probs/Softmax:0"], x)
    np.testing.assert_array_equal(got["d1/autocast:0"], x.astype(np.float16))
    hidden = np.asarray(tf_keras.Model(x_in, h)(x))
    np.testing.assert_array_equal(got["probs/autocast:0"], hidden.astype(np.float32))
    np.testing.assert_allclose(got["probs/Softmax:0"], model(x), rtol=1e-6)


def test_a_callers_cast_before_a_tf_keras_layer_is_not_its_autocast():
    """tf_keras makes its casts in the layer's name scope; a subclassed model's own
    `tf.cast(h, tf.float32)` before a float32 layer (made at the model's level, `sub/Cast`) was
    taken for the layer's autocast (`b/autocast:0`), and the layer's input was the float16 tensor
    before it. The oracle: the tensor tf_keras passed the layer (its `call` sees float32) and
    tf.GradientTape at it."""

    class Sub(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.a = tf_keras.layers.Dense(4, dtype="mixed_float16", name="a")
            self.b = tf_keras.layers.Dense(3, dtype="float32", name="b")

        def call(self, x):
            return self.b(tf.cast(self.a(x), tf.float32))

    model = Sub()
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    model(x)
    scope = gs.trace(model, quiet=True)
    (passed,) = scope.layer("b").inputs
    assert passed.dtype == "float32" and scope.find("autocast").names == ["a/autocast:0"]  # a's is Keras'
    np.testing.assert_array_equal(scope.run(passed, x)[passed.name], np.asarray(model.a(x)).astype(np.float32))
    with tf.GradientTape() as tape:
        h = tf.cast(model.a(x), tf.float32)
        tape.watch(h)
        total = tf.reduce_sum(model.b(h))
    got = scope.gradients(scope.outputs[0], [passed.name], x)[passed.name]
    np.testing.assert_allclose(got, tape.gradient(total, h).numpy(), rtol=1e-6)


def test_a_tf_keras_call_whose_training_has_no_default_is_traced_on_its_one_input():
    """`call(self, inputs, training)` (no default) was refused ('takes 2 inputs (inputs,
    training), but the input_signature gives 1'), though gs.trace passes `training` itself. The
    oracle: tf_keras' model called with training=False."""

    class TrainingNoDefault(tf_keras.Model):
        def __init__(self):
            super().__init__(name="training_no_default")
            self.dense = tf_keras.layers.Dense(2, name="dense")
            self.drop = tf_keras.layers.Dropout(0.5, name="drop")

        def call(self, inputs, training):
            return self.drop(self.dense(inputs), training=training)

    model = TrainingNoDefault()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    model(x, training=False)
    scope = gs.trace(model, quiet=True)
    (out,) = scope.outputs.names
    np.testing.assert_allclose(scope.run(out, x)[out], model(x, training=False).numpy(), rtol=1e-6)


def test_a_tf_keras_model_first_called_with_a_python_number_warns_that_it_is_traced_at_the_default():
    """tf_keras records a Python number a subclassed model was first called with as None, so the
    trace falls back to its build shapes and leaves `scale` at its default: it warns, and the
    function the warning gives traces the model as called. The oracle: the model called."""

    class Scaled(tf_keras.Model):
        def __init__(self):
            super().__init__(name="scaled")
            self.dense = tf_keras.layers.Dense(2, name="dense")

        def call(self, x, scale=2.0):
            return self.dense(x) * scale

    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    model = Scaled()
    want = model(x, 3.0).numpy()
    with pytest.warns(gs.GuessedInputsWarning, match=r"also takes scale.*lambda x: model\(x, scale=\.\.\.\)"):
        gs.trace(model, quiet=True)
    scope = gs.trace(lambda x: model(x, scale=3.0), [tf.TensorSpec((None, 3))], quiet=True)
    (out,) = scope.outputs.names
    np.testing.assert_allclose(scope.run(out, x)[out], want, rtol=1e-6)


def _saved_tkmodel(tmp_path, **save):
    """A tf_keras functional model with a shared layer, saved as a SavedModel; (path, model,
    the shared layer's two outputs)."""
    x_in = tf_keras.Input((3,), name="x")
    shared = tf_keras.layers.Dense(3, activation="tanh", name="shared")
    a = shared(tf_keras.layers.Dense(3, name="hidden")(x_in))
    b = shared(a)
    model = tf_keras.Model(x_in, tf_keras.layers.Dense(2, name="head")(b), name="tkmodel")
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    path = str(tmp_path / "saved")
    model.save(path, save_format="tf", **save)
    return path, model, (a, b)


def test_a_savedmodel_tf_keras_wrote_is_traced_as_its_tf_keras_model_with_its_layers(tmp_path):
    """Its serving function is the model's call (tf_keras' default signature), so by path the
    model tf_keras loads is traced: its layers, the shared one's two calls, each equal to
    tf_keras' own sub-model; `signature="serving_default"` traces the function itself, whose
    scopes (no `_<n>`) read as one layer."""
    path, model, (a, b) = _saved_tkmodel(tmp_path)
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    scope = gs.trace(path, quiet=True)
    assert [lay.name for lay in scope.layers] == ["x", "hidden", "shared", "shared@2", "head"]
    got = scope.run([scope.layer("shared").output, scope.layer("shared@2").output, scope.output(0)], x)
    want = tf_keras.Model(model.input, [a, b])(x)
    for t, w in zip([scope.layer("shared").output, scope.layer("shared@2").output], want):
        np.testing.assert_allclose(got[t.name], w.numpy(), atol=1e-6)
    np.testing.assert_allclose(got[scope.output(0).name], model(x).numpy(), atol=1e-6)

    raw = gs.trace(path, signature="serving_default", quiet=True)
    assert [lay.name for lay in raw.layers if lay.name != "x"] == ["tkmodel"]
    np.testing.assert_allclose(raw.run(raw.output(0), x)[raw.output(0).name], model(x).numpy(), atol=1e-6)


def test_a_savedmodel_tf_keras_wrote_with_a_serving_function_of_its_own_is_traced_at_that_function(tmp_path):
    """A `signatures=` serving function computes something else than the model's call (here a
    softmax after it): by path that function is traced, not the model."""
    holder = {}

    @tf.function(input_signature=[tf.TensorSpec((None, 3), name="x")])
    def serve(x):
        return {"probs": tf.nn.softmax(holder["model"](x, training=False))}

    x_in = tf_keras.Input((3,), name="x")
    model = tf_keras.Model(x_in, tf_keras.layers.Dense(2, name="head")(x_in), name="tkmodel")
    holder["model"] = model
    path = str(tmp_path / "served")
    model.save(path, save_format="tf", signatures={"serving_default": serve})
    scope = gs.trace(path, quiet=True)
    assert scope.model is None or not _tf.is_keras_layer(scope.model)
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    out = scope.output("probs").name
    np.testing.assert_allclose(scope.run(out, x)[out], tf.nn.softmax(model(x)).numpy(), atol=1e-6)


class _MakesLayers(tf_keras.Model):
    """A tf_keras model that makes layers in its `call`."""

    def __init__(self):
        super().__init__(name="makes")
        self.dense = tf_keras.layers.Dense(4, name="dense")

    def call(self, x):
        return tf_keras.layers.Activation("tanh", name="made_tanh")(tf_keras.layers.ReLU(name="made_relu")(self.dense(x)))


def test_layers_a_tf_keras_models_call_makes_while_tracing_are_recorded():
    model = _MakesLayers()
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    want = model(x).numpy()
    call = tf_keras.layers.Layer.__call__
    scope = gs.trace(model, quiet=True)
    assert tf_keras.layers.Layer.__call__ is call
    assert [lay.name for lay in scope.layers] == ["dense", "made_relu", "made_tanh"]
    assert scope.find(op_type="Relu|Tanh").names == ["made_relu/Relu:0", "made_tanh/Tanh:0"]
    kernel, bias = (w.numpy() for w in model.dense.weights)
    got = scope.run(["made_relu/Relu:0", "made_tanh/Tanh:0"], x)
    np.testing.assert_allclose(got["made_relu/Relu:0"], np.maximum(x @ kernel + bias, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["made_tanh/Tanh:0"], want, rtol=1e-6)
