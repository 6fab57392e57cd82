"""trace: every kind of model in, a concrete function and the real call structure out."""

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


def test_unbuilt_model_is_refused_with_how_to_build():
    with pytest.raises(gs.UnsupportedModelError, match=r"not built.*model.build") as e:
        gs.trace(models.unbuilt_subclassed())
    assert isinstance(e.value, TypeError)


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
    with pytest.raises(gs.OptionError, match=r"serving signature was traced when it was saved"):
        gs.trace(str(tmp_path / "sm"), training=True, quiet=True)
    assert _keras_call_context() is None


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
