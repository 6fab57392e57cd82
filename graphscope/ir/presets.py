"""Presets: the selections people ask for by meaning, whatever each layer type calls them.

    gs.presets.pre_activations(scope)   # before each layer's activation (BiasAdd, FusedBatchNormV3, ...)
    gs.presets.logits(scope)            # the inputs of the model's final softmax or sigmoid
    gs.presets.attention(scope)         # attention probabilities inside attention layers
    gs.presets.layer_outputs(scope)     # every top-level layer's output

Each takes a `Scope`, a saved run (`Bundle`) or a `ModelGraph` and returns a `Selection`, found
from op types and the recorded layer calls (never from a layer type's spelling of its scopes), so
it works the same for Keras 3 and tf_keras models and traced functions.
"""

from __future__ import annotations

from typing import Any

from graphscope.errors import ArgumentError
from graphscope.ir.graph import ModelGraph
from graphscope.ir.records import Selection, Tensor

__all__ = ["ACTIVATIONS", "PRESETS", "attention", "layer_outputs", "logits", "pre_activations"]

# activation op types: one input, the pre-activation (a layer's fused `activation=` or an
# Activation/ReLU/Softmax layer following it)
ACTIVATIONS = frozenset({
    "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Softmax",
    "LogSoftmax", "Gelu",
})
_PASS_THROUGH = frozenset({"Identity", "IdentityN"})
# a function call's output is its body's result: the mirror lists the body's results as the
# call op's last inputs, one per output (a SavedModel's serving function calls the model this way)
_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def _model_graph(of: Any) -> ModelGraph:
    graph = getattr(of, "model_graph", of)
    if not isinstance(graph, ModelGraph):
        raise ArgumentError(
            f"presets take a Scope (gs.trace), a saved run (gs.open) or a ModelGraph, got {type(of).__name__}"
        )
    return graph


def _producer(graph: ModelGraph, tensor: Tensor) -> Tensor:
    """`tensor`, or what it passes through unchanged (Identity ops, a function call's result)."""
    seen = set()
    while tensor.op_type in _PASS_THROUGH | _CALLS and tensor.name not in seen:
        seen.add(tensor.name)
        op = graph.graph.nodes[tensor.op]["op"]
        if tensor.op_type in _CALLS:
            index = len(op.inputs) - len(op.outputs) + tensor.index  # the body's result
            if len(op.inputs) < len(op.outputs) or op.inputs[index] not in graph.tensors:
                break
        else:
            index = tensor.index if tensor.op_type == "IdentityN" else 0
        if index >= len(op.inputs):
            break
        tensor = graph.tensors[op.inputs[index]]
    return tensor


def _activation_input(graph: ModelGraph, tensor: Tensor) -> Tensor | None:
    """The pre-activation of `tensor` when it is an activation's output: the activation op's
    input; for SiLU/swish (`x * sigmoid(x)`) and GELU (built from `Erfc` or `Tanh`), the `x`."""
    t = _producer(graph, tensor)
    op = graph.graph.nodes[t.op]["op"]
    if t.op_type in ACTIVATIONS and op.inputs:
        return graph.tensors[op.inputs[0]]
    if t.op_type == "Mul" and len(op.inputs) == 2:  # SiLU/swish: x * sigmoid(x), or x * sigmoid(beta * x)
        a, b = (graph.tensors[n] for n in op.inputs)
        for x, s in ((a, b), (b, a)):
            s = _producer(graph, s)
            if s.op_type != "Sigmoid":
                continue
            (inner,) = graph.graph.nodes[s.op]["op"].inputs[:1] or ("",)
            scaled = graph.tensors.get(inner)
            if inner == x.name or (scaled is not None and scaled.op_type == "Mul"
                                   and x.name in graph.graph.nodes[scaled.op]["op"].inputs):
                return x
    if t.op_type in ("Select", "SelectV2") and len(op.inputs) == 3:  # a masked softmax: where(mask, softmax(x), 0)
        inner = _producer(graph, graph.tensors[op.inputs[1]])
        if inner.op_type == "Softmax" and inner.layer == t.layer:
            return _activation_input(graph, inner)
    if t.op_type in ("Mul", "RealDiv"):
        return _gelu_input(graph, t)
    return None


# GELU has no op of its own: Keras builds `0.5 * x * erfc(-x / sqrt(2))` (tf_keras: `erf`), or
# with approximate=True `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))`; nor have
# hard sigmoid `relu6(x + 3) / 6` and hard swish `x * relu6(x + 3) / 6` (MobileNetV3)
_GELU_OPS = frozenset({"Mul", "Neg", "Erf", "Erfc", "Tanh", "Pow", "Square", "AddV2", "Add", "Sub", "RealDiv",
                       "Sqrt", "Cast", "Identity", "Relu6"})
_GELU_MARKS = frozenset({"Erf", "Erfc", "Tanh", "Relu6"})


def _gelu_input(graph: ModelGraph, t: Tensor) -> Tensor | None:
    """The `x` of a GELU, hard sigmoid or hard swish whose result is `t` (a `Mul` or
    `RealDiv`): the one non-constant tensor that a small group of elementwise ops computed in
    `t`'s layer reads, an `Erf`, `Erfc`, `Tanh` or `Relu6` among them; else None."""
    G = graph.graph
    top = G.nodes[t.op]["op"]
    seen: set[str] = set()
    stack, outside, marked = [t.op], set(), False
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if len(seen) > 16:  # more than an activation: a computation of the layer's own
            return None
        op = G.nodes[name]["op"]
        marked = marked or op.type in _GELU_MARKS
        for i in op.inputs:
            source = G.nodes[graph.tensors[i].op]["op"]
            if source.type == "Const":
                continue
            if source.type in _GELU_OPS and source.layer == top.layer and source.function == top.function:
                stack.append(source.name)
            else:
                outside.add(i)
    return graph.tensors[outside.pop()] if marked and len(outside) == 1 else None


def _top_level_outputs(graph: ModelGraph) -> list[tuple[Any, Tensor]]:
    """(layer, output) of every top-level layer call that computes something (InputLayers and
    nested layers left out), in layer order."""
    out = []
    for layer in graph.layers:
        if layer.ops and "/" not in layer.name.split("@")[0]:
            out.extend((layer, t) for t in layer.outputs)
    return out


def pre_activations(of: Any) -> Selection:
    """For every layer whose output is an activation (fused, `Dense(..., activation="relu")`, or
    an `Activation`/`ReLU`/`Softmax` layer), the tensor just before it: `block4_conv3/BiasAdd:0`,
    the `FusedBatchNormV3` before ResNet's `conv2_block1_1_relu`, SiLU's input in EfficientNet,
    GELU's in ViT and BERT (exact or tanh-approximated), hard swish's in MobileNetV3, and a masked
    `Softmax` layer's masked scores (attention with a padding mask).
    Layers nested inside others count too."""
    graph = _model_graph(of)
    found: dict[str, Tensor] = {}
    for layer in graph.layers:
        for t in layer.outputs:
            pre = _activation_input(graph, t)
            if pre is not None and not pre.is_handle:
                found.setdefault(pre.name, pre)
    return _ordered(graph, found)


def logits(of: Any) -> Selection:
    """The input of each final softmax or sigmoid: for every model output that is (through
    Identity ops and function calls, as a SavedModel's serving call) a Softmax, Sigmoid or
    LogSoftmax, the tensor it is applied to, before any cast
    (a mixed-precision model's float32 softmax casts the float16 logits)."""
    graph = _model_graph(of)
    found: dict[str, Tensor] = {}
    for out in graph.outputs:
        t = _producer(graph, out)
        op = graph.graph.nodes[t.op]["op"]
        if t.op_type in ("Softmax", "Sigmoid", "LogSoftmax") and op.inputs:
            pre = graph.tensors[op.inputs[0]]
            # under mixed precision the float32 activation's call casts its input: the logits
            # are what the cast reads (the layer's float16 output), not the cast
            while pre.op_type in ("Cast", "Identity") and graph.graph.nodes[pre.op]["op"].inputs:
                pre = graph.tensors[graph.graph.nodes[pre.op]["op"].inputs[0]]
            found.setdefault(pre.name, pre)
    return _ordered(graph, found)


def attention(of: Any) -> Selection:
    """The attention probabilities inside attention layers: every Softmax computed inside a
    layer whose class is an attention layer (Keras `MultiHeadAttention`, keras-hub's cached and
    transformer attention layers, any `*Attention*` class) or inside a layer nested in one:
    `[batch, heads, queries, keys]` for multi-head attention, summing to one over the keys."""
    graph = _model_graph(of)
    attentive = [lay.name for lay in graph.layers if "attention" in lay.type.lower()]
    softmaxes = graph.find(op_type="Softmax")
    found: dict[str, Tensor] = {}
    for path in attentive:
        for t in softmaxes:
            if t.layer == path or (t.layer or "").startswith(path + "/"):
                found.setdefault(t.name, t)
    return _ordered(graph, found)


def layer_outputs(of: Any) -> Selection:
    """Every top-level layer call's output, in layer order (InputLayers left out): what
    `keras.Model(model.input, layer.output)` would give, for all layers at once."""
    graph = _model_graph(of)
    dead = graph.unused
    return Selection({t.name: t for _, t in _top_level_outputs(graph) if not t.is_handle and t.op not in dead}.values())


def _ordered(graph: ModelGraph, found: dict[str, Tensor]) -> Selection:
    """The tensors in topological (graph) order, those of unused ops left out (a call Keras
    makes only to learn shapes is not the model's computation: see `query.unused`)."""
    position = {name: k for k, name in enumerate(graph.graph)}
    dead = graph.unused
    return Selection(sorted((t for t in found.values() if t.op not in dead), key=lambda t: (position.get(t.op, 0), t.index)))


PRESETS = {"pre_activations": pre_activations, "logits": logits, "attention": attention,
           "layer_outputs": layer_outputs}
