"""Every internal TensorFlow and Keras API graphscope touches, and every naming convention of
theirs it relies on, and nothing else.

Each function and convention here is guarded by a test in tests/backend/test_tf_internals.py
that fails loudly when a release changes the behaviour we rely on. Nothing outside this module
imports a private TF/Keras name or spells one of their conventions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sys
import threading
import weakref
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.eager import context
from tensorflow.python.eager.polymorphic_function import polymorphic_function
from tensorflow.python.framework import convert_to_constants, op_def_registry
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.framework import registry as tf_registry
from tensorflow.python.ops import control_flow_util_v2, handle_data_util
from tensorflow.python.saved_model import load as saved_model_load

__all__ = [
    "BODY_OPS",
    "CALL_OPS",
    "CustomGradients",
    "FlatFunction",
    "GENERIC_CALL",
    "KERAS_SUFFIX",
    "RNG_STATE_VARIABLE",
    "TABLE_INITIALIZER",
    "XLA_ATTRS",
    "anonymous_resource_name",
    "bind_capture",
    "bodies_typed",
    "build_shapes",
    "called_flag",
    "builds_outside_graphs",
    "calls_replayed",
    "control_outputs",
    "eager_captures",
    "failed_op_names",
    "failure_reason",
    "function_graph",
    "graphs_called",
    "inline_calls",
    "is_input_layer",
    "is_keras_layer",
    "is_keras_model",
    "is_saved_signature",
    "saved_signature_function",
    "is_stand_in",
    "stand_in_name",
    "keras2_default_serving",
    "keyword_order",
    "fresh_function",
    "fresh_tf_function",
    "tf_function_attributes",
    "has_own_dunder_call",
    "functional_model",
    "keras_scope",
    "keras_training",
    "last_op_id",
    "node_numbers",
    "node_outputs",
    "op_id",
    "restore_called_flag",
    "output_ref",
    "tf_keras_safe_mode",
    "tracked_layers",
    "unsuffixed",
    "variable_spec",
]

# ---- naming conventions

# Keras uniquifies a layer's name scope per call with a `_<n>` suffix: `block4_conv3_1`
KERAS_SUFFIX = re.compile(r"_\d+$")
# the op TensorFlow names a call it generated (a SavedModel's serving call): its name is noise
GENERIC_CALL = re.compile(r"(?:Stateful)?PartitionedCall(?:_\d+)?")
# the Identity TensorFlow's inliner makes for each argument of a call it inlines, which only the
# body's ops read: one per argument, in order, `n` counting on over the graph
INLINED_ARGUMENT = re.compile(r"Func/(?P<call>.+)/input/_(?P<n>\d+)")
# Keras' random-number generators keep their state in variables of this name
RNG_STATE_VARIABLE = re.compile(r"seed_generator_state")
# a static table's initializer (`tf.lookup.KeyValueTensorInitializer`) imports its keys and
# values with a LookupTableImportV2 op of this name: a no-op on a table already initialized
TABLE_INITIALIZER = re.compile(r"(.*/)?key_value_init(_\d+)?/LookupTableImportV2")
# the attributes that make TensorFlow compile a function call with XLA
XLA_ATTRS = ("_XlaMustCompile", "_XlaCompile", "_XlaScope", "_XlaInternalScope")
# while_v2 names the placeholders it makes for loop values a body does not use this way
_STAND_IN = "___redundant_placeholder"
# how TensorFlow's error text ends: the function that ran, which says nothing to a user
# the op TensorFlow's eager error text ends with ("[Op:__inference_f_58]", "[Op:IteratorGetNext]
# name:"), and the function it begins with ("{{function_node __wrapped__IteratorGetNext_...}} ")
_INFERENCE_SUFFIX = re.compile(r"\s*\[Op:\w+\](\s*name:.*)?$")
_FUNCTION_PREFIX = re.compile(r"^\{\{function_node [^}]*\}\}\s*")
# lines of TensorFlow's error text that are framing, not the reason
_FRAMING = ("Graph execution error", "Detected at node", "<stack traces")
# a line of a stack trace
_FRAME = re.compile(r'File ".*", line \d+')
# how TensorFlow's error text names the op that failed
_FAILED_OP = (re.compile(r"\{\{node ([^}]+)\}\}"), re.compile(r"\[\[([^\]{}]+)\]\]"),
              re.compile(r"Detected at node (\S+)"))


@functools.lru_cache(maxsize=4096)
def keras_scope(layer_name: str) -> re.Pattern[str]:
    """A layer's TF name scope: its name, or its name with Keras' uniquifying `_<n>` suffix."""
    return re.compile(re.escape(layer_name) + r"(?:_\d+)?")


_TAKEN = re.compile(r"(?:_\d+)+$")


def unsuffixed(path: str) -> str:
    """`path` without the `_<n>` TensorFlow appends to an op or name scope whose name is already
    taken in the graph, on every segment: `Tensordot_1/MatMul_2` -> `Tensordot/MatMul`."""
    return "/".join(_TAKEN.sub("", segment) or segment for segment in path.split("/"))


def is_stand_in(op_name: str) -> bool:
    """Whether TensorFlow made this op to stand for a value a loop body does not use."""
    return _STAND_IN in op_name


def stand_in_name(op_name: str) -> str:
    """A stand-in's name without the name of the function TensorFlow made it in, which it puts
    first (`rnn_1_lstm_1_while_cond_129___redundant_placeholder0`: the model's name, a trace
    counter): `redundant_placeholder0`. Any other name as it is."""
    _, found, k = op_name.rpartition(_STAND_IN)
    return f"redundant_placeholder{k}" if found else op_name


def control_outputs(graph: tf.Graph) -> list[tf.Operation]:
    """The ops a function graph runs although no output depends on them: its FunctionDef's
    `control_ret` (variable writes, asserts, prints and the reads that automatic control
    dependencies keep), in a function traced here, a loop or branch body, or a loaded
    SavedModel's function; none for a plain `tf.Graph`."""
    return list(getattr(graph, "control_outputs", None) or ())


def failure_reason(error: Any) -> str:
    """TensorFlow's own reason for an error, in one line (its framing left out)."""
    text = getattr(error, "message", None) or str(error)
    in_trace = False  # within the stack trace TensorFlow gives for where the op was defined
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith("(most recent call last):"):
            in_trace = True
            continue
        if in_trace and (not stripped or line[:1].isspace()):
            continue
        in_trace = False
        if stripped and not line.startswith(_FRAMING) and not stripped.startswith("[[") and not _FRAME.match(stripped):
            return _INFERENCE_SUFFIX.sub("", _FUNCTION_PREFIX.sub("", stripped))[:400]
    return type(error).__name__


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


def graphs_called(graph: tf.Graph) -> list[tf.Graph]:
    """`graph` and the graph of every function its calls and control flow run (`BODY_OPS`:
    calls, loop bodies and conds, branches), at any depth, each once: the graphs that run and
    that graphscope mirrors. A trace tf.function threw away (the first of a helper whose trace
    created variables) is in none of them; nor is a `Dataset.map`'s function, which is not
    mirrored."""
    seen: dict[int, tf.Graph] = {}
    stack = [graph]
    while stack:
        g = stack.pop()
        if id(g) in seen:
            continue
        seen[id(g)] = g
        for op in g.get_operations():
            if op.type not in BODY_OPS:
                continue
            for value in op.node_def.attr.values():
                names = [value.func.name] if value.HasField("func") else [f.name for f in value.list.func]
                stack.extend(function_graph(g, name) for name in names if name)
    return list(seen.values())


# the op types that call functions or run them as bodies: what graphscope mirrors inside
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
BODY_OPS = CALL_OPS | {"While", "StatelessWhile", "For", "If", "StatelessIf", "Case", "StatelessCase"}


def eager_captures(graph: tf.Graph) -> list[tuple[Any, tf.Tensor]]:
    """(value, tensor) for each EagerTensor `graph` captured, and the tensor of the graph that
    stands for it (a layer's `position_ids` made in `build()`): TensorFlow makes a Const for a
    small one, a Placeholder fed the value for a larger one, once the value is used."""
    return [(external, internal) for external, internal in getattr(graph, "captures", ())
            if isinstance(external, tf.Tensor) and not tf.is_symbolic_tensor(external)
            and external.dtype != tf.resource]


def captured_in(graph: tf.Graph, tensor: tf.Tensor) -> tf.Tensor | None:
    """The placeholder through which `graph` reads `tensor`, a tensor of a graph enclosing it (a
    branch's lambda calling a layer on the caller's `x`: the branch captures it, once used),
    following the captures of each graph in between; None where one of them did not capture it."""
    chain = []
    while graph is not None and graph is not tensor.graph:
        chain.append(graph)
        graph = getattr(graph, "outer_graph", None)
    if graph is None:
        return None
    for inner in reversed(chain):
        tensor = next((internal for external, internal in getattr(inner, "captures", ()) if external is tensor), None)
        if tensor is None:
            return None
    return tensor


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


def is_saved_signature(concrete_function: Any) -> bool:
    """Whether `concrete_function` is a signature of a loaded SavedModel (`loaded.signatures[name]`,
    a `_WrapperFunction`): keyword placeholders feeding one call of the restored function, named as
    the SavedModel's default signature traced by path is named."""
    return isinstance(concrete_function, saved_model_load._WrapperFunction)


def saved_signature_function(concrete_function: Any) -> str:
    """The name of the function a loaded signature wraps: TensorFlow names the wrapper's graph
    `signature_wrapper_<function>` (`signature_wrapper_embed`; tf_keras' `signature_wrapper`,
    without one: '')."""
    return re.sub(r"^signature_wrapper_?", "", concrete_function.graph.name)


_INLINE_LOCK = threading.Lock()


def inline_calls(concrete_function: Any) -> graph_pb2.GraphDef:
    """GraphDef of `concrete_function` with every (Stateful)PartitionedCall inlined.

    Inlined ops are named `<call op name>/<body op name>`; `While`/`If`/`Case` stay functional.
    TensorFlow's helper marks only `If`/`While` ops "do not lower to Switch/Merge"; `Case` ops
    are added to its list for the call, or Grappler would lower them into v1 control flow, whose
    untaken branch cannot be fetched.
    """
    logger = logging.getLogger("tensorflow")
    with _INLINE_LOCK:
        kept = convert_to_constants._CONTROL_FLOW_OPS  # pylint: disable=protected-access
        convert_to_constants._CONTROL_FLOW_OPS = kept | {"Case", "StatelessCase"}  # pylint: disable=protected-access
        logger.addFilter(_unserialized_collection)
        try:
            return convert_to_constants._run_inline_graph_optimization(  # pylint: disable=protected-access
                concrete_function, lower_control_flow=False, aggressive_inlining=True
            )
        finally:
            logger.removeFilter(_unserialized_collection)
            convert_to_constants._CONTROL_FLOW_OPS = kept  # pylint: disable=protected-access


def _unserialized_collection(record: logging.LogRecord) -> bool:
    """False for the warning TensorFlow's inliner logs when the MetaGraph it exports on the way
    cannot hold a graph collection (a lookup table's `table_initializer`: every Keras
    StringLookup, TextVectorization, IntegerLookup): the GraphDef it returns is complete."""
    return not str(record.msg).startswith("Issue encountered when serializing")


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


def anonymous_resource_name() -> str:
    """The `shared_name` that makes a `VarHandleOp` create a new variable each time it runs: an
    anonymous, reference-counted resource, freed once no handle to it is left (eager
    `tf.Variable`s are made this way)."""
    return context.anonymous_name()


def variable_spec(handle: Any) -> tuple[tf.DType, tf.TensorShape] | None:
    """The dtype and shape of the variable an eager resource handle points to (its handle
    data), or None when the handle carries none (not a variable's)."""
    data = getattr(handle, "_handle_data", None)  # pylint: disable=protected-access
    if data is None or not data.is_set or len(data.shape_and_type) != 1:
        return None
    (entry,) = data.shape_and_type
    return tf.as_dtype(entry.dtype), tf.TensorShape(entry.shape)


# ops that hand their k-th input on as their k-th output
_PASS_THROUGH = ("Identity", "IdentityN")


def bind_capture(external: Any, placeholder: tf.Tensor) -> None:
    """Make `placeholder`, already in the function graph being built, the captured input that
    `external` (an eager tensor: a variable handle) is passed through on every call.

    `FuncGraph.add_capture` appends it to the graph's inputs and capture list, as capturing does,
    without creating a placeholder of its own. A resource's handle data (the variable's dtype
    and shape) is copied onto the placeholder, as capturing does: an imported placeholder has
    none, and without it `tf.gradients` through a `While` that takes the handle as a loop input
    (an LSTM's kernel) gives no gradient for it (while_v2 seeds a resource's gradient with zeros
    only when it knows the shape). Import ran shape inference before the binding, so the handle
    data is also copied along the `Identity` ops that pass the handle on (an inlined call's
    argument: a SavedModel's signature calls the function that reads the variable).
    """
    placeholder.graph.add_capture(external, placeholder)
    _pass_handle_data(external, placeholder)


def _pass_handle_data(external: Any, placeholder: tf.Tensor) -> None:
    """Copy a resource's handle data from `external` onto `placeholder` and along the `Identity`
    ops that pass it on."""
    if external.dtype != tf.resource:
        return
    pending = [placeholder]
    while pending:
        tensor = pending.pop()
        handle_data_util.copy_handle_data(external, tensor)
        pending += [
            out for op in tensor.consumers() if op.type in _PASS_THROUGH
            for k, out in enumerate(op.outputs) if op.inputs[k] is tensor
        ]


def _has_handle_data(tensor: Any) -> bool:
    data = handle_data_util.get_resource_handle_data(tensor)
    return bool(data.is_set and data.shape_and_type)


@contextlib.contextmanager
def bodies_typed() -> Any:
    """Within the block, the graph TensorFlow rebuilds from a loop's, branch's or call's function
    to differentiate it (`control_flow_util_v2.get_func_graph`) has the handle data of the
    variables passed in on its resource arguments (and along the `Identity` ops passing them on).

    A function in a GraphDef's library carries no handle data on its arguments, and the rebuilt
    graph's placeholders get none: without it, while_v2 seeds a resource's gradient with zeros
    only when it knows the shape, so the gradient of a variable read in a loop inside a loop (or
    a `map_fn` in a loop) was silently zero, and cond_v2 in a loop body raised "Tried to take
    gradients ... of a variable without handle data". The outermost op's inputs have it (see
    `bind_capture`); each rebuilt graph passes it on to the functions it runs. The module
    attribute is swapped under the registry lock and put back after.
    """
    original = control_flow_util_v2.get_func_graph

    def typed(op: Any, input_shapes: Any, func_name: str) -> Any:
        func_graph = original(op, input_shapes, func_name)
        skip = _BODIES.get(op.type, ((), 0))[1]
        for external, internal in zip(op.inputs[skip:], func_graph.inputs):
            if external.dtype == tf.resource and internal.dtype == tf.resource and _has_handle_data(external) \
                    and not _has_handle_data(internal):
                _pass_handle_data(external, internal)
        return func_graph

    with _REGISTRY_LOCK:
        control_flow_util_v2.get_func_graph = typed
        try:
            yield
        finally:
            control_flow_util_v2.get_func_graph = original


# the ops that call a function by its `f` attribute (those TensorFlow did not inline: XLA helpers)
_CALLS = ("PartitionedCall", "StatefulPartitionedCall")
# the stateful ops a replayed call may run again (and calls of functions that run no others)
_REPLAYABLE = ("ReadVariableOp", *_CALLS)


@contextlib.contextmanager
def calls_replayed() -> Any:
    """Within the block, `tf.gradients` differentiates a function call op that has no gradient
    of its own (an imported copy's, a loop body's rebuilt from its FunctionDef) by replaying the
    called function inline and differentiating the replay.

    A call op built by `tf.function` carries its gradient as a Python attribute
    (`Operation._gradient_function`), which a copy built from a GraphDef or FunctionDef lacks;
    the registry's gradient of a call op is a `SymbolicGradient` op, which fails at run time for
    a call of a `jit_compile=True` function (the calls grappler leaves when inlining; the error
    says "SymbolicGradient" and nothing more), and at build time inside a loop body. The replay
    recomputes the call's outputs from the same inputs (an op the gradient needs, as
    `tf.function`'s own gradient does); for a call XLA compiles, the replay and its gradient are
    compiled too (Keras' grouped convolution, whose gradient has no CPU kernel without XLA). The registry's entries are swapped under the lock the
    custom gradients use, and put back after. A function with other stateful ops than variable
    reads (a write, a random draw) is not replayed, as a replay would run them again: its
    gradient raises LookupError.
    """
    entries = tf_ops.gradient_registry._registry  # pylint: disable=protected-access
    tag = tf_registry._TYPE_TAG  # pylint: disable=protected-access
    with _REGISTRY_LOCK:
        saved = {kind: entries.get(kind) for kind in _CALLS}  # none registered: SymbolicGradient
        for kind, entry in saved.items():
            entries[kind] = {**(entry or {}), tag: _replayed_call_gradient}
        try:
            yield
        finally:
            for kind, entry in saved.items():
                if entry is None:
                    del entries[kind]
                else:
                    entries[kind] = entry


def _replayed_call_gradient(op: Any, *grads: Any) -> list[Any]:
    body = control_flow_util_v2.get_func_graph(op, [t.shape for t in op.inputs], op.get_attr("f").name)
    stateful = _stateful(body)
    if stateful:
        raise LookupError(
            f"op {op.name!r} calls {op.get_attr('f').name!r}, a function TensorFlow does not inline (an XLA "
            f"helper), whose gradient would run its {stateful.type} op {stateful.name!r} again"
        )
    graph_def = body.as_graph_def()
    for node in graph_def.node:  # colocation with the call op, which the copy does not hold
        node.attr.pop("_class", None)
    taken = [k for k, g in enumerate(grads) if g is not None and body.outputs[k].dtype not in (tf.resource, tf.variant)]
    if not taken:
        return [None] * len(op.inputs)

    def backward(inputs: list[Any], upstream: list[Any], defined: Any = graph_def) -> list[Any]:
        # fresh copies of the inputs: the gradient reaches each through the replay only (not
        # through another input it is computed from)
        xs = [tf.identity(t) for t in inputs]
        outputs = tf.graph_util.import_graph_def(
            defined,
            input_map={f"{_REPLAY_INPUT}{k}:0" if defined is not graph_def else p.name: x
                       for k, (p, x) in enumerate(zip(body.inputs, xs))},
            return_elements=[t.name for t in body.outputs],
            name="replay",
        )
        return tf.gradients([outputs[k] for k in taken], xs, grad_ys=upstream)

    upstream = [grads[k] for k in taken]
    if not _xla_call(op):
        return backward(list(op.inputs), upstream)
    # XLA compiles no Placeholder: the body's arguments read the function's own, by name
    fed = graph_pb2.GraphDef()
    fed.CopyFrom(graph_def)
    arguments = {p.op.name: k for k, p in enumerate(body.inputs)}
    for node in fed.node:
        if node.name in arguments:
            dtype = node.attr["dtype"]
            node.op, node.input[:] = "Identity", [f"{_REPLAY_INPUT}{arguments[node.name]}"]
            node.attr.clear()
            node.attr["T"].CopyFrom(dtype)
    # a call TensorFlow compiles with XLA (Keras' grouped convolution on a CPU, which has no kernel
    # of its own for it) is differentiated in a function XLA compiles too
    return tf.function(lambda inputs, upstream: backward(inputs, upstream, fed), jit_compile=True,
                       autograph=False)(list(op.inputs), upstream)


_REPLAY_INPUT = "graphscope_replay_input_"


def _xla_call(op: Any) -> bool:
    """Whether a call op runs its function compiled with XLA (`jit_compile=True`)."""
    try:
        return bool(op.get_attr("_XlaMustCompile"))
    except ValueError:
        return False


def _stateful(body: Any) -> Any:
    """The first op of a function's body (or of a function it calls, or of a loop's or branch's
    body in it) that changes state (a write, a random draw), or None: one that a replay may not
    run again. TensorFlow marks every `While` and `If` stateful; their bodies decide."""
    for o in body.get_operations():
        inner_graphs = _called_bodies(o)
        if inner_graphs is not None:
            for inner_body in inner_graphs:
                inner = _stateful(inner_body)
                if inner is not None:
                    return inner
        elif o._is_stateful and o.type not in _REPLAYABLE:  # pylint: disable=protected-access
            return o
    return None


# the function attributes of the ops that run functions, and how many leading inputs are not
# the functions' arguments (an If's predicate, a Case's branch index)
_BODIES = {
    **{kind: (("f",), 0) for kind in _CALLS},
    **{kind: (("cond", "body"), 0) for kind in ("While", "StatelessWhile")},
    **{kind: (("then_branch", "else_branch"), 1) for kind in ("If", "StatelessIf")},
    **{kind: (("branches",), 1) for kind in ("Case", "StatelessCase")},
}


def function_inputs(node_def: Any) -> tuple[list[str], int] | None:
    """The attributes through which an op runs functions on its inputs, as
    `expose.function_attr` names them (`branches:<k>` for each of a Case's), and how many of its
    leading inputs are not the functions' arguments; None for an op that runs none."""
    entry = _BODIES.get(node_def.op)
    if entry is None:
        return None
    attrs, skip = entry
    if attrs == ("branches",):
        attrs = tuple(f"branches:{k}" for k in range(len(node_def.attr["branches"].list.func)))
    return list(attrs), skip


def _called_bodies(op: Any) -> list[Any] | None:
    """The graphs of the functions `op` runs (a call's, a loop's cond and body, a branch's), or
    None when it runs none."""
    if op.type not in _BODIES:
        return None
    attrs, skip = _BODIES[op.type]
    shapes = [t.shape for t in op.inputs[skip:]]
    names = []
    for attr in attrs:
        value = op.get_attr(attr)
        names += [f.name for f in value] if isinstance(value, list) else [value.name]
    return [control_flow_util_v2.get_func_graph(op, shapes, name) for name in names]


# the op attribute that names the registered gradient function of an op (set by
# `tf.custom_gradient` and `Graph.gradient_override_map`), looked up before the op's type
_GRADIENT_OP_TYPE = "_gradient_op_type"
_REGISTRY_LOCK = threading.RLock()


class CustomGradients:
    """The gradient functions registered for the ops of a traced graph by name (`tf.custom_gradient`:
    Keras' swish/silu, `gradient_override_map`), made to work on an imported copy of the graph.

    TensorFlow finds such an op's gradient in a process-wide registry by the op's
    `_gradient_op_type` attribute. A `tf.custom_gradient` registers a closure over the tensors of
    the graph it was traced in; differentiating a copy imported from a GraphDef calls that closure,
    which reads the original graph's tensors ("... is out of scope and cannot be used here").
    Within `active()`, the registry entry of each such op type is swapped (under a lock, and put
    back after) for one that, on an op of any other graph, runs the same gradient function traced
    once as a `tf.function` of the incoming gradients (the way `tf.saved_model.save` keeps custom
    gradients), with the original graph's tensors it captured replaced by the copy's: the op's own
    inputs and outputs by position, other tensors by name (with the prefix inlining gave the op).
    On the original graph's op the original entry runs, unchanged. A type shared by several ops
    (an override map) is left to its registered function, which is then a plain function of the op.
    """

    def __init__(self, graph: tf.Graph) -> None:
        self._graph = graph
        self._ops: dict[str, Any] | None = None
        self._traced: dict[str, tuple[Any, list[int], list[int], int]] = {}

    @property
    def ops(self) -> dict[str, Any]:
        """The op of the traced graph (or of a function it calls) for each gradient type only it has."""
        if self._ops is None:
            found: dict[str, Any] = {}
            shared = set()
            for graph in _graphs_within(self._graph):
                for op in graph.get_operations():
                    try:
                        kind = op.get_attr(_GRADIENT_OP_TYPE)
                    except ValueError:
                        continue
                    kind = kind.decode() if isinstance(kind, bytes) else kind
                    if found.setdefault(kind, op) is not op:
                        shared.add(kind)
            self._ops = {kind: op for kind, op in found.items() if kind not in shared}
        return self._ops

    @contextlib.contextmanager
    def active(self) -> Any:
        """Within the block, `tf.gradients` on an imported copy of the graph differentiates these
        ops as the original would. A captured tensor the copy lacks raises LookupError."""
        entries = tf_ops.gradient_registry._registry  # pylint: disable=protected-access
        with _REGISTRY_LOCK:
            saved = {kind: entries[kind] for kind in self.ops if kind in entries}
            for kind, entry in saved.items():
                entries[kind] = {**entry, tf_registry._TYPE_TAG: self._dispatch(kind, entry[tf_registry._TYPE_TAG])}  # pylint: disable=protected-access
            try:
                yield
            finally:
                entries.update(saved)

    def _dispatch(self, kind: str, original: Any) -> Any:
        source = self.ops[kind]

        def gradient(op: Any, *grads: Any) -> Any:
            if op.graph is source.graph:
                return original(op, *grads)
            return self._replay(kind, original, op, grads)

        return gradient

    def _replay(self, kind: str, original: Any, op: Any, grads: tuple[Any, ...]) -> list[Any]:
        source = self.ops[kind]
        if kind not in self._traced:
            self._traced[kind] = _trace_gradient(original, source)
        function, taken, returned, count = self._traced[kind]
        args = [grads[i] if grads[i] is not None else tf.zeros_like(op.outputs[i]) for i in taken]
        captures = [_counterpart(c, source, op) for c in function.captured_inputs]
        values = function._inference_function.call_flat(*args, *captures)  # pylint: disable=protected-access
        out: list[Any] = [None] * count
        for k, value in zip(returned, values):
            out[k] = value
        return out


def _graphs_within(graph: tf.Graph) -> list[tf.Graph]:
    """`graph` and the graph of every function it calls, at any depth, each once."""
    seen, stack = {}, [graph]
    while stack:
        g = stack.pop()
        if id(g) in seen:
            continue
        seen[id(g)] = g
        for fn in getattr(g, "_functions", {}).values():  # pylint: disable=protected-access
            inner = getattr(fn, "graph", None)
            if inner is not None:
                stack.append(inner)
    return list(seen.values())


def _trace_gradient(original: Any, source: Any) -> tuple[Any, list[int], list[int], int]:
    """The gradient function `original` of the op `source`, traced as a concrete function of
    the gradients of `source`'s outputs (resources and variants take none); with the positions
    of the outputs it takes, the positions of its results that are not None, and their count."""
    taken = [i for i, t in enumerate(source.outputs) if t.dtype not in (tf.resource, tf.variant)]
    returned: list[int] = []
    count = [0]

    def replay(*grads: Any) -> list[Any]:
        full = [None] * len(source.outputs)
        for i, g in zip(taken, grads):
            full[i] = g
        result = original(source, *full)
        result = list(result) if isinstance(result, (list, tuple)) else [result]
        count[0] = len(result)
        returned[:] = [k for k, r in enumerate(result) if r is not None]
        return [tf.convert_to_tensor(result[k]) for k in returned]

    specs = [tf.TensorSpec(source.outputs[i].shape, source.outputs[i].dtype) for i in taken]
    with tf.init_scope():  # traced on its own, not inside the graph being built
        function = tf.function(replay, autograph=False).get_concrete_function(*specs)
    return function, taken, returned, count[0]


def _counterpart(captured: Any, source: Any, op: Any) -> Any:
    """The tensor of `op`'s graph that stands for `captured`, a tensor the gradient of `source`
    reads: itself when eager (a constant, a variable's handle), else the copy's tensor."""
    if not tf.is_symbolic_tensor(captured):
        return captured
    for theirs, ours in ((source.inputs, op.inputs), (source.outputs, op.outputs)):
        for t, mine in zip(theirs, ours):
            if t.graph is captured.graph and t.name == captured.name:
                return mine
    if captured.graph is source.graph and op.name.endswith(source.name):
        prefix = op.name[: len(op.name) - len(source.name)]
        try:
            return op.graph.get_tensor_by_name(prefix + captured.name)
        except (KeyError, ValueError):
            pass
    raise LookupError(
        f"the gradient of {op.name} ({op.type}, a custom gradient) reads {captured.name}, which is "
        "not in the executable graph"
    )


def fresh_function(fn: Any) -> Any:
    """A new `tf.function` of `fn`'s Python function with `fn`'s input signature and XLA setting,
    which traces anew (`fn`'s own cache would hand back a trace made before).

    `PolymorphicFunction` keeps its `jit_compile` option in `_jit_compile`."""
    return tf.function(fn.python_function, input_signature=fn.input_signature,
                       jit_compile=getattr(fn, "_jit_compile", None))


def tf_function_attributes(obj: Any) -> list[tuple[str, Any, bool]]:
    """(name, tf.function, held by the class) for each tf.function `obj` holds: those its class
    (or a base) defines as methods, which bind to `obj` when looked up, and those in its own
    `__dict__`. Read once per class for the classes' (`_CLASS_FUNCTIONS`)."""
    cls = type(obj)
    names = _CLASS_FUNCTIONS.get(cls)
    if names is None:
        names = {}
        for base in reversed(cls.__mro__):
            for name, value in vars(base).items():
                if isinstance(value, tf.types.experimental.PolymorphicFunction):
                    names[name] = value
                else:
                    names.pop(name, None)  # overridden by a plain attribute
        names = _CLASS_FUNCTIONS[cls] = list(names.items())
    own = vars(obj)
    found = [(name, fn, True) for name, fn in names if name not in own]
    # (a type's attribute first: an isinstance check of the ABC costs more, over a layer's many attributes)
    found += [(name, fn, False) for name, fn in own.items() if hasattr(type(fn), "get_concrete_function")
              and isinstance(fn, tf.types.experimental.PolymorphicFunction)]
    return found


_CLASS_FUNCTIONS: weakref.WeakKeyDictionary[type, list[tuple[str, Any]]] = weakref.WeakKeyDictionary()


def fresh_tf_function(fn: Any, instance: Any = None) -> Any:
    """A tf.function like `fn` that traces anew (`fn`'s traces are kept per instance in the
    class's function, which a layer's call made when Keras built the model would hand back):
    with `instance`, `fn` (a class's method) bound to it as looking it up binds it
    (`class_method_to_instance_method`), without that lookup's cache; else a copy of `fn` (an
    instance's own, bound already) with its options (`_clone`)."""
    if instance is not None:
        return polymorphic_function.class_method_to_instance_method(fn, instance)
    return fn._clone(None)  # pylint: disable=protected-access


_UNSET = object()


def called_flag(layer: Any) -> Any:
    """What a Keras 3 layer's `_called` holds (it turns True on the layer's first call, symbolic
    or traced, and Keras then refuses `_register_call_context_args`), or a marker for none."""
    return vars(layer).get("_called", _UNSET)


def restore_called_flag(layer: Any, value: Any) -> None:
    """Put back what `called_flag` read."""
    if value is _UNSET:
        vars(layer).pop("_called", None)
    else:
        object.__setattr__(layer, "_called", value)


def keras2_default_serving(loaded: Any) -> bool:
    """Whether a loaded SavedModel's `serving_default` is the one tf_keras' `model.save` makes
    when given no signatures: the model called with `training=False`, through one call of the
    function tf_keras traces it in (`saving_utils.trace_model_call`'s `_wrapped_model`)."""
    signatures = getattr(loaded, "signatures", None) or {}
    if "serving_default" not in signatures:
        return False
    graph = signatures["serving_default"].graph
    calls = [op for op in graph.get_operations() if op.type in CALL_OPS]
    return len(calls) == 1 and _KERAS2_SERVING.fullmatch(calls[0].get_attr("f").name) is not None


_KERAS2_SERVING = re.compile(r"__inference__wrapped_model_\d+")


def build_shapes(model: Any) -> dict[str, Any] | None:
    """The input shapes a built Keras layer recorded when it was built, by argument name: Keras
    3 keeps them in `_build_shapes_dict`, tf_keras one shape in `_build_input_shape`."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if shapes is not None:
        return shapes
    shape = getattr(model, "_build_input_shape", None)
    if shape is None:
        return None
    try:
        shape = _as_tuples(shape)  # a dict or list a subclassed model was built with: a nest of them
    except (TypeError, ValueError):
        return None
    return {"inputs": shape}


def first_call_specs(model: Any) -> tuple[list[Any], dict[str, Any]] | None:
    """The TensorSpecs of the tensors a tf_keras model was first called with: one nest per
    positional argument, and those passed by keyword, by name (`model(x, y)` gives `[x_spec,
    y_spec], {}`), with their dtypes; None where none were recorded (Keras 3 never records
    them). tf_keras' `Model.__call__` keeps them in `_saved_model_arg_spec`, for saving."""
    recorded = _first_call(model)
    if recorded is None or not recorded[0]:
        return None
    args, kwargs = recorded
    specs = tf.nest.flatten([list(args), kwargs])
    if not specs or not all(isinstance(s, tf.TensorSpec) for s in specs):
        return None  # an argument that is not a tensor (None, a Python number) was not recorded as one
    return list(args), dict(kwargs)


def first_call_ragged(model: Any) -> dict[str, Any]:
    """The RaggedTensorSpecs among what a tf_keras model was first called with, by the name its
    input is traced under (`input_<k>`, its flat position), or a keyword argument's name; empty
    where none (Keras 3 records no call). `first_call_specs` leaves such a call out."""
    recorded = _first_call(model)
    if recorded is None:
        return {}
    args, kwargs = recorded
    found = {f"input_{k}": s for k, s in enumerate(tf.nest.flatten(list(args))) if isinstance(s, tf.RaggedTensorSpec)}
    found.update((k, s) for k, s in kwargs.items() if isinstance(s, tf.RaggedTensorSpec))
    return found


def _first_call(model: Any) -> tuple[Any, dict[str, Any]] | None:
    """What tf_keras' `Model.__call__` recorded of a model's first call, for saving, in
    `_saved_model_arg_spec`: (positional specs, keyword specs), or None where nothing of that
    form was recorded (Keras 3 never records it)."""
    recorded = getattr(model, "_saved_model_arg_spec", None)
    if not (isinstance(recorded, tuple) and len(recorded) == 2):
        return None
    args, kwargs = recorded
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        return None
    return args, kwargs


def _as_tuples(shape: Any) -> Any:
    """A shape (a TensorShape, or a list or tuple of sizes) as a tuple of sizes, and a dict, list
    or tuple of shapes as the same nest of tuples; ValueError for a shape of unknown rank."""
    if isinstance(shape, dict):
        return {k: _as_tuples(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and not all(d is None or isinstance(d, int) for d in shape):
        return type(shape)(_as_tuples(v) for v in shape)
    shape = tf.TensorShape(shape)
    if shape.rank is None:
        raise ValueError("a shape of unknown rank")
    return tuple(shape.as_list())


# ---- which Keras: Keras 3, or Keras 2 as tf_keras (imported only by a program that uses it)


def _keras_modules() -> list[Any]:
    import keras

    modules = [keras]
    tf_keras = sys.modules.get("tf_keras")  # a tf_keras model exists only once tf_keras is imported
    if tf_keras is not None:
        modules.append(tf_keras)
    return modules


class _Used:
    """Whether a Keras layer read the training mode `keras_training` set."""

    def __init__(self) -> None:
        self.used = False


@contextlib.contextmanager
def keras_training(training: bool) -> Any:
    """Within the block, a Keras layer called without `training=` (Keras 3's and tf_keras') runs
    in mode `training`, as if the code in the block were the `call` of a Keras layer called with
    `training=training`. Yields an object whose `used` says whether a layer read the mode (no
    Keras layer was called when it did not). Everything is put back on exit.

    Keras 3 resolves a layer's `training` from a call context kept per thread
    (`keras.src.backend.common.global_state`, attribute `current_call_ctx`, a `CallContext` the
    outermost `Layer.__call__` makes and removes when it is the context's `entry_layer`): one with
    no entry layer is set for the block, so no layer removes it. As in a Keras model's call, a
    layer given `training=` explicitly sets it for the layers called after it. tf_keras keeps a
    stack of call states per thread (`base_layer_utils.call_context()`); one is entered whose
    `call_context_args` hold the mode (each layer call enters its own on top).
    """
    from keras.src.backend.common import global_state
    from keras.src.layers.layer import CallContext

    seen = _Used()

    class Reading(CallContext):  # a Keras 3 layer call reads or sets its training mode here
        def get_value(self, arg_name: str, default: Any = None) -> Any:
            seen.used = seen.used or arg_name == "training"
            return super().get_value(arg_name, default)

        def set_value(self, arg_name: str, value: Any) -> None:
            seen.used = seen.used or arg_name == "training"
            super().set_value(arg_name, value)

    class ReadingArgs(dict):  # a tf_keras layer call reads `training` from these
        def get(self, key: Any, default: Any = None) -> Any:
            seen.used = seen.used or key == "training"
            return super().get(key, default)

        def __getitem__(self, key: Any) -> Any:
            seen.used = seen.used or key == "training"
            return super().__getitem__(key)

    context = Reading(entry_layer=None)
    context.training = training
    previous = global_state.get_global_attribute("current_call_ctx")
    global_state.set_global_attribute("current_call_ctx", context)
    legacy: Any = contextlib.nullcontext()
    if sys.modules.get("tf_keras") is not None:
        from tf_keras.src.engine import base_layer_utils

        legacy = base_layer_utils.call_context().enter(
            layer=None, inputs=None, build_graph=False, call_context_args=ReadingArgs(training=training)
        )
    try:
        with legacy:
            yield seen
    finally:
        global_state.set_global_attribute("current_call_ctx", previous)


@contextlib.contextmanager
def builds_outside_graphs(model: Any) -> Any:
    """Within the block, each unbuilt Keras 3 layer of `model` builds under `tf.init_scope`, as
    tf_keras builds its layers (`tf_utils.maybe_init_scope`) and as calling the model eagerly
    would: a tensor its `build` keeps (keras-hub ViT's `position_ids`) is then an EagerTensor, not
    a tensor of the graph being traced, which later calls (and the retrace TensorFlow makes after
    a first trace creates variables) could not use. Keras 3 gives each layer, in `Layer.__new__`,
    a per-instance `build` (its `build_wrapper`: name scope, `built`, state lock); that attribute
    is wrapped for the duration and put back on exit. Layers made inside a build are built within it."""
    import keras

    saved: list[tuple[Any, Any]] = []
    if not isinstance(model, keras.layers.Layer):  # tf_keras builds under init_scope itself
        yield
        return
    for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
        build = layer.__dict__.get("build")
        if not layer.built and build is not None:
            object.__setattr__(layer, "build", _outside_graphs(build))
            saved.append((layer, build))
    try:
        yield
    finally:
        for layer, build in reversed(saved):
            object.__setattr__(layer, "build", build)


def _outside_graphs(build: Any) -> Any:
    """`build`, run under `tf.init_scope`; with its name, signature and `_is_default` (which
    tells Keras the class has no build of its own)."""

    @functools.wraps(build)
    def eager_build(*args: Any, **kwargs: Any) -> Any:
        with tf.init_scope():
            return build(*args, **kwargs)

    return eager_build


@contextlib.contextmanager
def tf_keras_safe_mode(safe_mode: bool) -> Any:
    """Within the block, tf_keras deserializes a `Lambda` layer's Python lambda only when
    `safe_mode` is False. tf_keras' `load_model(path, safe_mode=...)` sets its safe mode for a
    `.keras` file only; a legacy `.h5` file's lambdas are loaded whatever it says, unless this
    scope (`serialization_lib.SafeModeScope`, which its Lambda layer reads) is open."""
    from tf_keras.src.saving import serialization_lib

    with serialization_lib.SafeModeScope(safe_mode):
        yield


def _keras_of(obj: Any) -> Any:
    """The Keras (`keras` or `tf_keras`) whose layer `obj` is, or None."""
    return next((k for k in _keras_modules() if isinstance(obj, k.layers.Layer)), None)


def is_keras_layer(obj: Any) -> bool:
    """A Keras layer or model: Keras 3's, or Keras 2's (tf_keras)."""
    return _keras_of(obj) is not None


def is_tf_keras_layer(obj: Any) -> bool:
    """A Keras 2 (tf_keras) layer or model."""
    k = _keras_of(obj)
    return k is not None and k.__name__ == "tf_keras"


def is_keras_model(obj: Any) -> bool:
    """A Keras model (Keras 3's or tf_keras')."""
    k = _keras_of(obj)
    return k is not None and isinstance(obj, k.Model)


def is_input_layer(obj: Any) -> bool:
    """A Keras `InputLayer` (Keras 3's or tf_keras')."""
    k = _keras_of(obj)
    return k is not None and isinstance(obj, k.layers.InputLayer)


# an op of a branch Grappler's TFG specialised for its caller after inlining the call around it
# (`cond/dense_1/BiasAdd_tfg_inlined_StatefulPartitionedCall/cond_0`)
_TFG_SPECIALISED = re.compile(r"(?P<op>.+?)_tfg_inlined_.+_\d+")  # the first: a branch in a specialised
# loop body is specialised again (`while/cond/mul_tfg_inlined_while/cond_tfg_inlined_StatefulPartitionedCall/while_1_0`)


def specialised_function(name: str) -> bool:
    """Whether a function of an executable graph is a branch TFG specialised for its caller
    (`cond_true_36_tfg_region_specialized_StatefulPartitionedCall_cond_0`), whose arguments may
    come in another order than the branch's."""
    return "_tfg_region_specialized_" in name


def specialised_op_name(name: str) -> str | None:
    """The op a node of a TFG-specialised branch function was made from, else None."""
    match = _TFG_SPECIALISED.fullmatch(name)
    return match["op"] if match else None


def keras_layer_bases() -> list[type]:
    """The classes whose own `__call__` is Keras' layer call, which every layer's call goes
    through (a subclass's `__call__`, tf_keras' `Model` and Keras' preprocessing `DataLayer`,
    calls it): Keras 3's `Layer`, and tf_keras' where tf_keras is imported."""
    import keras

    bases = [keras.layers.Layer]
    if "tf_keras" in sys.modules:
        bases.append(sys.modules["tf_keras"].layers.Layer)
    return [b for b in bases if "__call__" in vars(b)]


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


def keras_input_name(tensor: Any) -> str:
    """The name of a functional model's symbolic input as `model.summary()` shows it: its
    InputLayer's (`keras.Input(name=...)` names both). A Keras 3 `keras.Input` made without a
    name has an InputLayer named `input_layer_<n>` but a tensor named `keras_tensor_<n>`,
    a name shown nowhere. The layer is the first entry of the tensor's `_keras_history`
    (`operation` in Keras 3, `layer` in tf_keras)."""
    history = getattr(tensor, "_keras_history", None)
    layer = history[0] if isinstance(history, tuple) and history else None
    name = getattr(layer, "name", None)
    return name if isinstance(name, str) and name else tensor.name


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


@contextlib.contextmanager
def keras_name_scopes_kept() -> Any:
    """Leave Keras 3's stack of open name scopes as it was found, even when what runs inside
    fails: Keras pushes a scope before TensorFlow enters it, and when TensorFlow refuses it (a
    root scope named `_m`) the scope is never popped, so every later layer's variables would be
    named under it (`_m/dense/kernel`)."""
    from keras.src.backend.common import global_state

    stack = global_state.get_global_attribute("name_scope_stack")
    depth = len(stack) if stack is not None else 0
    try:
        yield
    finally:
        stack = global_state.get_global_attribute("name_scope_stack")
        if stack is not None and len(stack) > depth:
            del stack[depth:]
