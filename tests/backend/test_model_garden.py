"""The TF Model Garden's Mask R-CNN (tf_keras), built from its config with random weights:
its layers attributed, the padded-NMS `while` loops inside `multilevel_roi_generator` found by
an ancestor walk and run, and its named outputs equal to the model's own. Skipped where
tf-models-official is not installed (it pins TensorFlow 2.20; see the README for a local install)."""

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("official.vision.modeling.factory")
tf_keras = pytest.importorskip("tf_keras")

import graphscope as gs  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mask_rcnn():
    from official.vision.configs import backbones
    from official.vision.configs import maskrcnn as configs
    from official.vision.modeling import factory

    config = configs.MaskRCNN(num_classes=3, backbone=backbones.Backbone(type="resnet"))
    config.input_size = [128, 128, 3]
    model = factory.build_maskrcnn(input_specs=tf_keras.layers.InputSpec(shape=[None, 128, 128, 3]), model_config=config)
    images = np.random.default_rng(0).uniform(size=(1, 128, 128, 3)).astype(np.float32)
    shape = np.array([[128.0, 128.0]], np.float32)
    scope = gs.trace(lambda images, image_shape: model(images, image_shape=image_shape, training=False),
                     [tf.TensorSpec((1, 128, 128, 3)), tf.TensorSpec((1, 2))], quiet=True)
    return model, scope, (images, shape)


def test_its_layers_are_attributed(mask_rcnn):
    _, scope, _ = mask_rcnn
    names = {lay.name for lay in scope.layers}
    for layer in ("res_net", "fpn", "rpn_head", "multilevel_roi_generator", "detection_generator", "mask_head"):
        assert f"mask_rcnn_model/{layer}" in names, layer
        assert scope.find(layer=f"mask_rcnn_model/{layer}"), layer


def test_the_nms_loops_are_found_from_the_roi_generator_and_run(mask_rcnn):
    _, scope, inputs = mask_rcnn
    roi = scope.layer("mask_rcnn_model/multilevel_roi_generator")
    loops = scope.ancestors(roi.outputs, op_type="While|StatelessWhile")
    assert loops and {t.layer for t in loops} == {roi.name}
    inside = [t for t in scope.ancestors(roi.outputs) if t.context and t.layer == roi.name
              and not t.is_handle and t.op_type in ("Greater", "GreaterEqual", "Less", "Maximum", "Minimum")]
    assert inside
    values = scope.run(inside[:3], inputs)
    for t in inside[:3]:  # one entry per iteration of each enclosing loop, each of the static shape
        entries = [values[t.name]]
        for _ in range(sum(f.endswith((":body", ":cond")) for f in t.function)):
            entries = [e for v in entries for e in v]
        assert entries, t.name
        assert all(tf.TensorShape(t.shape).is_compatible_with(np.shape(e)) for e in entries), t.name


def test_its_own_dunder_call_layer_is_recorded(mask_rcnn):
    """DetectionGenerator computes in a `__call__` of its own, never calling `call`."""
    model, scope, _ = mask_rcnn
    generator = scope.layer("mask_rcnn_model/detection_generator")
    assert generator.keras_layer is model.detection_generator and len(generator.ops) > 100
    assert type(model.detection_generator).__name__ == "DetectionGenerator"
    assert type(model.detection_generator).__module__.startswith("official.")


def test_named_outputs_equal_the_models_own(mask_rcnn):
    model, scope, (images, shape) = mask_rcnn
    want = model(images, image_shape=shape, training=False)
    keys = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]
    got = scope.run(keys, (images, shape))
    for key in keys:
        np.testing.assert_allclose(got[key], np.asarray(want[key]), rtol=1e-4, atol=1e-4, err_msg=key)
