"""validate: ops replayed on their own fetched inputs, layer outputs against Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from rich.console import Console

import graphscope as gs
from graphscope import demo
from graphscope.check import validate
from tests import models


@pytest.mark.parametrize("variant", ["loop", "map_fn"])
def test_the_demo_agrees_with_itself_and_keras(variant):
    scope = gs.trace(demo.proposal_model(variant=variant), quiet=True)
    report = scope.validate(demo.synthetic_images())
    assert report.ok and report.mismatches == []
    assert report.checked > 60 and report.layers == 9
    assert report.skipped["input_image"] == "a model input or captured variable"
    if variant == "map_fn":  # ops inside the map_fn body cannot be fed per iteration
        assert report.skipped[
            "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3"
        ].startswith("inside a loop")
    console = Console(width=100, color_system=None, record=True)
    console.print(report)
    text = console.export_text()
    assert "checked" in text and "mismatches  0" in text and "all agree" in text


def test_only_the_fetched_ops():
    scope = gs.trace(models.residual(), quiet=True)
    x = models.sample_inputs(scope.model, batch=2)[0]
    names = [t.name for t in scope.find("Relu")][:3]
    report = scope.validate(x, fetches=names)
    assert report.checked == 3 and report.ok and report.skipped == {}


def test_a_one_input_model_validates_inputs_written_as_nested_lists():
    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(keras.layers.Dense(4, name="h")(inp)))
    scope = gs.trace(model, quiet=True)
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    for given in (rows, np.array(rows, np.float32)):  # Keras is fed the same 2x3 array either way
        report = scope.validate(given)
        assert report.ok and report.layers == 2


class Noisy(keras.layers.Layer):
    """Adds fresh random noise each call (a stateful random op)."""

    def call(self, x):
        return x + tf.random.uniform(tf.shape(x), name="noise")


def test_a_random_op_is_skipped_and_would_disagree(monkeypatch):
    x_in = keras.Input((4,), name="x")
    model = keras.Model(x_in, keras.layers.Dense(3, name="d")(Noisy(name="noisy")(x_in)))
    scope = gs.trace(model, quiet=True)
    x = np.ones((2, 4), "float32")
    report = scope.validate(x)
    noise = next(t for t in scope.find(op_type="RandomUniform"))
    assert report.ok and report.skipped[noise.op].startswith("random")
    # replayed anyway, the random op draws other numbers: the report says so
    monkeypatch.setattr(validate, "_RANDOM", validate.re.compile("(?!)"))
    monkeypatch.setattr(validate, "drawn", lambda G: {})
    report = scope.validate(x)
    assert not report.ok
    replayed = [m for m in report.mismatches if m.kind == "replay"]
    assert [m.name for m in replayed] == [noise.name] and "max |difference|" in replayed[0].detail
    # and the layer outputs downstream of it no longer match Keras' own run
    assert {m.name for m in report.mismatches if m.kind == "keras"} == {"noisy/add:0", "d/BiasAdd:0"}


def _trained_model(keras_module):
    """Dense -> BatchNorm (moving statistics far from any batch's) -> Dropout."""
    x_in = keras_module.Input((6,), name="x")
    h = keras_module.layers.Dense(6, name="d")(x_in)
    h = keras_module.layers.BatchNormalization(name="bn", moving_mean_initializer="ones",
                                               moving_variance_initializer=keras_module.initializers.Constant(9.0))(h)
    return keras_module.Model(x_in, keras_module.layers.Dropout(0.5, name="drop", seed=1)(h))


@pytest.mark.parametrize("which", ["keras", "tf_keras"])
def test_a_training_graph_is_compared_with_keras_in_training_mode(which):
    """Traced in training mode, batch norm uses the batch's statistics: Keras is called in the
    same mode (without moving its statistics), and dropout's output is skipped (Keras would draw
    other numbers) rather than reported."""
    keras_module = keras if which == "keras" else pytest.importorskip("tf_keras")
    model = _trained_model(keras_module)
    scope = gs.trace(model, training=True, quiet=True)
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    before = [np.array(w) for w in model.weights]
    report = scope.validate(x)
    assert report.ok, report.mismatches
    bn = scope.layer("bn").output.name
    assert report.layers >= 2  # dense and bn compared
    assert report.skipped[scope.layer("drop").output.name].startswith("random")
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, w)  # the moving statistics did not move
    # the comparison can fail: the batch-norm output is not what Keras gives in inference mode
    inference = keras_module.Model(model.input, model.get_layer("bn").output)(x, training=False)
    assert not np.allclose(scope.run(bn, x)[bn], inference, atol=1e-2)


def test_subclassed_models_replay_without_keras():
    scope = gs.trace(models.subclassed(), quiet=True)
    report = scope.validate(models.sample_inputs(scope.model, batch=2)[0])
    assert report.ok and report.checked > 0 and report.layers == 0


@pytest.mark.parametrize("training", [False, True])
def test_validate_moves_no_variable_a_layer_assigns(training):
    """A layer that assigns a variable in its call (in any mode): Keras is called without moving
    it, and the comparison still sees the model's values (the weight it multiplies by)."""

    class Counting(keras.layers.Layer):
        def build(self, shape):
            self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones", name="w")

        def call(self, x):
            self.count.assign_add(1.0)
            return x * self.w

    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(Counting(name="c")(inputs)))
    scope = gs.trace(model, training=training, quiet=True)
    x = np.ones((2, 3), "float32")
    before = [np.array(w) for w in model.weights]
    report = scope.validate(x)
    assert report.ok and report.layers >= 2, report.mismatches
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, w)
    assert float(model.get_layer("c").count.numpy()) == 0.0



def test_validate_moves_no_tf_variable_a_keras_3_layer_assigns():
    """Keras 3 tracks only its own variables: a plain tf.Variable a layer assigns in its call is
    no variable of the model, and `stateless_call` assigns it; validate left it moved (0 -> 1)."""

    class Counting(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.calls = tf.Variable(0.0, trainable=False)

        def call(self, x):
            self.calls.assign_add(1.0)
            return x * 2.0

    inputs = keras.Input((3,), name="x")
    counting = Counting(name="c")
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(counting(inputs)))
    assert not any(v is counting.calls for v in model.variables)  # why it is needed
    scope = gs.trace(model, quiet=True)
    report = scope.validate(np.ones((2, 3), "float32"))
    assert report.ok and report.layers >= 2, report.mismatches
    assert float(counting.calls.numpy()) == 0.0


def test_validate_keeps_a_tf_keras_stateful_rnn_state():
    """tf_keras keeps a stateful RNN's state variables out of `model.variables`: calling the Keras
    sub-model assigns them, and validate puts them back too, bit for bit."""
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((3, 2), batch_size=2, name="x")
    lstm = tf_keras.layers.LSTM(4, stateful=True, name="lstm")
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, name="d")(lstm(inputs)))
    x = np.random.default_rng(0).random((2, 3, 2), dtype="float32")
    model(x)  # the state is no longer zero
    assert not {id(s) for s in lstm.states} & {id(v) for v in model.variables}  # why it is needed
    state = [s.numpy().copy() for s in lstm.states]
    report = gs.trace(model, quiet=True).validate(x)
    assert report.ok and report.layers >= 2, report.mismatches
    for before, after in zip(state, lstm.states):
        np.testing.assert_array_equal(before, after.numpy())



def test_a_tf_keras_lookup_adapted_to_data_is_compared_with_keras():
    """An adapted tf_keras StringLookup lists a `VocabWeightHandler` (not a variable) among its
    weights: validate compares the layers with Keras all the same."""
    tf_keras = pytest.importorskip("tf_keras")
    lookup = tf_keras.layers.StringLookup(name="lookup")
    lookup.adapt([["a"], ["b"], ["a"]])
    text = tf_keras.Input((1,), dtype="string", name="text")
    model = tf_keras.Model(text, tf_keras.layers.Embedding(4, 2, name="embed")(lookup(text)))
    report = gs.trace(model, quiet=True).validate(np.array([["a"], ["b"], ["zz"]], object))
    assert report.ok and report.layers == 2, report.mismatches


def test_ops_no_output_depends_on_are_skipped_unless_named():
    import warnings

    scope = gs.trace(models.recurrent("LSTM"), quiet=True)
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gs.UnusedTensorWarning)
        report = scope.validate(x)
    assert report.ok and report.layers == 1
    skipped = {op for op, why in report.skipped.items() if why.startswith("unused")}
    assert skipped == set(scope.unused) and len(skipped) > 10
    probe = scope.find(op_type="MatMul", include_unused=True)[0]
    assert probe.op in scope.unused
    with pytest.warns(gs.UnusedTensorWarning):  # named, it is replayed (and its fetch noted)
        named = scope.validate(x, fetches=[probe.name])
    assert named.ok and named.checked == 1
