"""trace: every kind of model in, a concrete function and the real call structure out."""

import re
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope import demo
from tests import models
from tests.conftest import assert_weights_unchanged, weights_snapshot


def _layer_state(model):
    return [(lay.name, type(lay).__name__, sorted(lay.__dict__), lay.get_config()) for lay in model._flatten_layers()]


def test_tracing_and_running_leave_the_model_untouched(zoo_model):
    _, model = zoo_model
    weights = weights_snapshot(model)
    state = _layer_state(model)
    inputs = models.sample_inputs(model)
    want = model(inputs if len(inputs) > 1 else inputs[0])
    scope = gs.trace(model)
    scope.run(scope.find(op_type="Relu|MatMul|BiasAdd|Softmax|Tanh")[:20] or scope.outputs, inputs)
    gs.trace(model, training=True).run(scope.outputs.names, inputs)
    assert_weights_unchanged(model, weights)
    assert _layer_state(model) == state
    assert not any("call" in lay.__dict__ for lay in model._flatten_layers())
    got = model(inputs if len(inputs) > 1 else inputs[0])
    for g, w in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_wrappers_are_removed_when_tracing_fails():
    class Flaky(keras.layers.Layer):
        fail = False

        def call(self, x):
            if self.fail:
                raise RuntimeError("boom")
            return x * 2.0

    flaky = Flaky(name="flaky")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="ok"), flaky])
    flaky.fail = True
    with pytest.raises(RuntimeError, match="boom"):  # the model's own error, untouched
        gs.trace(model)
    assert all("call" not in lay.__dict__ for lay in model._flatten_layers())
    flaky.fail = False
    assert gs.trace(model).layer("flaky").output.name == "flaky/mul:0"
    assert keras.layers.Layer.__call__ is _KERAS_CALL  # the hook for layers made while tracing too


_KERAS_CALL = keras.layers.Layer.__call__


class _MakesLayers(keras.Model):
    """Makes layers in its `call`, as quick custom code does: each trace makes new ones."""

    def __init__(self):
        super().__init__(name="makes")
        self.dense = keras.layers.Dense(4, name="dense")
        self.helpers = {"scale": _Scale(name="scale")}  # a layer Keras tracks in a dict

    def call(self, x):
        h = keras.layers.ReLU(name="made_relu")(self.dense(x))
        joined = keras.layers.Concatenate(name="made_concat")([h, self.helpers["scale"](x)])
        return keras.layers.Activation("tanh", name="made_tanh")(joined)


class _Scale(keras.layers.Layer):
    def call(self, x):
        return x * 3.0


def test_layers_a_models_call_makes_while_tracing_are_recorded_with_their_values():
    """A layer made and called inside `call` (`keras.layers.ReLU()(x)`) is recorded as the
    model's layer, with its ops and outputs, not left as ops of the model's own; nothing of the
    recording stays on Keras' classes or on the layers."""
    model = _MakesLayers()
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    want = model(x).numpy()
    weights = weights_snapshot(model)
    scope = gs.trace(model, quiet=True)
    assert keras.layers.Layer.__call__ is _KERAS_CALL
    assert not any("call" in lay.__dict__ for lay in model._flatten_layers())
    assert_weights_unchanged(model, weights)
    names = [lay.name for lay in scope.layers]
    assert names == ["dense", "scale", "made_relu", "made_concat", "made_tanh"]  # the ones it holds first
    assert scope.find(op_type="Relu|Tanh|ConcatV2").names == [
        "made_relu/Relu:0", "made_concat/concat:0", "made_tanh/Tanh:0"]
    assert all(scope.layer(name).ops for name in names)
    got = scope.run([scope.layer(n).output.name for n in ("dense", "made_relu", "scale", "made_concat", "made_tanh")], x)
    kernel, bias = (w.numpy() for w in model.dense.weights)
    relu = np.maximum(x @ kernel + bias, 0)  # numpy by hand
    np.testing.assert_allclose(got["made_relu/Relu:0"], relu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[scope.layer("made_concat").output.name], np.concatenate([relu, 3 * x], -1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["made_tanh/Tanh:0"], want, rtol=1e-6)
    edited = scope.run(scope.outputs.names, x, edits={"made_relu/Relu:0": lambda v: v * 0})
    np.testing.assert_allclose(edited[scope.outputs.names[0]], np.tanh(np.concatenate([0 * relu, 3 * x], -1)),
                               rtol=1e-5, atol=1e-6)


class _SizeBranch(keras.layers.Layer):
    """Branches in Python on its input's length (traceable only where it is known); its output
    shape is declared, so Keras builds a model around it without calling it."""

    def call(self, x):
        length = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]  # as keras-hub's DeepLabV3 does
        if length > 3:
            return x * 2.0
        return x

    def compute_output_shape(self, shape):
        return shape


def test_a_model_untraceable_at_its_shapes_is_refused_with_fixed_sizes_that_work():
    """Keras models, callables and tf.Modules alike: TensorFlow's refusal becomes
    UnsupportedModelError naming the shapes and the reason; the fixed sizes it advises trace,
    and the values equal the model's own."""
    seq = keras.Input((None, 3), name="seq")
    model = keras.Model(seq, _SizeBranch(name="branch")(seq), name="size_branch")
    module = tf.Module()
    module.__call__ = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec((None, None, 3))])
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    for traced, signature, shape in [(model, None, "its declared input shape"),
                                     (lambda v: model(v), [(None, None, 3)], "the input_signature's shape"),
                                     (module, None, "its own input_signature's shape")]:
        with pytest.raises(gs.UnsupportedModelError, match=rf"could not trace .* at {shape} .*\[\?,\?,3\]\): "
                           r"OperatorNotAllowedInGraphError: .*\(at test_trace.py:\d+ in call\); .*"
                           r"input_signature=\[tf.TensorSpec\(\(None, 64, 3\)\)\]") as caught:
            gs.trace(traced, signature, quiet=True)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    scope = gs.trace(model, [tf.TensorSpec((None, 4, 3))], quiet=True)  # the way out: the size known
    np.testing.assert_allclose(scope.run(scope.outputs, x)[scope.outputs[0].name], model(x), rtol=1e-6)
    np.testing.assert_allclose(model(x), x * 2.0)  # the branch taken, by hand


def test_unbuilt_model_is_refused_with_how_to_build():
    with pytest.raises(gs.UnsupportedModelError, match=r"not built.*model.build") as e:
        gs.trace(models.unbuilt_subclassed())
    assert isinstance(e.value, TypeError)



@pytest.mark.parametrize("which", ["keras", "tf_keras"])
def test_a_ragged_input_is_refused_with_the_function_that_builds_it(which):
    """Traced as a dense tensor, a ragged input's model averages over the padding too: what
    `gs.trace` gives (the function) computes what Keras does on the ragged rows."""
    k = keras if which == "keras" else pytest.importorskip("tf_keras")
    k.utils.set_random_seed(0)
    ids = k.Input((None,), ragged=True, dtype="int64", name="ids")
    embedded = k.layers.Embedding(10, 3, name="emb")(ids)
    mean = keras.ops.mean(embedded, axis=1) if which == "keras" else tf.reduce_mean(embedded, axis=1)
    model = k.Model(ids, k.layers.Dense(2, name="d")(mean))
    with pytest.raises(gs.UnsupportedModelError, match=r"input 'ids' is ragged") as e:
        gs.trace(model, quiet=True)
    way_out = re.search(r"gs\.trace\((lambda values, row_lengths: .*)\)$", str(e.value))[1]
    specs = "[tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.int64)]"
    assert way_out == f"lambda values, row_lengths: model(tf.RaggedTensor.from_row_lengths(values, row_lengths)), {specs}"
    given = {"model": model, "tf": tf}
    scope = gs.trace(eval(way_out.rpartition("), [")[0] + ")", given), eval(specs, given), quiet=True)
    rows = tf.ragged.constant([[1, 2, 3], [4]], dtype=tf.int64)
    (got,) = scope.run(scope.outputs, [rows.values.numpy(), rows.row_lengths().numpy()]).values()
    np.testing.assert_allclose(got, model(rows), rtol=1e-6)



@pytest.mark.parametrize("which", ["keras", "tf_keras"])
def test_a_sparse_input_warns_that_it_is_traced_dense_with_the_function_that_traces_it_sparse(which):
    """A sparse input is traced dense: right for the dense array, but a Hashing layer leaves a
    SparseTensor's missing entries out (Keras on it: [[1,0,0],[0,3,0],[0,0,0]]; on the dense
    array: every zero hashed to 2). It warns, and the function it gives computes what Keras
    computes on the SparseTensor; a dense input does not warn."""
    k = keras if which == "keras" else pytest.importorskip("tf_keras")
    ids = k.Input((3,), sparse=True, dtype="int64", name="ids")
    model = k.Model(ids, k.layers.Hashing(num_bins=7, name="hash")(ids))
    sparse = tf.SparseTensor([[0, 0], [1, 1]], tf.constant([5, 9], tf.int64), [3, 3])
    with pytest.warns(gs.GuessedInputsWarning, match=r"input 'ids' is sparse, and gs.trace traces it dense") as w:
        dense = gs.trace(model, quiet=True)
    (got,) = dense.run(dense.outputs, sparse).values()  # the dense array's value, as the warning says
    np.testing.assert_array_equal(got, model(tf.sparse.to_dense(sparse)))
    way_out = re.search(r"gs\.trace\((lambda indices, values, dense_shape: .*)\)$", str(w[0].message))[1]
    function, _, specs = way_out.rpartition("), [")
    given = {"model": model, "tf": tf}
    scope = gs.trace(eval(function + ")", given), eval("[" + specs, given), quiet=True)
    got = scope.run(scope.outputs, [sparse.indices.numpy(), sparse.values.numpy(), sparse.dense_shape.numpy()])
    want = model(sparse)
    np.testing.assert_array_equal(tf.sparse.to_dense(tf.SparseTensor(*got.values())), tf.sparse.to_dense(want))
    plain = k.Input((3,), dtype="int64", name="plain")
    with warnings.catch_warnings():
        warnings.simplefilter("error", gs.GuessedInputsWarning)
        gs.trace(k.Model(plain, k.layers.Hashing(num_bins=7)(plain)), quiet=True)


@pytest.mark.parametrize("which", ["keras", "tf_keras"])
def test_a_ragged_input_is_refused_with_an_input_signature_too(which):
    """A dense input_signature for a functional model's ragged input traced it dense all the
    same: the mean over the rows [4] and [1, 3] read 2 and 2 (Keras: 4 and 2)."""
    k = keras if which == "keras" else pytest.importorskip("tf_keras")
    values = k.Input((None,), ragged=True, dtype="float32", name="values")
    mean = keras.ops.mean(values, axis=1) if which == "keras" else k.layers.Lambda(
        lambda v: tf.reduce_mean(v, axis=1))(values)
    model = k.Model(values, mean)
    np.testing.assert_array_equal(model(tf.ragged.constant([[4.0], [1.0, 3.0]])), [4.0, 2.0])
    with pytest.raises(gs.UnsupportedModelError, match=r"input 'values' is ragged"):
        gs.trace(model, [tf.TensorSpec((None, None), tf.float32)], quiet=True)


def test_a_tf_keras_model_first_called_on_a_ragged_tensor_is_refused():
    """tf_keras records the RaggedTensorSpec a subclassed model was first called with; it was
    left for the shape its build kept, (None, None), and traced dense: the mean over the rows [4]
    and [1, 3] read 2 and 2 (Keras: 4 and 2)."""
    tf_keras = pytest.importorskip("tf_keras")

    class Mean(tf_keras.Model):
        def call(self, v):
            return tf.reduce_mean(v, axis=1)

    model = Mean(name="mean")
    np.testing.assert_array_equal(model(tf.ragged.constant([[4.0], [1.0, 3.0]])), [4.0, 2.0])
    with pytest.raises(gs.UnsupportedModelError, match=r"model 'mean': its input 'input_0' is ragged") as e:
        gs.trace(model, quiet=True)
    assert "[tf.TensorSpec((None,), tf.float32), tf.TensorSpec((None,), tf.int64)]" in str(e.value)



def test_a_scalar_a_keras_3_model_was_built_with_stays_a_scalar():
    """Keras 3 records the shape `()` of a scalar in the dict a subclassed model was first
    called with: it is traced as a scalar, not as a vector of any length, and fed as one."""

    class Scaled(keras.Model):
        def __init__(self):
            super().__init__(name="scaled")
            self.dense = keras.layers.Dense(2, name="dense")

        def call(self, inputs):
            return self.dense(inputs["x"]) * inputs["scale"]

    model = Scaled()
    data = {"x": np.ones((3, 4), "float32"), "scale": np.float32(2.0)}
    want = model(data).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GuessedInputsWarning)
        scope = gs.trace(model, quiet=True)
    assert scope.tensor("scale").shape == ()
    (got,) = scope.run(scope.outputs, data).values()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _two_input_detector(k):
    """A subclassed model never called, taking images and their shapes as the Model Garden's
    Mask R-CNN does (`gs.trace(model, [images_spec, image_shape_spec])`); its layer `scaled`
    builds a sublayer in `build`, as keras-hub's layers do."""

    class Scaled(k.layers.Layer):
        def build(self, shape):
            self.inner = k.layers.Dense(shape[-1], name="inner", kernel_initializer=k.initializers.GlorotUniform(seed=3))
            self.inner.build(shape)
            self.offsets = np.arange(shape[-1], dtype=np.float32)

        def call(self, x):
            return self.inner(x) + self.offsets

    class Detector(k.Model):
        def __init__(self):
            super().__init__(name="detector")
            self.conv = k.layers.Conv2D(4, 3, name="conv", kernel_initializer=k.initializers.GlorotUniform(seed=1))
            self.pool = k.layers.GlobalAveragePooling2D(name="pool")
            self.scaled = Scaled(name="scaled")
            self.head = k.layers.Dense(2, name="head", kernel_initializer=k.initializers.GlorotUniform(seed=2))

        def call(self, images, image_shape, training=None):
            h = self.scaled(self.pool(self.conv(images)))
            return self.head(h) * tf.cast(image_shape[:, :1], h.dtype)

    return Detector()


def _state(model):
    return [(lay.name, lay.built, sorted(lay.__dict__), [tuple(w.shape) for w in lay.weights])
            for lay in model._flatten_layers()]


@pytest.mark.parametrize("which", ["keras", "tf_keras"])
def test_an_unbuilt_model_with_a_signature_is_built_by_tracing_it(which):
    """Tracing with a signature builds the model as calling it once would, and changes nothing else."""
    k = keras if which == "keras" else pytest.importorskip("tf_keras")
    model, twin = _two_input_detector(k), _two_input_detector(k)
    signature = [tf.TensorSpec((None, 8, 8, 3), tf.float32), tf.TensorSpec((None, 2), tf.int32)]
    builds = {id(lay): lay.__dict__.get("build") for lay in model._flatten_layers()}
    scope = gs.trace(model, signature, quiet=True)
    assert model.built and scope.inputs == ["input_0", "input_1"]
    assert {id(lay): lay.__dict__.get("build") for lay in model._flatten_layers() if id(lay) in builds} == builds
    assert scope.find(op_type="BiasAdd").names == ["conv/BiasAdd:0", "scaled/inner/BiasAdd:0", "head/BiasAdd:0"]
    images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    shapes = np.array([[8, 8], [4, 4]], np.int32)
    twin(images, shapes)  # built by a call on data, the usual way
    assert _state(model) == _state(twin)
    for mine, theirs in zip(model.weights, twin.weights):
        np.testing.assert_array_equal(mine, theirs)
    got = scope.run(["scaled/inner/BiasAdd:0", *scope.outputs.names], (images, shapes))
    np.testing.assert_allclose(got[scope.outputs.names[0]], model(images, shapes), rtol=1e-5)
    pooled = model.pool(model.conv(images))
    np.testing.assert_allclose(got["scaled/inner/BiasAdd:0"], model.scaled.inner(pooled), rtol=1e-5)


def test_a_tensor_an_unbuilt_layer_keeps_from_build_is_made_eagerly():
    """keras-hub ViT keeps `position_ids` from `build`: built inside the trace's graph, a later call
    could not use it. (Keras 3 itself builds a subclassed model's layers in a scratch graph, even
    when the model is called on data: this model only works once built this way.)"""

    class Positions(keras.layers.Layer):
        def build(self, shape):
            self.ids = keras.ops.arange(shape[-1], dtype="float32")
            self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale + self.ids

    class Model(keras.Model):
        def __init__(self):
            super().__init__(name="model")
            self.positions = Positions(name="positions")

        def call(self, x):
            return self.positions(x)

    model = Model()
    scope = gs.trace(model, [tf.TensorSpec((None, 4))], quiet=True)
    assert isinstance(model.positions.ids, type(tf.constant(0.0)))
    data = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(scope.run(scope.outputs.names, data)[scope.outputs.names[0]], data + np.arange(4), rtol=1e-6)
    np.testing.assert_allclose(model(data), data + np.arange(4), rtol=1e-6)  # the model still runs eagerly


def test_unbuilt_model_with_signature_names_its_inputs():
    model = models.subclassed()
    scope = gs.trace(model, [tf.TensorSpec((None, 4), tf.float32, name="features")])
    assert scope.inputs == ["features"]
    assert gs.trace(model, [(None, 4)]).inputs == ["input_0"]


def test_tf_function_module_and_concrete_function():
    w = tf.Variable([[1.0], [2.0]])

    @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32, name="xy")])
    def f(x):
        return tf.nn.relu(tf.matmul(x, w) - 1.0)

    class Mod(tf.Module):
        def __init__(self):
            super().__init__(name="mod")
            self.w = w

        def __call__(self, x):
            return tf.matmul(x, self.w) * 3.0

    x = np.array([[1.0, 1.0], [0.0, 0.2]], np.float32)
    for scope in (gs.trace(f), gs.trace(f.get_concrete_function())):
        assert scope.inputs == ["xy"]
        np.testing.assert_allclose(scope.run("Relu", x)["Relu"], f(x))
    mod = gs.trace(Mod(), [tf.TensorSpec((None, 2), tf.float32)])
    assert mod.name == "mod" and mod.inputs == ["x"]  # __call__'s argument
    np.testing.assert_allclose(mod.run("mul:0", x)["mul:0"], Mod()(x))
    with pytest.raises(gs.UnsupportedModelError, match="input_signature"):
        gs.trace(tf.function(lambda x: x * 2))


def test_inputs_are_named_as_the_model_or_function_names_them():
    x = np.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]], np.float32)
    sequential = keras.Sequential([keras.Input((3,), name="pixels"), keras.layers.Dense(2, name="d")])
    functional = keras.Model(inp := keras.Input((3,), name="pixels"), keras.layers.Dense(2, name="d")(inp))
    for model, signature in ((sequential, None), (functional, [(None, 3)])):
        scope = gs.trace(model, signature)
        assert scope.inputs == ["pixels"]
        got = scope.run(scope.outputs, {"pixels": x})
        np.testing.assert_allclose(got[scope.outputs[0].name], model(x), rtol=1e-6)

    @tf.function
    def scaled(image, scale):
        return image * scale + 1.0

    def shifted(image, shift):
        return tf.nn.relu(image - shift)

    scale = np.float32(-3.0)
    for fn, other, signature in (
        (scaled, "scale", [tf.TensorSpec((None, 3)), tf.TensorSpec(())]),
        (shifted, "shift", [(None, 3), ()]),
    ):
        scope = gs.trace(fn, signature)
        assert scope.inputs == ["image", other]
        want = fn(image=tf.constant(x), **{other: tf.constant(scale)})  # the function, by keyword
        (out,) = scope.outputs.names
        np.testing.assert_allclose(scope.run(out, {other: scale, "image": x})[out], want, rtol=1e-6)
        np.testing.assert_allclose(scope.run(out, [x, scale])[out], want, rtol=1e-6)


def test_saved_signature_takes_its_inputs_in_declared_order(tmp_path):
    declared = ["x", "bias", "alpha", "zeta", "b2", "m"]

    class Affine(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32, name=n) for n in declared])
        def f(self, x, bias, alpha, zeta, b2, m):
            return {"y": (x * 2.0 - bias) * alpha + zeta * 3.0 - b2 / (m * m + 1.0)}

    module = Affine()
    tf.saved_model.save(module, str(tmp_path / "affine"), signatures={"serving_default": module.f})
    signature = tf.saved_model.load(str(tmp_path / "affine")).signatures["serving_default"]
    # TensorFlow's flat inputs are sorted by keyword: what the declared order must undo
    assert [t.name for t in signature.inputs] == [f"{n}:0" for n in sorted(declared)]
    rng = np.random.default_rng(0)
    arrays = {n: rng.normal(size=(2, 3)).astype(np.float32) for n in declared}
    want = signature(**{n: tf.constant(a) for n, a in arrays.items()})["y"]  # by keyword: no order to get wrong
    for scope in (gs.trace(tmp_path / "affine"), gs.trace(signature)):
        assert scope.inputs == declared
        np.testing.assert_allclose(scope.run(["y"], [arrays[n] for n in declared])["y"], want, rtol=1e-6)
        np.testing.assert_allclose(scope.run(["y"], arrays)["y"], want, rtol=1e-6)
        assert scope.executor(["y"]).inputs == declared


def test_keras_file_with_custom_layer(tmp_path):
    model = demo.proposal_model()
    path = tmp_path / "demo.keras"
    model.save(path)
    scope = gs.trace(path)  # a path object; the custom class is registered by graphscope.demo
    images = demo.synthetic_images()
    nms = scope.find(op_type="NonMaxSuppressionV3")
    assert len(nms) == 2 and scope.layer("ROI").keras_layer.__class__ is demo.ProposalLayer
    want = gs.trace(model).run(nms.names, images)
    got = scope.run(nms.names, images)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_h5_file(tmp_path):
    model = models.functional()
    path = tmp_path / "cnn.h5"
    model.save(path)
    scope = gs.trace(str(path))
    x = models.sample_inputs(model)[0]
    np.testing.assert_allclose(scope.run("dense/Tanh:0", x)["dense/Tanh:0"],
                               keras.Model(model.input, model.get_layer("dense").output)(x), rtol=1e-5)


def _tf_keras_rnn(tf_keras):
    """A tf_keras model Keras 3 cannot load from a file: its GRU and LSTM configs hold
    `time_major`, an argument Keras 3's layers do not take."""
    layers = tf_keras.layers
    x = tf_keras.Input((5, 3), name="x")
    seq = layers.GRU(4, return_sequences=True, name="gru")(x)
    return tf_keras.Model(x, layers.Dense(2, name="head")(layers.LSTM(3, name="lstm")(seq)))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_file_saved_by_tf_keras_is_loaded_by_tf_keras(tmp_path, suffix):
    """Keras 3 refuses both: the `.keras` file as an unknown class 'Functional', the `.h5` on
    the GRU's `time_major`."""
    tf_keras = pytest.importorskip("tf_keras")
    model = _tf_keras_rnn(tf_keras)
    path = tmp_path / f"rnn{suffix}"
    model.save(path)
    scope = gs.trace(path, quiet=True)
    gru = scope.layer("gru")
    assert isinstance(gru.keras_layer, tf_keras.layers.GRU)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    got = scope.run([gru.output, *scope.outputs], x)
    np.testing.assert_allclose(got[gru.output.name], tf_keras.Model(model.input, model.get_layer("gru").output)(x),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[scope.outputs[0].name], model(x), rtol=1e-5, atol=1e-6)


def test_a_tf_keras_h5_file_holding_a_lambda_is_refused_in_safe_mode(tmp_path):
    """tf_keras itself loads a legacy `.h5` file's lambda whatever its `safe_mode` says."""
    tf_keras = pytest.importorskip("tf_keras")
    x = tf_keras.Input((3,), name="x")
    model = tf_keras.Model(x, tf_keras.layers.Lambda(lambda t: t * 2.0, name="double")(x))
    path = tmp_path / "lambda.h5"
    model.save(path)
    with pytest.raises(gs.ModelLoadError, match=r"safe mode.*safe_mode=False"):
        gs.trace(path)
    scope = gs.trace(path, safe_mode=False, quiet=True)
    assert isinstance(scope.layer("double").keras_layer, tf_keras.layers.Lambda)
    np.testing.assert_array_equal(scope.run(scope.outputs, [[1.0, 2.0, 3.0]])[scope.outputs[0].name], [[2.0, 4.0, 6.0]])


def test_a_tf_keras_file_with_an_unregistered_custom_layer_names_it_and_tf_keras_registry(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    x = tf_keras.Input((3,), name="x")
    path = tmp_path / "custom.keras"
    # a class of the user's script (tf_keras saves no module for it)
    doubled = type("Doubled", (tf_keras.layers.Layer,), {"call": lambda self, v: v * 2.0, "__module__": "__main__"})
    tf_keras.Model(x, doubled(name="doubled")(tf_keras.layers.Dense(2, name="d")(x))).save(path)
    with pytest.raises(gs.ModelLoadError, match=r"custom class 'Doubled'.*@tf_keras\.saving\.register_keras_serializable"):
        gs.trace(path)


def test_a_file_saved_by_tf_keras_without_tf_keras_installed_says_to_install_it(tmp_path, monkeypatch):
    tf_keras = pytest.importorskip("tf_keras")
    path = tmp_path / "rnn.keras"
    _tf_keras_rnn(tf_keras).save(path)
    monkeypatch.setitem(sys.modules, "tf_keras", None)  # `import tf_keras` raises ImportError
    with pytest.raises(gs.ModelLoadError, match=r"saved by Keras 2 \(tf_keras 2\.[\d.]+\).*tf-graphscope\[keras2\]"):
        gs.trace(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_files_keep_the_node_order_of_shared_calls(tmp_path, suffix):
    """Keras rebuilds a loaded model's nodes from its config, in the order the code made them."""
    path = tmp_path / f"reordered{suffix}"
    models.shared_out_of_order().save(path)
    scope = gs.trace(path, quiet=True)
    assert scope.layer("conv1").inputs.names == ["x:0"]
    assert scope.layer("conv1@2").inputs.names == ["conv0/BiasAdd:0"]
    assert scope.layer("block@2").inputs.names == ["conv2/BiasAdd:0"]


def test_saved_model_without_source(tmp_path):
    model = models.with_tf_function()
    path = tmp_path / "exported"
    model.export(str(path), verbose=False)
    scope = gs.trace(str(path))
    assert scope._traced.source == "saved_model"
    (softplus,) = scope.find(op_type="Softplus")
    assert softplus.function  # inside the serving function's nested calls
    x = models.sample_inputs(model)[0]
    values = scope.run([softplus, *scope.outputs], x)
    np.testing.assert_allclose(values[scope.outputs[0].name], model(x), rtol=1e-5)
    pre = keras.Model(model.input, model.get_layer("pre").output)(x)
    np.testing.assert_allclose(values[softplus.name], tf.nn.softplus(pre), rtol=1e-5)


def test_training_graph_is_a_different_trace():
    model = models.sequential()
    assert not gs.trace(model).find(op_type=r"StatelessRandom\w+")
    assert gs.trace(model, training=True).find(r"dropout/", op_type=r"\w*Random\w*")


def test_saved_module_without_signature_is_traced_through_call(tmp_path):
    class Scale(tf.Module):
        def __init__(self):
            super().__init__(name="scale")
            self.w = tf.Variable([2.0, -1.0])

        @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32, name="v")])
        def __call__(self, x):
            return tf.nn.relu(x * self.w)

    tf.saved_model.save(Scale(), str(tmp_path / "scale"), signatures={})
    scope = gs.trace(tmp_path / "scale")
    assert scope.inputs == ["v"]
    x = np.array([[1.0, 1.0], [-1.0, 3.0]], np.float32)
    (relu,) = scope.find(op_type="Relu")
    np.testing.assert_allclose(scope.run(relu, x)[relu.name], [[2.0, 0.0], [0.0, 0.0]])


def test_saved_model_with_nothing_to_call(tmp_path):
    tf.saved_model.save(tf.Module(), str(tmp_path / "empty"))
    with pytest.raises(gs.UnsupportedModelError, match="no serving signature and no __call__"):
        gs.trace(tmp_path / "empty")


def test_loaded_saved_model_object_and_plain_module():
    model = models.functional()
    x = models.sample_inputs(model)[0]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        model.export(d, verbose=False)
        loaded = tf.saved_model.load(d)
        scope = gs.trace(loaded)
        np.testing.assert_allclose(scope.run(scope.outputs, x)[scope.outputs[0].name], model(x), rtol=1e-5)
    with pytest.raises(gs.UnsupportedModelError, match="no __call__"):
        gs.trace(tf.Module())


_EXPORT = '''
import sys
import keras, numpy as np, tensorflow as tf

class PerImageNMS(keras.layers.Layer):  # defined only in this script: not importable elsewhere
    def call(self, inputs):
        boxes, scores = inputs
        def one(args):
            b, s = args
            keep = tf.image.non_max_suppression(b, s, 5, 0.5, score_threshold=0.3, name="nms")
            return tf.pad(tf.gather(s, keep), [[0, 5 - tf.shape(keep)[0]]])
        return tf.map_fn(one, (boxes, scores), fn_output_signature=tf.TensorSpec((5,), tf.float32))

boxes = keras.Input((10, 4), name="boxes")
scores = keras.Input((10,), name="scores")
hidden = keras.layers.Dense(10, name="rescore", kernel_initializer=keras.initializers.GlorotUniform(seed=1))(scores)
out = PerImageNMS(name="proposals")([boxes, keras.layers.Activation("sigmoid", name="squash")(hidden)])
keras.Model([boxes, scores], out, name="detector").export(sys.argv[1], verbose=False)
'''

_CHECK = '''
import sys
import numpy as np, tensorflow as tf
import graphscope as gs

scope = gs.trace(sys.argv[1])
assert "PerImageNMS" not in sys.modules.get("__main__").__dict__
(nms,) = scope.find(op_type=r"NonMaxSuppressionV\\d")
assert nms.name == "proposals/map/while/nms/NonMaxSuppressionV3:0", nms.name
assert nms.layer == "proposals" and scope.layer("proposals").source == "name scope"
assert scope.op("rescore/BiasAdd").layer == "rescore"
assert not [n for n in scope.graph if n.startswith("StatefulPartitionedCall/") and "/" in n[24:]]
rng = np.random.default_rng(0)
corners = rng.uniform(0, 0.6, (3, 10, 2)).astype(np.float32)
boxes = np.concatenate([corners, corners + 0.3], -1)
scores = rng.normal(size=(3, 10)).astype(np.float32)
squash = scope.layer("squash").output
got = scope.run([nms, squash, *scope.outputs], {"boxes": boxes, "scores": scores})
restored = tf.saved_model.load(sys.argv[1])
loaded = restored.serve([boxes, scores]).numpy()
np.testing.assert_allclose(got[scope.outputs.names[0]], loaded, rtol=1e-6)
for b, s, kept in zip(boxes, got[squash.name], got[nms.name]):
    np.testing.assert_array_equal(kept, tf.image.non_max_suppression(b, s, 5, 0.5, score_threshold=0.3).numpy())
print("ok", [len(k) for k in got[nms.name]] if isinstance(got[nms.name], list) else got[nms.name].shape)
'''


def test_saved_model_of_an_unimportable_class_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    (tmp_path / "export.py").write_text(_EXPORT)
    (tmp_path / "check.py").write_text(_CHECK)
    path = str(tmp_path / "detector")
    for script, args in (("export.py", [path]), ("check.py", [path])):
        run = subprocess.run([sys.executable, str(tmp_path / script), *args], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok")


def test_keras_file_with_a_registered_custom_layer_runs_inside_its_loop(tmp_path):
    from graphscope import demo

    model = demo.proposal_model(variant="map_fn")
    path = tmp_path / "demo.keras"
    model.save(path)
    scope = gs.trace(path)
    images = demo.synthetic_images()
    name = "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"
    fresh = gs.trace(model).run(name, images)[name]
    np.testing.assert_array_equal(scope.run(name, images)[name], fresh)
    assert scope.layer("ROI").type == "ProposalLayer"


class _Detector(keras.Model):
    """Returns a dict, with a nested dict inside, as detectors do."""

    def __init__(self):
        super().__init__(name="detector")
        self.body = keras.layers.Dense(4, name="body")

    def call(self, x):
        h = self.body(x)
        return {"detection_boxes": h * 2.0, "detection_scores": tf.nn.sigmoid(h),
                "features": {"p3": h + 1.0, "p4": h - 1.0}}


def test_outputs_are_named_by_their_key_in_the_returned_structure():
    model = _Detector()
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    want = model(x)
    scope = gs.trace(model, quiet=True)
    assert scope.output_keys == ["detection_boxes", "detection_scores", "features/p3", "features/p4"]
    for key in scope.output_keys:
        got = scope.run([scope.output(key)], x)[scope.output(key).name]
        path = key.split("/")
        np.testing.assert_allclose(got, want[path[0]] if len(path) == 1 else want[path[0]][path[1]], rtol=1e-6)
    values = scope.run(["detection_boxes", "features/p3"], x)  # keys are names too
    assert list(values) == ["detection_boxes", "features/p3"]
    np.testing.assert_allclose(values["features/p3"], want["features"]["p3"], rtol=1e-6)
    assert scope.output(1) == scope.output("detection_scores") == scope.outputs[1]
    assert scope.outputs.keys == tuple(scope.output_keys) and scope.outputs == gs.Selection(scope.outputs)
    assert repr(scope.outputs) == (f"<Outputs 4: detection_boxes={scope.outputs[0].name}, "
                                   f"detection_scores={scope.outputs[1].name}, features/p3={scope.outputs[2].name}, ...>")
    lines = str(scope.outputs).splitlines()  # the table shows each output's key beside its tensor
    assert lines[0] == "4 outputs" and lines[2].split()[:2] == ["key", "name"]
    assert [line.split()[:2] for line in lines[4:8]] == [[k, t.name] for k, t in zip(scope.output_keys, scope.outputs)]
    with pytest.raises(gs.AmbiguousMatchError, match="'features' holds 2 outputs; name one: features/p3, features/p4"):
        scope.output("features")
    with pytest.raises(gs.TensorNotFoundError, match="no output 'detection_box'.*Did you mean 'detection_boxes'"):
        scope.output("detection_box")
    with pytest.raises(gs.TensorNotFoundError, match="no output at position 9"):
        scope.output(9)


def test_lists_single_tensors_and_saved_models_have_keys_too(tmp_path):
    scope = gs.trace(models.multi_input(), quiet=True)
    assert scope.output_keys == ["0", "1"] and scope.output("1") == scope.outputs[1]
    assert gs.trace(models.functional(), quiet=True).output_keys == [""]
    path = tmp_path / "saved"
    tf.saved_model.save(models.multi_input(), str(path))
    saved = gs.trace(path, quiet=True)
    assert saved.output_keys == ["output_0", "output_1"]


# ---- training=True for callables and modules: the Keras layers they call take the mode


def _keras_call_context():
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("current_call_ctx")


def test_a_callable_traced_with_training_drops_what_its_dropout_drops():
    drop = keras.layers.Dropout(0.99, seed=1)
    spec = [tf.TensorSpec((None, 1000), tf.float32)]
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(4, 1000)).astype(np.float32)
    trained = gs.trace(lambda v: drop(v) * 1.0, spec, training=True, quiet=True)
    y = trained.run(trained.outputs, x)[trained.outputs[0].name]
    zeros = np.mean(y == 0)
    assert 0.98 < zeros < 1.0, zeros  # 4 000 draws of p=0.99: 0.99 +- 0.0016
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] * 100.0, rtol=1e-4)  # survivors scaled by 1/(1-0.99)
    assert _keras_call_context() is None  # Keras' per-thread call context is put back
    inference = gs.trace(lambda v: drop(v) * 1.0, spec, quiet=True)
    np.testing.assert_array_equal(inference.run(inference.outputs, x)[inference.outputs[0].name], drop(x) * 1.0)


def test_a_callable_traced_with_training_normalises_with_the_batchs_statistics():
    bn = keras.layers.BatchNormalization(name="bn")
    bn.build((None, 3))
    bn.set_weights([np.array([1.0, 2.0, 0.5], np.float32), np.array([0.1, -0.2, 0.3], np.float32),
                    np.array([5.0, 5.0, 5.0], np.float32), np.array([9.0, 9.0, 9.0], np.float32)])
    before = [np.array(w) for w in bn.weights]
    scope = gs.trace(lambda v: bn(v), [tf.TensorSpec((None, 3), tf.float32)], training=True, quiet=True)
    x = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    got = scope.run(scope.outputs, x)[scope.outputs[0].name]
    clone = keras.layers.BatchNormalization.from_config(bn.get_config())  # the eager oracle, on a copy
    clone.build((None, 3))
    clone.set_weights(bn.get_weights())
    np.testing.assert_allclose(got, clone(x, training=True), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, clone(x, training=False), atol=1e-2)  # and not the moving statistics
    for b, w in zip(before, bn.weights):
        np.testing.assert_array_equal(b, w)  # the moving statistics did not move


def test_a_tf_module_and_a_tf_keras_callable_traced_with_training_drop():
    tf_keras = pytest.importorskip("tf_keras")

    class Noisy(tf.Module):
        def __init__(self):
            super().__init__()
            self.drop = keras.layers.Dropout(0.99, seed=2)

        def __call__(self, v):
            return self.drop(v) + 0.0

    legacy = tf_keras.layers.Dropout(0.99, seed=3)
    spec = [tf.TensorSpec((None, 1000), tf.float32)]
    x = np.ones((4, 1000), np.float32)
    for traced in (gs.trace(Noisy(), spec, training=True, quiet=True),
                   gs.trace(lambda v: legacy(v) + 0.0, spec, training=True, quiet=True)):
        y = traced.run(traced.outputs, x)[traced.outputs[0].name]
        assert 0.98 < np.mean(y == 0) < 1.0
    from tf_keras.src.engine import base_layer_utils

    assert not base_layer_utils.call_context().in_call and base_layer_utils.call_context().training is None


def test_training_is_refused_where_nothing_takes_it(tmp_path):
    spec = [tf.TensorSpec((None, 3), tf.float32)]
    with pytest.raises(gs.OptionError, match=r"training=True changes nothing in .*no Keras layer"):
        gs.trace(lambda v: v * 2.0, spec, training=True, quiet=True)
    concrete = tf.function(lambda v: v * 2.0).get_concrete_function(spec[0])
    with pytest.raises(gs.OptionError, match=r"already traced.*pass the tf.function or the model"):
        gs.trace(concrete, training=True, quiet=True)
    module = tf.Module()
    module.f = tf.function(lambda v: v * 2.0, input_signature=spec)
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures=module.f)
    with pytest.raises(gs.OptionError, match=r"its signature 'serving_default' was traced when it was saved"):
        gs.trace(str(tmp_path / "sm"), training=True, quiet=True)
    assert _keras_call_context() is None


def test_a_model_with_its_own_dunder_call_is_recorded_at_its_root():
    """keras-hub's PipelineModel defines a `__call__` of its own (then calls Keras'): the model's
    root call is recorded there, so names, layers and parameters are as for a plain model."""

    class Task(keras.Model):
        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **kwargs)

    x = keras.Input((4,), name="x")
    backbone = keras.Model(x, keras.layers.Dense(3, name="d1")(x), name="backbone")
    images = keras.Input((4,), name="images")
    task = Task(images, keras.layers.Dense(2, name="head")(backbone(images)), name="task")
    weights = weights_snapshot(task)
    scope = gs.trace(task, quiet=True)
    assert type(task) is Task and not any("call" in lay.__dict__ for lay in task._flatten_layers())
    assert_weights_unchanged(task, weights)
    assert scope.inputs == ["images"]
    assert scope.find(op_type="BiasAdd").names == ["backbone/d1/BiasAdd:0", "head/BiasAdd:0"]
    assert not any(name.startswith("task") for name in scope.model_graph.tensors)
    layer = scope.layer("backbone")
    assert layer.ops and layer.outputs.names == ["backbone/d1/BiasAdd:0"]
    paths = [lay.name for lay in scope.model_graph.layers]
    assert sorted(paths) == ["backbone", "backbone/d1", "backbone/x", "head", "images"]  # input layers too
    assert f"· {task.count_params()} params" in scope.layer_tree().caption  # each layer once
    data = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    got = scope.run(["backbone/d1/BiasAdd:0", "head/BiasAdd:0"], data)
    np.testing.assert_allclose(got["backbone/d1/BiasAdd:0"], backbone(data), rtol=1e-6)
    np.testing.assert_allclose(got["head/BiasAdd:0"], task(data), rtol=1e-6)


def test_nested_signatures_name_inputs_by_their_path():
    """Dicts, lists, tuples and namedtuples of specs: an input named by its keys, by its path
    behind the argument's name where it starts with a position, or by its spec's own name; fed
    by those names, positionally in tf.nest.flatten order, or in the nest the function takes."""
    Pair = __import__("collections").namedtuple("Pair", ["left", "right"])

    @tf.function
    def f(inputs, images, pair):
        y = inputs["token_ids"] * 2.0 - inputs["padding_mask"] + tf.reduce_sum(images[0], -1, keepdims=True)
        return {"y": y * images[1]["scale"] + pair.left - 3.0 * pair.right}

    spec = tf.TensorSpec((None, 3))
    signature = [
        {"token_ids": spec, "padding_mask": spec},
        [(None, 5), {"scale": tf.TensorSpec((None, 1), name="s")}],  # a shape, and a spec's own name
        Pair(spec, spec),
    ]
    scope = gs.trace(f, signature, quiet=True)
    assert scope.inputs == ["padding_mask", "token_ids", "images/0", "s", "left", "right"]  # flatten order
    assert [t.name for t in scope.model_graph.inputs] == [f"{n}:0" for n in scope.inputs]
    rng = np.random.default_rng(0)
    shapes = {"padding_mask": 3, "token_ids": 3, "images/0": 5, "s": 1, "left": 3, "right": 3}
    a = {n: rng.normal(size=(2, k)).astype(np.float32) for n, k in shapes.items()}
    nest = ({"token_ids": a["token_ids"], "padding_mask": a["padding_mask"]},
            [a["images/0"], {"scale": a["s"]}], Pair(a["left"], a["right"]))
    want = f(*nest)["y"]  # the function itself, called eagerly with the nest
    np.testing.assert_allclose(scope.run("y", a)["y"], want, rtol=1e-6)  # by name
    np.testing.assert_allclose(scope.run("y", [a[n] for n in scope.inputs])["y"], want, rtol=1e-6)
    by_nest = {**nest[0], "images": [a["images/0"]], "s": a["s"], "left": a["left"], "right": a["right"]}
    np.testing.assert_allclose(scope.run("y", by_nest)["y"], want, rtol=1e-6)  # {"images": [...]}
    # gradients with respect to inputs named by path: d y / d scale = y's pre-scale factor, by hand
    grads = scope.gradients("y", ["s", "left"], a)
    pre = a["token_ids"] * 2.0 - a["padding_mask"] + a["images/0"].sum(-1, keepdims=True)
    np.testing.assert_allclose(grads["s"], pre.sum(-1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(grads["left"], np.ones_like(a["left"]))
    # a tf.function's own nested signature: TensorFlow names its specs `d_alpha`, the inputs are by path
    fixed = tf.function(lambda d, im: d["zeta"] - d["alpha"] * im[0] + im[1],
                        input_signature=[{"zeta": spec, "alpha": spec}, [spec, spec]])
    scope = gs.trace(fixed, quiet=True)
    assert scope.inputs == ["alpha", "zeta", "im/0", "im/1"]
    (out,) = scope.outputs.names
    want = fixed({"zeta": a["left"], "alpha": a["right"]}, [a["token_ids"], a["padding_mask"]])
    given = {"zeta": a["left"], "alpha": a["right"], "im": [a["token_ids"], a["padding_mask"]]}
    np.testing.assert_allclose(scope.run(out, given)[out], want, rtol=1e-6)
    # two dicts with the same keys: the argument's name tells them apart
    twice = gs.trace(lambda a, b: a["x"] - b["x"], [{"x": spec}, {"x": spec}], quiet=True)
    assert twice.inputs == ["a/x", "b/x"]
    # a shape written as a list is one input, named after its argument
    assert gs.trace(lambda image, d: image * d["s"], [[None, 3], {"s": ()}], quiet=True).inputs == ["image", "s"]
    (out,) = twice.outputs.names
    np.testing.assert_allclose(twice.run(out, {"a": {"x": a["left"]}, "b": {"x": a["right"]}})[out],
                               a["left"] - a["right"], rtol=1e-6)


def test_a_key_of_one_argument_that_names_another_argument_goes_behind_its_arguments_name():
    """`f(x, y)` with `x = {"y": ...}`: the key is named `x/y` and the argument `y` keeps its
    name, for a signature graphscope is given and a tf.function's own; both are fed by
    argument (the nest the function takes) as well as by name. The oracle: the function called
    eagerly. (They were `input_0`, `input_1`, and feeding by argument raised.)"""
    def f(x, y):
        return tf.reduce_sum(x["y"], 1) * 10.0 + tf.reduce_sum(y, 1)

    signature = [{"y": tf.TensorSpec((None, 2))}, tf.TensorSpec((None, 3))]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    want = f({"y": tf.constant(a)}, tf.constant(b)).numpy()
    for scope in (gs.trace(f, signature, quiet=True), gs.trace(tf.function(f, input_signature=signature), quiet=True)):
        assert scope.inputs == ["x/y", "y"]
        (out,) = scope.outputs.names
        for given in ({"x": {"y": a}, "y": b}, {"x/y": a, "y": b}, [{"y": a}, b], [a, b]):
            np.testing.assert_allclose(scope.run(out, given)[out], want, rtol=1e-6)


def test_nested_inputs_are_fed_in_the_nest_the_function_takes(tmp_path):
    """A function of nests is fed as it is called: a dict by argument name whose values are
    nests, or one nest per argument (as a list, or as the executor's arguments); flat names and
    flat lists keep working; a data job takes the same. The oracle: the function called eagerly."""
    d1, d2 = keras.layers.Dense(3, name="d1"), keras.layers.Dense(3, name="d2")

    def f(batch, bias):
        return {"y": d1(batch["img"]) + d2(batch["pair"][0]) * batch["pair"][1] + bias}

    spec = tf.TensorSpec((None, 4))
    scope = gs.trace(f, [{"img": spec, "pair": [spec, tf.TensorSpec((None, 3))]}, tf.TensorSpec((None, 3))], quiet=True)
    assert scope.inputs == ["img", "pair/0", "pair/1", "bias"]
    rng = np.random.default_rng(0)
    batch = {"img": rng.normal(size=(5, 4)), "pair": [rng.normal(size=(5, 4)), rng.normal(size=(5, 3))]}
    batch = tf.nest.map_structure(lambda a: a.astype(np.float32), batch)
    bias = rng.normal(size=(5, 3)).astype(np.float32)
    want = f(tf.nest.map_structure(tf.constant, batch), tf.constant(bias))["y"].numpy()
    flat = [batch["img"], *batch["pair"], bias]
    for given in ({"batch": batch, "bias": bias}, [batch, bias], (batch, bias), flat,
                  dict(zip(scope.inputs, flat)), {"batch": {"img": batch["img"], "pair": batch["pair"]}, "bias": bias}):
        np.testing.assert_allclose(scope.run("y", given)["y"], want, rtol=1e-5)
    np.testing.assert_allclose(scope.executor("y")(batch, bias)["y"], want, rtol=1e-5)  # as the function's arguments
    grads = scope.gradients("y", ["bias"], [batch, bias])  # gradients bind the same way
    np.testing.assert_allclose(grads["bias"], np.ones_like(bias))
    bundle = scope.extract(["y"], {"batch": batch, "bias": bias}, out=tmp_path / "by_argument.zarr", batch_size=2)
    np.testing.assert_allclose(np.asarray(bundle["y"]), want, rtol=1e-5)
    bundle = scope.extract(["y"], [batch, bias], out=tmp_path / "by_position.zarr", batch_size=2)
    np.testing.assert_allclose(np.asarray(bundle["y"]), want, rtol=1e-5)
    # a nest of the wrong structure is refused, naming the structure the argument takes
    with pytest.raises(gs.InputError, match=r"argument 'batch' takes \{'img': img, 'pair': \[pair/0, pair/1\]\}, "
                                            r"got a dict with keys \['img'\]"):
        scope.run("y", [{"img": batch["img"]}, bias])
    with pytest.raises(gs.InputError, match=r"argument 'batch/pair' takes \[pair/0, pair/1\], got a list of 1"):
        scope.run("y", {"batch": {"img": batch["img"], "pair": batch["pair"][:1]}, "bias": bias})
    with pytest.raises(gs.InputError, match="input 'img' is given twice"):
        scope.run("y", {"batch": batch, "img": batch["img"], "bias": bias})
    with pytest.raises(gs.InputError, match=r"got 3: .*or one nest per argument.*batch=\{'img': img"):
        scope.run("y", flat[:3])

    # as many items as arguments and as inputs: nests where every item has its argument's
    # structure, else one value per input
    def g(images, scale):
        return d1(images[0]) * scale

    scope = gs.trace(g, [[spec], tf.TensorSpec(())], quiet=True)
    assert scope.inputs == ["images/0", "scale"]
    x = batch["img"]
    want = g([tf.constant(x)], tf.constant(2.0)).numpy()
    (out,) = scope.outputs.names
    for given in ([[x], np.float32(2.0)], [x, np.float32(2.0)], {"images": [x], "scale": 2.0}):
        np.testing.assert_allclose(scope.run(out, given)[out], want, rtol=1e-5)
    row = x.tolist()[:1]  # a 1x4 array written as lists: [[...]]
    np.testing.assert_allclose(scope.run(out, [[row], 2.0])[out], want[:1], rtol=1e-5)
    # `row` is itself a list of one, the structure `images` takes: read as that nest, its one
    # item (4 numbers) is images/0, which is refused, not read as one value per input
    with pytest.raises(gs.InputError, match=r"input 'images/0' expects shape \[\?,4\].*got \[4\]"):
        scope.run(out, [row, 2.0])


def test_a_functional_model_with_dict_inputs_takes_a_nested_signature():
    token_ids = keras.Input((4,), name="token_ids")
    padding_mask = keras.Input((4,), name="padding_mask")
    hidden = keras.layers.Dense(3, name="mix")(keras.layers.Concatenate(name="join")([token_ids, padding_mask]))
    model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, hidden, name="dict_in")
    signature = {"token_ids": tf.TensorSpec((2, 4)), "padding_mask": (2, 4)}  # a bare dict: the one input
    rng = np.random.default_rng(0)
    x = {k: rng.normal(size=(2, 4)).astype(np.float32) for k in ("token_ids", "padding_mask")}
    want = model(x)
    scopes = [gs.trace(model, signature, quiet=True), gs.trace(model, [signature], quiet=True), gs.trace(model, quiet=True)]
    for scope in scopes:
        assert scope.inputs == ["padding_mask", "token_ids"]
        assert scope.find("mix/BiasAdd:0")
        np.testing.assert_allclose(scope.run("mix/BiasAdd:0", x)["mix/BiasAdd:0"], want, rtol=1e-6)
        np.testing.assert_allclose(scope.run("mix/BiasAdd:0", [x["padding_mask"], x["token_ids"]])["mix/BiasAdd:0"],
                                   want, rtol=1e-6)
    assert gs.trace(model, signature, quiet=True).model_graph.inputs[0].shape == (2, 4)
    with pytest.raises(gs.InputError, match=r"input_signature\[1\] has shape \(2, 3\) but input 'token_ids'"):
        gs.trace(model, {"token_ids": (2, 3), "padding_mask": (2, 4)}, quiet=True)


def test_a_saved_models_other_signatures_are_traced_by_name(tmp_path):
    module = models.save_two_signatures(tmp_path / "two")
    tf.saved_model.save(module, str(tmp_path / "embed_only"), signatures={"serving_default": module.embed})
    loaded = tf.saved_model.load(str(tmp_path / "two"))
    rng = np.random.default_rng(0)
    x, bias = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 2)).astype(np.float32)
    want = loaded.signatures["embed"](x=tf.constant(x), bias=tf.constant(bias))["embedding"]  # by keyword
    reference = gs.trace(tmp_path / "embed_only", quiet=True)  # the same function as a default signature
    assert "features/BiasAdd:0" in reference.model_graph.tensors
    scopes = [gs.trace(tmp_path / "two", signature="embed", quiet=True),
              gs.trace(str(tmp_path / "two"), signature="embed", quiet=True),
              gs.trace(loaded, signature="embed", quiet=True),
              gs.trace(loaded.signatures["embed"], quiet=True)]
    for scope in scopes:
        assert scope.inputs == ["x", "bias"]
        assert scope.output_keys == ["embedding"]
        assert sorted(scope.model_graph.tensors) == sorted(reference.model_graph.tensors)  # as clean
        assert {lay.name for lay in scope.layers} == {lay.name for lay in reference.layers}
        assert not [n for n in scope.model_graph.tensors if n.startswith("StatefulPartitionedCall/") and "/BiasAdd" in n]
        np.testing.assert_allclose(scope.run("embedding", [x, bias])["embedding"], want, rtol=1e-6)
        np.testing.assert_allclose(scope.run("embedding", {"bias": bias, "x": x})["embedding"], want, rtol=1e-6)
        features = keras.Model(module.embedder.inputs, module.embedder.get_layer("features").output)(x)
        np.testing.assert_allclose(scope.run("features/BiasAdd:0", [x, bias])["features/BiasAdd:0"], features,
                                   rtol=1e-5)
    # the default signature by path and its ConcreteFunction name alike
    default = gs.trace(tmp_path / "two", quiet=True)
    assert default.output_keys == ["scores"] and "head/BiasAdd:0" in default.model_graph.tensors
    assert sorted(gs.trace(loaded.signatures["serving_default"], quiet=True).model_graph.tensors) == sorted(
        default.model_graph.tensors)
    with pytest.raises(gs.OptionError, match=r"no signature named 'embd'. Did you mean 'embed'\? "
                                             r"Its signatures: 'embed', 'serving_default'"):
        gs.trace(tmp_path / "two", signature="embd", quiet=True)


def test_a_keras_model_exported_with_extra_signatures(tmp_path):
    model = models.functional()
    hidden = model.layers[-2].name
    features = keras.Model(model.input, model.get_layer(hidden).output, name="features")
    spec = [tf.TensorSpec((None, *model.input.shape[1:]), tf.float32)]
    for folder, endpoints in (("both", ("serve", "embed")), ("embed_only", ("embed",))):
        archive = keras.export.ExportArchive()
        archive.track(model)
        for endpoint in endpoints:
            fn = model.call if endpoint == "serve" else features.call
            archive.add_endpoint(endpoint, fn, input_signature=spec)
        archive.write_out(str(tmp_path / folder), verbose=False)
    x = models.sample_inputs(model)[0]
    scope = gs.trace(tmp_path / "both", signature="embed", quiet=True)
    reference = gs.trace(tmp_path / "embed_only", quiet=True)  # `embed` is its serving_default
    assert sorted(scope.model_graph.tensors) == sorted(reference.model_graph.tensors)
    assert f"{hidden}/BiasAdd:0" in scope.model_graph.tensors and scope.layer(hidden).ops
    loaded = tf.saved_model.load(str(tmp_path / "both"))
    assert sorted(gs.trace(loaded.signatures["embed"], quiet=True).model_graph.tensors) == sorted(
        reference.model_graph.tensors)
    (out,) = scope.outputs.names
    np.testing.assert_allclose(scope.run(out, x)[out], features(x), rtol=1e-5)
    assert gs.trace(tmp_path / "both", signature="serve", quiet=True).layers  # the extra ones are reachable
    default = gs.trace(tmp_path / "both", quiet=True)
    (key,) = default.output_keys  # each signature's output is what it computes: not the same tensor
    assert default.outputs.names == ["probs/Softmax:0"] and out == f"{hidden}/Tanh:0"  # as Keras built them
    np.testing.assert_allclose(default.run(key, x)[key], model(x), rtol=1e-5)


def test_a_model_of_several_inputs_takes_one_spec_per_input_or_their_nest():
    model = models.multi_input()
    specs = [tf.TensorSpec((None, *t.shape[1:])) for t in model.inputs]
    img, meta = models.sample_inputs(model)
    want = model([img, meta])
    for signature in (specs, [specs], [tuple(specs)]):
        scope = gs.trace(model, signature, quiet=True)
        assert scope.inputs == ["img", "meta"]
        got = scope.run(["out_a/BiasAdd:0", "out_b/Sigmoid:0"], [img, meta])
        np.testing.assert_allclose(got["out_a/BiasAdd:0"], want[0], rtol=1e-6)
        np.testing.assert_allclose(got["out_b/Sigmoid:0"], want[1], rtol=1e-6)


def test_a_subclassed_model_called_on_a_dict_names_its_inputs_by_key():
    class Mixer(keras.Model):
        def __init__(self):
            super().__init__(name="mixer")
            self.dense = keras.layers.Dense(2, name="dense")

        def call(self, inputs):
            return self.dense(inputs["token_ids"] - inputs["padding_mask"])

    model = Mixer()
    rng = np.random.default_rng(0)
    x = {k: rng.normal(size=(2, 3)).astype(np.float32) for k in ("token_ids", "padding_mask")}
    want = model(x)
    scope = gs.trace(model, [{"token_ids": (None, 3), "padding_mask": (None, 3)}], quiet=True)
    assert scope.inputs == ["padding_mask", "token_ids"]
    np.testing.assert_allclose(scope.run("dense/BiasAdd:0", x)["dense/BiasAdd:0"], want, rtol=1e-6)


class _OnNest(keras.Model):
    """A subclassed model of two inputs in one dict or list: `call(inputs)`."""

    def __init__(self):
        super().__init__(name=type(self).__name__.lstrip("_").lower())
        self.a, self.b = keras.layers.Dense(2, name="a"), keras.layers.Dense(2, name="b", activation="tanh")

    def call(self, inputs):
        x, y = (inputs["x"], inputs["y"]) if isinstance(inputs, dict) else inputs
        return self.a(x) * self.b(y)


class _OnTwo(_OnNest):
    """Two arguments: `call(x, y)`, with Keras' `build(input_shape)`."""

    def call(self, x, y):
        return self.a(x) * self.b(y)


class _OnTwoBuiltByArgument(_OnTwo):
    """Two arguments, with a `build(x_shape, y_shape)` of its own."""

    def build(self, x_shape, y_shape):
        self.a.build(x_shape)
        self.b.build(y_shape)


@pytest.mark.parametrize("takes", ["dict", "list", "build"])
def test_a_subclassed_model_built_by_a_call_on_a_nest_traces_without_a_signature(takes):
    """Keras records the dict or list a subclassed model was first called with, or one shape per
    argument of a `build(x_shape, y_shape)`: the model knows its inputs, so it traces without a
    signature (it said "cannot tell the inputs"). The oracle: the model and its layers called."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 3)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    model = _OnTwoBuiltByArgument() if takes == "build" else _OnNest()
    args = {"dict": ({"x": x, "y": y},), "list": ([x, y],), "build": (x, y)}[takes]
    want = model(*args).numpy()
    scope = gs.trace(model, quiet=True)
    assert [t.shape for t in scope.model_graph.inputs] == [(None, 3), (None, 4)]
    if takes == "dict":
        assert scope.inputs == ["x", "y"]
    (out,) = scope.outputs.names
    got = scope.run([out, "a/BiasAdd:0", "b/Tanh:0"], [x, y])
    np.testing.assert_allclose(got[out], want, rtol=1e-6)
    np.testing.assert_allclose(got["a/BiasAdd:0"], model.a(x), rtol=1e-6)
    np.testing.assert_allclose(got["b/Tanh:0"], model.b(y), rtol=1e-6)


def test_a_subclassed_model_of_two_arguments_built_by_a_call_is_refused_with_the_signature_to_pass():
    """`call(x, y)` built by a call: Keras' `build(input_shape)` records only the first
    argument's shape, so the trace called the model with one input and TensorFlow raised a raw
    TypeError ("missing a required argument: 'y'"); now the error names both inputs and the spec
    it knows, and that signature, completed, traces the model. The oracle: the model called."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 3)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    model = _OnTwo()
    want = model(x, y).numpy()
    with pytest.raises(gs.UnsupportedModelError, match=r"takes 2 inputs \(x, y\)") as e:
        gs.trace(model, quiet=True)
    advice = "input_signature=[tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None, ...), tf.float32)]"
    assert advice in str(e.value)
    scope = gs.trace(model, [tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None, 4), tf.float32)], quiet=True)
    (out,) = scope.outputs.names
    np.testing.assert_allclose(scope.run(out, [x, y])[out], want, rtol=1e-6)


class _DictAndBias(keras.Model):
    """`call(inputs, bias)`: a dict, then a tensor."""

    def __init__(self):
        super().__init__(name="dict_and_bias")
        self.a = keras.layers.Dense(2, name="a")

    def call(self, inputs, bias):
        return self.a(inputs["x"]) * inputs["s"] + bias


def test_a_model_of_several_arguments_one_a_dict_is_traced_with_one_nest_per_argument():
    """input_signature=[{"x": ..., "s": ...}, bias]: the dict is the first argument and the
    bias the second; the trace called the model with the three tensors as three arguments
    (TensorFlow's TypeError, "takes from 3 to 4 positional arguments but 5 were given").
    The oracle: the model called."""
    rng = np.random.default_rng(0)
    x = {"x": rng.normal(size=(3, 4)).astype(np.float32), "s": rng.normal(size=(3, 1)).astype(np.float32)}
    bias = rng.normal(size=(3, 2)).astype(np.float32)
    model = _DictAndBias()
    want = model(x, bias).numpy()
    signature = [{"x": tf.TensorSpec((None, 4)), "s": tf.TensorSpec((None, 1))}, tf.TensorSpec((None, 2))]
    scope = gs.trace(model, signature, quiet=True)
    (out,) = scope.outputs.names
    np.testing.assert_allclose(scope.run(out, [x, bias])[out], want, rtol=1e-6)
    np.testing.assert_allclose(scope.run("a/BiasAdd:0", [x, bias])["a/BiasAdd:0"], model.a(x["x"]), rtol=1e-6)


class _Scaled(keras.Model):
    def __init__(self):
        super().__init__(name="scaled")
        self.a = keras.layers.Dense(2, name="a")

    def call(self, x, *, scale):
        return self.a(x) * scale


def test_a_model_needing_a_keyword_or_more_inputs_than_the_signature_gives_is_refused_with_what_to_trace():
    """`call(x, *, scale)` and `call(x, y)` given one spec: TensorFlow raised "missing a required
    argument" from inside the trace; now the error names the argument and the way out, which
    traces the model. The oracle: the model called."""
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    model = _Scaled()
    want = model(x, scale=2.0).numpy()
    for signature in (None, [tf.TensorSpec((None, 4))]):
        with pytest.raises(gs.UnsupportedModelError, match=r"keyword argument scale .*lambda x: model\(x, scale=\.\.\.\)"):
            gs.trace(model, signature, quiet=True)
    scope = gs.trace(lambda x: model(x, scale=2.0), [tf.TensorSpec((None, 4))], quiet=True)
    (out,) = scope.outputs.names
    np.testing.assert_allclose(scope.run(out, x)[out], want, rtol=1e-6)
    with pytest.raises(gs.UnsupportedModelError, match=r"takes 2 inputs \(x, y\), but the input_signature gives 1"):
        gs.trace(_OnTwo(), [tf.TensorSpec((None, 3))], quiet=True)


def test_an_input_made_without_a_name_is_named_by_its_input_layer():
    """keras.applications and keras-hub make `keras.Input(shape)` without a name: the input is
    named as model.summary() shows it (`input_layer_<n>`), not `keras_tensor_<n>`."""
    x_in = keras.Input((4,))
    model = keras.Model(x_in, keras.layers.Dense(2, name="dense")(x_in))
    scope = gs.trace(model, quiet=True)
    input_layer = model.layers[0]
    assert scope.inputs == [input_layer.name] and scope.model_graph.inputs.names == [f"{input_layer.name}:0"]
    assert scope.layer("dense").inputs.names == [f"{input_layer.name}:0"]
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(scope.run("dense/BiasAdd:0", {input_layer.name: x})["dense/BiasAdd:0"], model(x),
                               rtol=1e-6)


def _layer_calls_module():
    """A tf.Module whose signatures call Keras layers directly (one layer, one BatchNormalization,
    two sibling layers) or a Keras model of two layers; and each signature's Python function."""
    init = {"kernel_initializer": "glorot_uniform", "bias_initializer": "random_normal"}
    emb, a, b = (keras.layers.Dense(n, name=name, **init) for n, name in ((3, "emb"), (3, "a"), (2, "b")))
    norm = keras.layers.BatchNormalization(name="norm", beta_initializer="random_normal",
                                           moving_mean_initializer="random_normal")
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="proj", **init),
                            keras.layers.Dense(3, name="head", **init)], name="net")
    functions = {"lone": lambda x: {"out": emb(x)}, "norm": lambda x: {"out": norm(x)},
                 "siblings": lambda x: {"out": b(a(x))}, "model": lambda x: {"out": net(x)}}
    module = tf.Module()
    module.layers = [emb, norm, a, b, net]
    spec = tf.TensorSpec((None, 4), tf.float32, name="x")
    signatures = {}
    for key, fn in functions.items():
        setattr(module, key, tf.function(fn, input_signature=[spec]))
        signatures[key] = getattr(module, key)
    return module, signatures, functions, net


def test_a_signature_calling_layers_directly_is_named_as_traced_live(tmp_path):
    """A signature calling one layer keeps the layer's scope (emb/MatMul, not the model scope
    dropped and MatMul left); sibling layers and a model's layers are named as before."""
    module, signatures, functions, net = _layer_calls_module()
    tf.saved_model.save(module, str(tmp_path / "calls"), signatures={"serving_default": signatures["lone"],
                                                                     **signatures})
    loaded = tf.saved_model.load(str(tmp_path / "calls"))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    spec = [tf.TensorSpec((None, 4), tf.float32, name="x")]

    def in_layers(scope):
        return {n for n, t in scope.model_graph.tensors.items() if t.layer and not t.is_handle}

    for key, fn in functions.items():
        # the oracle: the same function traced live, its layer calls recorded (a signature that
        # calls a model is named as the model is, its own scope dropped)
        live = gs.trace(net if key == "model" else fn, None if key == "model" else spec, quiet=True)
        assert in_layers(live) and {lay.name for lay in live.layers if lay.ops}
        want = loaded.signatures[key](x=tf.constant(x))["out"]  # by keyword
        for scope in (gs.trace(tmp_path / "calls", signature=key, quiet=True),
                      gs.trace(loaded.signatures[key], quiet=True)):
            assert in_layers(scope) == in_layers(live), key
            assert [lay.name for lay in scope.layers] == [lay.name for lay in live.layers if lay.ops], key
            # the serving function's arguments: no `StatefulPartitionedCall/` left; a variable's
            # handle named after the op reading it, in its layer, as the live trace names it
            names = set(scope.model_graph.tensors)
            assert not [n for n in names if n.startswith("StatefulPartitionedCall/")], key
            inputs = {t.name for t in live.model_graph.inputs}  # a Sequential's is `keras_tensor`
            assert {n for n in live.model_graph.tensors if n not in inputs} <= names, key
            for lay in scope.layers:
                assert {o.name for o in lay.ops} == {o.name for o in live.layer(lay.name).ops}, key
            assert scope.layers[0].inputs.names == ["x:0"], key  # the signature's input, as live
            np.testing.assert_array_equal(scope.run("x_1:0", x)["x_1:0"], x)  # the function's argument
            np.testing.assert_allclose(scope.run("out", x)["out"], want, rtol=1e-6)
    lone = gs.trace(tmp_path / "calls", quiet=True)
    assert {"emb/MatMul:0", "emb/BiasAdd:0"} <= set(lone.model_graph.tensors)
    np.testing.assert_allclose(lone.run("emb/BiasAdd:0", x)["emb/BiasAdd:0"], module.layers[0](x), rtol=1e-6)


def test_a_signature_is_named_by_its_folder_or_by_the_signature_and_refused_training_by_name(tmp_path):
    """By path: the folder, whichever signature; a loaded object, which knows no folder: the
    signature's name; `loaded.signatures[name]`, which does not keep its key: the function it
    wraps (`TwoSignatures.embed`). training=True is refused naming the signature picked."""
    models.save_two_signatures(tmp_path / "two")
    loaded = tf.saved_model.load(str(tmp_path / "two"))
    assert gs.trace(tmp_path / "two", quiet=True).name == "two"
    assert gs.trace(tmp_path / "two", signature="embed", quiet=True).name == "two"
    assert gs.trace(loaded, quiet=True).name == "serving_default"
    assert gs.trace(loaded, signature="embed", quiet=True).name == "embed"
    assert gs.trace(loaded.signatures["embed"], quiet=True).name == "embed"
    assert gs.trace(loaded.signatures["serving_default"], quiet=True).name == "serve"  # TwoSignatures.serve
    for model in (tmp_path / "two", loaded):
        with pytest.raises(gs.OptionError, match=r"cannot trace the SavedModel with training=True: its signature "
                                                 r"'embed' was traced when it was saved"):
            gs.trace(model, signature="embed", training=True, quiet=True)
        with pytest.raises(gs.OptionError, match=r"its signature 'serving_default' was traced"):
            gs.trace(model, training=True, quiet=True)


def test_a_saved_models_layers_keep_the_order_of_their_ops(tmp_path):
    """The serving function's variable handles come first in its graph; the layers reading them
    are still listed in the order their ops ran, layers without variables among them."""
    model = models.functional()
    model.export(str(tmp_path / "cnn"), verbose=False)
    scope = gs.trace(tmp_path / "cnn", quiet=True)
    assert [lay.name for lay in scope.layers] == [lay.name for lay in model.layers[1:]]  # after the InputLayer
    assert scope.layer("conv").inputs.names == [f"{model.input.name}:0"]


class _Scorer(tf.Module):
    """Signatures without Keras: one computing in a name scope, one without any, one multiplying
    by its variable twice."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32), name="w")

    @tf.function(input_signature=[tf.TensorSpec((None, 4), name="a")])
    def plain(self, a):
        return {"s": tf.nn.tanh(tf.matmul(a, self.w))}

    @tf.function(input_signature=[tf.TensorSpec((None, 4), name="a")])
    def scoped(self, a):
        with tf.name_scope("scorer"):
            return {"s": tf.nn.tanh(tf.matmul(a, self.w))}

    @tf.function(input_signature=[tf.TensorSpec((None, 4), name="a"), tf.TensorSpec((None, 2), name="b")])
    def both(self, a, b):
        return {"sum": tf.matmul(a, self.w) + b, "prod": tf.matmul(a, self.w) * b}


def test_a_saved_models_outputs_are_what_its_serving_call_computes(tmp_path):
    """Not the serving call's `StatefulPartitionedCall:0`: the tensor its body computes, named as
    the same function traced live names it; fetched by name or key, edited and differentiated."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="feat")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="probs")(hidden), name="clf")
    model.export(str(tmp_path / "clf"), verbose=False)
    module = _Scorer()
    tf.saved_model.save(module, str(tmp_path / "mod"), signatures={"serving_default": module.plain,
                                                                   "scoped": module.scoped, "both": module.both})
    rng = np.random.default_rng(0)
    x, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 2)).astype(np.float32)
    cases = [("clf", None, gs.trace(model, quiet=True), {"feat": x}),
             ("mod", None, gs.trace(module.plain, quiet=True), {"a": x}),
             ("mod", "scoped", gs.trace(module.scoped, quiet=True), {"a": x}),
             ("mod", "both", gs.trace(module.both, quiet=True), {"a": x, "b": b})]
    for folder, signature, live, feed in cases:
        loaded = tf.saved_model.load(str(tmp_path / folder))
        function = loaded.signatures[signature or "serving_default"]
        want = function(**{k: tf.constant(v) for k, v in feed.items()})  # by keyword
        scope = gs.trace(tmp_path / folder, signature=signature, quiet=True)
        assert sorted(scope.outputs.names) == sorted(live.outputs.names), (folder, signature)
        assert not [n for n in scope.outputs.names if "PartitionedCall" in n]
        inputs = [feed[k] for k in scope.inputs]
        for key, out in zip(scope.output_keys, scope.outputs):
            got = scope.run([out.name, key], inputs)
            np.testing.assert_allclose(got[out.name], want[key], rtol=1e-6)
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6)
            # an edit of the output is what the function returns, edited by hand
            edited = scope.run(key, inputs, edits={out.name: lambda v: v * 2.0 + 1.0})[key]
            np.testing.assert_allclose(edited, want[key].numpy() * 2.0 + 1.0, rtol=1e-6)
            first = scope.inputs[0]
            with tf.GradientTape() as tape:
                fed = {k: tf.constant(v) for k, v in feed.items()}
                tape.watch(fed[first])
                total = tf.reduce_sum(function(**fed)[key])
            grad = scope.gradients(out.name, [first], inputs)[first]
            np.testing.assert_allclose(grad, tape.gradient(total, fed[first]), rtol=1e-5, atol=1e-6)
            # and the output as a cut: feeding it passes the value through to the key
            ones = np.ones_like(want[key])
            np.testing.assert_allclose(scope.run(key, [ones], feeds=[out.name])[key], ones)


def test_an_ops_own_name_scope_in_a_saved_model_is_no_layer(tmp_path):
    """`MatMul/ReadVariableOp` lies in the scope TensorFlow opens for the op `MatMul`: no layer
    (`MatMul`, `MatMul@2`) is made of it, and its names are the live trace's (which records no
    layer: the function calls none)."""
    module = _Scorer()
    tf.saved_model.save(module, str(tmp_path / "mod"), signatures={"serving_default": module.plain,
                                                                   "both": module.both})
    for signature, fn in ((None, module.plain), ("both", module.both)):
        live = gs.trace(fn, quiet=True)
        scope = gs.trace(tmp_path / "mod", signature=signature, quiet=True)
        assert [lay.name for lay in scope.layers] == [lay.name for lay in live.layers] == []
        assert not [t.name for t in scope.model_graph.tensors.values() if t.layer]
        inputs = {t.name for t in live.model_graph.inputs}
        assert {n for n in live.model_graph.tensors if n not in inputs} <= set(scope.model_graph.tensors)
        assert not [n for n in scope.model_graph.tensors if "@" in n]


def test_a_signatures_own_handles_and_returned_copies_are_named_by_variable_and_key(tmp_path):
    """Not `unknown:0`, `unknown_0:0` (the handles a signature captures) nor `Identity_1_1:0` (its
    copy of an output, clashing with the serving function's `Identity_1`): each handle is named
    after the variable it holds, each copy after its output's key."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="feat")
    model = keras.Model(inp, keras.layers.Dense(3, name="probs")(keras.layers.Dense(8, name="hidden")(inp)))
    model.export(str(tmp_path / "clf"), verbose=False)
    module = _Scorer()
    tf.saved_model.save(module, str(tmp_path / "mod"), signatures={"serving_default": module.both})
    for folder, variables, keys in (("clf", [w.path for w in model.weights], ["output_0"]),
                                    ("mod", [module.w.name.rpartition(":")[0]], ["prod", "sum"])):
        scope = gs.trace(tmp_path / folder, quiet=True)
        names = set(scope.model_graph.tensors)
        assert not [n for n in names if n.startswith("unknown") or re.search(r"_\d+_\d+:", n)], folder
        handles = {t.name for t in scope.model_graph.tensors.values() if t.is_handle and not t.function}
        assert handles == {f"{v}:0" for v in variables}, folder
        assert scope.output_keys == keys
        returned = scope.model_graph.graph.graph["outputs"]
        assert returned == [f"{k}:0" for k in keys], folder
        x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
        inputs = [x] if folder == "clf" else [x, np.ones((2, 2), np.float32)]
        got = scope.run(returned + keys, inputs)
        for name, key in zip(returned, keys):  # the copy holds what the key names
            np.testing.assert_array_equal(got[name], got[key])


class _ScaledThenWeighted(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable([1.0, 2.0])

    @tf.function(input_signature=[tf.TensorSpec((None, 2), name="x")])
    def __call__(self, x):
        return (x * 10.0) * self.w  # `mul` with its constant `mul/y`; `mul_1` reading w as `mul_1/ReadVariableOp`


def test_a_saved_models_ops_keep_their_own_scopes(tmp_path):
    """Found by an outside review: the handle arguments, named first, claimed the scope `mul`
    for `mul_1`'s read, so the read came out `mul/ReadVariableOp:0` and the constant `mul@2/y:0`.
    Each name is the live trace's, and each named tensor holds what the live one does."""
    module = _ScaledThenWeighted()
    tf.saved_model.save(module, str(tmp_path / "sm"))
    live, scope = gs.trace(module.__call__, quiet=True), gs.trace(tmp_path / "sm", quiet=True)
    inputs = {t.name for t in live.model_graph.inputs}
    names = [n for n in live.model_graph.tensors if n not in inputs and not live.tensor(n).is_handle]
    assert {"mul/y:0", "mul:0", "mul_1/ReadVariableOp:0", "mul_1:0"} <= set(names) <= set(scope.model_graph.tensors)
    x = np.array([[1.0, -2.0]], np.float32)
    got, want = scope.run(names, x), live.run(names, x)
    for n in names:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)
    np.testing.assert_array_equal(got["mul_1/ReadVariableOp:0"], module.w.numpy())
    np.testing.assert_array_equal(got["mul:0"], x * 10.0)


class _Hashed(keras.Model):
    """Hashes raw integer ids into 1 000 buckets: fed as float32, an id above 2**24 rounds."""

    def __init__(self):
        super().__init__(name="hashed")
        self.table = keras.layers.Embedding(1000, 2, name="table")

    def call(self, ids):
        return self.table(tf.math.floormod(tf.cast(ids, tf.int64), 1000))


class _OptionalBias(keras.Model):
    def __init__(self):
        super().__init__(name="optional_bias")
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, x, bias=None, training=None):
        y = self.dense(x)
        return y if bias is None else y + bias


class _Masked(keras.Model):
    def __init__(self):
        super().__init__(name="masked")
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, inputs):
        return tf.where(inputs["mask"], self.dense(inputs["x"]), 0.0)


def test_a_keras_3_model_traced_on_guessed_inputs_warns_where_the_guess_may_be_wrong():
    """Keras 3 keeps the shapes a subclassed model was first called with, not their dtypes nor
    its other arguments, so such a model is traced on float32 inputs of those shapes. Where the
    trace shows that may not be how it is called, a GuessedInputsWarning says so (ids cast to
    integers inside it: 123456789 rounds to 123456792 in float32, another bucket, silently; an
    optional argument the trace does not pass); a failure the guessed dtypes cause is an
    UnsupportedModelError naming them. The ways the messages give trace the model as called.
    The oracle: the model called on the same inputs."""
    ids = np.array([[123456789, 5]], np.int64)
    hashed = _Hashed()
    want = hashed(ids).numpy()
    with pytest.warns(gs.GuessedInputsWarning, match=r"casts input_0 to int64.*tf.TensorSpec\(\(None, 2\), tf.int64\)"):
        gs.trace(hashed, quiet=True)
    scope = gs.trace(hashed, [tf.TensorSpec((None, 2), tf.int64)], quiet=True)
    (out,) = scope.outputs.names
    np.testing.assert_array_equal(scope.run(out, ids)[out], want)

    x, bias = np.ones((2, 3), np.float32), np.full((2, 2), 3.0, np.float32)
    model = _OptionalBias()
    want = model(x, bias).numpy()
    with pytest.warns(gs.GuessedInputsWarning, match=r"also takes bias.*lambda x, bias: model\(x, bias=bias\)"):
        gs.trace(model, quiet=True)
    scope = gs.trace(lambda x, bias: model(x, bias=bias), [tf.TensorSpec((None, 3)), tf.TensorSpec((None, 2))],
                     quiet=True)
    (out,) = scope.outputs.names
    np.testing.assert_allclose(scope.run(out, [x, bias])[out], want, rtol=1e-6)

    masked = _Masked()
    masked({"x": x, "mask": np.ones((2, 1), bool)})
    with pytest.raises(gs.UnsupportedModelError, match=r"mask \(None, 1\) float32.*'condition'.*bool.*tf.bool"):
        gs.trace(masked, quiet=True)


class _DictIds(keras.Model):
    def __init__(self):
        super().__init__(name="dict_ids")
        self.embed = keras.layers.Embedding(100, 2)
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs["x"]) + keras.ops.sum(self.embed(inputs["ids"]), axis=1)


def test_the_signature_a_guessed_inputs_message_gives_has_the_structure_the_model_takes():
    """A Keras 3 model built on a dict or list, traced on guessed inputs, was told to pass
    `[tf.TensorSpec((None, 2), tf.int32)]` (the first input's shape alone), which traces it on one
    tensor where it takes a dict (its own code then fails: 'Iterating over a symbolic tf.Tensor').
    The signature given is the whole nest, with the dtype changed where the trace casts. The
    oracle: the model called on the same inputs, traced with the signature the message gives."""
    inputs = {"x": np.ones((2, 3), np.float32), "ids": np.array([[1, 2], [3, 99]], np.int32)}
    model = _DictIds()
    want = model(inputs).numpy()
    with pytest.warns(gs.GuessedInputsWarning) as caught:
        gs.trace(model, quiet=True)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, gs.GuessedInputsWarning)]
    advice = re.search(r"pass input_signature with the dtypes \((\[.*\])\)", message).group(1)
    signature = eval(advice, {"tf": tf})  # noqa: S307 - the text the message tells users to write
    assert signature == [{"ids": tf.TensorSpec((None, 2), tf.int32), "x": tf.TensorSpec((None, 3), tf.float32)}]
    scope = gs.trace(model, signature, quiet=True)
    (out,) = scope.outputs.names
    np.testing.assert_allclose(scope.run(out, inputs)[out], want, rtol=1e-6)

    masked = _Masked()
    masked({"x": inputs["x"], "mask": np.ones((2, 1), bool)})
    with pytest.raises(gs.UnsupportedModelError) as refused:
        gs.trace(masked, quiet=True)
    advice = re.search(r"e\.g\. (\[.*\]), each spec", str(refused.value)).group(1)
    assert set(eval(advice, {"tf": tf})[0]) == {"mask", "x"}  # noqa: S307 - one dict, as the model takes


class _OwnCheck(keras.Model):
    def __init__(self):
        super().__init__(name="own_check")
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, x):
        if x.shape[0] is None:
            raise ValueError("own_check: the batch size must be known")
        return self.dense(x)


def test_an_error_a_model_raises_itself_on_guessed_inputs_passes_through():
    """A Keras 3 model traced on inputs guessed from its build shapes whose own code raises (not
    about a dtype) got an UnsupportedModelError blaming the guessed float32 inputs ('if it takes
    integers or booleans, pass input_signature...'); the README says an error the model's code
    raises itself passes through untouched, as it does with a signature."""
    model = _OwnCheck()
    model(np.ones((2, 3), np.float32))
    for signature in (None, [tf.TensorSpec((None, 3))]):
        with pytest.raises(ValueError, match="own_check: the batch size must be known") as raised:
            gs.trace(model, signature, quiet=True)
        assert not isinstance(raised.value, gs.GraphscopeError)


class _TrainingNoDefault(keras.Model):
    def __init__(self):
        super().__init__(name="training_no_default")
        self.dense = keras.layers.Dense(2, name="dense")
        self.drop = keras.layers.Dropout(0.5, name="drop")

    def call(self, inputs, training):
        return self.drop(self.dense(inputs), training=training)


def test_a_call_whose_training_has_no_default_is_traced_on_its_one_input():
    """`call(self, inputs, training)` (no default) was refused as taking two inputs (inputs,
    training), advising a TensorSpec for `training`, though gs.trace passes `training` itself; it
    traced before the check. The oracle: the model called with training=False."""
    model = _TrainingNoDefault()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    model(x, training=False)
    scope = gs.trace(model, quiet=True)
    (out,) = scope.outputs.names
    assert scope.inputs == ["input_0"]
    np.testing.assert_allclose(scope.run(out, x)[out], model(x, training=False).numpy(), rtol=1e-6)


class _HashedText(keras.Model):
    def __init__(self):
        super().__init__(name="hashed_text")
        self.dense = keras.layers.Dense(1, name="dense")

    def call(self, ids):
        buckets = tf.strings.to_hash_bucket_fast(tf.strings.as_string(ids), 10)
        return self.dense(tf.cast(buckets, tf.float32))


def test_a_guessed_input_formatted_as_strings_warns():
    """Ids hashed as text (`tf.strings.as_string`) in a Keras 3 model traced on guessed float32
    inputs read '5.000000' instead of '5': every id lands in another bucket, silently (no cast to
    an integer to warn about). A GuessedInputsWarning says so, and the signature it gives traces
    the model as called. The oracle: the model called on int64 ids."""
    ids = np.array([[5], [123]], np.int64)
    model = _HashedText()
    want = model(ids).numpy()
    with pytest.warns(gs.GuessedInputsWarning, match=r"formats input_0 as strings.*tf.TensorSpec\(\(None, 1\), tf.int64\)"):
        guessed = gs.trace(model, quiet=True)
    (out,) = guessed.outputs.names
    assert not np.allclose(guessed.run(out, ids.astype(np.float32))[out], want)  # what the warning is about
    scope = gs.trace(model, [tf.TensorSpec((None, 1), tf.int64)], quiet=True)
    np.testing.assert_allclose(scope.run(out, ids)[out], want, rtol=1e-6)



def test_a_guessed_input_a_string_lookup_reads_warns_with_the_string_signature():
    """A Keras 3 subclassed model that looks up words (StringLookup) keeps only their shape:
    traced on float32, the lookup casts a float to a string, which no run can do. The warning
    says so, and the signature it gives (tf.string) traces the model as called."""

    class Words(keras.Model):
        def __init__(self):
            super().__init__(name="words")
            self.lookup = keras.layers.StringLookup(vocabulary=["a", "b"], name="lookup")
            self.embed = keras.layers.Embedding(3, 2, name="embed")

        def call(self, words):
            return self.embed(self.lookup(words))

    model = Words()
    words = np.array([["a"], ["zz"]])
    want = model(words).numpy()
    with pytest.warns(gs.GuessedInputsWarning, match=r"casts input_0 to string.*tf.TensorSpec\(\(None, 1\), tf.string\)"):
        gs.trace(model, quiet=True)
    scope = gs.trace(model, [tf.TensorSpec((None, 1), tf.string)], quiet=True)
    (got,) = scope.run(scope.outputs, words).values()
    np.testing.assert_array_equal(got, want)


def test_a_keras_3_model_traced_on_guessed_float_inputs_it_reads_as_floats_does_not_warn():
    plain = models.unbuilt_subclassed()
    plain(np.ones((2, 4), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", gs.GuessedInputsWarning)
        gs.trace(plain, quiet=True)


def test_a_refused_trace_leaves_keras_naming_as_it_was():
    """TensorFlow refuses the root name scope Keras opens for a model named `__underscored`;
    Keras had pushed it and never popped it, so every layer made afterwards in the process was
    named under it (`__underscored/dense/kernel`: the fuzz suite's pinned variable paths broke
    after the error catalogue ran). Refused directly or from a function, the process is left as
    it was. The oracle: Keras' own variable path for a fresh layer."""
    for trace in (lambda m: gs.trace(m, quiet=True),
                  lambda m: gs.trace(lambda x: m(x), [tf.TensorSpec((None, 3))], quiet=True)):
        with pytest.raises(gs.UnsupportedModelError, match=r"refuses the name scope '__underscored(_\d+)?'"):
            trace(models.underscored())
        layer = keras.layers.Dense(2, name="fresh")
        layer.build((None, 3))
        assert layer.kernel.path == "fresh/kernel"


class _Namesakes(keras.Model):
    """Keras 3 lets a subclassed model's layers share a name; one of them has the name the
    second namesake would get."""

    def __init__(self):
        super().__init__(name="namesakes")
        self.first = keras.layers.Dense(4, name="d")
        self.second = keras.layers.Dense(4, name="d")
        self.taken = keras.layers.Dense(4, name="d_1")

    def call(self, x):
        h = self.taken(self.second(self.first(x)))
        for _ in range(2):  # made in the loop, each with one name
            h = keras.layers.Activation("tanh", name="act")(h) * 2.0
        return h


def test_layers_sharing_a_name_are_told_apart_in_call_order_with_their_own_values():
    model = _Namesakes()
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    want = model(x).numpy()
    scope = gs.trace(model, quiet=True)
    names = [lay.name for lay in scope.layers]
    assert sorted(names) == ["act", "act_1", "d", "d_1", "d_2"]
    assert scope.find(op_type="BiasAdd|Tanh").names == ["d/BiasAdd:0", "d_2/BiasAdd:0", "d_1/BiasAdd:0",
                                                        "act/Tanh:0", "act_1/Tanh:0"]
    assert {lay.name: lay.keras_layer for lay in scope.layers if lay.name.startswith("d")} == {
        "d": model.first, "d_2": model.second, "d_1": model.taken}
    dense = [(lay.kernel.numpy(), lay.bias.numpy()) for lay in (model.first, model.second, model.taken)]
    h = x  # numpy by hand
    for kernel, bias in dense:
        h = h @ kernel + bias
    got = scope.run([scope.layer(n).output.name for n in ("d_1", "act", "act_1")], x)
    np.testing.assert_allclose(got["d_1/BiasAdd:0"], h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["act/Tanh:0"], np.tanh(h), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["act_1/Tanh:0"] * 2, want, rtol=1e-6)
