"""Every internal TensorFlow and Keras API graphscope touches, and every naming convention of
theirs it relies on, and nothing else.

Each function and convention here is guarded by a test in tests/backend/test_tf_internals.py
that fails loudly when a release changes the behaviour we rely on. Nothing outside this module
imports a private TF/Keras name or spells one of their conventions.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import convert_to_constants, op_def_registry

__all__ = [
    "FlatFunction",
    "GENERIC_CALL",
    "KERAS_SUFFIX",
    "RNG_STATE_VARIABLE",
    "XLA_ATTRS",
    "bind_capture",
    "build_shapes",
    "failed_op_names",
    "failure_reason",
    "function_graph",
    "inline_calls",
    "is_input_layer",
    "is_keras_layer",
    "is_keras_model",
    "is_stand_in",
    "keyword_order",
    "fresh_function",
    "frozen",
    "has_own_dunder_call",
    "functional_model",
    "keras_scope",
    "last_op_id",
    "node_numbers",
    "node_outputs",
    "op_id",
    "output_ref",
    "tracked_layers",
]

# ---- naming conventions

# Keras uniquifies a layer's name scope per call with a `_<n>` suffix: `block4_conv3_1`
KERAS_SUFFIX = re.compile(r"_\d+$")
# the op TensorFlow names a call it generated (a SavedModel's serving call): its name is noise
GENERIC_CALL = re.compile(r"(?:Stateful)?PartitionedCall(?:_\d+)?")
# Keras' random-number generators keep their state in variables of this name
RNG_STATE_VARIABLE = re.compile(r"seed_generator_state")
# the attributes that make TensorFlow compile a function call with XLA
XLA_ATTRS = ("_XlaMustCompile", "_XlaCompile", "_XlaScope", "_XlaInternalScope")
# while_v2 names the placeholders it makes for loop values a body does not use this way
_STAND_IN = "___redundant_placeholder"
# how TensorFlow's error text ends: the function that ran, which says nothing to a user
_INFERENCE_SUFFIX = re.compile(r"\s*\[Op:__inference\w*\]$")
# lines of TensorFlow's error text that are framing, not the reason
_FRAMING = ("Graph execution error", "Detected at node", "<stack traces")
# how TensorFlow's error text names the op that failed
_FAILED_OP = (re.compile(r"\{\{node ([^}]+)\}\}"), re.compile(r"\[\[([^\]{}]+)\]\]"),
              re.compile(r"Detected at node (\S+)"))


@functools.lru_cache(maxsize=4096)
def keras_scope(layer_name: str) -> re.Pattern[str]:
    """A layer's TF name scope: its name, or its name with Keras' uniquifying `_<n>` suffix."""
    return re.compile(re.escape(layer_name) + r"(?:_\d+)?")


def is_stand_in(op_name: str) -> bool:
    """Whether TensorFlow made this op to stand for a value a loop body does not use."""
    return _STAND_IN in op_name


def failure_reason(error: Any) -> str:
    """TensorFlow's own reason for an error, in one line (its framing left out)."""
    text = getattr(error, "message", None) or str(error)
    reason = next(
        (line.strip() for line in text.splitlines()
         if line.strip() and not line.startswith(_FRAMING) and not line.strip().startswith("[[")),
        type(error).__name__,
    )
    return _INFERENCE_SUFFIX.sub("", reason)[:400]


def failed_op_names(error: Any) -> list[str]:
    """The names TensorFlow's error gives for the op that failed, most specific first."""
    text = getattr(error, "message", None) or str(error)
    names = [getattr(getattr(error, "op", None), "name", None)]
    for pattern in _FAILED_OP:
        names += pattern.findall(text)
    return [n for n in names if n]


def last_op_id(graph: tf.Graph) -> int:
    """The creation id of the newest op in `graph` (ids grow by one per op created).

    `Graph.version` is public and counts ops; `Operation._id` is the op's own creation id;
    the test pins their relation (`op._id == graph.version + 1` right after creating `op`).
    """
    return graph.version + 1


def op_id(op: tf.Operation) -> int:
    """The creation id of `op` in its graph (increasing in creation order)."""
    return op._id  # pylint: disable=protected-access


def function_graph(graph: tf.Graph, name: str) -> tf.Graph:
    """The FuncGraph of the function `name` called from an op of `graph`.

    Function libraries are inherited from outer graphs, so the lookup climbs
    `outer_graph` until one knows the name.
    """
    g: Any = graph
    while g is not None:
        fn = g._get_function(name)  # pylint: disable=protected-access
        if fn is not None:
            return fn.graph
        g = getattr(g, "outer_graph", None)
    raise LookupError(f"function {name!r} is not in the library of graph {graph.name!r}")


def keyword_order(concrete_function: Any) -> list[int] | None:
    """For a function called by keyword (a loaded SavedModel signature), its flat inputs'
    positions in the order the function it wraps declares them; None when that is not known.

    TensorFlow sorts a signature's flat inputs by keyword, and a loaded signature's dict of
    keyword specs comes in the order of a protobuf map (neither sorted nor declared). Its graph
    is the keyword placeholders feeding one call of the wrapped function, whose arguments are
    in declared order: each placeholder ranks by the argument it feeds.
    """
    graph = concrete_function.graph
    count = len(graph.inputs) - len(concrete_function.captured_inputs)
    calls = [op for op in graph.get_operations() if GENERIC_CALL.fullmatch(op.type)]
    if len(calls) != 1:
        return None
    argument = {t.name: k for k, t in reversed(list(enumerate(calls[0].inputs)))}  # the first one fed
    ranks = [argument.get(t.name) for t in graph.inputs[:count]]
    if any(r is None for r in ranks):
        return None
    return sorted(range(count), key=lambda k: ranks[k])


_INLINE_LOCK = threading.Lock()


def inline_calls(concrete_function: Any) -> graph_pb2.GraphDef:
    """GraphDef of `concrete_function` with every (Stateful)PartitionedCall inlined.

    Inlined ops are named `<call op name>/<body op name>`; `While`/`If`/`Case` stay functional.
    TensorFlow's helper marks only `If`/`While` ops "do not lower to Switch/Merge"; `Case` ops
    are added to its list for the call, or Grappler would lower them into v1 control flow, whose
    untaken branch cannot be fetched.
    """
    with _INLINE_LOCK:
        kept = convert_to_constants._CONTROL_FLOW_OPS  # pylint: disable=protected-access
        convert_to_constants._CONTROL_FLOW_OPS = kept | {"Case", "StatelessCase"}  # pylint: disable=protected-access
        try:
            return convert_to_constants._run_inline_graph_optimization(  # pylint: disable=protected-access
                concrete_function, lower_control_flow=False, aggressive_inlining=True
            )
        finally:
            convert_to_constants._CONTROL_FLOW_OPS = kept  # pylint: disable=protected-access


def frozen(concrete_function: Any) -> Any:
    """`concrete_function` with every captured input (a variable, an eager tensor) made a
    constant of its current value: a function of its arguments alone, whose FunctionDef and
    GraphDef can be copied into another graph. Unchanged when it captures nothing."""
    if not concrete_function.captured_inputs:
        return concrete_function
    return convert_to_constants.convert_variables_to_constants_v2(concrete_function)


class FlatFunction:
    """A concrete function as a plain callable of its flat inputs, without its Python graph.

    A `ConcreteFunction` keeps the `FuncGraph` it was traced into: a Python object for every op
    and tensor, and TensorFlow's C++ graph with a shape-inference context per node, about three
    times the memory of the function itself. Only the runtime function is needed to call it:
    the `AtomicFunction` registered in the eager context (`_inference_function`), called with
    the captured inputs after the arguments. Its cached graph reference is dropped, so the graph
    is freed with the ConcreteFunction; errors are still interpolated from the context's debug
    information.
    """

    __slots__ = ("_atomic", "_captures")

    def __init__(self, concrete_function: Any) -> None:
        self._atomic = concrete_function._inference_function  # pylint: disable=protected-access
        self._atomic._cached_graph = None  # pylint: disable=protected-access
        self._captures = list(concrete_function.captured_inputs)

    @property
    def definition(self) -> Any:
        """The FunctionDef the runtime holds (its `node_def`s are the function's ops)."""
        return self._atomic.definition

    def __call__(self, *args: tf.Tensor) -> list[tf.Tensor]:
        return list(self._atomic.call_flat(*args, *self._captures))


def bind_capture(external: Any, placeholder: tf.Tensor) -> None:
    """Make `placeholder`, already in the function graph being built, the captured input that
    `external` (an eager tensor: a variable handle) is passed through on every call.

    `FuncGraph.add_capture` appends it to the graph's inputs and capture list, as capturing does,
    without creating a placeholder of its own. Shape inference inside the graph does not see a
    bound resource's handle data (a variable's shape and dtype); the runtime does.
    """
    placeholder.graph.add_capture(external, placeholder)


def fresh_function(fn: Any) -> Any:
    """A new `tf.function` of `fn`'s Python function with `fn`'s input signature and XLA setting,
    which traces anew (`fn`'s own cache would hand back a trace made before).

    `PolymorphicFunction` keeps its `jit_compile` option in `_jit_compile`."""
    return tf.function(fn.python_function, input_signature=fn.input_signature,
                       jit_compile=getattr(fn, "_jit_compile", None))


def build_shapes(model: Any) -> dict[str, Any] | None:
    """The input shapes a built Keras layer recorded when it was built, by argument name: Keras
    3 keeps them in `_build_shapes_dict`, tf_keras one shape in `_build_input_shape`."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if shapes is not None:
        return shapes
    shape = getattr(model, "_build_input_shape", None)
    if shape is None:
        return None
    shape = tf.TensorShape(shape)
    return {"inputs": tuple(shape.as_list())} if shape.rank is not None else None


# ---- which Keras: Keras 3, or Keras 2 as tf_keras (imported only by a program that uses it)


def _keras_modules() -> list[Any]:
    import keras

    modules = [keras]
    tf_keras = sys.modules.get("tf_keras")  # a tf_keras model exists only once tf_keras is imported
    if tf_keras is not None:
        modules.append(tf_keras)
    return modules


def _keras_of(obj: Any) -> Any:
    """The Keras (`keras` or `tf_keras`) whose layer `obj` is, or None."""
    return next((k for k in _keras_modules() if isinstance(obj, k.layers.Layer)), None)


def is_keras_layer(obj: Any) -> bool:
    """A Keras layer or model: Keras 3's, or Keras 2's (tf_keras)."""
    return _keras_of(obj) is not None


def is_keras_model(obj: Any) -> bool:
    """A Keras model (Keras 3's or tf_keras')."""
    k = _keras_of(obj)
    return k is not None and isinstance(obj, k.Model)


def is_input_layer(obj: Any) -> bool:
    """A Keras `InputLayer` (Keras 3's or tf_keras')."""
    k = _keras_of(obj)
    return k is not None and isinstance(obj, k.layers.InputLayer)


def has_own_dunder_call(layer: Any) -> bool:
    """Whether `layer(...)` runs a `__call__` of the layer's own code, not Keras' `Layer.__call__`
    (Model Garden's `DetectionGenerator` computes its outputs there, never calling `call`)."""
    owner = next(c for c in type(layer).__mro__ if "__call__" in vars(c))
    return owner.__module__.split(".")[0] not in ("keras", "tf_keras")


def functional_model(like: Any, inputs: Any, outputs: Any) -> Any:
    """A functional model of the same Keras as the model `like`, from `inputs` to `outputs`."""
    return _keras_of(like).Model(inputs, outputs)


def sublayers(layer: Any) -> list[Any]:
    """The Keras layers directly tracked by `layer`, in creation order.

    Models list theirs in `.layers` (that order is what users index); other layers only through
    Keras' private `_flatten_layers`.
    """
    if isinstance(getattr(layer, "layers", None), list):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))  # pylint: disable=protected-access


def node_numbers(container: Any) -> dict[int, list[int]]:
    """How Keras numbers the layer calls a functional model makes, in the order it makes them.

    A functional model (Keras 3 or tf_keras; a Keras 3 `Sequential` through the functional
    model it builds) runs its nodes by depth, from the inputs (`_nodes_by_depth`, deepest
    first, each depth's list in order), so a shared layer's calls run in that order, not in
    the order the user's code made them. The user's number of a call is its node's position
    among the layer's `_inbound_nodes` that belong to this model, 1-based: `layer.output` is
    node 1's. Returns, for each layer the model calls (by `id`), the numbers of its calls in
    execution order; empty for anything that is not a functional model.
    """
    executed = _executed_nodes(container)
    in_model = {id(node) for node in executed}
    numbers: dict[int, list[int]] = {}
    for node in executed:
        layer = getattr(node, "operation", None) or getattr(node, "layer", None)  # Keras 3 | tf_keras
        if layer is None or node.is_input:
            continue
        own = [id(n) for n in layer._inbound_nodes if id(n) in in_model]  # pylint: disable=protected-access
        numbers.setdefault(id(layer), []).append(own.index(id(node)) + 1)
    return numbers


def node_outputs(container: Any, layer: Any) -> list[Any]:
    """The symbolic outputs (a flat list) of each call of `layer` in the functional model
    `container`, in node order: call k's (`layer@k`) at k - 1. Empty for anything that is not a
    functional model."""
    in_model = {id(node) for node in _executed_nodes(container)}
    nodes = [node for node in layer._inbound_nodes if id(node) in in_model]  # pylint: disable=protected-access
    # Keras 3 gives a node's outputs as a list; tf_keras a single output as the tensor itself
    return [list(n.outputs) if isinstance(n.outputs, (list, tuple)) else [n.outputs] for n in nodes]


def _executed_nodes(container: Any) -> list[Any]:
    """A functional model's nodes in the order it runs them (its own, or its `_functional`'s)."""
    by_depth = getattr(container, "_nodes_by_depth", None)
    if by_depth is None:
        by_depth = getattr(getattr(container, "_functional", None), "_nodes_by_depth", None)
    if not by_depth:
        return []
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def tracked_layers(layer: Any) -> list[Any]:
    """Every Keras layer `layer` tracks directly: a model's `.layers` and also the layers it
    holds in attributes without calling them in `call` (keras-hub's `prediction_decoder`), in
    creation order, each once."""
    found = {id(child): child for child in sublayers(layer)}
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        for child in flatten(include_self=False, recursive=False):  # pylint: disable=protected-access
            found.setdefault(id(child), child)
    return list(found.values())


def input_layers(model: Any) -> list[Any]:
    """The `InputLayer` behind each of a functional model's flat inputs, in order."""
    return [t._keras_history[0] for t in tf.nest.flatten(model.inputs)]  # pylint: disable=protected-access


def output_ref(node_def: Any, index: int, library: dict[str, Any]) -> str:
    """How a FunctionDef names output `index` of its node `node_def`: `node:out_arg:k`.

    Inside a FunctionDef, outputs are addressed by the op's output argument name and the
    position within that argument (`NonMaxSuppressionV3:selected_indices:0`,
    `while:output:3`), read from the op's registered OpDef (or the called function's signature).
    """
    if node_def.op in library:
        args = list(library[node_def.op].signature.output_arg)
        return f"{node_def.name}:{args[index].name}:0"
    op_def = op_def_registry.get(node_def.op)
    if op_def is None:
        raise LookupError(f"no OpDef registered for op type {node_def.op!r}")
    position = 0
    for arg in op_def.output_arg:
        if arg.number_attr:
            count = node_def.attr[arg.number_attr].i
        elif arg.type_list_attr:
            count = len(node_def.attr[arg.type_list_attr].list.type)
        else:
            count = 1
        if index < position + count:
            return f"{node_def.name}:{arg.name}:{index - position}"
        position += count
    raise LookupError(f"op {node_def.name!r} ({node_def.op}) has no output {index}")
