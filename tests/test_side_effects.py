"""No side effects: the public API leaves the model, Keras and TensorFlow exactly as it found them.

A snapshot covers the model's weights (checksummed, optimizer slots included), every layer's
configuration and instance attributes, and the process-wide settings Keras and TensorFlow keep
(dtype policy, float type, image format, custom objects, Keras' global state such as name
counters and the call context, eager mode, the global random generator, Grappler and XLA
options). Every public call is then made, and the snapshot must not move. The one change a
user asks for is left alone: a *training-mode* executor advances the random-generator state of
dropout, as Keras does, so that each call draws a new mask.
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
import shutil

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common import global_state  # Keras' own process-wide state, read only

import graphscope as gs
from graphscope.display import format as render


@keras.saving.register_keras_serializable(package="graphscope_side_effects")
class Helper(keras.layers.Layer):
    """A custom layer with a tf.function helper and a weight."""

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    @tf.function
    def _helper(self, x):
        return tf.nn.softplus(x) * self.scale

    def call(self, x):
        return self._helper(x) + 1.0


def _model() -> keras.Model:
    """Nested model, shared layer, batch norm, dropout, a custom layer; compiled with Adam."""
    inner_in = keras.Input((6,), name="inner_in")
    inner = keras.Model(inner_in, keras.layers.Dense(6, activation="relu", name="inner_dense")(inner_in), name="inner")
    x_in = keras.Input((6,), name="features")
    shared = keras.layers.Dense(6, name="shared")
    x = shared(x_in)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.5, name="drop", seed=3)(x)
    x = inner(x)
    x = Helper(name="helper")(shared(x))
    out = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(x_in, out, name="side_effects")
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 6), np.float32), np.zeros((4, 2), np.float32), epochs=1, verbose=0)  # optimizer slots
    return model


def _digest(values) -> str:
    h = hashlib.sha256()
    for v in values:
        h.update(np.asarray(v).tobytes())
    return h.hexdigest()


def _keras_state() -> dict:
    out = {}
    for tracker in (global_state.GLOBAL_STATE_TRACKER, global_state.GLOBAL_SETTINGS_TRACKER):
        for k, v in vars(tracker).items():
            out[k] = copy.copy(v) if isinstance(v, (dict, list, set)) else (type(v).__name__, id(v))
    return out


def snapshot(model: keras.Model) -> dict:
    layers = list(model._flatten_layers(include_self=True))
    return {
        "weights": _digest(v.numpy() for v in model.weights),
        "optimizer": _digest(v.numpy() for v in model.optimizer.variables),
        "configs": [lay.get_config() for lay in layers if lay is not model] + [model.get_config()],
        "attributes": [sorted(vars(lay)) for lay in layers],
        "trainable": [lay.trainable for lay in layers],
        "built": [lay.built for lay in layers],
        "called": [getattr(lay, "_called", None) for lay in layers],  # Keras 3: True after a first call
        "keras": _keras_state(),
        "settings": (
            keras.config.floatx(),
            keras.config.epsilon(),
            keras.config.image_data_format(),
            keras.config.dtype_policy().name,
            keras.config.backend(),
            keras.config.is_traceback_filtering_enabled(),
            sorted(keras.saving.get_custom_objects()),
        ),
        "tf": (
            tf.executing_eagerly(),
            tf.config.functions_run_eagerly(),
            tf.config.optimizer.get_jit(),
            tf.config.optimizer.get_experimental_options(),
            tf.config.get_soft_device_placement(),
            id(tf.compat.v1.get_default_graph()),
            tf.random.get_global_generator().state.numpy().tobytes(),
        ),
        "random": random.getstate(),
        "numpy random": str(np.random.get_state()),
        "environment": dict(os.environ),
    }


def _every_public_call(model: keras.Model) -> None:
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    scope = gs.trace(model)
    str(scope), repr(scope), scope._repr_html_(), scope._repr_mimebundle_()
    found = scope.find(r"^helper/", op_type="Softplus")
    str(found), found._repr_html_()
    scope.find(op_type="MatMul"), scope.tensor(found[0].name), scope.op(found[0].op)
    scope.layers, scope.layer(2), scope.layer("inner"), str(scope.layer("bn"))
    scope.ancestors(found[0]), scope.descendants("bn/batchnorm/add_1:0"), scope.cut_points()
    gs.find(scope.graph, "shared"), gs.ancestors(scope.graph, found[0].name), gs.cut_points(scope.graph)
    everything = [t for t in scope.find() if t.dtype not in ("resource", "variant")]
    values = scope.run([*found, *scope.outputs, *(lay.output for lay in scope.layers[1:])], x)
    str(values), repr(values)
    cut = scope.executor(scope.outputs, feeds=["bn/batchnorm/add_1:0"])
    cut(values["bn/batchnorm/add_1:0"] if "bn/batchnorm/add_1:0" in values else scope.run("bn/batchnorm/add_1:0", x)["bn/batchnorm/add_1:0"])
    scope.executor([t for t in everything if not t.context])(x)
    str(scope.layer_tree()), str(scope.layer_tree(ops=True, pattern="helper")), str(gs.tree(model))
    for fmt in ("graphml", "dot", "json"):
        scope.export(fmt)
    if shutil.which("dot"):
        scope.draw("helper", radius=2).svg()
    render.to_text(scope.layer("helper"))
    training = gs.trace(model, training=True)
    training.run(training.outputs, x)
    comparison = gs.compare(scope, gs.trace(model), x, match="tensors")
    str(comparison), comparison._repr_html_()


def test_the_public_api_changes_nothing(tmp_path):
    model = _model()
    before = snapshot(model)
    _every_public_call(model)
    after = snapshot(model)
    for key in before:
        assert after[key] == before[key], key


def test_tracing_a_file_changes_nothing_but_keras_name_counters(tmp_path):
    """Loading a file creates Keras objects, and Keras counts the names it hands out (so that a
    later `Dense()` is not named like a loaded one); that count is left to grow. Python's
    global random state, which Keras draws the loaded layers' seeds from, is put back."""
    model = _model()
    path = tmp_path / "model.keras"
    model.save(path)  # the user's own call, before the snapshot
    before = snapshot(model)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = gs.trace(path)
    loaded.run(loaded.outputs, np.ones((2, 6), np.float32))
    after = snapshot(model)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    counters_before = before["keras"].pop("object_name_uids")
    counters_after = after["keras"].pop("object_name_uids")
    for key in before:
        assert after[key] == before[key], key
    assert all(counters_after[k] >= n for k, n in counters_before.items())


def test_tracing_and_running_alone_leave_keras_name_counters(tmp_path):
    model = _model()
    before = _keras_state()
    scope = gs.trace(model)
    scope.run(scope.outputs, np.ones((2, 6), np.float32))
    gs.trace(model, training=True)
    assert _keras_state() == before


def test_training_mode_executors_advance_dropout_noise_only():
    model = _model()
    scope = gs.trace(model, training=True)
    seeds = [v for v in model.variables if "seed_generator" in v.path]
    assert seeds, "the dropout layer's seed generator state is a model variable"
    weights, state = _digest(v.numpy() for v in model.weights), [v.numpy().copy() for v in seeds]
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    (drop,) = scope.layer("drop").outputs
    a, b = scope.run(drop, x)[drop.name], scope.run(drop, x)[drop.name]
    assert not np.array_equal(a, b), "each call draws a new dropout mask, as Keras does"
    assert _digest(v.numpy() for v in model.weights) == weights, "batch-norm statistics never move"
    assert any(not np.array_equal(s, v.numpy()) for s, v in zip(state, seeds))


def test_a_functional_model_never_called_is_still_never_called_after_graphscope_looked():
    """Keras 3 marks a model called (`_called`) on its first call, then refuses
    `_register_call_context_args`; tracing, running and differentiating it is not such a call."""
    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, keras.layers.Dense(2, name="d")(x_in))
    before = [getattr(lay, "_called", None) for lay in model._flatten_layers(include_self=True)]
    assert before[0] is False
    scope = gs.trace(model, quiet=True)
    x = np.ones((2, 3), np.float32)
    scope.run(scope.outputs[0], x)
    scope.gradients(scope.outputs[0], scope.inputs[0], x)
    assert [getattr(lay, "_called", None) for lay in model._flatten_layers(include_self=True)] == before
    model._register_call_context_args("flag")  # what Keras refuses once a model was called
