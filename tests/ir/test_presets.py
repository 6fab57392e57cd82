"""presets: each selection checked against what it means, computed independently: the
activation applied to each pre-activation is the layer's output, softmax of the logits is the
model's output, attention probabilities sum to one over the keys, layer outputs equal Keras'."""

import importlib.util
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from tests import models

_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0), "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)), "swish": lambda x: x / (1 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
}


def _activations_zoo() -> keras.Model:
    """A layer for each common activation, fused (`activation=`) or as a layer of its own."""
    init = keras.initializers.GlorotUniform(seed=11)
    x_in = keras.Input((6, 6, 2), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_relu", kernel_initializer=init)(x_in)
    x = keras.layers.Conv2D(4, 3, name="conv_linear", kernel_initializer=init)(x)
    x = keras.layers.Activation("elu", name="elu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(8, activation="swish", name="dense_swish", kernel_initializer=init)(x)
    x = keras.layers.Dense(8, activation="tanh", name="dense_tanh", kernel_initializer=init)(x)
    x = keras.layers.Dense(8, activation="softplus", name="dense_softplus", kernel_initializer=init)(x)
    x = keras.layers.Dense(8, activation="sigmoid", name="dense_sigmoid", kernel_initializer=init)(x)
    out = keras.layers.Dense(3, activation="softmax", name="probs", kernel_initializer=init)(x)
    return keras.Model(x_in, out, name="activations")


# which activation each layer applies
_APPLIED = {"conv_relu": "relu", "elu": "elu", "dense_swish": "swish", "dense_tanh": "tanh",
            "dense_softplus": "softplus", "dense_sigmoid": "sigmoid"}


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_each_pre_activation_through_its_activation_is_the_layers_output():
    model = _activations_zoo()
    scope = gs.trace(model, quiet=True)
    pre = gs.presets.pre_activations(scope)
    x = models.sample_inputs(model)[0]
    # fused activations: the layer's BiasAdd; an Activation layer: its input (conv_linear has no
    # activation of its own, so nothing of it is a pre-activation but what `elu` takes)
    by_layer = {name: scope.tensor("conv_linear/BiasAdd:0" if name == "elu" else f"{name}/BiasAdd:0") for name in _APPLIED}
    assert set(pre.names) == {t.name for t in by_layer.values()} | {"probs/BiasAdd:0"}
    outputs = [scope.layer(name).output for name in _APPLIED]
    values = scope.run([*pre, *outputs], x)
    for name, kind in _APPLIED.items():
        pre_value = values[by_layer[name].name]
        np.testing.assert_allclose(_ACTIVATIONS[kind](pre_value), values[scope.layer(name).output.name],
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    keras_out = keras.Model(model.input, model.get_layer("dense_swish").output)(x)  # and Keras agrees
    np.testing.assert_allclose(values[scope.layer("dense_swish").output.name], keras_out, rtol=1e-5, atol=1e-6)


def test_softmax_of_the_logits_is_the_models_output():
    model = _activations_zoo()
    scope = gs.trace(model, quiet=True)
    (logits,) = gs.presets.logits(scope)
    assert logits.name == "probs/BiasAdd:0"
    x = models.sample_inputs(model)[0]
    np.testing.assert_allclose(_softmax(scope.run(logits, x)[logits.name]), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_the_logits_of_a_mixed_precision_model_are_its_layers_not_the_cast():
    """Issue 25 #8: the float32 softmax of a mixed_float16 model casts its input at the root; the
    logits are the float16 layer output the cast reads."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x_in = keras.Input((6,), name="x")
        h = keras.layers.Dense(8, activation="relu", name="h")(x_in)
        z = keras.layers.Dense(4, name="logits")(h)
        model = keras.Model(x_in, keras.layers.Activation("softmax", dtype="float32", name="probs")(z))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    scope = gs.trace(model, quiet=True)
    (logits,) = gs.presets.logits(scope)
    assert (logits.name, logits.layer, logits.dtype) == ("logits/BiasAdd:0", "logits", "float16")
    x = np.random.default_rng(2).normal(size=(3, 6)).astype(np.float32)
    want = keras.Model(model.input, model.get_layer("logits").output)(x)  # Keras' own sub-model
    got = scope.run(logits, x)[logits.name]
    np.testing.assert_allclose(got.astype(np.float32), np.asarray(want, np.float32), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(_softmax(got.astype(np.float32)), model(x), rtol=1e-3, atol=1e-3)


def test_attention_probabilities_sum_to_one_over_the_keys():
    keras.utils.set_random_seed(4)
    x_in = keras.Input((5,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(11, 8, name="embed")(x_in)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attn_0")(h, h)
    h = keras.layers.MultiHeadAttention(num_heads=3, key_dim=4, name="attn_1")(h, h)
    out = keras.layers.Dense(4, activation="softmax", name="head")(h[:, -1])
    scope = gs.trace(keras.Model(x_in, out), quiet=True)
    probs = gs.presets.attention(scope)
    assert [t.layer.split("/")[0] for t in probs] == ["attn_0", "attn_1"]  # not the head's softmax
    values = scope.run(probs, np.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], np.int32))
    for t, heads in zip(probs, (2, 3)):
        v = values[t.name]
        assert v.shape == (2, heads, 5, 5)  # [batch, heads, queries, keys]
        np.testing.assert_allclose(v.sum(axis=-1), 1.0, rtol=1e-5)
        if importlib.util.find_spec("matplotlib"):  # its picture: one heatmap per head, of sample 1
            fig = values.plot(t.name, sample=1)
            assert len(fig.axes) == heads
            np.testing.assert_array_equal(fig.axes[-1].images[0].get_array(), v[1, -1])


def test_layer_outputs_equal_a_keras_multi_output_model():
    model = models.residual()
    scope = gs.trace(model, quiet=True)
    outs = gs.presets.layer_outputs(scope)
    computing = [lay for lay in model.layers if not isinstance(lay, keras.layers.InputLayer)]
    assert len(outs) == len(computing)
    x = models.sample_inputs(model)[0]
    values = scope.run(outs, x)
    want = keras.Model(model.input, [lay.output for lay in computing])(x)
    for t, w in zip(outs, want):
        np.testing.assert_allclose(values[t.name], w, rtol=1e-5, atol=1e-5, err_msg=t.name)


def test_presets_on_a_tf_keras_model_and_a_traced_method():
    pytest.importorskip("tf_keras")
    from tests import models_keras2

    model = models_keras2.functional()  # conv -> bn -> ReLU layer -> pool -> flatten -> dense (tanh) -> probs (softmax)
    scope = gs.trace(model, quiet=True)
    pre = gs.presets.pre_activations(scope)
    assert [t.layer for t in pre] == ["bn", "dense", "probs"]  # before the ReLU layer, the tanh, the softmax
    (logits,) = gs.presets.logits(scope)
    x = models.sample_inputs(model)[0]
    np.testing.assert_allclose(_softmax(scope.run(logits, x)[logits.name]), model(x).numpy(), rtol=1e-5, atol=1e-6)
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax", name="d")])
    steps = gs.trace(dense.predict_step, [tf.TensorSpec((None, 3))])
    assert gs.presets.logits(steps).names == ["d/BiasAdd:0"]


def test_presets_refuse_what_is_not_a_model():
    with pytest.raises(gs.ArgumentError, match="presets take a Scope"):
        gs.presets.logits("model.keras")


@pytest.mark.slow
def test_presets_on_vgg19_and_resnet50():
    vgg = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    scope = gs.trace(vgg, quiet=True)
    pre = gs.presets.pre_activations(scope)
    assert pre.names == [f"block{b}_conv{c}/BiasAdd:0" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
                         for c in range(1, n + 1)]
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    values = scope.run([*pre, *(t.name.replace("BiasAdd", "Relu") for t in pre)], x)
    for t in pre:
        np.testing.assert_array_equal(np.maximum(values[t.name], 0), values[t.name.replace("BiasAdd", "Relu")])
    fig = values.plot("block3_conv2/BiasAdd:0", max_channels=4)  # and its picture is its values
    np.testing.assert_array_equal(fig.axes[3].images[0].get_array(), values["block3_conv2/BiasAdd:0"][0, :, :, 3])

    resnet = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=5)
    scope = gs.trace(resnet, quiet=True)
    (logits,) = gs.presets.logits(scope)
    relus = [lay for lay in scope.layers if lay.type == "Activation"]
    pre = gs.presets.pre_activations(scope)
    assert len(pre) == len(relus) + 1  # every Activation layer's input, and the logits
    values = scope.run([*pre, *(lay.output for lay in relus)], x)
    for lay in relus:
        (inp,) = lay.inputs
        np.testing.assert_array_equal(np.maximum(values[inp.name], 0), values[lay.output.name])
    np.testing.assert_allclose(_softmax(values[logits.name]), resnet.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


def _gelu(x, approximate):
    """GELU by hand: x * Phi(x), or its tanh approximation."""
    if approximate:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def test_gelu_pre_activations_exact_and_approximate():
    """Issue 24 #9: GELU has no op of its own (Erfc, or Tanh and Pow, under a Gelu scope); the
    preset finds the BiasAdd before it, fused, as a layer, and tanh-approximated."""
    init = keras.initializers.GlorotUniform(seed=5)
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(5, activation="gelu", name="fused", kernel_initializer=init)(x_in)
    h = keras.layers.Dense(5, name="lin", kernel_initializer=init)(h)
    h = keras.layers.Lambda(lambda t: keras.activations.gelu(t, approximate=True), name="approx")(h)
    h = keras.layers.Dense(5, name="lin2", kernel_initializer=init)(h)
    h = keras.layers.Activation("gelu", name="act")(h)
    out = keras.layers.Dense(2, name="head", kernel_initializer=init)(h)  # no activation: nothing before
    model = keras.Model(x_in, out)
    scope = gs.trace(model, quiet=True)
    pre = gs.presets.pre_activations(scope)
    assert pre.names == ["fused/BiasAdd:0", "lin/BiasAdd:0", "lin2/BiasAdd:0"]
    x = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32) * 2
    values = scope.run(pre, x)
    for t, layer, approximate in zip(pre, ("fused", "approx", "act"), (False, True, False)):
        keras_out = keras.Model(model.input, model.get_layer(layer).output)(x)
        np.testing.assert_allclose(_gelu(values[t.name].astype(np.float64), approximate), keras_out,
                                   rtol=1e-5, atol=1e-6, err_msg=layer)


def test_the_logits_of_a_saved_model_are_found_through_its_serving_call(tmp_path):
    """A SavedModel's signature returns its serving function's call op (`StatefulPartitionedCall:0`);
    the softmax is inside the call (the scope's output), and the logits are what it is applied to
    there."""
    model = _activations_zoo()
    model.export(str(tmp_path / "exported"), verbose=False)
    scope = gs.trace(str(tmp_path / "exported"), quiet=True)
    assert scope.outputs[0].op_type == "Softmax" and scope.outputs[0].layer == "probs"  # inside the call
    (logits,) = gs.presets.logits(scope)
    assert logits.op_type == "BiasAdd" and logits.layer == "probs"
    x = models.sample_inputs(model)[0]
    want = keras.Model(model.input, model.get_layer("probs").output)(x)  # the softmax, by Keras
    np.testing.assert_allclose(_softmax(scope.run(logits, x)[logits.name]), want, rtol=1e-5, atol=1e-6)


def test_pre_activations_of_hard_sigmoid_hard_swish_and_a_masked_softmax():
    """MobileNetV3's hard swish (`x * relu6(x + 3) / 6`), a hard sigmoid, and a Softmax layer
    given a mask (`where(mask, softmax(scores), 0)`, as keras-hub's attention calls it): each
    layer's pre-activation, put through the activation by numpy, is the layer's output as Keras
    computes it."""
    init = keras.initializers.GlorotUniform(seed=5)
    x_in = keras.Input((4, 6), name="x")
    mask_in = keras.Input((4, 4), name="mask", dtype="bool")
    h = keras.layers.Dense(6, activation="hard_swish", name="swished", kernel_initializer=init)(x_in)
    h = keras.layers.Dense(4, name="linear", kernel_initializer=init)(h)
    g = keras.layers.Activation("hard_sigmoid", name="gate")(h)
    scores = keras.layers.Dense(4, name="scores", kernel_initializer=init)(g)
    probs = keras.layers.Softmax(name="probs")(scores, mask=mask_in)
    model = keras.Model([x_in, mask_in], probs, name="hard")
    scope = gs.trace(model, quiet=True)
    pre = gs.presets.pre_activations(scope)
    swished, gate = scope.tensor("swished/BiasAdd:0"), scope.tensor("linear/BiasAdd:0")
    (masked,) = [t for t in pre if t.layer == "probs"]  # the scores with the mask applied
    assert set(pre.names) == {swished.name, gate.name, masked.name}
    x = np.random.default_rng(3).normal(size=(2, 4, 6)).astype(np.float32) * 3
    mask = np.tril(np.ones((4, 4), bool))[None].repeat(2, 0)
    mask[1, :, 2:] = False  # padded keys
    values = scope.run([swished, gate, masked, "scores/BiasAdd:0"], [x, mask])

    def hard_sigmoid(v):
        return np.clip(v + 3, 0, 6) / 6

    want = {name: keras.Model(model.inputs, model.get_layer(name).output)([x, mask])
            for name in ("swished", "gate", "probs")}
    np.testing.assert_allclose(values[swished.name] * hard_sigmoid(values[swished.name]), want["swished"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hard_sigmoid(values[gate.name]), want["gate"], rtol=1e-5, atol=1e-6)
    s = values[masked.name]
    np.testing.assert_array_equal(s[mask], values["scores/BiasAdd:0"][mask])  # unmasked scores kept
    np.testing.assert_allclose(np.where(mask, _softmax(s), 0.0), want["probs"], rtol=1e-5, atol=1e-6)
