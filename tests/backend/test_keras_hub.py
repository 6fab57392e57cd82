"""keras-hub models whose interesting part is not in `call`: a RetinaNet detector's NMS in
`predict_step`, a causal LM's sampling loop in `generate_step`. Tiny models built from their
configs with random weights (no presets, no downloads)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

keras_hub = pytest.importorskip("keras_hub")

import graphscope as gs  # noqa: E402
from graphscope.display.format import count  # noqa: E402

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
    decoder = detector.prediction_decoder.name  # `non_max_suppression`, or `_<n>` after other tests built one
    nms = scope.layer(decoder)  # the prediction decoder: called in predict_step only
    assert nms.keras_layer is detector.prediction_decoder and nms.type == "NonMaxSuppression"
    assert scope.output_keys == ["boxes", "confidence", "labels", "num_detections"]
    loops = scope.ancestors(scope.output("boxes"), op_type="While|StatelessWhile")
    assert loops and {t.layer for t in loops} == {decoder}
    assert not any(f"{decoder}_1" in t.name for t in scope.find())  # no Keras suffix
    whole = gs.trace(detector, quiet=True)  # the model's own ops are named as trace(model) names them
    backbone = {t.name for t in whole.find(layer=detector.backbone.name)}
    assert backbone and backbone <= set(scope.model_graph.tensors)
    biases = whole.find(op_type="BiasAdd").names  # the heads' too: the Task's root call is recorded
    assert len(biases) > 10 and set(biases) == set(scope.find(op_type="BiasAdd").names)
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


def _vit():
    return keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=2,
                                        hidden_dim=8, mlp_dim=16)


def _deit():
    return keras_hub.models.DeiTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=2,
                                         hidden_dim=8, intermediate_dim=16)


@pytest.mark.parametrize("backbone, task", [(_vit, keras_hub.models.ViTImageClassifier),
                                            (_deit, keras_hub.models.DeiTImageClassifier)], ids=["vit", "deit"])
def test_vision_transformers_trace_with_their_values(backbone, task):
    """ViT keeps its position ids as an EagerTensor made in `build()` and calls an Embedding on
    it (issue 25, item 2): the Embedding's input is the tensor the ids were captured as."""
    bb = backbone()
    clf = task(backbone=bb, num_classes=3)
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    scope = gs.trace(bb, quiet=True)
    for layer in bb.layers[1:]:  # each top-level layer's outputs vs Keras' sub-model
        outputs = scope.layer(layer.name).outputs
        got = scope.run(outputs, x)
        want = tf.nest.flatten(keras.Model(bb.inputs, layer.output)(x))
        assert len(outputs) == len(want), layer.name
        for t, w in zip(outputs, want):
            np.testing.assert_allclose(got[t.name], w, rtol=1e-4, atol=1e-5, err_msg=t.name)
    np.testing.assert_allclose(scope.run(scope.output(), x)[scope.output().name], bb(x), rtol=1e-4, atol=1e-5)
    embeddings = bb.layers[1]
    if hasattr(embeddings, "position_ids"):  # ViT: the Embedding called on the eager ids
        (pos,) = [lay for lay in scope.layers if lay.keras_layer is embeddings.position_embedding]
        assert pos.inputs.names == [f"{embeddings.name}/position_ids:0"]  # the attribute holding them
        values = scope.run([pos.inputs[0], pos.output], x)
        np.testing.assert_array_equal(values[pos.inputs[0].name], embeddings.position_ids)
        np.testing.assert_allclose(values[pos.output.name], embeddings.position_embedding(embeddings.position_ids),
                                   rtol=1e-6)
    task_scope = gs.trace(clf, quiet=True)  # the Task: its logits
    logits = task_scope.output()
    np.testing.assert_allclose(task_scope.run(logits, x)[logits.name], clf(x), rtol=1e-4, atol=1e-5)


def _no_layer_path_twice(scope):
    paths = [lay.name for lay in scope.model_graph.layers]
    assert len(paths) == len(set(paths)), sorted(p for p in paths if paths.count(p) > 1)


def test_a_task_traced_as_itself_is_named_as_its_backbone_is():
    """keras-hub Tasks (PipelineModel) define their own `__call__`: the Task object itself traces
    with the backbone as a layer with its ops, names without the Task's scope, each parameter once."""
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(32, 32, 3),
    )
    classifier = keras_hub.models.ImageClassifier(backbone=encoder, num_classes=3, preprocessor=None)
    scope = gs.trace(classifier, quiet=True)
    alone = gs.trace(encoder, quiet=True)
    assert scope.inputs == alone.inputs == [classifier.layers[0].name]  # as Keras names the input (its InputLayer)
    names = set(scope.model_graph.tensors)
    assert not any(n.startswith(classifier.name) for n in names)  # neither its scope nor `image_classifier_1`
    inside = {t.name for t in alone.find() if t.layer is not None}  # the ops of its layers
    assert {f"{encoder.name}/{n}" for n in inside} <= names  # the backbone's ops, named as when traced alone
    plain = gs.trace(keras.Model(classifier.input, classifier.output), quiet=True)  # the same graph, no own __call__
    assert set(plain.model_graph.tensors) == names
    assert [lay.name for lay in plain.model_graph.layers] == [lay.name for lay in scope.model_graph.layers]
    layer = scope.layer(encoder.name)
    assert layer.keras_layer is encoder and len(layer.ops) >= len(inside)
    relu = scope.tensor(f"{encoder.name}/conv1_relu/Relu:0")
    _no_layer_path_twice(scope)
    assert f"· {count(classifier.count_params())} params" in scope.layer_tree().caption  # each weight once
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    got = scope.run([relu, *layer.outputs.names, *scope.outputs.names], x)
    relu_model = keras.Model(encoder.input, encoder.get_layer("conv1_relu").output)
    np.testing.assert_allclose(got[relu.name], relu_model(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[layer.outputs.names[0]], encoder(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[scope.outputs.names[0]], classifier(x), rtol=1e-4, atol=1e-5)


def test_a_seq2seq_tasks_shared_embedding_has_one_record_per_call():
    """BART's Task calls its backbone's token embedding again (reversed, for the logits)."""
    backbone = keras_hub.models.BartBackbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=12)
    lm = keras_hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=None)
    scope = gs.trace(lm, quiet=True)
    _no_layer_path_twice(scope)
    embedding = [lay for lay in scope.model_graph.layers if lay.keras_layer is backbone.token_embedding]
    assert sorted(lay.name for lay in embedding) == [  # two calls in the backbone, one in the Task
        f"{backbone.name}/token_embedding", f"{backbone.name}/token_embedding@2", "token_embedding"]
    assert all(lay.ops for lay in embedding)
    assert not any(n.startswith(lm.name) for n in scope.model_graph.tensors)
    assert f"· {count(lm.count_params())} params" in scope.layer_tree().caption
    rng = np.random.default_rng(0)
    data = {"encoder_token_ids": rng.integers(1, 40, (2, 6)).astype(np.int32),
            "decoder_token_ids": rng.integers(1, 40, (2, 5)).astype(np.int32)}
    data["encoder_padding_mask"] = np.ones((2, 6), np.int32)
    data["decoder_padding_mask"] = np.ones((2, 5), np.int32)
    logits = scope.run(scope.outputs.names, data)[scope.outputs.names[0]]
    np.testing.assert_allclose(logits, lm(data), rtol=1e-4, atol=1e-5)
    reverse = scope.layer("token_embedding").inputs.names[0]  # the Task's call: the decoder's output in
    decoder = keras.Model(backbone.input, backbone.output["decoder_sequence_output"])
    np.testing.assert_allclose(scope.run([reverse], data)[reverse], decoder(data), rtol=1e-4, atol=1e-5)


def test_a_causal_lms_generate_step_takes_a_dict_signature_fed_by_its_keys():
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=16)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    signature = [{"token_ids": tf.TensorSpec((None, 8), tf.int32), "padding_mask": tf.TensorSpec((None, 8), tf.bool)}]
    scope = gs.trace(lm.generate_step, signature, quiet=True)
    assert scope.inputs == ["padding_mask", "token_ids"]  # by key, in tf.nest.flatten order
    assert scope.name == lm.name and scope.output_keys == ["padding_mask", "token_ids"]
    ids = np.array([[3, 7, 9, 0, 0, 0, 0, 0], [5, 1, 0, 0, 0, 0, 0, 0]], np.int32)
    mask = ids > 0
    want = lm.generate_step({"token_ids": ids, "padding_mask": mask})  # the method itself, eagerly
    for given in ({"token_ids": ids, "padding_mask": mask}, [mask, ids]):
        got = scope.run(scope.output_keys, given)
        for key in scope.output_keys:
            np.testing.assert_array_equal(got[key], np.asarray(want[key]), err_msg=key)
    assert not np.array_equal(np.asarray(want["token_ids"]), ids)  # it generated something
