"""The built-in demo: NMS inside a custom layer found by an ancestor walk and checked by hand."""

import subprocess
import sys

import numpy as np
import tensorflow as tf

import graphscope as gs
from graphscope import demo


def test_nms_found_by_ancestor_walk_equals_nms_by_hand():
    model = demo.proposal_model()
    scope = gs.trace(model)
    roi = scope.layer("ROI")
    nms = scope.ancestors(roi.output, op_type=r"NonMaxSuppressionV\d")
    assert nms.names == [
        "ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0",
        "ROI/rpn_non_max_suppression_1/NonMaxSuppressionV3:0",
    ]
    boxes_scores = [name for t in nms for name in scope.op(t.op).inputs[:2]]
    fetches = [scope.layer("rpn_class").output, scope.layer("rpn_bbox").output, *nms, *boxes_scores]
    images = demo.synthetic_images()
    values = scope.run(fetches, images)
    layer = roi.keras_layer
    for k, t in enumerate(nms):
        boxes, scores = values[boxes_scores[2 * k]], values[boxes_scores[2 * k + 1]]
        want = tf.image.non_max_suppression(boxes, scores, layer.proposal_count, layer.nms_threshold)
        np.testing.assert_array_equal(values[t.name], want)
        assert not np.array_equal(values[t.name], np.arange(len(want)))  # NMS really suppressed
        # and the proposals ROI returns are those boxes, in that order
        kept = boxes[values[t.name]]
        np.testing.assert_allclose(model(images)[3][k][: len(kept)], kept, rtol=1e-5)
    probs = keras_output = model(images)[1]
    np.testing.assert_allclose(values["rpn_class/Softmax:0"], keras_output, rtol=1e-5)
    assert probs.shape == (2, 768, 2)


def test_demo_builds_are_deterministic_and_leave_global_rng_alone():
    import keras

    keras.utils.set_random_seed(123)
    before = np.random.rand()
    keras.utils.set_random_seed(123)
    a, b = demo.proposal_model(), demo.proposal_model()
    assert np.random.rand() == before
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)


def test_map_fn_variant_finds_the_nms_inside_the_loop():
    scope = gs.trace(demo.proposal_model(variant="map_fn"))
    (nms,) = scope.ancestors(scope.layer("ROI").output, op_type=r"NonMaxSuppressionV\d")
    assert nms.function and nms.layer == "ROI"
    out = demo.proposal_model(variant="map_fn")(demo.synthetic_images())
    loop = demo.proposal_model(variant="loop")(demo.synthetic_images())
    np.testing.assert_allclose(out[3], loop[3], rtol=1e-5)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "graphscope", *args], capture_output=True, text=True, timeout=300)


def test_cli_demo():
    run = _cli("demo")
    assert run.returncode == 0, run.stderr
    assert "<Scope mask_rcnn_demo:" in run.stdout
    assert run.stdout.count("tf.image.non_max_suppression by hand agrees") == 2
    assert "DIFFERS" not in run.stdout
    assert "cuda" not in run.stderr.lower()  # TensorFlow's start-up chatter is silenced


def test_cli_demo_map_fn_and_usage_errors():
    run = _cli("demo", "--variant", "map_fn")
    assert run.returncode == 0, run.stderr
    # the NMS runs inside tf.map_fn: one value per image (loop iteration), each checked by hand
    assert run.stdout.count("tf.image.non_max_suppression by hand agrees") == 2
    assert "(image 1, loop" in run.stdout and "DIFFERS" not in run.stdout
    bad = _cli("demo", "--variant", "nope")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    assert _cli().returncode == 2
    helped = _cli("--help")
    assert helped.returncode == 0 and "graphscope demo" in helped.stdout
