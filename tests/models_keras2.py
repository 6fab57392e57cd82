"""The zoo's cases as Keras 2 (tf_keras) models: functional, sequential, subclassed, nested, shared
(in and out of node order), a custom layer with a tf.function helper, and a proposal layer doing
padded NMS in a `tf.while_loop`, the way the TF Model Garden's Mask R-CNN does. The functional
builders are `tests.models`' own, built with tf_keras."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from tests import models
from tests.models import sample_inputs  # noqa: F401  (the zoo's inputs: one spelling for both Kerases)


def _init() -> dict:
    return models._init(tf_keras)


def functional() -> tf_keras.Model:
    return models.functional(tf_keras)


def sequential() -> tf_keras.Model:
    return models.sequential(tf_keras)


class Subclassed(tf_keras.Model):
    def __init__(self) -> None:
        super().__init__(name="subclassed")
        self.encoder = tf_keras.layers.Dense(6, activation="relu", name="encoder", **_init())
        self.decoder = tf_keras.layers.Dense(3, name="decoder", **_init())

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.decoder(self.encoder(x) * 2.0 + 1.0)


def subclassed() -> tf_keras.Model:
    model = Subclassed()
    model(np.zeros((1, 4), np.float32))
    return model


def nested() -> tf_keras.Model:
    return models.nested(tf_keras)


def shared_out_of_order() -> tf_keras.Model:
    """As `models.shared_out_of_order`: tf_keras runs nodes by depth too."""
    return models.shared_out_of_order(tf_keras)


class Helpful(tf_keras.layers.Layer):
    """A custom layer whose call goes through a tf.function helper."""

    def build(self, shape: tf.TensorShape) -> None:
        self.scale = self.add_weight(name="scale", shape=(shape[-1],), initializer="ones")

    @tf.function
    def _helper(self, x: tf.Tensor) -> tf.Tensor:
        return tf.math.softplus(x) * self.scale

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self._helper(x) - 1.0


def with_tf_function() -> tf_keras.Model:
    x_in = tf_keras.Input((4,), name="x")
    h = tf_keras.layers.Dense(4, name="pre", **_init())(x_in)
    out = Helpful(name="helpful")(h)
    return tf_keras.Model(x_in, out, name="helped")


class PaddedProposals(tf_keras.layers.Layer):
    """Greedy NMS padded to `count` boxes in a `tf.while_loop` per image, as Model Garden's
    `sorted_non_max_suppression_padded` does: no NMS op in the graph, only loops."""

    def __init__(self, count: int = 4, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.count, self.threshold = count, threshold

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        boxes, scores = inputs

        def one_image(args):
            b, s = args
            order = tf.argsort(s, direction="DESCENDING")
            b, s = tf.gather(b, order), tf.gather(s, order)
            n = tf.shape(s)[0]

            def body(i, keep, alive):
                ok = alive[i]
                keep = tf.cond(ok, lambda: keep.write(keep.size(), i), lambda: keep)
                iou = _iou(b[i], b)
                alive = tf.logical_and(alive, tf.logical_or(tf.logical_not(ok), iou <= self.threshold))
                alive = tf.tensor_scatter_nd_update(alive, [[i]], [False])
                return i + 1, keep, alive

            _, keep, _ = tf.while_loop(
                lambda i, keep, alive: tf.logical_and(i < n, keep.size() < self.count),
                body,
                [tf.constant(0), tf.TensorArray(tf.int32, size=0, dynamic_size=True), tf.ones([n], tf.bool)],
                name="padded_nms",
            )
            kept = keep.stack()
            padded = tf.pad(kept, [[0, self.count - tf.shape(kept)[0]]], constant_values=-1)
            return tf.gather(b, tf.maximum(padded, 0)) * tf.cast(padded[:, None] >= 0, b.dtype)

        return tf.map_fn(one_image, (boxes, scores), fn_output_signature=tf.float32)


def _iou(box: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    y1 = tf.maximum(box[0], boxes[:, 0])
    x1 = tf.maximum(box[1], boxes[:, 1])
    y2 = tf.minimum(box[2], boxes[:, 2])
    x2 = tf.minimum(box[3], boxes[:, 3])
    inter = tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter + 1e-9)


def padded_proposals() -> tf_keras.Model:
    """A Mask R-CNN-like head: anchors' deltas and scores from a small conv net, then padded NMS."""
    image = tf_keras.Input((8, 8, 3), name="image")
    h = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="rpn_conv", **_init())(image)
    deltas = tf_keras.layers.Conv2D(4, 1, name="rpn_bbox", **_init())(h)
    logits = tf_keras.layers.Conv2D(1, 1, name="rpn_class", **_init())(h)
    boxes = tf_keras.layers.Reshape((64, 4), name="boxes")(tf_keras.layers.Activation("sigmoid", name="unit")(deltas))
    corners = tf_keras.layers.Lambda(
        lambda b: tf.concat([tf.minimum(b[..., :2], b[..., 2:]), tf.maximum(b[..., :2], b[..., 2:])], -1),
        name="corners",
    )(boxes)
    scores = tf_keras.layers.Reshape((64,), name="scores")(logits)
    rois = PaddedProposals(count=5, name="multilevel_roi_generator")([corners, scores])
    return tf_keras.Model(image, rois, name="padded_rcnn")


ZOO = {
    "functional": functional,
    "sequential": sequential,
    "subclassed": subclassed,
    "nested": nested,
    "shared_out_of_order": shared_out_of_order,
    "with_tf_function": with_tf_function,
    "padded_proposals": padded_proposals,
}


def fixed_functional() -> tf_keras.Model:
    """`functional` with weights drawn from a fixed seed: the same model each time it is built
    (Beam's workers build their own)."""
    model = functional()
    rng = np.random.default_rng(0)
    for w in model.weights:
        values = rng.uniform(0.5, 1.5, w.shape) if "moving_variance" in w.name else rng.normal(0.0, 0.3, w.shape)
        w.assign(values.astype(w.dtype.as_numpy_dtype))
    return model
