"""The conformance zoo's models: third-party architectures at tiny configs, built locally with
random weights (no presets, no downloads), each as a `Case`: what to hand `gs.trace`, inputs to
run it on, and the eager call that is its oracle. `tests/test_zoo.py` puts every case through the
same property checks."""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
from typing import Any, Callable

import numpy as np
import pytest
import tensorflow as tf

import keras


@dataclasses.dataclass
class Case:
    """One zoo entry.

    target: what `gs.trace` is handed (a model, a bound method, a SavedModel path).
    signature: the `input_signature` it needs, None where the model knows its inputs.
    inputs: one sample, as the eager call takes it (an array, a list, or a dict by input name).
    call: the eager oracle, `call(inputs)` -> the structure the traced function returns.
    model: the Keras model whose layers the trace records (None for a SavedModel's signature).
    oracle: the Keras model layer values are compared with (the model itself, or the model a
        SavedModel was saved from).
    kinds: what the model is: "transformer" (has attention), "classifier" (ends in a softmax).
    kwargs: extra keyword arguments for `gs.trace` (a SavedModel's `signature=`).
    """

    name: str
    target: Any
    signature: Any
    inputs: Any
    call: Callable[[Any], Any]
    model: Any
    oracle: Any = None
    kinds: frozenset = frozenset()
    kwargs: dict = dataclasses.field(default_factory=dict)
    tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if self.oracle is None:
            self.oracle = self.model


_rng = np.random.default_rng(0)
_seeds = itertools.count(100)


def _uniform(*shape: int) -> np.ndarray:
    return _rng.uniform(size=shape).astype(np.float32)


def _tokens(batch: int, length: int, vocabulary: int, filled: int) -> tuple[np.ndarray, np.ndarray]:
    ids = _rng.integers(1, vocabulary, size=(batch, length)).astype(np.int32)
    mask = np.zeros((batch, length), bool)
    mask[:, :filled] = True
    ids[~mask] = 0
    return ids, mask


def _spec(array: np.ndarray, *, batch: bool = True) -> tf.TensorSpec:
    shape = (None, *array.shape[1:]) if batch else array.shape
    return tf.TensorSpec(shape, tf.as_dtype(array.dtype))


# --------------------------------------------------------------------------- keras-hub

def _hub() -> Any:
    return pytest.importorskip("keras_hub")


def gpt2_backbone() -> Any:
    hub = _hub()
    return hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                   intermediate_dim=32, max_sequence_length=16)


def gpt2() -> Case:
    hub = _hub()
    lm = hub.models.GPT2CausalLM(backbone=gpt2_backbone(), preprocessor=None)
    ids, mask = _tokens(2, 8, 50, 3)
    x = {"token_ids": ids, "padding_mask": mask}
    return Case("gpt2", lm, None, x, lm, lm, kinds=frozenset({"transformer"}))


def gpt2_generate_step() -> Case:
    hub = _hub()
    lm = hub.models.GPT2CausalLM(backbone=gpt2_backbone(), preprocessor=None)
    lm.compile(sampler="greedy")
    ids, mask = _tokens(1, 8, 50, 3)
    x = {"token_ids": ids, "padding_mask": mask}
    signature = [{"token_ids": _spec(ids), "padding_mask": _spec(mask)}]
    return Case("gpt2.generate_step", lm.generate_step, signature, x, lm.generate_step, lm,
                kinds=frozenset({"transformer"}))


def bert() -> Case:
    hub = _hub()
    backbone = hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                       intermediate_dim=32, max_sequence_length=16)
    classifier = hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None,
                                               activation="softmax")
    ids, mask = _tokens(2, 8, 50, 5)
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
    return Case("bert", classifier, None, x, classifier, classifier,
                kinds=frozenset({"transformer", "classifier"}))


def _bart_lm() -> Any:
    hub = _hub()
    backbone = hub.models.BartBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                       intermediate_dim=32, max_sequence_length=16)
    return hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=None)


def _seq2seq_inputs() -> dict:
    enc, enc_mask = _tokens(1, 8, 50, 5)
    dec, dec_mask = _tokens(1, 8, 50, 3)
    return {"encoder_token_ids": enc, "encoder_padding_mask": enc_mask,
            "decoder_token_ids": dec, "decoder_padding_mask": dec_mask}


def bart() -> Case:
    lm = _bart_lm()
    return Case("bart", lm, None, _seq2seq_inputs(), lm, lm, kinds=frozenset({"transformer"}))


def bart_generate_step() -> Case:
    lm = _bart_lm()
    lm.compile(sampler="greedy")
    x = _seq2seq_inputs()
    signature = [{k: _spec(v) for k, v in x.items()}]
    return Case("bart.generate_step", lm.generate_step, signature, x, lm.generate_step, lm,
                kinds=frozenset({"transformer"}))


def t5() -> Case:
    hub = _hub()
    backbone = hub.models.T5Backbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                     intermediate_dim=32, key_value_dim=8)
    lm = hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=None)
    return Case("t5", lm, None, _seq2seq_inputs(), lm, lm, kinds=frozenset({"transformer"}))


def _causal_lm(name: str, backbone: str, task: str, **config: Any) -> Case:
    """A tiny keras-hub decoder LLM Task (2 layers, 16 wide, vocabulary 50), no preprocessor."""
    hub = _hub()
    lm = getattr(hub.models, task)(backbone=getattr(hub.models, backbone)(
        vocabulary_size=50, num_layers=2, hidden_dim=16, intermediate_dim=32, **config), preprocessor=None)
    ids, mask = _tokens(2, 8, 50, 5)
    return Case(name, lm, None, {"token_ids": ids, "padding_mask": mask}, lm, lm, kinds=frozenset({"transformer"}))


def llama() -> Case:
    """Grouped-query attention (4 query heads, 2 key/value heads), rotary positions, RMS norm."""
    return _causal_lm("llama", "LlamaBackbone", "LlamaCausalLM", num_query_heads=4, num_key_value_heads=2)


def mixtral() -> Case:
    """Mixture of experts: a router's top 2 of 4 experts per token, a sliding attention window."""
    return _causal_lm("mixtral", "MixtralBackbone", "MixtralCausalLM", num_query_heads=4, num_key_value_heads=2,
                      num_experts=4, top_k=2, sliding_window=4)


def _text_classifier(name: str, backbone: Any, classifier: Any, inputs: tuple[str, ...], kinds: frozenset,
                     **config: Any) -> Case:
    """A tiny keras-hub text classifier Task (3 classes, softmax), no preprocessor; `inputs`: the
    backbone's inputs besides `token_ids`."""
    model = classifier(backbone=backbone(vocabulary_size=50, hidden_dim=16, intermediate_dim=32, **config),
                       num_classes=3, preprocessor=None, activation="softmax")
    ids, mask = _tokens(2, 8, 50, 5)
    x = {"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids)}
    return Case(name, model, None, {k: x[k] for k in ("token_ids", *inputs)}, model, model, kinds=kinds)


def albert() -> Case:
    """Shared layers: 4 layers in 2 groups, each group's encoder called twice (`@2`)."""
    hub = _hub()
    return _text_classifier("albert", hub.models.AlbertBackbone, hub.models.AlbertTextClassifier,
                            ("padding_mask", "segment_ids"), frozenset({"transformer", "classifier"}), num_layers=4,
                            num_heads=2, embedding_dim=8, num_groups=2, max_sequence_length=16)


def deberta_v3() -> Case:
    """Disentangled (relative-position) attention."""
    hub = _hub()
    return _text_classifier("deberta_v3", hub.models.DebertaV3Backbone, hub.models.DebertaV3TextClassifier,
                            ("padding_mask",), frozenset({"transformer", "classifier"}), num_layers=2, num_heads=2,
                            max_sequence_length=16, bucket_size=4)


def fnet() -> Case:
    """Token mixing by a 2-D FFT: complex64 tensors inside each layer, no attention."""
    hub = _hub()
    return _text_classifier("fnet", hub.models.FNetBackbone, hub.models.FNetTextClassifier, ("segment_ids",),
                            frozenset({"classifier"}), num_layers=2, max_sequence_length=16)


def _vision_transformer(name: str, backbone: Any, classifier: Any, **config: Any) -> Case:
    """A tiny keras-hub vision transformer Task (ViT, DeiT) on 16x16 images, 3 classes."""
    model = classifier(backbone=backbone(image_shape=(16, 16, 3), patch_size=8, num_layers=2, num_heads=2,
                                         hidden_dim=16, **config), num_classes=3, activation="softmax")
    return Case(name, model, None, _uniform(2, 16, 16, 3), model, model, kinds=frozenset({"transformer", "classifier"}))


def vit() -> Case:
    hub = _hub()
    return _vision_transformer("vit", hub.models.ViTBackbone, hub.models.ViTImageClassifier, mlp_dim=32)


def deit() -> Case:
    hub = _hub()
    return _vision_transformer("deit", hub.models.DeiTBackbone, hub.models.DeiTImageClassifier, intermediate_dim=32)


def sam() -> Case:
    hub = _hub()
    size = 32
    encoder = hub.models.ViTDetBackbone(hidden_size=8, num_layers=2, intermediate_dim=16, num_heads=2,
                                        global_attention_layer_indices=[1], patch_size=8, num_output_channels=8,
                                        window_size=2, image_shape=(size, size, 3))
    prompts = hub.layers.SAMPromptEncoder(hidden_size=8, image_embedding_size=(4, 4),
                                          input_image_size=(size, size), mask_in_channels=4)
    decoder = hub.layers.SAMMaskDecoder(num_layers=1, hidden_size=8, intermediate_dim=16, num_heads=2,
                                        embedding_dim=8, num_multimask_outputs=3, iou_head_depth=2,
                                        iou_head_hidden_dim=8)
    backbone = hub.models.SAMBackbone(image_encoder=encoder, prompt_encoder=prompts, mask_decoder=decoder)
    segmenter = hub.models.SAMImageSegmenter(backbone=backbone)
    x = {"images": _uniform(1, size, size, 3), "points": _uniform(1, 1, 2) * size,
         "labels": np.ones((1, 1), np.float32), "boxes": _uniform(1, 1, 2, 2) * size,
         "masks": np.zeros((1, 0, size, size, 1), np.float32)}
    return Case("sam", segmenter, None, x, segmenter, segmenter, kinds=frozenset({"transformer"}))


def _resnet_encoder(size: int) -> Any:
    hub = _hub()
    return hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(size, size, 3),
    )


def resnet_classifier() -> Case:
    hub = _hub()
    classifier = hub.models.ResNetImageClassifier(backbone=_resnet_encoder(32), num_classes=3, activation="softmax")
    x = _uniform(2, 32, 32, 3)
    return Case("resnet_classifier", classifier, None, x, classifier, classifier, kinds=frozenset({"classifier"}))


def _detector() -> Any:
    hub = _hub()
    backbone = hub.models.RetinaNetBackbone(image_encoder=_resnet_encoder(64), min_level=3, max_level=4, use_p5=False)
    anchors = hub.layers.AnchorGenerator(bounding_box_format="yxyx", min_level=3, max_level=4, num_scales=1,
                                         aspect_ratios=[1.0], anchor_size=4)
    return hub.models.RetinaNetObjectDetector(backbone=backbone, anchor_generator=anchors, num_classes=3,
                                              bounding_box_format="yxyx")


def retinanet() -> Case:
    detector = _detector()
    x = _uniform(1, 64, 64, 3)
    return Case("retinanet", detector, None, x, detector, detector)


def retinanet_predict_step() -> Case:
    detector = _detector()
    x = _uniform(1, 64, 64, 3)
    # keras-hub's NonMaxSuppression needs a static batch size
    return Case("retinanet.predict_step", detector.predict_step, [_spec(x, batch=False)], x, detector.predict_step, detector)


def whisper() -> Case:
    hub = _hub()
    backbone = hub.models.WhisperBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                          intermediate_dim=32, num_mels=8, max_encoder_sequence_length=16,
                                          max_decoder_sequence_length=8)
    ids, mask = _tokens(1, 8, 50, 3)
    x = {"encoder_features": _uniform(1, 16, 8), "decoder_token_ids": ids, "decoder_padding_mask": mask}
    return Case("whisper", backbone, None, x, backbone, backbone, kinds=frozenset({"transformer"}))


def swin() -> Case:
    """Swin Transformer: shifted windows (`ops.roll` both ways, an attention mask built from
    the window layout), stochastic depth that is identity at inference."""
    hub = _hub()
    backbone = hub.models.SwinTransformerBackbone(image_shape=(32, 32, 3), embed_dim=8, depths=[2, 2],
                                                  num_heads=[2, 2], window_size=4, patch_size=2, drop_path=0.1)
    model = hub.models.SwinTransformerImageClassifier(backbone=backbone, num_classes=3, activation="softmax")
    return Case("swin", model, None, _uniform(2, 32, 32, 3), model, model, kinds=frozenset({"transformer", "classifier"}))


def dinov2() -> Case:
    """DINOv2 with register tokens and LayerScale; its encoder returns its last output twice
    (as itself and in the pyramid dict)."""
    hub = _hub()
    model = hub.models.DINOV2Backbone(patch_size=4, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
                                      image_shape=(16, 16, 3), position_embedding_shape=(32, 32, 3),
                                      num_register_tokens=2, layer_scale_init_value=0.5)
    return Case("dinov2", model, None, _uniform(2, 16, 16, 3), model, model, kinds=frozenset({"transformer"}))


def depth_anything() -> Case:
    """Depth Anything: a DINOv2 encoder's pyramid through a reassemble/fusion neck to a depth map.
    Seeded: the relative depth ends in a ReLU, and some random weights make every depth 0 (an
    edit of the head then changes nothing downstream)."""
    hub = _hub()
    keras.utils.set_random_seed(7)
    encoder = hub.models.DINOV2Backbone(patch_size=4, num_layers=4, hidden_dim=16, num_heads=2, intermediate_dim=32,
                                        image_shape=(32, 32, 3), position_embedding_shape=(32, 32, 3))
    backbone = hub.models.DepthAnythingBackbone(image_encoder=encoder, reassemble_factors=[4, 2, 1, 0.5],
                                                neck_hidden_dims=[8, 8, 8, 8], fusion_hidden_dim=8, head_hidden_dim=8,
                                                head_in_index=-1, feature_keys=["stage1", "stage2", "stage3", "stage4"])
    model = hub.models.DepthAnythingDepthEstimator(backbone=backbone, depth_estimation_type="relative")
    return Case("depth_anything", model, None, _uniform(2, 32, 32, 3), model, model, kinds=frozenset({"transformer"}))


def segformer() -> Case:
    """SegFormer on a two-stage MiT encoder (efficient attention with a strided reduction).
    Called with `training=False`: keras-hub's segmentation heads call a `Resizing` layer made
    inside `call`, whose `training=True` default becomes the call's mode, so `model(x)` runs the
    batch norms after it in training mode and moves their statistics (Keras 3.15)."""
    hub = _hub()
    encoder = hub.models.MiTBackbone(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                                     layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.1, layerwise_patch_sizes=[7, 3],
                                     layerwise_strides=[4, 2], hidden_dims=[8, 16], image_shape=(32, 32, 3))
    backbone = hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=8)
    model = hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=3)
    return Case("segformer", model, None, _uniform(2, 32, 32, 3), lambda v: model(v, training=False), model,
                kinds=frozenset({"transformer"}))


def deeplab_v3() -> Case:
    """DeepLabV3 on a tiny ResNet: its pyramid pooling makes a `Resizing` layer inside `call`
    on each call (recorded as `spatial_pyramid_pooling/resizing`). Called with `training=False`,
    as SegFormer is (that `Resizing`'s `training=True` default)."""
    hub = _hub()
    backbone = hub.models.DeepLabV3Backbone(
        image_encoder=_resnet_encoder(32), spatial_pyramid_pooling_key="P3", upsampling_size=2, dilation_rates=[1, 2],
        low_level_feature_key="P2", image_shape=(32, 32, 3))
    model = hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)
    return Case("deeplab_v3", model, None, _uniform(2, 32, 32, 3), lambda v: model(v, training=False), model)


def hgnetv2() -> Case:
    """HGNetV2: learnable affine blocks, light-weight conv blocks, aggregation by concatenation."""
    hub = _hub()
    backbone = hub.models.HGNetV2Backbone(
        depths=[1, 1], embedding_size=8, hidden_sizes=[16, 16], stem_channels=[3, 8, 8], hidden_act="relu",
        use_learnable_affine_block=True, stackwise_stage_filters=[[8, 8, 16, 1, 2, 3], [16, 8, 16, 1, 2, 3]],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, True], image_shape=(32, 32, 3))
    model = hub.models.HGNetV2ImageClassifier(backbone=backbone, preprocessor=None, num_classes=3,
                                              activation="softmax")
    return Case("hgnetv2", model, None, _uniform(2, 32, 32, 3), model, model, kinds=frozenset({"classifier"}))


def xception() -> Case:
    hub = _hub()
    backbone = hub.models.XceptionBackbone(stackwise_conv_filters=[[8, 8], [16, 16], [16, 16], [16, 16]],
                                           stackwise_pooling=[False, True, False, True], image_shape=(32, 32, 3))
    model = hub.models.XceptionImageClassifier(backbone=backbone, num_classes=3, activation="softmax")
    return Case("xception", model, None, _uniform(2, 32, 32, 3), model, model, kinds=frozenset({"classifier"}))


def cspnet() -> Case:
    hub = _hub()
    backbone = hub.models.CSPNetBackbone(stem_filters=8, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1],
                                         stackwise_strides=[2, 2], stackwise_num_filters=[8, 16],
                                         block_type="bottleneck_block", stage_type="csp", image_shape=(32, 32, 3),
                                         bottle_ratio=[0.5], block_ratio=[1.0], expand_ratio=[2.0])
    model = hub.models.CSPNetImageClassifier(backbone=backbone, num_classes=3, activation="softmax")
    return Case("cspnet", model, None, _uniform(2, 32, 32, 3), model, model, kinds=frozenset({"classifier"}))


def basnet() -> Case:
    """BASNet's backbone: a ResNet encoder, a decoder with a prediction head at every scale and a
    residual refinement module, eight outputs (the segmenter keeps only the refined one, and has
    no other top-level layer than the backbone)."""
    hub = _hub()
    encoder = hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    backbone = hub.models.BASNetBackbone(image_encoder=encoder, num_classes=1, image_shape=(32, 32, 3))
    return Case("basnet", backbone, None, _uniform(2, 32, 32, 3), lambda v: backbone(v, training=False), backbone)


def vgg() -> Case:
    hub = _hub()
    backbone = hub.models.VGGBackbone(stackwise_num_repeats=[1, 2], stackwise_num_filters=[8, 16],
                                      image_shape=(32, 32, 3))
    return Case("vgg", backbone, None, _uniform(2, 32, 32, 3), backbone, backbone)


def clip() -> Case:
    """CLIP: an image tower and a text tower, fed by key, meeting in a similarity head."""
    hub = _hub()
    vision = hub.models.CLIPVisionEncoder(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
                                          image_shape=(16, 16, 3))
    text = hub.models.CLIPTextEncoder(vocabulary_size=50, embedding_dim=16, hidden_dim=16, num_layers=2, num_heads=2,
                                      intermediate_dim=32, max_sequence_length=8)
    model = hub.models.CLIPBackbone(vision_encoder=vision, text_encoder=text, projection_dim=8)
    ids, _ = _tokens(2, 8, 50, 5)
    x = {"images": _uniform(2, 16, 16, 3), "token_ids": ids}
    return Case("clip", model, None, x, model, model, kinds=frozenset({"transformer"}))


# --------------------------------------------------------------------------- Keras 3

def _init() -> dict:
    return {"kernel_initializer": keras.initializers.GlorotUniform(seed=next(_seeds))}


def recurrent_stack() -> Case:
    x_in = keras.Input((6, 3), name="sequence")
    h = keras.layers.LSTM(4, return_sequences=True, name="lstm", **_init())(x_in)
    h = keras.layers.GRU(4, return_sequences=True, name="gru", **_init())(h)
    h = keras.layers.Bidirectional(keras.layers.LSTM(3, **_init()), name="bidirectional")(h)
    out = keras.layers.Dense(2, activation="tanh", name="head", **_init())(h)
    model = keras.Model(x_in, out, name="recurrent_stack")
    return Case("recurrent_stack", model, None, _rng.normal(size=(2, 6, 3)).astype(np.float32), model, model)


def efficientnet() -> Case:
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=4)
    x = _uniform(1, 32, 32, 3) * 255
    return Case("efficientnet_b0", model, None, x, model, model, kinds=frozenset({"classifier"}))


def mobilenet() -> Case:
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=4)
    x = _uniform(1, 32, 32, 3) * 255
    return Case("mobilenet_v3_small", model, None, x, model, model, kinds=frozenset({"classifier"}))


class CumulativeScan(keras.layers.Layer):
    """A running, decaying sum over time steps with `keras.ops.scan` (a `While` in TF)."""

    def build(self, shape: Any) -> None:
        self.decay = self.add_weight(name="decay", shape=(shape[-1],), initializer="ones")

    def call(self, x: Any) -> Any:
        def step(carry: Any, item: Any) -> tuple[Any, Any]:
            carry = carry * keras.ops.sigmoid(self.decay) + item
            return carry, carry

        _, ys = keras.ops.scan(step, keras.ops.zeros_like(x[:, 0]), keras.ops.moveaxis(x, 1, 0))
        return keras.ops.moveaxis(ys, 0, 1)


def scan_layer() -> Case:
    x_in = keras.Input((5, 4), name="sequence")
    h = keras.layers.Dense(4, activation="relu", name="embed", **_init())(x_in)
    h = CumulativeScan(name="cumulative")(h)
    out = keras.layers.Dense(2, name="head", **_init())(h)
    model = keras.Model(x_in, out, name="scanned")
    return Case("scan_layer", model, None, _rng.normal(size=(2, 5, 4)).astype(np.float32), model, model)


def mixed_float16() -> Case:
    """Mixed precision set per layer (the global policy is left alone)."""
    x_in = keras.Input((8,), name="features")
    h = keras.layers.Dense(16, activation="gelu", dtype="mixed_float16", name="hidden", **_init())(x_in)
    h = keras.layers.Dense(16, activation="silu", dtype="mixed_float16", name="hidden2", **_init())(h)
    h = keras.layers.Dense(3, dtype="mixed_float16", name="logits", **_init())(h)
    out = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(h)
    model = keras.Model(x_in, out, name="mixed")
    return Case("mixed_float16", model, None, _rng.normal(size=(2, 8)).astype(np.float32), model, model,
                kinds=frozenset({"classifier"}), tolerance=2e-2)



def preprocessing() -> Case:
    """Preprocessing layers inside the model, on string, int64 and float inputs: text vectorized
    and embedded, words and ids looked up in hash tables (resources), hashed and multi-hot
    encoded, numbers normalized and bucketized."""
    text = keras.Input((), dtype="string", name="text")
    word = keras.Input((1,), dtype="string", name="word")
    ids = keras.Input((1,), dtype="int64", name="ids")
    num = keras.Input((2,), name="num")
    vectorize = keras.layers.TextVectorization(max_tokens=12, output_sequence_length=5, name="vectorize",
                                               vocabulary=["the", "cat", "sat", "on", "mat", "dog"])
    t = keras.layers.Embedding(12, 3, name="embed", embeddings_initializer=keras.initializers.RandomNormal(seed=1))(
        vectorize(text))
    t = keras.layers.GlobalAveragePooling1D(name="pool")(t)
    w = keras.layers.StringLookup(vocabulary=["a", "b", "c"], output_mode="one_hot", name="words")(word)
    w = keras.layers.Flatten(name="flat")(w)
    i = keras.layers.IntegerLookup(vocabulary=[10, 20, 30], output_mode="one_hot", name="id_lookup")(ids)
    i = keras.layers.Flatten(name="id_flat")(i)
    h = keras.layers.CategoryEncoding(num_tokens=8, output_mode="multi_hot", name="multi_hot")(
        keras.layers.Hashing(num_bins=8, name="hash")(word))
    n = keras.layers.Normalization(mean=[1.0, 2.0], variance=[4.0, 9.0], name="normalize")(num)
    b = keras.layers.Discretization(bin_boundaries=[0.0, 1.0, 2.0], output_mode="one_hot", name="buckets")(num)
    b = keras.layers.Flatten(name="bucket_flat")(b)
    joined = keras.layers.Concatenate(name="joined")([t, w, i, h, n, b])
    out = keras.layers.Dense(2, activation="tanh", name="head", **_init())(joined)
    model = keras.Model({"text": text, "word": word, "ids": ids, "num": num}, out, name="preprocessing")
    x = {"text": np.array(["the cat sat", "a dog on the mat and more"]), "word": np.array([["a"], ["zz"]]),
         "ids": np.array([[20], [99]], np.int64), "num": np.array([[0.5, 3.0], [2.5, -1.0]], np.float32)}
    return Case("preprocessing", model, None, x, model, model)


# --------------------------------------------------------------------------- tf_keras

def _tf_keras() -> Any:
    return pytest.importorskip("tf_keras")


def tf_keras_efficientnet() -> Case:
    tfk = _tf_keras()
    model = tfk.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=4)
    x = _uniform(1, 32, 32, 3) * 255
    return Case("tf_keras.efficientnet_b0", model, None, x, model, model, kinds=frozenset({"classifier"}))


def tf_keras_mobilenet() -> Case:
    tfk = _tf_keras()
    model = tfk.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=4)
    x = _uniform(1, 32, 32, 3) * 255
    return Case("tf_keras.mobilenet_v3_small", model, None, x, model, model, kinds=frozenset({"classifier"}))


def tf_keras_resnet50v2() -> Case:
    """Pre-activation ResNet: each block's BatchNormalization and ReLU come before its convolutions."""
    tfk = _tf_keras()
    model = tfk.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3), classes=4)
    return Case("tf_keras.resnet50v2", model, None, _uniform(1, 32, 32, 3), model, model,
                kinds=frozenset({"classifier"}))


def tf_keras_sequences() -> Case:
    """tf_keras' sequence layers in one functional model of two inputs: a Dense shared by two
    calls, Bidirectional LSTM, Attention, MultiHeadAttention, a Lambda, TimeDistributed Conv2D,
    ConvLSTM2D and BatchNormalization."""
    tfk = _tf_keras()
    layers = tfk.layers
    init = {"kernel_initializer": tfk.initializers.GlorotUniform(seed=next(_seeds))}
    seq = tfk.Input((5, 8), name="seq")
    frames = tfk.Input((4, 6, 6, 2), name="frames")
    shared = layers.Dense(8, name="shared", **init)
    h = layers.Bidirectional(layers.LSTM(4, return_sequences=True), name="bidirectional")(shared(seq))
    h = layers.Attention(name="attention")([h, h])
    h = layers.MultiHeadAttention(2, 4, name="mha")(h, h)
    h = shared(layers.Dense(8, name="proj", **init)(h))
    h = layers.Lambda(lambda t: tf.reduce_mean(t, axis=1) * 2.0, name="mean")(h)
    v = layers.TimeDistributed(layers.Conv2D(3, 3, padding="same"), name="per_frame")(frames)
    v = layers.Flatten(name="flatten")(layers.ConvLSTM2D(2, 3, padding="same", name="conv_lstm")(v))
    v = layers.BatchNormalization(name="bn")(v)
    out = layers.Dense(3, name="head", **init)(layers.Concatenate(name="concat")([h, v]))
    model = tfk.Model([seq, frames], out, name="sequences")
    bn = model.get_layer("bn")  # statistics of a trained model, so inference-mode BN is not the identity
    bn.moving_mean.assign(_rng.normal(size=bn.moving_mean.shape).astype(np.float32) * 0.1)
    bn.moving_variance.assign(_rng.uniform(0.5, 1.5, size=bn.moving_variance.shape).astype(np.float32))
    x = [_rng.normal(size=(2, 5, 8)).astype(np.float32), _rng.normal(size=(2, 4, 6, 6, 2)).astype(np.float32)]
    return Case("tf_keras.sequences", model, None, x, model, model)


# --------------------------------------------------------------------------- SavedModel

def _saved(directory: str) -> tuple[str, keras.Model]:
    x_in = keras.Input((6,), name="features")
    h = keras.layers.Dense(8, activation="relu", name="encoder", **_init())(x_in)
    h = keras.layers.Dense(8, activation="tanh", name="middle", **_init())(h)
    out = keras.layers.Dense(3, activation="softmax", name="scores", **_init())(h)
    model = keras.Model(x_in, out, name="two_signatures")
    spec = tf.TensorSpec((None, 6), tf.float32, name="features")
    embedding = keras.Model(x_in, model.get_layer("middle").output)

    module = tf.Module()
    module.model, module.embedding = model, embedding
    serve = tf.function(lambda features: {"scores": model(features)}, input_signature=[spec])
    embed = tf.function(lambda features: {"embedding": embedding(features)}, input_signature=[spec])
    path = os.path.join(directory, "two_signatures")
    tf.saved_model.save(module, path, signatures={"serving_default": serve, "embed": embed})
    return path, model


_SAVED: dict[str, Any] = {}


def _saved_once() -> tuple[str, keras.Model]:
    if "path" not in _SAVED:
        _SAVED["dir"] = tempfile.TemporaryDirectory(prefix="graphscope-zoo-")
        _SAVED["path"], _SAVED["model"] = _saved(_SAVED["dir"].name)
    return _SAVED["path"], _SAVED["model"]


def saved_model() -> Case:
    path, model = _saved_once()
    x = _rng.normal(size=(2, 6)).astype(np.float32)
    return Case("saved_model", path, None, {"features": x}, lambda v: {"scores": model(v["features"])}, None,
                oracle=model, kinds=frozenset({"classifier"}))


def saved_model_second_signature() -> Case:
    path, model = _saved_once()
    embedding = keras.Model(model.input, model.get_layer("middle").output)
    x = _rng.normal(size=(2, 6)).astype(np.float32)
    return Case("saved_model:embed", path, None, {"features": x}, lambda v: {"embedding": embedding(v["features"])},
                None, oracle=model, kwargs={"signature": "embed"})


# --------------------------------------------------------------------------- Model Garden

def mask_rcnn() -> Case:
    """Straight from the factory, not called yet: the signature builds it (issue 25, item 3)."""
    pytest.importorskip("official.vision.modeling.factory")
    tfk = _tf_keras()
    from official.vision.configs import backbones  # type: ignore[import-not-found]
    from official.vision.configs import maskrcnn as configs  # type: ignore[import-not-found]
    from official.vision.modeling import factory  # type: ignore[import-not-found]

    config = configs.MaskRCNN(num_classes=3, backbone=backbones.Backbone(type="resnet"))
    config.input_size = [128, 128, 3]
    model = factory.build_maskrcnn(input_specs=tfk.layers.InputSpec(shape=[None, 128, 128, 3]), model_config=config)
    x = _uniform(1, 128, 128, 3)
    shape = np.array([[128.0, 128.0]], np.float32)
    signature = [tf.TensorSpec((1, 128, 128, 3)), tf.TensorSpec((1, 2))]
    return Case("mask_rcnn", model, signature, [x, shape],
                lambda v: model(v[0], image_shape=v[1], training=False), model)


CASES: dict[str, Callable[[], Case]] = {
    "gpt2": gpt2,
    "gpt2.generate_step": gpt2_generate_step,
    "bert": bert,
    "bart": bart,
    "bart.generate_step": bart_generate_step,
    "t5": t5,
    "llama": llama,
    "mixtral": mixtral,
    "albert": albert,
    "deberta_v3": deberta_v3,
    "fnet": fnet,
    "vit": vit,
    "deit": deit,
    "sam": sam,
    "resnet_classifier": resnet_classifier,
    "retinanet": retinanet,
    "retinanet.predict_step": retinanet_predict_step,
    "whisper": whisper,
    "swin": swin,
    "dinov2": dinov2,
    "depth_anything": depth_anything,
    "segformer": segformer,
    "deeplab_v3": deeplab_v3,
    "hgnetv2": hgnetv2,
    "xception": xception,
    "cspnet": cspnet,
    "basnet": basnet,
    "vgg": vgg,
    "clip": clip,
    "recurrent_stack": recurrent_stack,
    "efficientnet_b0": efficientnet,
    "mobilenet_v3_small": mobilenet,
    "scan_layer": scan_layer,
    "mixed_float16": mixed_float16,
    "preprocessing": preprocessing,
    "tf_keras.efficientnet_b0": tf_keras_efficientnet,
    "tf_keras.mobilenet_v3_small": tf_keras_mobilenet,
    "tf_keras.resnet50v2": tf_keras_resnet50v2,
    "tf_keras.sequences": tf_keras_sequences,
    "saved_model": saved_model,
    "saved_model:embed": saved_model_second_signature,
    "mask_rcnn": mask_rcnn,
}
