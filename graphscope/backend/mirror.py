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

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import networkx as nx
import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.backend.keras_calls import LayerCall
from graphscope.backend.trace import Traced
from graphscope.ir.graph import ModelGraph
from graphscope.ir.names import qualify, tensor_name, uniquify
from graphscope.ir.records import Layer, Op, Selection, Tensor

__all__ = ["Mirrored", "Site", "canonical_op_name", "mirror"]

_CALL_OPS = {"PartitionedCall", "StatefulPartitionedCall"}
# the op types that hold function bodies: only their NodeDefs are read (parsing every op's costs
# a tenth of a ResNet50's mirror)
_BODY_OPS = _CALL_OPS | {"While", "StatelessWhile", "For", "If", "StatelessIf", "Case", "StatelessCase"}
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
    scope is its second call (`shared_dense@2`)."""

    def __init__(self, function: Any) -> None:
        self.known = {v.name.split("/")[0] for v in function.graph.variables if "/" in v.name}
        firsts: dict[str, int] = defaultdict(int)
        total = 0
        for op in function.graph.get_operations():
            if op.type in _CALL_OPS and "f" in op.node_def.attr:
                body = _tf.function_graph(op.graph, op.node_def.attr["f"].func.name)
                for inner in body.get_operations():
                    if "/" in inner.name:
                        firsts[inner.name.split("/")[0]] += 1
                        total += 1
        top = max(firsts, key=firsts.__getitem__, default=None)
        # the model's scope holds (nearly) every scoped op and carries Keras' suffix
        self.model = top if top and _tf.KERAS_SUFFIX.search(top) and firsts[top] * 10 >= total * 9 else None
        self.tokens: dict[str, str] = {}
        self.calls: dict[str, int] = defaultdict(int)

    def canonical(self, name: str) -> tuple[str, str | None]:
        """`name` without the model scope and with the layer's own name; and that layer."""
        segments = name.split("/")
        if self.model is not None and len(segments) > 1 and segments[0] == self.model:
            segments = segments[1:]
        if len(segments) < 2:
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


def mirror(traced: Traced, *, tick: Callable[[int], None] | None = None) -> Mirrored:
    """Mirror a traced function (and every function nested in it) into a ModelGraph.

    `tick(1)` is called once per op mirrored (a progress display's counter)."""
    return _Mirror(traced, tick).build()


class _Mirror:
    def __init__(self, traced: Traced, tick: Callable[[int], None] | None = None) -> None:
        self.traced = traced
        self.tick = tick
        self.G = nx.DiGraph(name=traced.name)
        # nodes and edges are collected while walking and added to G at once, afterwards
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str], list[int]] = {}
        self.tensors: dict[str, Tensor] = {}
        self.sites: dict[str, Site] = {}
        self.names: dict[str, str] = {}
        self.by_tf: dict[tuple[int, str], str] = {}
        self.calls_by_graph: dict[int, list[LayerCall]] = defaultdict(list)
        for call in traced.calls:
            if call.last_id >= call.first_id:
                self.calls_by_graph[id(call.graph)].append(call)
        self.call_scopes: dict[int, list[tuple[str, str | None]]] = {}
        self.scopes = _NameScopes(traced.function) if traced.source == "saved_model" else None

    def build(self) -> Mirrored:
        cf = self.traced.function
        self._walk(cf.graph, None)
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
            stand_ins=frozenset(n for n in self.G if _tf.is_stand_in(n)),
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
        return owners

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

    def _walk(self, graph: tf.Graph, frame: _Frame | None) -> None:
        owners = self._owners(graph)
        for op in graph.get_operations():
            self._add(op, graph, frame, owners.get(op.name) or (frame.owner if frame else None))
            if self.tick is not None:
                self.tick(1)

    def _add(self, op: tf.Operation, graph: tf.Graph, frame: _Frame | None, owner: LayerCall | None) -> None:
        base = canonical_op_name(op.name, self._scopes(owner))
        scoped_layer = None
        if self.scopes is not None and (frame is None or not frame.prefix):  # not named under a call
            base, scoped_layer = self.scopes.canonical(base)
        arg = frame.args.get(op.outputs[0].name) if frame and op.outputs and op.type == "Placeholder" else None
        if frame is None:
            name, raw = base, op.name
        elif not frame.role:
            raw = f"{frame.call_raw}/{op.name}"
            name = f"{frame.prefix}{base}"
            if not frame.prefix and (base in self.nodes or arg is not None):  # keep clashes apart
                name = f"{frame.call_name}/{base}"
        else:
            raw = f"{frame.call_raw}/{frame.role}/{op.name}"
            if arg is not None:  # a loop variable or branch argument: named by its body
                name = f"{frame.call_name}/{frame.role}/{base.rpartition('/')[2]}"
            else:
                name = frame.prefix + base
                name = name if name not in self.nodes else qualify(name, frame.call_name, frame.role)
        name = uniquify(name, self.nodes)
        function = frame.function if frame else ()
        site = frame.site if frame else ()
        layer = self._layer_path(owner) or scoped_layer or (frame.layer if frame else None)

        bodies = self._bodies(op)
        body_outputs: list[list[str]] = []
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
            self._walk(body, sub)
            body_outputs.append([self.by_tf[(id(body), t.name)] for t in body.outputs])

        inputs = [self.by_tf[(id(graph), t.name)] for t in op.inputs]
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
            self.names.setdefault(tensor.raw_name, tname)
            outputs.append(tname)

        record = Op(name, raw, op.type, layer, function, tuple(inputs), tuple(outputs))
        self.nodes[name] = {"op": record, "tensors": tuple(self.tensors[t] for t in outputs)}
        self.names.setdefault(raw, name)
        edges = self.edges
        for src in inputs:
            producer = self.tensors[src]
            edges.setdefault((producer.op, name), []).append(producer.index)

    def _prefix(self, op: tf.Operation, name: str, role: str, frame: _Frame | None) -> str:
        """How the canonical names of a body's ops start."""
        if role:  # loop and branch bodies' ops are already scoped under the op
            return frame.prefix if frame else ""
        if self.scopes is not None and frame is None and _tf.GENERIC_CALL.fullmatch(op.name):
            return ""  # a SavedModel's serving call: its name is noise
        return f"{name}/"

    def _bodies(self, op: tf.Operation) -> list[tuple[str, str, tf.Graph, int]]:
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
        for call in self.traced.calls:
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
            for call in self.children.get(id(None), []):
                self._emit_call(call, None)
        return self.layers

    def _scoped_layers(self, graph_outputs: set[str]) -> None:
        """Layers guessed from name scopes, in order of first appearance; their inputs and
        outputs are the tensors crossing the group's border (or leaving the graph)."""
        G = self.G
        for index, (name, ops) in enumerate(self.ops_by_layer.items()):
            own = {o.name for o in ops}
            ins, outs = [], []
            for o in ops:
                for t in o.inputs:
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
        outputs = self._tensor_names(call, call.outputs)
        self._add_layer(name, call.layer, index, inputs, outputs, (structure, keywords))
        self._visit(call, call.layer, inputs)

    def _tensor_names(self, call: LayerCall, structure: Any) -> list[str]:
        keys = [self._key(call, t) for t in tf.nest.flatten(structure) if isinstance(t, tf.Tensor)]
        return [self.by_tf[k] for k in keys if k in self.by_tf]

    @staticmethod
    def _key(call: LayerCall, t: tf.Tensor) -> tuple[int, str] | None:
        """How `by_tf` knows a tensor of the call's graph; None for an EagerTensor (no name)."""
        try:
            return (id(call.graph), t.name)
        except AttributeError:
            return None

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
