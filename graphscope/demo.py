"""Built-in demo models: a small Mask R-CNN-like network, made locally (no downloads).

A conv backbone, an RPN head and a custom `ProposalLayer` named `ROI` that decodes anchor boxes
and runs per-image non-max suppression, either with a static-batch Python loop (as Mask R-CNN's
`batch_slice` does; `variant="loop"`) or with `tf.map_fn` (`variant="map_fn"`). Weights are random
with fixed seeds, set per initializer: building a demo model changes no global random state.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["ProposalLayer", "anchors", "proposal_model", "report", "synthetic_images"]

IMAGE_SIZE = 64
FEATURE_STRIDE = 4
ANCHOR_SCALES = (0.3, 0.5, 0.7)


def anchors(image_size: int = IMAGE_SIZE, stride: int = FEATURE_STRIDE, scales: tuple[float, ...] = ANCHOR_SCALES) -> np.ndarray:
    """Square anchors `(y1, x1, y2, x2)` in normalised coordinates, `scales` per feature cell."""
    n = image_size // stride
    centers = (np.arange(n, dtype=np.float32) + 0.5) / n
    cy, cx = np.meshgrid(centers, centers, indexing="ij")
    boxes = []
    for y, x in zip(cy.ravel(), cx.ravel()):
        for s in scales:
            boxes.append((y - s / 2, x - s / 2, y + s / 2, x + s / 2))
    return np.asarray(boxes, dtype=np.float32)


@keras.saving.register_keras_serializable(package="graphscope_demo")
class ProposalLayer(keras.layers.Layer):
    """Decode RPN deltas on the anchors, keep the top scores and run NMS per image.

    Inputs: `[rpn_probs (batch, anchors, 2), rpn_bbox (batch, anchors, 4)]`.
    Output: `(batch, proposal_count, 4)` boxes, zero-padded.
    """

    def __init__(
        self,
        proposal_count: int = 32,
        nms_threshold: float = 0.5,
        pre_nms_limit: int = 200,
        variant: str = "loop",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if variant not in ("loop", "map_fn"):
            raise ValueError(f"variant must be 'loop' or 'map_fn', got {variant!r}")
        self.proposal_count = proposal_count
        self.nms_threshold = nms_threshold
        self.pre_nms_limit = pre_nms_limit
        self.variant = variant
        self.anchors = anchors()

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        probs, deltas = inputs
        scores = probs[:, :, 1]
        deltas = deltas * np.array([0.1, 0.1, 0.2, 0.2], np.float32)
        k = min(self.pre_nms_limit, self.anchors.shape[0])
        top = tf.math.top_k(scores, k=k, sorted=True, name="top_anchors").indices
        scores = tf.gather(scores, top, batch_dims=1)
        deltas = tf.gather(deltas, top, batch_dims=1)
        boxes = tf.gather(tf.constant(self.anchors), top, name="pre_nms_anchors")
        boxes = self._apply_deltas(boxes, deltas)
        boxes = tf.clip_by_value(boxes, 0.0, 1.0, name="refined_anchors_clipped")
        if self.variant == "map_fn":
            return tf.map_fn(
                lambda bs: self._nms(bs[0], bs[1]),
                (boxes, scores),
                fn_output_signature=tf.TensorSpec((self.proposal_count, 4), tf.float32),
            )
        batch = boxes.shape[0]
        if batch is None:
            raise ValueError("the 'loop' variant slices a static batch: build it with batch_size set")
        return tf.stack([self._nms(boxes[i], scores[i]) for i in range(batch)], axis=0)

    def _apply_deltas(self, boxes: tf.Tensor, deltas: tf.Tensor) -> tf.Tensor:
        with tf.name_scope("refined_anchors"):
            height = boxes[..., 2] - boxes[..., 0]
            width = boxes[..., 3] - boxes[..., 1]
            cy = boxes[..., 0] + 0.5 * height + deltas[..., 0] * height
            cx = boxes[..., 1] + 0.5 * width + deltas[..., 1] * width
            height = height * tf.exp(deltas[..., 2])
            width = width * tf.exp(deltas[..., 3])
            return tf.stack([cy - 0.5 * height, cx - 0.5 * width, cy + 0.5 * height, cx + 0.5 * width], axis=-1)

    def _nms(self, boxes: tf.Tensor, scores: tf.Tensor) -> tf.Tensor:
        indices = tf.image.non_max_suppression(
            boxes, scores, self.proposal_count, self.nms_threshold, name="rpn_non_max_suppression"
        )
        proposals = tf.gather(boxes, indices)
        padding = tf.maximum(self.proposal_count - tf.shape(proposals)[0], 0)
        return tf.pad(proposals, [(0, padding), (0, 0)])

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0][0], self.proposal_count, 4)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "proposal_count": self.proposal_count,
            "nms_threshold": self.nms_threshold,
            "pre_nms_limit": self.pre_nms_limit,
            "variant": self.variant,
        }


def proposal_model(*, variant: str = "loop", batch_size: int = 2, seed: int = 0) -> keras.Model:
    """The demo network: backbone, RPN head and the `ROI` proposal layer.

    Outputs: `[rpn_class_logits, rpn_class, rpn_bbox, ROI]`.
    """
    init = iter(range(seed * 100, seed * 100 + 100))

    def conv(filters: int, size: int, name: str, **kw: Any) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            filters, size, padding="same", name=name,
            kernel_initializer=keras.initializers.GlorotUniform(seed=next(init)),
            bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=next(init)),
            **kw,
        )

    n_anchors = len(ANCHOR_SCALES)
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), batch_size=batch_size, name="input_image")
    x = conv(16, 3, "conv1", strides=2, activation="relu")(image)
    x = conv(32, 3, "conv2", strides=2, activation="relu")(x)
    shared = conv(32, 3, "rpn_conv_shared", activation="relu")(x)
    logits = conv(2 * n_anchors, 1, "rpn_class_raw")(shared)
    logits = keras.layers.Reshape((-1, 2), name="rpn_class_logits")(logits)
    probs = keras.layers.Softmax(name="rpn_class")(logits)
    bbox = conv(4 * n_anchors, 1, "rpn_bbox_pred")(shared)
    bbox = keras.layers.Reshape((-1, 4), name="rpn_bbox")(bbox)
    rois = ProposalLayer(variant=variant, name="ROI")([probs, bbox])
    name = "mask_rcnn_demo" if variant == "loop" else "mask_rcnn_demo_map_fn"
    return keras.Model(image, [logits, probs, bbox, rois], name=name)


def synthetic_images(batch_size: int = 2, size: int = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """A batch of images with a few bright rectangles on a noisy dark background."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.1, (batch_size, size, size, 3)).astype(np.float32)
    for img in images:
        for _ in range(3):
            y, x = rng.integers(0, size - 16, 2)
            h, w = rng.integers(8, 16, 2)
            img[y : y + h, x : x + w] = rng.uniform(0.6, 1.0, 3)
    return images


def report(*, variant: str = "loop") -> list[Any]:
    """Run the demo and return rich renderables describing it (the CLI prints them)."""
    from rich.panel import Panel
    from rich.text import Text

    import graphscope as gs

    model = proposal_model(variant=variant)
    scope = gs.trace(model)
    roi = scope.layer("ROI")
    nms = scope.ancestors(roi.output, op_type=r"NonMaxSuppressionV\d")
    out: list[Any] = [
        Text(f"{scope!r}", style="bold"),
        Text(f"Ancestors of ROI's output {roi.output.name} that are NMS ops:"),
        nms,
    ]
    fetches = [scope.layer("rpn_class").output, scope.layer("rpn_bbox").output, *nms]
    images = synthetic_images()
    executor = scope.executor(fetches)
    values = executor(images)
    out += [
        Text(f"{executor!r}: runs {len(executor.ops)} of {scope.graph.number_of_nodes()} ops"),
        values,  # Results: shown as a table
    ]
    # the check a user would do by hand: NMS on the fetched boxes/scores gives the same indices
    # (inside tf.map_fn every value has one entry per image, one per loop iteration)
    inputs = scope.executor([scope.op(t.op).inputs[k] for t in nms for k in (0, 1)])(images)
    checks = []
    for t in nms:
        boxes_name, scores_name = scope.op(t.op).inputs[:2]
        per_image = [(inputs[boxes_name], inputs[scores_name], values[t.name])]
        if t.context:
            per_image = list(zip(inputs[boxes_name], inputs[scores_name], values[t.name]))
        for k, (boxes, scores, fetched) in enumerate(per_image):
            by_hand = tf.image.non_max_suppression(
                boxes, scores, roi.keras_layer.proposal_count, roi.keras_layer.nms_threshold
            ).numpy()
            same = np.array_equal(by_hand, fetched)
            where = f" (image {k}, loop iteration {k})" if t.context else ""
            checks.append(f"{t.name}{where}: {len(by_hand)} boxes kept; tf.image.non_max_suppression "
                          f"by hand {'agrees' if same else 'DIFFERS'}")
    out.append(Panel("\n".join(checks), title="check", expand=False))
    return out
