"""Traced function  ->  the mirrored graph (`graphscope.ir.graph.ModelGraph`): every op of the
function and of every function nested in it, with canonical names and the layer call that
created it; and, for the runtime alone, where each tensor lives at run time (`Site`).

Nested bodies are walked through the call ops' function attributes (`PartitionedCall` /
`StatefulPartitionedCall` `f`, `While` cond/body, `If` branches, `Case` branches); a body's
ops are named under the call (functions) or by their own scopes (loops and branches), see
`graphscope.ir.names`. Layers come from the Keras calls recorded while tracing, or, for a
SavedModel traced without its Python classes, from the name scopes.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import networkx as nx
import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.backend.keras_calls import LayerCall, number_last
from graphscope.backend.trace import Traced
from graphscope.ir.graph import ModelGraph
from graphscope.ir.names import qualify, tensor_name, uniquify
from graphscope.ir.records import Layer, Op, Selection, Tensor

__all__ = ["Mirrored", "Site", "canonical_op_name", "mirror"]

_CALL_OPS = _tf.CALL_OPS
# what a function that only calls another holds besides the call: its arguments, the copies of
# its results and the no-op they wait on
_WRAPPING = {"Placeholder", "Identity", "IdentityN", "NoOp"}
# the op types that hold function bodies: only their NodeDefs are read (parsing every op's costs
# a tenth of a ResNet50's mirror)
_BODY_OPS = _tf.BODY_OPS
# function-valued attributes of control-flow ops: attr -> (role, offset of the op's inputs).
# A loop's body is mirrored before its cond, so on a name clash the body keeps the plain name.
_BODY_ATTRS = (
    ("body", "body", 0),
    ("cond", "cond", 0),
    ("then_branch", "then", 1),
    ("else_branch", "else", 1),
)


@dataclasses.dataclass
class _Frame:
    call_name: str
    call_raw: str
    role: str  # "" for a function call, else cond/body/then/else/branchK
    owner: LayerCall | None
    function: tuple[str, ...]
    arg_sources: list[str]  # canonical tensor names feeding the body's arguments, by position
    args: dict[str, int]  # body argument tensor name -> position
    prefix: str  # canonical names of this body's ops start with it ("" or "<call>/")
    site: tuple[tuple[str, str], ...]  # (op name in its graph, role) of each enclosing body
    layer: str | None = None  # the calling op's layer


@dataclasses.dataclass
class _Level:
    """One graph as walked at one place (a body called from two ops is walked twice): its ops'
    canonical names by their names in it, what each op reads in it (inputs and control inputs,
    canonical), the ops it must run (outputs, arguments, `control_outputs`), and the levels of
    the bodies each op holds."""

    names: dict[str, str] = dataclasses.field(default_factory=dict)
    reads: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    runs: list[str] = dataclasses.field(default_factory=list)
    bodies: dict[str, list[_Level]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Site:
    """Where a tensor's value lives at run time (see `graphscope.runtime.locate`): the enclosing
    calls and control-flow bodies as (op name in its own graph, function attribute), the op's
    own name in the innermost graph, its position among that graph's arguments (when it is one),
    and a tensor that always holds the same value (a call's argument: the call's input; a call's
    output: the body's result)."""

    path: tuple[tuple[str, str], ...] = ()
    local: str = ""
    arg: int | None = None
    alias: str | None = None


@dataclasses.dataclass(frozen=True)
class Mirrored:
    """The mirrored graph, and where each of its tensors lives at run time (by canonical name)."""

    graph: ModelGraph
    sites: dict[str, Site]


def canonical_op_name(raw: str, scopes: Sequence[tuple[str, str | None]]) -> str:
    """Rewrite the Keras scope segments of `raw` for the layer calls in `scopes`.

    Args:
        raw: the op's own name in its graph.
        scopes: `(layer name, token)` for each layer call enclosing the op, outermost first;
            token None drops the segment (the traced model itself).

    >>> canonical_op_name("vgg19_1/block4_conv3_1/BiasAdd", [("vgg19", None), ("block4_conv3", "block4_conv3")])
    'block4_conv3/BiasAdd'
    >>> canonical_op_name("siam_1/shared_dense_3/MatMul", [("siam", None), ("shared_dense", "shared_dense@2")])
    'shared_dense@2/MatMul'
    """
    segments = raw.split("/")
    out: list[str | None] = list(segments)
    pos = 0
    for layer_name, token in scopes:
        pattern = _tf.keras_scope(layer_name)
        for k in range(pos, len(segments) - 1):  # the last segment is the op's own name
            if pattern.fullmatch(segments[k]):
                out[k] = token
                pos = k + 1
                break
    return "/".join(s for s in out if s is not None)




class _NameScopes:
    """Canonical names and layers from name scopes alone, for a SavedModel traced without its
    Python classes: the Keras model's own scope is dropped (`mask_rcnn_demo_1/conv1_1/BiasAdd`
    -> `conv1/BiasAdd`), the next segment is the layer, without Keras' uniquifying `_<n>` suffix
    unless a variable's path says the suffix is part of the name; a layer seen under a second
    scope is its second call (`shared_dense@2`). A signature that calls one layer on its own
    keeps that layer's scope (`emb_1/MatMul` -> `emb/MatMul`): it is not a model's. The scope an
    op opens for its own helpers (`MatMul_1/ReadVariableOp` below the op `MatMul_1`) is no layer:
    the name is kept as TensorFlow made it, as a live trace keeps it."""

    def __init__(self, function: Any) -> None:
        self.known = {v.name.split("/")[0] for v in function.graph.variables if "/" in v.name}
        firsts: dict[str, int] = defaultdict(int)
        scoped: list[str] = []
        # an op's own name scope (`MatMul/ReadVariableOp` below `MatMul`) is no layer's
        self.ops = {op.name for op in function.graph.get_operations()}
        for op in function.graph.get_operations():
            if op.type in _CALL_OPS and "f" in op.node_def.attr:
                body = _tf.function_graph(op.graph, op.node_def.attr["f"].func.name)
                while (through := _only_call(body)) is not None:  # a function that only calls another
                    self.ops.update(inner.name for inner in body.get_operations())
                    body = _tf.function_graph(body, through.node_def.attr["f"].func.name)
                for inner in body.get_operations():
                    self.ops.add(inner.name)
                    if "/" in inner.name:
                        firsts[inner.name.split("/")[0]] += 1
                        scoped.append(inner.name)
        top = max(firsts, key=firsts.__getitem__, default=None)
        # the model's scope holds (nearly) every scoped op, carries Keras' suffix, and holds the
        # scopes of the layers the model called
        self.model = (
            top
            if top and _tf.KERAS_SUFFIX.search(top) and firsts[top] * 10 >= len(scoped) * 9
            and _holds_layer_calls(top, scoped)
            else None
        )
        self.tokens: dict[str, str] = {}
        self.calls: dict[str, int] = defaultdict(int)

    def canonical(self, name: str) -> tuple[str, str | None]:
        """`name` without the model scope and with the layer's own name; and that layer."""
        segments = name.split("/")
        scope = segments[0]
        if self.model is not None and len(segments) > 1 and segments[0] == self.model:
            segments = segments[1:]
            scope = f"{self.model}/{segments[0]}"
        if len(segments) < 2 or scope in self.ops:  # no scope, or an op's own (not a layer)
            return "/".join(segments), None
        token = self.tokens.get(segments[0])
        if token is None:
            scope = segments[0]
            layer = scope if scope in self.known else _tf.KERAS_SUFFIX.sub("", scope)
            self.calls[layer] += 1
            token = layer if self.calls[layer] == 1 else f"{layer}@{self.calls[layer]}"
            self.tokens[scope] = token
        segments[0] = token
        return "/".join(segments), token


def _only_call(graph: tf.Graph) -> tf.Operation | None:
    """The one call `graph` makes when it computes nothing else (its arguments, the call, and
    the copies and no-op TensorFlow wraps results in): a SavedModel signature's function that
    only calls the tf.function it was made from (a tf.Module's `serve` returning `self(x)`, a
    Keras `ExportArchive` endpoint given a tf.function). Else None."""
    calls = []
    for op in graph.get_operations():
        if op.type in _CALL_OPS and _tf.GENERIC_CALL.fullmatch(op.name) and "f" in op.node_def.attr:
            calls.append(op)
        elif op.type not in _WRAPPING:
            return None
    return calls[0] if len(calls) == 1 else None


def _holds_layer_calls(scope: str, names: list[str]) -> bool:
    """Whether `scope` is a model's: at least half of its ops lie inside the scope of a layer call
    below it (`net_1/proj_1/MatMul`, `outer_1/backbone_1/conv1_1/...`). A layer called on its own
    has its ops directly in its scope, or in the scopes its ops open (`emb_1/MatMul`,
    `emb_1/Cast/ReadVariableOp`, `bn_1/Cast_1/ReadVariableOp`): a segment below it names a layer
    call when it carries Keras' suffix, is not itself an op, and is not an op type (`Cast_1`)."""
    ops = set(names)
    inside = [name.split("/") for name in names if name.startswith(scope + "/")]

    def layer_call(segment: str) -> bool:
        return bool(_tf.KERAS_SUFFIX.search(segment)) and f"{scope}/{segment}" not in ops and not hasattr(
            tf.raw_ops, _tf.KERAS_SUFFIX.sub("", segment)
        )

    in_calls = sum(1 for parts in inside if len(parts) > 2 and layer_call(parts[1]))
    return in_calls * 2 >= len(inside)


def mirror(traced: Traced, *, tick: Callable[[int], None] | None = None) -> Mirrored:
    """Mirror a traced function (and every function nested in it) into a ModelGraph.

    `tick(1)` is called once per op mirrored (a progress display's counter)."""
    number_last(traced.calls, _unused_calls(traced))  # before any name is made
    walked = _Mirror(traced, tick)
    mirrored = walked.build()
    renumbered = walked.numbers_in_walk_order()
    if renumbered is None:
        return mirrored
    # a layer called by a function called from several places and elsewhere too: its calls were
    # numbered before the walk knew the places' order; named again with the numbers they ran in
    originals, copies = renumbered
    for call, number in originals:
        call.number = number
    return _Mirror(traced, None, copy_numbers=copies).build()


def _unused_calls(traced: Traced) -> set[int]:
    """The recorded calls (by id) of a layer called more than once inside one parent call whose
    outputs no output of the traced function needs the values of (`_unused`'s rule, on
    TensorFlow's graphs, less what only a shape is taken of): Keras calls an RNN's cell once
    outside its loop only to learn shapes (and, with a mask, the shape of its masked steps'
    zeros), then in the loop's body. Only the graphs holding such calls, and those around them, are walked; none when no
    layer is called twice in one parent. A functional model's calls are left out: they carry
    Keras' node numbers, which a call no output needs keeps (an outer model using one output of
    an inner one with a shared layer)."""
    by_layer: dict[tuple[int, int], list[LayerCall]] = defaultdict(list)
    for call in traced.calls:
        by_layer[(id(call.parent), id(call.layer))].append(call)
    nodes: dict[int, dict[int, list[int]]] = {}  # a parent's layer -> its node numbers (`Recorder._renumber`)

    def keras_numbered(same: list[LayerCall]) -> bool:
        parent = same[0].parent
        if parent is None:
            return False
        if id(parent.layer) not in nodes:
            nodes[id(parent.layer)] = _tf.node_numbers(parent.layer)
        return len(nodes[id(parent.layer)].get(id(same[0].layer), ())) == len(same)

    candidates = [c for same in by_layer.values() if len(same) > 1 and not keras_numbered(same) for c in same]
    if not candidates:
        return set()
    around: set[int] = set()  # the graphs holding candidates, and the graphs around them
    for call in candidates:
        g: Any = call.graph
        while g is not None and id(g) not in around:
            around.add(id(g))
            g = getattr(g, "outer_graph", None)
    live: dict[int, set[str]] = {}  # graph -> its ops an output needs, where the graph runs
    todo: list[tf.Graph] = [traced.function.graph]
    while todo:
        graph = todo.pop()
        if id(graph) in live:
            continue
        needed = live[id(graph)] = _needed_ops(graph, values=True)
        for op in graph.get_operations():
            if op.name in needed and op.type in _BODY_OPS:
                todo.extend(body for _, _, body, _ in _Mirror._bodies(op) if id(body) in around)
    found = set()
    for call in candidates:
        outputs = [t for t in tf.nest.flatten(call.outputs)
                   if isinstance(t, tf.Tensor) and tf.is_symbolic_tensor(t)]
        needed = live.get(id(call.graph), set())
        if outputs and all(t.graph is call.graph and t.op.name not in needed for t in outputs):
            found.add(id(call))
    return found


def _in_scope_of(op_name: str, layer_name: str) -> bool:
    """Whether `op_name` is made directly in a name scope of the layer (`model/shared/Cast`, or
    `model/shared_1/Cast` where a second call opened it again)."""
    scope = op_name.rpartition("/")[0].rpartition("/")[2]
    return scope == layer_name or re.fullmatch(re.escape(layer_name) + r"_\d+", scope) is not None


# ops whose value depends on their input's shape only (Keras' RNN makes its masked steps' zeros
# with `zeros_like` of the cell's output outside the loop)
_SHAPE_ONLY = frozenset({"ZerosLike", "OnesLike", "Shape", "ShapeN", "Size", "Rank"})


def _needed_ops(graph: tf.Graph, *, values: bool = False) -> set[str]:
    """The names of the ops of `graph` upstream (through inputs and control inputs) of its
    outputs, arguments and `control_outputs`: `_unused`'s live ops, by TensorFlow's names. With
    `values`, only those whose values they need: not what reaches them only through an op that
    reads its input's shape (`_SHAPE_ONLY`)."""
    needed: set[str] = set()
    todo = [t.op for t in (*graph.inputs, *graph.outputs)] + _tf.control_outputs(graph)
    while todo:
        op = todo.pop()
        if op.name not in needed:
            needed.add(op.name)
            if not (values and op.type in _SHAPE_ONLY):
                todo.extend(t.op for t in op.inputs)
            todo.extend(op.control_inputs)
    return needed


def _unused(top: _Level) -> set[str]:
    """Canonical names of the ops no output of the traced function depends on: in each graph,
    the ops that are neither upstream (through inputs or control inputs) of the graph's outputs
    or of the ops it must run for their side effects (`control_outputs`), nor its arguments;
    in a body, also every op when the op holding the body is unused. What Keras computes only
    to learn shapes (an RNN's cell called once outside its loop) is unused."""
    unused: set[str] = set()
    stack = [(top, True)]
    while stack:
        level, alive = stack.pop()
        live: set[str] = set()
        todo = list(level.runs) if alive else []
        while todo:
            name = todo.pop()
            if name not in live:
                live.add(name)
                todo.extend(level.reads[name])
        for name in level.names.values():
            if name not in live:
                unused.add(name)
            stack.extend((body, name in live) for body in level.bodies.get(name, ()))
    return unused


class _Mirror:
    def __init__(self, traced: Traced, tick: Callable[[int], None] | None = None, *,
                 copy_numbers: dict[tuple[int, int], int] | None = None) -> None:
        self.traced = traced
        self.tick = tick
        self.G = nx.DiGraph(name=traced.name)
        # nodes and edges are collected while walking and added to G at once, afterwards
        self.nodes: dict[str, dict[str, Any]] = {}
        self.open_calls: set[str] = set()  # the ops whose bodies are being walked
        self.edges: dict[tuple[str, str], list[int]] = {}
        self.tensors: dict[str, Tensor] = {}
        self.sites: dict[str, Site] = {}
        self.names: dict[str, str] = {}
        self.by_tf: dict[tuple[Any, ...], str] = {}  # (graph, TF tensor name[, walk]) -> canonical name
        self.calls_by_graph: dict[int, list[LayerCall]] = defaultdict(list)
        self.made_in: dict[int, list[LayerCall]] = defaultdict(list)  # graph -> every call made in it, in call order
        for call in traced.calls:
            self.made_in[id(call.graph)].append(call)
            if call.last_id >= call.first_id:
                self.calls_by_graph[id(call.graph)].append(call)
        self.call_scopes: dict[int, list[tuple[str, str | None]]] = {}
        # a shared layer's later calls in a graph -> its first call there (see `_as_first_call`)
        self.first_calls: dict[int, LayerCall] = {}
        for calls in self.calls_by_graph.values():
            first: dict[int, LayerCall] = {}
            namesakes: dict[tuple[int, str], LayerCall] = {}  # (parent call, layer name) -> its first call
            for call in sorted(calls, key=lambda c: c.first_id):
                earlier = namesakes.setdefault((id(call.parent), call.layer.name), call)
                if first.setdefault(id(call.layer), call) is not call:
                    self.first_calls[id(call)] = first[id(call.layer)]
                elif call.label and earlier.layer is not call.layer:
                    # another layer of the same name (`d_1`): its scope is the namesake's, opened again
                    self.first_calls[id(call)] = earlier
        self.shared_firsts = {id(c) for c in self.first_calls.values()}
        self.first_names: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.later_counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.scopes = _NameScopes(traced.function) if traced.source == "saved_model" else None
        self.eager_by_graph: dict[int, tuple[dict[int, tf.Tensor], dict[str, Any]]] = {}
        # (graph, op name) of the casts Keras makes of a layer's inputs (`_autocasts`) -> the call's id
        self.autocast_ops: dict[tuple[int, str], int] = {}
        self.held = self._held_values()
        self.levels: list[_Level] = []  # the graphs being walked, innermost last
        # an argument of a SavedModel's serving function -> the signature's tensor feeding it
        self.serving_arguments: dict[str, str] = {}
        self.wrapper_names = self._wrapper_names() if self.scopes is not None else {}
        self.stand_ins: set[str] = set()  # names of the ops TensorFlow made for loop values a body does not read
        # a graph walked again (a function called from several places) holds calls of its own at
        # each place: copies of its recorded calls (`_copy`), one per later walk
        self.walks: dict[int, int] = defaultdict(int)  # graph -> times its walk began
        self.walking: dict[int, int] = {}  # graph -> the walk under way (0: the first)
        self.copies: dict[tuple[int, int], LayerCall] = {}  # (call, walk) -> its copy
        self.copied: list[LayerCall] = []
        self.copy_numbers = copy_numbers or {}  # (call, walk) -> its copy's number, where planned
        self.first_op: dict[int, int] = {}  # call (or copy) -> the walk position of its first op
        self.inherited: set[tuple[int, int]] = set()  # copies numbered as the calls they copy

    def _wrapper_names(self) -> dict[str, str]:
        """Names for the ops of a SavedModel signature's own graph that TensorFlow names for no
        one: a variable handle it captures (`unknown_0`) is named after its variable
        (`hidden/bias`), and the copy it returns of an output (`Identity_1`, which clashes with
        the serving function's own `Identity_1`) after the output's key (`prod`)."""
        cf = self.traced.function
        n_inputs = len(cf.graph.inputs) - len(cf.captured_inputs)
        variables = {id(v.handle): v.name.rpartition(":")[0] for v in cf.graph.variables}
        names = {}
        for placeholder, handle in zip(cf.graph.inputs[n_inputs:], cf.captured_inputs):
            if placeholder.dtype == tf.resource and variables.get(id(handle)):
                names[placeholder.op.name] = variables[id(handle)]
        for t, key in zip(cf.graph.outputs, self.traced.output_keys or ()):
            if key and t.op.type == "Identity" and len(t.op.outputs) == 1:
                names[t.op.name] = key
        return names

    def build(self) -> Mirrored:
        cf = self.traced.function
        top = self._walk(cf.graph, None)
        self.G.add_nodes_from(self.nodes.items())
        self.G.add_edges_from((u, v, {"outputs": tuple(sorted(set(ix)))}) for (u, v), ix in self.edges.items())
        n_inputs = len(cf.graph.inputs) - len(cf.captured_inputs)
        inputs = [self.by_tf[(id(cf.graph), t.name)] for t in cf.graph.inputs[:n_inputs]]
        if self.traced.input_positions is not None:  # the declared order, not TensorFlow's
            inputs = [inputs[k] for k in self.traced.input_positions]
        outputs = [self.by_tf[(id(cf.graph), t.name)] for t in cf.graph.outputs]
        self.G.graph.update(
            tensors=self.tensors,
            names=self.names,
            inputs=inputs,
            outputs=outputs,
            layers=self._layers(inputs, outputs),
            model_type=type(self.traced.model).__name__ if self.traced.model is not None else "function",
            input_names=list(self.traced.input_names),
            output_keys=self.traced.output_keys,
            stand_ins=frozenset(self.stand_ins),
            unused=frozenset(_unused(top)),
        )
        return Mirrored(ModelGraph.adopt(self.G), self.sites)

    # ---- ownership and names

    def _owners(self, graph: tf.Graph) -> dict[str, LayerCall]:
        """Innermost recorded layer call that created each op of `graph`."""
        calls = sorted(self.calls_by_graph.get(id(graph), []), key=lambda c: (c.first_id, -c.last_id))
        owners: dict[str, LayerCall] = {}
        stack: list[LayerCall] = []
        k = 0
        for op in graph.get_operations():
            i = _tf.op_id(op)
            while k < len(calls) and calls[k].first_id < i:
                c = calls[k]
                k += 1
                while stack and stack[-1].last_id <= c.first_id:
                    stack.pop()
                if c.last_id >= i:
                    stack.append(c)
            while stack and stack[-1].last_id < i:
                stack.pop()
            if stack:
                owners[op.name] = stack[-1]
        for op_name, call in self._autocasts(graph, calls, owners).items():
            owners[op_name] = call
            self.autocast_ops[(id(graph), op_name)] = id(call)
        return owners

    @staticmethod
    def _autocasts(graph: tf.Graph, calls: list[LayerCall], owners: dict[str, LayerCall]) -> dict[str, LayerCall]:
        """The casts Keras makes of a layer's inputs to its compute dtype (mixed precision: a
        float16 layer's float32 input, a float32 softmax's float16 input), by op name, with the
        call they are for. `Layer.__call__` makes them before it calls `call` (Keras 3 before it
        opens the layer's name scope, tf_keras inside it), so they lie outside the call's ops: each is a Cast that the call's `call`
        received, to the layer's compute dtype, made after the calls before it and outside any
        other call (the parent's op, or the traced function's). Keras casts only floating-point
        inputs (`DTypePolicy.convert_input`, tf_keras' `_maybe_cast_inputs`): a cast of integers or
        booleans (`tf.cast(ids, tf.float32)` before a `Dense`) is the caller's own, and so is one
        outside a tf_keras layer's name scope."""
        found: dict[str, LayerCall] = {}
        ends = sorted(c.last_id for c in calls)
        for call in calls:
            dtype = getattr(call.layer, "compute_dtype", None)
            if dtype is None or not getattr(call.layer, "autocast", getattr(call.layer, "_autocast", False)):
                continue
            k = bisect.bisect_right(ends, call.first_id)
            after = ends[k - 1] if k else -1  # the last op of the calls made before this one
            parent = call.parent if call.parent is not None and call.parent.graph is graph else None
            keras2 = _tf.is_tf_keras_layer(call.layer)
            for t in tf.nest.flatten((call.args, list(call.keywords.values()))):
                if not (isinstance(t, tf.Tensor) and tf.is_symbolic_tensor(t) and t.graph is graph):
                    continue
                op = t.op
                if keras2 and not _in_scope_of(op.name, call.layer.name):
                    continue  # tf_keras casts inside the layer's name scope: one outside is the caller's
                if (op.type == "Cast" and t.dtype.name == dtype and op.inputs[0].dtype.is_floating and after < _tf.op_id(op) <= call.first_id
                        and owners.get(op.name) is parent):
                    found[op.name] = call
        return found

    def _chain(self, call: LayerCall | None) -> list[LayerCall]:
        chain = []
        while call is not None:
            chain.append(call)
            call = call.parent
        return chain[::-1]

    def _layer_path(self, call: LayerCall | None) -> str | None:
        if call is None:
            return None
        return "/".join(token for _, token in self._scopes(call) if token is not None) or None

    def _scopes(self, call: LayerCall | None) -> list[tuple[str, str | None]]:
        """(layer name, call token) of each call from the root down to `call`, once per call:
        reading a Keras layer's `name` costs a property lookup through its tracking machinery."""
        key = id(call)
        scopes = self.call_scopes.get(key)
        if scopes is None:
            scopes = [(c.layer.name, None if c is self.traced.root_call else c.token) for c in self._chain(call)]
            self.call_scopes[key] = scopes
        return scopes

    # ---- the walk

    def _walk(self, graph: tf.Graph, frame: _Frame | None) -> _Level:
        owners = self._owners(graph)
        walk = self.walks[id(graph)]
        self.walks[id(graph)] = walk + 1
        outer = self.walking.get(id(graph))
        self.walking[id(graph)] = walk
        if walk:  # called again from another place: its calls there are other calls
            caller = frame.owner if frame else None
            for call in self.made_in.get(id(graph), ()):  # parents first: a call is recorded as it begins
                self._copy(call, walk, caller)  # each, also one that owns no op itself (its sublayers' parent)
            owners = {name: self.copies[(id(call), walk)] for name, call in owners.items()}
            if walk == 1:  # the first walk's tensors, kept apart from the later walks' (`_key`)
                by_tf = self.by_tf
                for op in graph.get_operations():
                    for t in op.outputs:
                        if (id(graph), t.name) in by_tf:
                            by_tf[(id(graph), t.name, 0)] = by_tf[(id(graph), t.name)]
        level = _Level()
        self.levels.append(level)
        for op in graph.get_operations():
            self._add(op, graph, frame, owners.get(op.name) or (frame.owner if frame else None))
            if self.tick is not None:
                self.tick(1)
        self.levels.pop()
        if outer is None:
            del self.walking[id(graph)]
        else:
            self.walking[id(graph)] = outer
        level.runs = [self.tensors[self.by_tf[(id(graph), t.name)]].op for t in (*graph.inputs, *graph.outputs)]
        level.runs += [level.names[op.name] for op in _tf.control_outputs(graph) if op.name in level.names]
        for reads in level.reads.values():
            reads[:] = [level.names.get(r[1], r[1]) if isinstance(r, tuple) else r for r in reads]
        return level

    def _copy(self, call: LayerCall, walk: int, caller: LayerCall | None) -> LayerCall:
        """The call `call` made at the place of its graph's walk `walk` (> 0): a copy numbered
        after the layer's other calls in its parent (`encoder@2` for a helper tf.function called
        twice), under this walk's copy of its parent where its parent was made in the same graph
        (a layer the helper calls, which calls a sublayer), else under `caller` (the call of the op
        calling the graph here: a shared layer's helper method is called by each of its calls; a
        helper called at the top and inside a layer is under the layer there). Its tensors are
        this walk's (`_key`)."""
        key = (id(call), walk)
        copy = self.copies.get(key)
        if copy is None:
            parent = call.parent
            inside = parent is not None and parent.graph is call.graph
            parent = self.copies[(id(parent), walk)] if inside else caller
            number = self.copy_numbers.get(key)
            if inside:  # under a copy of its parent: the parent's calls again, numbered as they were
                number = call.number if number is None else number  # (a functional model's: Keras' node order)
                self.inherited.add(key)
            elif number is None:
                siblings = [c for c in (*self.traced.calls, *self.copied) if c.parent is parent and c.layer is call.layer]
                number = max((c.number for c in siblings), default=0) + 1
            copy = dataclasses.replace(call, parent=parent, number=number, walk=walk)
            self.copies[key] = copy
            self.copied.append(copy)
        return copy

    def _positions(self) -> dict[int, int]:
        """Each call's (and copy's) place in the walk: its first op's, or for a call without ops
        of its own, its sublayers' first."""
        at = dict(self.first_op)
        for call in sorted((*self.traced.calls, *self.copied), key=lambda c: -len(self._chain(c))):  # sublayers first
            if call.parent is not None and id(call) in at:
                at[id(call.parent)] = min(at.get(id(call.parent), at[id(call)]), at[id(call)])
        return at

    def numbers_in_walk_order(self) -> tuple[list[tuple[LayerCall, int]], dict[tuple[int, int], int]] | None:
        """After the walk, where copies were made: the numbers the calls of each layer inside
        one parent take in the order their places ran (by their first op in the walk; a call
        without ops of its own by its sublayers'), for the groups holding a copy whose numbers
        differ (a helper's second place numbered after a later direct call): (recorded calls and
        their numbers, {(call, walk): number} for the copies). A group of copies under a copy of
        their parent only repeats the parent's calls, numbered as those were (`_copy`): left
        as it is. None where none differ."""
        if not self.copied:
            return None
        calls = [*self.traced.calls, *self.copied]
        at = self._positions()
        groups: dict[tuple[int, int], list[LayerCall]] = defaultdict(list)
        for call in calls:
            groups[(id(call.parent), id(call.layer))].append(call)
        copies = {id(copy) for key, copy in self.copies.items() if key not in self.inherited}
        originals: list[tuple[LayerCall, int]] = []
        planned: dict[tuple[int, int], int] = {}
        walk_of = {id(copy): key for key, copy in self.copies.items()}
        for same in groups.values():
            if len(same) < 2 or not any(id(c) in copies for c in same):
                continue
            numbers = sorted(c.number for c in same)
            ordered = sorted(same, key=lambda c: at.get(id(c), len(self.nodes)))
            if [c.number for c in ordered] == numbers:
                continue
            for call, number in zip(ordered, numbers):
                if id(call) in walk_of:
                    planned[walk_of[id(call)]] = number
                else:
                    originals.append((call, number))
        return (originals, planned) if originals or planned else None

    def _held_values(self) -> dict[tuple[int, str], tuple[str, LayerCall]]:
        """The captured EagerTensors a layer passed a sublayer from its attributes (keras-hub ViT's
        `self.position_ids`, made in `build()`), by (graph, op name) of the Const or Placeholder
        TensorFlow captured them as: named by the attribute (`vit_patching_and_embedding/
        position_ids`) in the holder's call, not by the name TensorFlow gave the capture (the
        sublayer's op input, or a number drawn from a process-wide counter). Keras 3 passes the
        sublayer the EagerTensor itself, tf_keras the captured tensor."""
        held: dict[tuple[int, str], tuple[str, LayerCall]] = {}
        for call in self.traced.calls:
            parent = call.parent
            if parent is None:
                continue
            by_value, by_name = self._eager(call.graph)
            if not by_value:
                continue
            for t in tf.nest.flatten((call.args, list(call.keywords.values()))):
                if not isinstance(t, tf.Tensor):
                    continue
                if tf.is_symbolic_tensor(t):
                    value, captured = by_name.get(t.name), t
                else:
                    value, captured = t, by_value.get(id(t))
                attribute = next((k for k, v in vars(parent.layer).items() if v is value), None) if value is not None else None
                if captured is None or attribute is None:
                    continue
                path = self._layer_path(parent)
                held.setdefault((id(call.graph), captured.op.name), (f"{path}/{attribute}" if path else attribute, parent))
        return held

    def _eager(self, graph: tf.Graph) -> tuple[dict[int, tf.Tensor], dict[str, Any]]:
        """The EagerTensors `graph` captured: their tensors by the value's id, and the values by
        their tensor's name."""
        found = self.eager_by_graph.get(id(graph))
        if found is None:
            pairs = _tf.eager_captures(graph)
            found = ({id(v): t for v, t in pairs}, {t.name: v for v, t in pairs})
            self.eager_by_graph[id(graph)] = found
        return found

    def _as_first_call(self, call: LayerCall, base: str) -> str:
        """The name an op of a shared layer's later call gets: the k-th op whose name, below the
        layer, is `B` up to TensorFlow's `_<n>` suffixes gets the name of the k-th such op of the
        layer's first call in the graph. tf_keras opens the same name scope again for every call,
        so TensorFlow suffixes a later call's `shared/BiasAdd` to `shared/BiasAdd_1`; Keras 3 opens
        a fresh scope (`shared_3/BiasAdd`), which this leaves as it is. Suffixes telling two ops
        of one call apart (`MatMul_1` beside `MatMul`) are kept: the first call has them too."""
        path = self._layer_path(call)
        if path is None or not base.startswith(path + "/"):
            return base
        rest = base[len(path) + 1 :]
        key = _tf.unsuffixed(rest)
        first = self.first_calls.get(id(call))
        if first is None:  # the first call: its names are the reference
            self.first_names[id(call)][key].append(rest)
            return base
        counts = self.later_counts[id(call)]
        k = counts[key]
        counts[key] = k + 1
        names = self.first_names[id(first)].get(key, ())
        return f"{path}/{names[k]}" if k < len(names) else base

    def _add(self, op: tf.Operation, graph: tf.Graph, frame: _Frame | None, owner: LayerCall | None) -> None:
        held = self.held.get((id(graph), op.name)) if self.held else None
        if held is not None:  # a layer's attribute passed to a sublayer: the holder's
            base, owner = held
        elif self.autocast_ops and (id(graph), op.name) in self.autocast_ops:
            # made for the layer, outside its scope; the traced model's own cast of its inputs is at the root
            path = self._layer_path(owner)
            base = f"{path}/autocast" if path else "autocast"
        else:
            base = canonical_op_name(op.name, self._scopes(owner))
        if held is None and owner is not None and owner.graph is graph and (
            id(owner) in self.first_calls or id(owner) in self.shared_firsts
        ):
            base = self._as_first_call(owner, base)
        scoped_layer = None
        if self.scopes is not None and (frame is None or not frame.prefix):  # not named under a call
            base, scoped_layer = self.scopes.canonical(base)
        arg = frame.args.get(op.outputs[0].name) if frame and op.outputs and op.type == "Placeholder" else None
        if frame is None:
            name, raw = base, op.name
            if op.name in self.wrapper_names:  # a signature's variable handle or returned copy
                name, scoped_layer = self.wrapper_names[op.name], None
        elif not frame.role:
            raw = f"{frame.call_raw}/{op.name}"
            name = f"{frame.prefix}{base}"
            if not frame.prefix and arg is not None:  # an argument of a SavedModel's serving function
                name, reader_layer = self._serving_argument(op, base)
                scoped_layer = scoped_layer or reader_layer
            elif not frame.prefix and (base in self.nodes or base in self.open_calls):  # keep clashes apart
                name = f"{frame.call_name}/{base}"
        else:
            raw = f"{frame.call_raw}/{frame.role}/{op.name}"
            if arg is not None:  # a loop variable or branch argument: named by its body
                # (a stand-in without the name of the function TensorFlow made it in)
                name = f"{frame.call_name}/{frame.role}/{_tf.stand_in_name(base.rpartition('/')[2])}"
            else:
                name = frame.prefix + base
                name = name if name not in self.nodes else qualify(name, frame.call_name, frame.role)
        name = uniquify(name, self.nodes)
        if op.type == "Placeholder" and _tf.is_stand_in(op.name):  # a function's argument
            self.stand_ins.add(name)
        if arg is not None and not frame.prefix and not frame.role and arg < len(frame.arg_sources):
            self.serving_arguments[tensor_name(name, 0)] = frame.arg_sources[arg]
        function = frame.function if frame else ()
        site = frame.site if frame else ()
        layer = self._layer_path(owner) or scoped_layer or (frame.layer if frame else None)

        if owner is not None and id(owner) not in self.first_op:
            self.first_op[id(owner)] = len(self.nodes)
        level = self.levels[-1]
        level.names[op.name] = name
        bodies = self._bodies(op)
        body_outputs: list[list[str]] = []
        self.open_calls.add(name)  # taken, although added once its bodies are
        for role, attr, body, offset in bodies:
            sub = _Frame(
                call_name=name,
                call_raw=raw,
                role=role,
                owner=owner,
                function=function + ((name,) if not role else (f"{name}:{role}",)),
                arg_sources=[self.by_tf[(id(graph), t.name)] for t in op.inputs[offset:]],
                args={t.name: i for i, t in enumerate(body.inputs)},
                prefix=self._prefix(op, name, role, frame),
                site=site + ((op.name, attr),),
                layer=layer,
            )
            level.bodies.setdefault(name, []).append(self._walk(body, sub))
            body_outputs.append([self.by_tf[(id(body), t.name)] for t in body.outputs])
        self.open_calls.discard(name)

        inputs = [self.by_tf[(id(graph), t.name)] for t in op.inputs]
        # control inputs by their names in the graph: one may come later (the NoOp that a
        # function's results wait on is made after them)
        # (tagged: a canonical name may equal another op's TensorFlow name, `dense_1/MatMul`)
        level.reads[name] = [self.tensors[t].op for t in inputs] + [("ctl", c.name) for c in op.control_inputs]
        if arg is not None and arg < len(frame.arg_sources):
            inputs.append(frame.arg_sources[arg])
        for outs in body_outputs:
            inputs.extend(outs)

        outputs = []
        for i, t in enumerate(op.outputs):
            tname = tensor_name(name, i)
            alias = None
            if arg is not None and not frame.role and arg < len(frame.arg_sources):
                alias = frame.arg_sources[arg]  # a function's argument is the call's input
            elif op.type in _CALL_OPS and body_outputs and i < len(body_outputs[0]):
                alias = body_outputs[0][i]  # a call's output is its body's result
            tensor = Tensor(
                name=tname,
                raw_name=tensor_name(raw, i),
                op=name,
                op_type=op.type,
                index=i,
                dtype=t.dtype.name,
                shape=tuple(t.shape.as_list()) if t.shape.rank is not None else None,
                layer=layer,
                function=function,
            )
            self.sites[tname] = Site(site, op.name, arg, alias)
            self.tensors[tname] = tensor
            self.by_tf[(id(graph), t.name)] = tname
            if self.walking.get(id(graph)):  # a graph walked again: this walk's too
                self.by_tf[(id(graph), t.name, self.walking[id(graph)])] = tname
            self.names.setdefault(tensor.raw_name, tname)
            outputs.append(tname)

        record = Op(name, raw, op.type, layer, function, tuple(inputs), tuple(outputs))
        self.nodes[name] = {"op": record, "tensors": tuple(self.tensors[t] for t in outputs)}
        self.names.setdefault(raw, name)
        edges = self.edges
        for src in inputs:
            producer = self.tensors[src]
            edges.setdefault((producer.op, name), []).append(producer.index)

    def _serving_argument(self, op: tf.Operation, base: str) -> tuple[str, str | None]:
        """The name of an argument of a SavedModel's serving function, and its layer. A variable
        handle is named after the op reading it, as a live trace names the handle it captures
        (`emb/Cast/ReadVariableOp/resource`, not TensorFlow's `emb_1_cast_readvariableop_resource`),
        in that op's layer; an input is named as the signature's input feeding it (`x`, which
        the input holds: `uniquify` makes it `x_1`)."""
        handle = op.outputs[0]
        readers = handle.consumers() if handle.dtype == tf.resource else []
        if not readers:
            return base, None
        reader, layer = self.scopes.canonical(min(readers, key=_tf.op_id).name)
        return f"{reader}/resource", layer

    def _prefix(self, op: tf.Operation, name: str, role: str, frame: _Frame | None) -> str:
        """How the canonical names of a body's ops start."""
        if role:  # loop and branch bodies' ops are already scoped under the op
            return frame.prefix if frame else ""
        if self.scopes is not None and _tf.GENERIC_CALL.fullmatch(op.name) and (
            frame is None or not frame.prefix and not frame.role and _only_call(op.graph) is op
        ):
            return ""  # a SavedModel's serving call, or the one call its function makes: noise
        return f"{name}/"

    @staticmethod
    def _bodies(op: tf.Operation) -> list[tuple[str, str, tf.Graph, int]]:
        """(role, function attribute, body graph, offset of the op inputs feeding its arguments)."""
        if op.type not in _BODY_OPS:
            return []
        node_def = op.node_def
        found = []
        if op.type in _CALL_OPS and "f" in node_def.attr:
            found.append(("", "f", _tf.function_graph(op.graph, node_def.attr["f"].func.name), 0))
            return found
        for attr, role, offset in _BODY_ATTRS:
            if attr in node_def.attr and node_def.attr[attr].HasField("func"):
                found.append((role, attr, _tf.function_graph(op.graph, node_def.attr[attr].func.name), offset))
        if "branches" in node_def.attr:
            for k, fn in enumerate(node_def.attr["branches"].list.func):
                found.append((f"branch{k}", f"branches:{k}", _tf.function_graph(op.graph, fn.name), 1))
        return found

    # ---- layers

    def _layers(self, inputs: list[str], outputs: list[str]) -> list[Layer]:
        """One Layer per recorded call, in `.layers` order, nested layers after their parent."""
        self.ops_by_layer: dict[str, list[Op]] = defaultdict(list)
        for _, data in self.G.nodes(data=True):
            record: Op = data["op"]
            if record.layer:
                parts = record.layer.split("/")
                for k in range(1, len(parts) + 1):
                    self.ops_by_layer["/".join(parts[:k])].append(record)
        self.children: dict[int, list[LayerCall]] = defaultdict(list)
        for call in (*self.traced.calls, *self.copied):
            self.children[id(call.parent)].append(call)
        self.layers: list[Layer] = []
        root, model = self.traced.root_call, self.traced.model
        if model is not None and root is not None:
            # a method's own layer calls, outside the model's call, are the model's layers too
            beside = [c for c in self.children.get(id(None), []) if c is not root]
            self._visit(root, model, inputs, beside)
        elif self.scopes is not None:
            self._scoped_layers(set(outputs))
        else:  # no Keras root: the layers a module or function called, in call order
            calls = self.children.get(id(None), [])
            if self.copied:  # the places a function called from several places ran at, in order
                at = self._positions()
                calls = sorted(calls, key=lambda c: at.get(id(c), len(self.nodes)))
            for call in calls:
                self._emit_call(call, None)
        return self.layers

    def _scoped_layers(self, graph_outputs: set[str]) -> None:
        """Layers guessed from name scopes, in order of first appearance (of an op that is not
        an argument of the serving function: those all come first); their inputs and outputs are
        the tensors crossing the group's border (or leaving the graph)."""
        G = self.G
        position = {name: k for k, name in enumerate(G)}
        arguments = self.serving_arguments

        def first(ops: list[Op]) -> int:
            return next((position[o.name] for o in ops if o.outputs[:1] and o.outputs[0] not in arguments), len(G))

        by_layer = sorted(self.ops_by_layer.items(), key=lambda item: first(item[1]))
        for index, (name, ops) in enumerate(by_layer):
            own = {o.name for o in ops}
            ins, outs = [], []
            for o in ops:
                for t in o.inputs:
                    t = self.serving_arguments.get(t, t)  # the signature's input, as traced live
                    producer = self.tensors[t]
                    if producer.op not in own and not producer.is_handle and producer.op_type != "Const":
                        ins.append(t)
                for t in o.outputs:
                    tensor = self.tensors[t]
                    used_outside = t in graph_outputs or any(
                        c not in own and tensor.index in G.edges[o.name, c]["outputs"] for c in G.successors(o.name)
                    )
                    if used_outside and not tensor.is_handle:
                        outs.append(t)
            if not outs:  # a call no output needs (the head a signature leaves out): what nothing reads
                outs = [t for o in ops for t in o.outputs if not self.tensors[t].is_handle
                        and not any(self.tensors[t].index in G.edges[o.name, c]["outputs"] for c in G.successors(o.name))]
            self.layers.append(
                Layer(
                    name=name,
                    type="",
                    index=index,
                    inputs=Selection(self.tensors[n] for n in dict.fromkeys(ins)),
                    outputs=Selection(self.tensors[n] for n in dict.fromkeys(outs)),
                    ops=tuple(ops),
                    source="name scope",
                )
            )

    def _visit(self, parent: LayerCall, container: Any, container_inputs: list[str],
               beside: list[LayerCall] | None = None) -> None:
        try:  # functional models: which InputLayer stands for which input
            input_layers = {id(lay): k for k, lay in enumerate(_tf.input_layers(container))}
        except (AttributeError, ValueError, TypeError, IndexError):
            input_layers = {}
        pending = list(self.children.get(id(parent), [])) + list(beside or ())
        for index, child in enumerate(_tf.sublayers(container)):
            calls = sorted((c for c in pending if c.layer is child), key=lambda c: c.number)
            pending = [c for c in pending if c.layer is not child]
            for call in calls:
                self._emit_call(call, index)
            if not calls:  # an InputLayer stands for the tensor passed in; others never ran
                k = input_layers.get(id(child))
                prefix = self._layer_path(parent)
                name = f"{prefix}/{child.name}" if prefix else child.name
                outputs = [container_inputs[k]] if k is not None and k < len(container_inputs) else []
                self._add_layer(name, child, index, [], outputs, None)
        for call in pending:  # called, but not tracked as a sublayer
            self._emit_call(call, None)

    def _emit_call(self, call: LayerCall, index: int | None) -> None:
        def named(t: Any) -> Any:
            return self.by_tf.get(self._key(call, t)) if isinstance(t, tf.Tensor) else t

        structure = tf.nest.map_structure(named, call.args)
        keywords = {k: tf.nest.map_structure(named, v) for k, v in call.keywords.items()}
        # positional, then keyword arguments (in the order of the call's signature)
        inputs = self._tensor_names(call, (call.args, list(call.keywords.values())))
        name = self._layer_path(call) or call.layer.name
        # once each: an RNN cell returns `h, [h, c]`
        outputs = list(dict.fromkeys(self._tensor_names(call, call.outputs)))
        self._add_layer(name, call.layer, index, inputs, outputs, (structure, keywords))
        self._visit(call, call.layer, inputs)

    def _tensor_names(self, call: LayerCall, structure: Any) -> list[str]:
        keys = [self._key(call, t) for t in tf.nest.flatten(structure) if isinstance(t, tf.Tensor)]
        return [self.by_tf[k] for k in keys if k in self.by_tf]

    def _key(self, call: LayerCall, t: tf.Tensor) -> tuple[int, str] | None:
        """How `by_tf` knows a tensor of the call's graph. An EagerTensor argument (made in the
        layer's `build()`: keras-hub ViT's `position_ids`) has no name: it is known by the Const
        or Placeholder that captured it in the call's graph; None if the graph never used it. So is
        a tensor of an enclosing graph. A cast Keras made of the input (`_autocasts`) is known by
        what it cast."""
        try:
            if self.autocast_ops and self.autocast_ops.get((id(call.graph), t.op.name)) == id(call):
                t = t.op.inputs[0]  # the layer's input is what Keras cast for it (`_autocasts`); another
                # call's cast (the traced model's, passed on to its layers) is what this one was passed
            if t.graph is not call.graph and tf.is_symbolic_tensor(t):  # an enclosing graph's, captured
                t = _tf.captured_in(call.graph, t)  # (a branch's lambda calling a layer on the caller's `x`)
                if t is None:
                    return None
            name = t.name
        except AttributeError:  # "Tensor.name is undefined when eager execution is enabled"
            captured = self._eager(call.graph)[0].get(id(t))
            if captured is None:
                return None
            name = captured.name
        if self.walks.get(id(call.graph), 0) > 1:  # a graph walked at several places: the call's walk
            return (id(call.graph), name, call.walk)
        return (id(call.graph), name)

    def _add_layer(
        self, name: str, layer: Any, index: int | None, inputs: list[str], outputs: list[str],
        arguments: tuple[Any, dict[str, Any]] | None,
    ) -> None:
        structure, keywords = arguments if arguments is not None else (None, None)
        self.layers.append(
            Layer(
                name=name,
                type=type(layer).__name__,
                index=index,
                inputs=Selection(self.tensors[n] for n in inputs),
                outputs=Selection(self.tensors[n] for n in outputs),
                ops=tuple(self.ops_by_layer.get(name, ())),
                input_structure=structure,
                input_keywords=keywords,
                keras_layer=layer,
            )
        )
