"""A zoo of small Keras models covering the cases graphscope must handle.

Every builder seeds its own initializers, so models are deterministic and building one changes
no global random state. The builders that take `k` build with that Keras: `keras` (3, the
default) or `tf_keras` (2), which `models_keras2` passes.
"""

from __future__ import annotations

import itertools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

_seeds = itertools.count(1000)


def _init(k: Any = keras) -> dict:
    return {
        "kernel_initializer": k.initializers.GlorotUniform(seed=next(_seeds)),
        "bias_initializer": k.initializers.RandomNormal(stddev=0.3, seed=next(_seeds)),
    }


def functional(k: Any = keras) -> Any:
    """Conv, batch norm, activations, pooling, dense: the common functional CNN."""
    x_in = k.Input((8, 8, 3), name="image")
    x = k.layers.Conv2D(4, 3, padding="same", name="conv", **_init(k))(x_in)
    x = k.layers.BatchNormalization(name="bn")(x)
    x = k.layers.ReLU(name="relu")(x)
    x = k.layers.MaxPooling2D(name="pool")(x)
    x = k.layers.Flatten(name="flatten")(x)
    x = k.layers.Dense(6, activation="tanh", name="dense", **_init(k))(x)
    out = k.layers.Dense(3, activation="softmax", name="probs", **_init(k))(x)
    return k.Model(x_in, out, name="functional_cnn")


def sequential(k: Any = keras) -> Any:
    return k.Sequential(
        [
            k.Input((5,)),
            k.layers.Dense(8, activation="relu", name="hidden", **_init(k)),
            k.layers.Dropout(0.5, name="dropout"),
            k.layers.Dense(2, name="logits", **_init(k)),
        ],
        name="seq",
    )


class Subclassed(keras.Model):
    """A subclassed model with its own code in `call` between layers."""

    def __init__(self) -> None:
        super().__init__(name="subclassed")
        self.encoder = keras.layers.Dense(6, activation="relu", name="encoder", **_init())
        self.decoder = keras.layers.Dense(3, name="decoder", **_init())

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = self.encoder(x)
        h = h * 2.0 + 1.0  # the model's own ops, outside any layer
        return self.decoder(h)


def subclassed() -> keras.Model:
    model = Subclassed()
    model(np.zeros((1, 4), np.float32))
    return model


def unbuilt_subclassed() -> keras.Model:
    return Subclassed()


class TwoArguments(keras.Model):
    """A subclassed model whose `call` takes two inputs as two arguments."""

    def __init__(self) -> None:
        super().__init__(name="two_arguments")
        self.left = keras.layers.Dense(2, name="left", **_init())
        self.right = keras.layers.Dense(2, name="right", **_init())

    def call(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return self.left(x) + self.right(y)


class _Underscored(keras.Model):
    """A class whose name starts with `_`: Keras names its instances `__underscored`."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2, name="dense", **_init())

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.dense(x)


def underscored() -> keras.Model:
    """A model named after a class whose name starts with `_`, called once."""
    model = _Underscored()
    model(np.zeros((2, 3), np.float32))
    return model


def two_arguments_built_by_a_call() -> keras.Model:
    """Built by calling it once on data: Keras' `build(input_shape)` keeps only `x`'s shape."""
    model = TwoArguments()
    model(np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32))
    return model


class KeywordScaled(keras.Model):
    """A subclassed model whose `call` needs a keyword-only argument: `call(x, *, scale)`."""

    def __init__(self) -> None:
        super().__init__(name="keyword_scaled")
        self.dense = keras.layers.Dense(2, name="dense", **_init())

    def call(self, x: tf.Tensor, *, scale: float) -> tf.Tensor:
        return self.dense(x) * scale


def keyword_only_built_by_a_call() -> keras.Model:
    model = KeywordScaled()
    model(np.zeros((2, 4), np.float32), scale=2.0)
    return model


def nested(k: Any = keras) -> Any:
    """A functional model used as a layer of another, with a layer of its own inside."""
    b_in = k.Input((6, 6, 2), name="backbone_input")
    b = k.layers.Conv2D(3, 3, activation="relu", name="conv1", **_init(k))(b_in)
    b = k.layers.Conv2D(3, 3, activation="relu", name="conv2", **_init(k))(b)
    backbone = k.Model(b_in, b, name="backbone")
    x_in = k.Input((6, 6, 2), name="pixels")
    x = backbone(x_in)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    out = k.layers.Dense(2, name="head", **_init(k))(x)
    return k.Model(x_in, out, name="outer")


def shared() -> keras.Model:
    """A siamese model: one Dense called on two inputs, then joined."""
    a = keras.Input((4,), name="left")
    b = keras.Input((4,), name="right")
    dense = keras.layers.Dense(5, activation="relu", name="shared_dense", **_init())
    joined = keras.layers.Concatenate(name="join")([dense(a), dense(b)])
    out = keras.layers.Dense(1, name="score", **_init())(joined)
    return keras.Model([a, b], out, name="siam")


def multi_input() -> keras.Model:
    """Two inputs of different shapes, two outputs."""
    img = keras.Input((4, 4, 1), name="img")
    meta = keras.Input((3,), name="meta")
    x = keras.layers.Flatten(name="flat")(img)
    x = keras.layers.Dense(4, name="img_dense", **_init())(x)
    y = keras.layers.Dense(4, name="meta_dense", **_init())(meta)
    z = keras.layers.Add(name="add")([x, y])
    out1 = keras.layers.Dense(2, name="out_a", **_init())(z)
    out2 = keras.layers.Dense(1, activation="sigmoid", name="out_b", **_init())(z)
    return keras.Model([img, meta], [out1, out2], name="multi")


class SoftplusHelper(keras.layers.Layer):
    """Custom layer whose work happens in tf.function helpers (one reads a weight)."""

    def build(self, input_shape: tuple) -> None:
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    @tf.function
    def activate(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softplus(x) * 2.0

    @tf.function
    def scaled(self, x: tf.Tensor) -> tf.Tensor:
        return self.activate(x) * self.scale  # a tf.function calling a tf.function

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.scaled(x) + 1.0


def with_tf_function() -> keras.Model:
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(4, name="pre", **_init())(x_in)
    h = SoftplusHelper(name="soft")(h)
    out = keras.layers.Dense(2, name="post", **_init())(h)
    return keras.Model(x_in, out, name="helper_model")


class SameShape(keras.layers.Layer):
    """A layer whose output has its input's shape."""

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class RunningSum(SameShape):
    """A tf.while_loop layer: cumulative sum over the feature axis."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        n = tf.shape(x)[1]

        def body(i: tf.Tensor, acc: tf.Tensor, total: tf.Tensor) -> tuple:
            total = total + x[:, i]
            return i + 1, acc.write(i, total), total

        _, acc, _ = tf.while_loop(
            lambda i, *_: i < n, body, (0, tf.TensorArray(tf.float32, size=n), tf.zeros_like(x[:, 0]))
        )
        return tf.transpose(acc.stack())


class MapSquare(SameShape):
    """A tf.map_fn layer."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(lambda row: tf.square(row) + 1.0, x)


def control_flow() -> keras.Model:
    x_in = keras.Input((5,), name="x")
    h = RunningSum(name="running_sum")(x_in)
    h = MapSquare(name="map_square")(h)
    out = keras.layers.Dense(2, name="out", **_init())(h)
    return keras.Model(x_in, out, name="loops")


class Scoped(keras.layers.Layer):
    """A layer that opens a name scope spelled like another layer of the model.

    Name-based attribution would give its MatMul to `decoy`; the real call structure gives it
    to `scoped`.
    """

    def build(self, input_shape: tuple) -> None:
        self.w = self.add_weight(shape=(input_shape[-1], 3), initializer="ones", name="w")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        with tf.name_scope("decoy"):
            return tf.matmul(x, self.w)


def misleading_names() -> keras.Model:
    x_in = keras.Input((3,), name="x")
    h = Scoped(name="scoped")(x_in)
    out = keras.layers.Dense(3, name="decoy", **_init())(h)
    return keras.Model(x_in, out, name="misleading")


def deep_chain(depth: int = 40) -> keras.Model:
    """A long chain of layers, deeper than the seeds' depth-20 search could walk."""
    x_in = keras.Input((3,), name="x")
    h = x_in
    for i in range(depth):
        h = keras.layers.Dense(3, activation="tanh", name=f"d{i}", **_init())(h)
    return keras.Model(x_in, h, name="chain")


def residual() -> keras.Model:
    """Two ResNet-style blocks: each forks into a shortcut (`_0_conv`) and a main path
    (`_1_conv`, `_2_conv`) that rejoin at an Add."""
    x_in = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv", **_init())(x_in)
    for b in (1, 2):
        short = keras.layers.Conv2D(4, 1, name=f"block{b}_0_conv", **_init())(h)
        main = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"block{b}_1_conv", **_init())(h)
        main = keras.layers.Conv2D(4, 3, padding="same", name=f"block{b}_2_conv", **_init())(main)
        h = keras.layers.Add(name=f"block{b}_add")([short, main])
        h = keras.layers.ReLU(name=f"block{b}_out")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    out = keras.layers.Dense(3, name="logits", **_init())(h)
    return keras.Model(x_in, out, name="residual")


def shared_out_of_order(k: Any = keras) -> Any:
    """Shared calls that Keras runs in another order than the code made them.

    A functional model runs its nodes by depth, each depth's list in its own order: here
    `conv1(a)` and `block(conv2(c))` run before `conv1(x)` and `block(b)`, although the code made
    them second. A layer's calls are numbered in the code's order, as Keras numbers its nodes:
    `conv1` takes `x`, `conv1@2` takes `conv0`'s output.
    """
    x_in = k.Input((3,), name="x")
    conv0 = k.layers.Dense(3, name="conv0", **_init(k))
    conv1 = k.layers.Dense(3, activation="tanh", name="conv1", **_init(k))
    a = conv0(x_in)
    b = conv1(x_in)
    c = conv1(a)
    inner_in = k.Input((3,), name="block_in")
    block = k.Model(inner_in, k.layers.Dense(3, name="inner", **_init(k))(inner_in), name="block")
    e = block(b)
    f = block(k.layers.Dense(3, name="conv2", **_init(k))(c))
    return k.Model(x_in, [e, f], name="reordered")


ZOO = {
    "functional": functional,
    "sequential": sequential,
    "subclassed": subclassed,
    "nested": nested,
    "shared": shared,
    "shared_out_of_order": shared_out_of_order,
    "multi_input": multi_input,
    "with_tf_function": with_tf_function,
    "control_flow": control_flow,
    "misleading_names": misleading_names,
    "residual": residual,
}


def sample_inputs(model: keras.Model, batch: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Random inputs for every input of `model`, in order."""
    rng = np.random.default_rng(seed)
    if getattr(model, "_functional", None) is not None or isinstance(getattr(model, "inputs", None), list):
        shapes = [tuple(t.shape[1:]) for t in model.inputs]
    elif getattr(model, "_build_shapes_dict", None):  # a subclassed Keras 3 model: its recorded build shape
        shapes = [tuple(next(iter(model._build_shapes_dict.values()))[1:])]
    else:  # a subclassed tf_keras model
        shapes = [tuple(model._build_input_shape[1:])]
    return [rng.normal(size=(batch, *s)).astype(np.float32) for s in shapes]


# --------------------------------------------------------------------------- control flow zoo
# Layers whose interesting values live inside loops, branches and nested functions.


class ThresholdNMS(keras.layers.Layer):
    """Per-image NMS inside tf.map_fn with a score threshold: each image keeps its own count."""

    def call(self, inputs: list) -> tf.Tensor:
        boxes, scores = inputs

        def per_image(args: tuple) -> tf.Tensor:
            b, s = args
            keep = tf.image.non_max_suppression(b, s, 6, 0.5, score_threshold=0.4, name="nms")
            kept = tf.gather(s, keep)
            return tf.pad(kept, [[0, 6 - tf.shape(kept)[0]]])

        return tf.map_fn(per_image, (boxes, scores), fn_output_signature=tf.TensorSpec((6,), tf.float32))

    def compute_output_shape(self, input_shape: list) -> tuple:
        return (input_shape[0][0], 6)


def threshold_nms() -> keras.Model:
    boxes = keras.Input((12, 4), name="boxes")
    scores = keras.Input((12,), name="scores")
    out = ThresholdNMS(name="nms_layer")([boxes, scores])
    return keras.Model([boxes, scores], out, name="threshold_nms")


class Scan(SameShape):
    """tf.scan: a running product-sum over the feature axis."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        steps = tf.transpose(x)  # (features, batch)
        out = tf.scan(lambda acc, col: acc * 0.5 + tf.tanh(col), steps, initializer=tf.zeros_like(steps[0]))
        return tf.transpose(out)


class Branchy(SameShape):
    """tf.cond on the batch sum, and tf.switch_case on a clipped index."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.cond(tf.reduce_sum(x) > 0.0, lambda: tf.nn.relu(x) * 2.0, lambda: tf.exp(x) - 1.0)
        index = tf.clip_by_value(tf.cast(tf.reduce_max(x) * 2.0, tf.int32), 0, 2)
        return tf.switch_case(index, [lambda: y + 1.0, lambda: tf.sqrt(tf.abs(y)), lambda: y * y])


class CondInLoop(SameShape):
    """A tf.cond inside tf.map_fn: each row takes its own branch."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(
            lambda row: tf.cond(row[0] > 0.0, lambda: tf.math.log1p(row * row), lambda: row - 3.0), x
        )


class NestedLoops(SameShape):
    """tf.map_fn inside a tf.function helper, each row running an inner tf.while_loop that
    reads a weight: loops inside a function inside a layer."""

    def build(self, input_shape: tuple) -> None:
        self.w = self.add_weight(shape=(input_shape[-1],), initializer=keras.initializers.RandomNormal(seed=7), name="w")

    @tf.function
    def helper(self, x: tf.Tensor) -> tf.Tensor:
        def per_row(row: tf.Tensor) -> tf.Tensor:
            def body(i: tf.Tensor, acc: tf.Tensor) -> tuple:
                step = tf.tanh(acc * self.w + row * tf.cast(i, tf.float32))
                return i + 1, step

            return tf.while_loop(lambda i, _: i < 3, body, (0, tf.zeros_like(row)))[1]

        return tf.map_fn(per_row, x)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.helper(x)


class SharedHelper(SameShape):
    """One tf.function called from two places: one function body, two call sites."""

    @tf.function
    def squash(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.sigmoid(x) * 4.0

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.squash(x) + self.squash(x * -1.0)


class XlaHelper(SameShape):
    """A tf.function(jit_compile=True) helper."""

    @tf.function(jit_compile=True)
    def compiled(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(x) * 3.0

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.compiled(x) + 1.0


def loops_and_branches() -> keras.Model:
    """Every kind of control flow on one input, each in its own layer."""
    x_in = keras.Input((5,), name="x")
    a = RunningSum(name="running_sum")(x_in)
    b = Scan(name="scan")(x_in)
    c = Branchy(name="branchy")(x_in)
    d = CondInLoop(name="cond_in_loop")(x_in)
    e = NestedLoops(name="nested_loops")(x_in)
    f = SharedHelper(name="shared_helper")(x_in)
    g = XlaHelper(name="xla_helper")(x_in)
    out = keras.layers.Add(name="sum")([a, b, c, d, e, f, g])
    return keras.Model(x_in, out, name="loops_and_branches")


def recurrent(kind: str = "LSTM") -> keras.Model:
    """A Keras LSTM or GRU (a tf.while_loop over time steps on CPU)."""
    x_in = keras.Input((4, 3), name="sequence")
    layer = getattr(keras.layers, kind)(
        5,
        return_sequences=True,
        name=kind.lower(),
        kernel_initializer=keras.initializers.GlorotUniform(seed=next(_seeds)),
        recurrent_initializer=keras.initializers.Orthogonal(seed=next(_seeds)),
    )
    return keras.Model(x_in, layer(x_in), name=f"{kind.lower()}_model")


def many_blocks(blocks: int = 30) -> keras.Model:
    """EfficientNet-style naming at small scale: `block{n}a_expand`, `block{n}a_project`, ...,
    far more layers than a screen holds."""
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(4, name="stem_dense", **_init())(x_in)
    for n in range(1, blocks + 1):
        for part in ("expand", "act", "project"):
            act = "relu" if part == "act" else None
            h = keras.layers.Dense(4, activation=act, name=f"block{n}a_{part}", **_init())(h)
    out = keras.layers.Dense(2, name="top_dense", **_init())(h)
    return keras.Model(x_in, out, name="many_blocks")


class TwoSignatures(tf.Module):
    """A module saved with two signatures; `embed` takes its inputs by keyword, in declared order."""

    def __init__(self):
        super().__init__()
        self.net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="proj", **_init()),
                                     keras.layers.Dense(3, name="head", **_init())], name="net")
        self.embedder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="features", **_init()),
                                          keras.layers.Dense(2, name="pool", **_init())], name="embedder")

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
    def serve(self, x):
        return {"scores": tf.nn.softmax(self.net(x))}

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x"),
                                  tf.TensorSpec((None, 2), tf.float32, name="bias")])
    def embed(self, x, bias):
        return {"embedding": tf.nn.tanh(self.embedder(x)) + bias}


def save_two_signatures(path: Any) -> TwoSignatures:
    """Save a `TwoSignatures` module at `path` with signatures `serving_default` (`serve`: input
    x, output scores) and `embed` (inputs x, bias; output embedding); return the module."""
    module = TwoSignatures()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "embed": module.embed})
    return module
