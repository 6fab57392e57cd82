"""keras-hub models whose interesting part is not in `call`: a RetinaNet detector's NMS in
`predict_step`, a causal LM's sampling loop in `generate_step`. Tiny models built from their
configs with random weights (no presets, no downloads)."""

import numpy as np
import pytest
import tensorflow as tf

keras_hub = pytest.importorskip("keras_hub")

import graphscope as gs  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector():
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(64, 64, 3),
    )
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=4, use_p5=False)
    anchors = keras_hub.layers.AnchorGenerator(bounding_box_format="yxyx", min_level=3, max_level=4, num_scales=1,
                                               aspect_ratios=[1.0], anchor_size=4)
    return keras_hub.models.RetinaNetObjectDetector(backbone=backbone, anchor_generator=anchors, num_classes=3,
                                                    bounding_box_format="yxyx")


def test_a_detectors_predict_step_has_its_nms_layer(detector):
    scope = gs.trace(detector.predict_step, [tf.TensorSpec((1, 64, 64, 3))], quiet=True)
    assert scope.name == detector.name
    nms = scope.layer("non_max_suppression")  # the prediction decoder: called in predict_step only
    assert nms.keras_layer is detector.prediction_decoder and nms.type == "NonMaxSuppression"
    assert scope.output_keys == ["boxes", "confidence", "labels", "num_detections"]
    loops = scope.ancestors(scope.output("boxes"), op_type="While|StatelessWhile")
    assert loops and {t.layer for t in loops} == {"non_max_suppression"}
    assert not any("non_max_suppression_1" in t.name for t in scope.find())  # no Keras suffix
    whole = gs.trace(detector, quiet=True)  # the model's own ops are named as trace(model) names them
    assert {t.name for t in whole.find(layer="retina_net_backbone")} <= set(scope.model_graph.tensors)
    x = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    got = scope.run(scope.output_keys, x)
    want = detector.predict_step(x)
    for key in scope.output_keys:
        np.testing.assert_allclose(got[key], np.asarray(want[key]), rtol=1e-4, atol=1e-5, err_msg=key)


def test_a_causal_lms_generate_step_has_per_step_attention():
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=16)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")

    def generate(token_ids, padding_mask):
        return lm.generate_step({"token_ids": token_ids, "padding_mask": padding_mask}, stop_token_ids=None)

    scope = gs.trace(generate, [tf.TensorSpec((None, 8), tf.int32), tf.TensorSpec((None, 8), tf.bool)], quiet=True)
    assert scope.layer("transformer_layer_0/self_attention").type == "CachedMultiHeadAttention"
    # the softmax layer's name is Keras' automatic one (`softmax`, or `softmax_<n>` when the
    # process made Softmax layers before): read it from the layer
    softmax = backbone.transformer_layers[0]._self_attention_layer._softmax.name
    prefill = scope.tensor(f"transformer_layer_0/self_attention/{softmax}/Softmax:0")
    step = scope.tensor(f"while/transformer_layer_0@2/self_attention/{softmax}/Softmax:0")  # called again in the loop
    assert prefill.context is None and step.context == "while:body"
    assert step.layer == f"transformer_layer_0@2/self_attention/{softmax}"
    ids = np.array([[3, 7, 9, 0, 0, 0, 0, 0]], np.int32)
    mask = np.array([[True, True, True, False, False, False, False, False]])
    assert scope.inputs == ["token_ids", "padding_mask"]  # generate's arguments
    generated = scope.output("token_ids")  # the output, not the input of the same name
    values = scope.run([generated, step], (ids, mask))
    np.testing.assert_array_equal(values[generated.name], np.asarray(generate(ids, mask)["token_ids"]))
    attention = values[step.name]  # [steps, batch, heads, 1 query, keys]
    assert attention.shape == (5, 1, 2, 1, 8)  # one per generated token, positions 3..7
    np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
    for k, position in enumerate(range(3, 8)):  # causal: no weight on keys after the token's position
        assert np.all(attention[k, ..., position + 1:] < 1e-6), position
    # the attention preset finds the same softmaxes, prefill and per-step, in both transformer layers
    probs = gs.presets.attention(scope).names
    assert prefill.name in probs and step.name in probs
    assert {t.removeprefix("while/").split("/")[0].split("@")[0] for t in probs} == {"transformer_layer_0", "transformer_layer_1"}
