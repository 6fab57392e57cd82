"""Function-proto rewrites that expose values computed inside loops, branches and calls, and the
decoding of the values they expose (`decode`, the rewrite's inverse).

A value inside a `While` body is not an output of the loop, and one inside an `If` branch is not an
output of the `If`. To fetch it, the chain of functions from the top-level graph down to the value
is rewritten, each function on the way cloned under a new name (the originals, which other call
sites may share, stay untouched):

- `While` / `StatelessWhile` body: one more loop variable, an empty `TensorList` that the body
  extends with the value (`TensorListPushBack`) on every iteration; the cond takes the extra
  argument and ignores it. A value of the *cond* is recomputed by calling a copy of the cond on the
  body's arguments at the start of every iteration and once more on the loop's results, so the
  list holds every one of the cond's evaluations (iterations + 1).
- `If` / `StatelessIf` / `Case` branches: one more output, `OptionalFromValue(value)` from the
  branch holding the value and `OptionalNone` from the others.
- `PartitionedCall` / `StatefulPartitionedCall` left in place by the inliner (an XLA
  `jit_compile=True` function): one more output; the call is no longer compiled with XLA, since
  an accumulator of unknown size cannot be.

`expose` returns the changed and new top-level nodes, the new functions, and for each value the
top-level tensor that carries it with the wrappers to undo, outermost first: `"list"` (one entry
per iteration) and `"optional"` (empty when the branch did not run); `decode` undoes them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2, tensor_shape_pb2

from graphscope.backend import tf_internals as _tf

__all__ = [
    "CALLS", "Body", "Container", "Exposed", "Patch", "Target", "Top", "decode", "expose", "function_attr",
    "iterations", "library_of", "own_function_names", "read_only",
]

_LOOPS = {"While", "StatelessWhile"}
_BRANCHES = {"If", "StatelessIf", "Case", "StatelessCase"}
CALLS = {"PartitionedCall", "StatefulPartitionedCall"}
_VARIANT = tf.variant.as_datatype_enum
_INT32 = tf.int32.as_datatype_enum
_names = itertools.count()  # clones get process-unique names: functions live in one registry


@dataclasses.dataclass(frozen=True)
class Target:
    """A value inside a function: the path of control-flow/call ops leading to it from the
    top-level graph (`(node name, function attribute)`, outermost first), then the op that
    computes it (or the position of the innermost function's argument) and its output index."""

    steps: tuple[tuple[str, str], ...]
    node: str | None
    arg: int | None
    index: int
    dtype: int  # DataType enum


@dataclasses.dataclass(frozen=True)
class Exposed:
    """Where an exposed value comes out: a top-level tensor, wrapped in `kinds` (outermost first)."""

    tensor: str
    kinds: tuple[str, ...]


@dataclasses.dataclass
class Patch:
    """Top-level nodes to replace or add, functions to add, and each target's `Exposed`."""

    nodes: dict[str, node_def_pb2.NodeDef]
    functions: list[function_pb2.FunctionDef]
    exposed: list[Exposed]


@dataclasses.dataclass
class _Value:
    ref: str  # how the value is named in the container that holds it
    dtype: int
    kinds: tuple[str, ...]


def expose(
    nodes: dict[str, node_def_pb2.NodeDef],
    library: dict[str, function_pb2.FunctionDef],
    targets: Sequence[Target],
) -> Patch:
    """Rewrite the functions leading to each target so that its value leaves the top level.

    Args:
        nodes: the top-level graph's nodes by name (left unchanged).
        library: its functions by name (left unchanged).
        targets: the values to expose; each has at least one step.

    Raises:
        LookupError: a step or op is not where the target says.
    """
    top = Top(nodes, library)
    rewriter = _Rewriter(library)
    values = rewriter.values(top, list(targets))
    return Patch(
        nodes=top.changed,
        functions=rewriter.created,
        exposed=[Exposed(v.ref, v.kinds) for v in values],
    )


class Container:
    """A graph being edited: the top-level GraphDef or a cloned FunctionDef."""

    library: dict[str, function_pb2.FunctionDef]

    def get(self, name: str) -> node_def_pb2.NodeDef:
        raise NotImplementedError

    def add(self, node: node_def_pb2.NodeDef) -> None:
        raise NotImplementedError

    def ref(self, node: str, index: int) -> str:
        raise NotImplementedError

    def arg(self, position: int) -> str:
        raise LookupError("the top-level graph has no arguments")

    def const(self, name: str, value: int) -> str:
        node = node_def_pb2.NodeDef(name=self.unique(name), op="Const")
        node.attr["dtype"].type = _INT32
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, tf.int32))
        self.add(node)
        return self.ref(node.name, 0)

    def unique(self, name: str) -> str:
        """A new name, valid for a node and for a function argument alike."""
        return f"graphscope_{name}_{next(_names)}"

    def set_data_inputs(self, node: node_def_pb2.NodeDef, extra: list[str]) -> None:
        """Append data inputs to `node` (before its control inputs)."""
        data = [i for i in node.input if not i.startswith("^")]
        control = [i for i in node.input if i.startswith("^")]
        del node.input[:]
        node.input.extend(data + extra + control)


class Top(Container):
    def __init__(self, nodes: dict[str, node_def_pb2.NodeDef], library: dict[str, Any]) -> None:
        self.nodes = nodes
        self.library = library
        self.changed: dict[str, node_def_pb2.NodeDef] = {}

    def get(self, name: str) -> node_def_pb2.NodeDef:
        if name in self.changed:
            return self.changed[name]
        if name not in self.nodes:
            raise LookupError(f"no op {name!r} in the executable graph")
        copy = node_def_pb2.NodeDef()
        copy.CopyFrom(self.nodes[name])
        self.changed[name] = copy
        return copy

    def add(self, node: node_def_pb2.NodeDef) -> None:
        self.changed[node.name] = node

    def ref(self, node: str, index: int) -> str:
        if node not in self.nodes and node not in self.changed:
            raise LookupError(f"no op {node!r} in the executable graph")
        return f"{node}:{index}"


class Body(Container):
    """A clone of a library function, under a new name."""

    def __init__(self, fdef: function_pb2.FunctionDef, library: dict[str, Any]) -> None:
        self.fdef = function_pb2.FunctionDef()
        self.fdef.CopyFrom(fdef)
        self.fdef.signature.name = f"{fdef.signature.name}_graphscope_{next(_names)}"
        self.library = library
        self.by_name = {n.name: n for n in self.fdef.node_def}

    def get(self, name: str) -> node_def_pb2.NodeDef:
        if name not in self.by_name:
            raise LookupError(f"no op {name!r} in function {self.fdef.signature.name!r}")
        return self.by_name[name]

    def add(self, node: node_def_pb2.NodeDef) -> None:
        self.fdef.node_def.append(node)
        self.by_name[node.name] = self.fdef.node_def[-1]

    def ref(self, node: str, index: int) -> str:
        return _tf.output_ref(self.get(node), index, self.library)

    def arg(self, position: int) -> str:
        return self.fdef.signature.input_arg[position].name

    def add_input(self, dtype: int) -> str:
        arg = self.fdef.signature.input_arg.add(name=self.unique("acc"), type=dtype)
        return arg.name

    def add_output(self, ref: str, dtype: int) -> None:
        arg = self.fdef.signature.output_arg.add(name=self.unique("out"), type=dtype)
        self.fdef.ret[arg.name] = ref


class _Rewriter:
    def __init__(self, library: dict[str, function_pb2.FunctionDef]) -> None:
        self.library = library
        self.created: list[function_pb2.FunctionDef] = []

    def register(self, body: Body) -> str:
        """Add a finished clone to the library being built; returns its name."""
        self.created.append(body.fdef)
        return body.fdef.signature.name

    def values(self, container: Container, targets: list[Target]) -> list[_Value]:
        """The value of each target, named in `container` (whose ops the targets start from)."""
        out: list[_Value | None] = [None] * len(targets)
        groups: dict[str, list[int]] = {}
        for k, t in enumerate(targets):
            if t.steps:
                groups.setdefault(t.steps[0][0], []).append(k)
            elif t.arg is not None:
                out[k] = _Value(container.arg(t.arg), t.dtype, ())
            else:
                assert t.node is not None
                out[k] = _Value(container.ref(t.node, t.index), t.dtype, ())
        for name, ks in groups.items():
            node = container.get(name)
            inner = [(targets[k].steps[0][1], dataclasses.replace(targets[k], steps=targets[k].steps[1:])) for k in ks]
            if node.op in _LOOPS:
                found = self._loop(container, node, inner)
            elif node.op in _BRANCHES:
                found = self._branch(container, node, inner)
            elif node.op in CALLS:
                found = self._call(container, node, inner)
            else:
                raise LookupError(f"op {name!r} ({node.op}) calls no function graphscope can rewrite")
            for k, value in zip(ks, found):
                out[k] = value
        return [v for v in out if v is not None]

    # ---- the three kinds of function-calling ops

    def _call(self, container: Container, node: Any, inner: list[tuple[str, Target]]) -> list[_Value]:
        body = Body(self.library[node.attr["f"].func.name], self.library)
        values = self.values(body, [t for _, t in inner])
        n = len(node.attr["Tout"].list.type)
        for v in values:
            body.add_output(v.ref, v.dtype)
            node.attr["Tout"].list.type.append(v.dtype)
        node.attr["f"].func.name = self.register(body)
        for attr in _tf.XLA_ATTRS:
            if attr in node.attr:
                del node.attr[attr]
        _unknown_shapes(node, len(values))
        return [_Value(container.ref(node.name, n + j), v.dtype, v.kinds) for j, v in enumerate(values)]

    def _branch(self, container: Container, node: Any, inner: list[tuple[str, Target]]) -> list[_Value]:
        attrs = ["then_branch", "else_branch"] if "then_branch" in node.attr else [
            f"branches:{k}" for k in range(len(node.attr["branches"].list.func))
        ]
        funcs = {a: function_attr(node, a) for a in attrs}
        bodies = {a: Body(self.library[funcs[a].name], self.library) for a in attrs}
        unknown = [attr for attr, _ in inner if attr not in attrs]
        if unknown:
            raise LookupError(f"op {node.name!r} ({node.op}) has no function {unknown[0]!r}")
        exposed: list[tuple[str, _Value]] = []
        order: list[int] = []
        for a in attrs:
            mine = [(k, t) for k, (attr, t) in enumerate(inner) if attr == a]
            for (k, _), v in zip(mine, self.values(bodies[a], [t for _, t in mine])):
                exposed.append((a, v))
                order.append(k)
        for a, body in bodies.items():
            for owner, v in exposed:
                wrapped = node_def_pb2.NodeDef(name=body.unique("optional"))
                if owner == a:
                    wrapped.op = "OptionalFromValue"
                    wrapped.input.append(v.ref)
                    wrapped.attr["Toutput_types"].list.type.append(v.dtype)
                else:
                    wrapped.op = "OptionalNone"
                body.add(wrapped)
                body.add_output(body.ref(wrapped.name, 0), _VARIANT)
            funcs[a].name = self.register(body)
        n = len(node.attr["Tout"].list.type)
        node.attr["Tout"].list.type.extend([_VARIANT] * len(exposed))
        _unknown_shapes(node, len(exposed))
        result: list[_Value | None] = [None] * len(inner)
        for j, (k, (_, v)) in enumerate(zip(order, exposed)):
            result[k] = _Value(container.ref(node.name, n + j), _VARIANT, ("optional",) + v.kinds)
        return [v for v in result if v is not None]

    def _loop(self, container: Container, node: Any, inner: list[tuple[str, Target]]) -> list[_Value]:
        types = list(node.attr["T"].list.type)
        n = len(types)
        body = Body(self.library[node.attr["body"].func.name], self.library)
        in_body = [k for k, (attr, _) in enumerate(inner) if attr == "body"]
        in_cond = [k for k, (attr, _) in enumerate(inner) if attr == "cond"]
        if len(in_body) + len(in_cond) != len(inner):
            raise LookupError(f"op {node.name!r} ({node.op}) has only a body and a cond")
        values = dict(zip(in_body, self.values(body, [inner[k][1] for k in in_body])))
        replay = None
        if in_cond:  # the cond's values: a copy of the cond, called on each iteration's arguments
            copy = Body(self.library[node.attr["cond"].func.name], self.library)
            found = self.values(copy, [inner[k][1] for k in in_cond])
            returns = [a.type for a in copy.fdef.signature.output_arg]  # the cond's own result
            for v in found:
                copy.add_output(v.ref, v.dtype)
            replay = (self.register(copy), returns + [v.dtype for v in found], len(returns), found)
            call = _call_node(body.unique("cond_replay"), replay[0], [body.arg(i) for i in range(n)], types, replay[1])
            body.add(call)
            for j, k in enumerate(in_cond):
                values[k] = _Value(body.ref(call.name, replay[2] + j), found[j].dtype, found[j].kinds)
        order = in_body + in_cond
        cond = Body(self.library[node.attr["cond"].func.name], self.library)
        for k in order:
            v = values[k]
            acc = body.add_input(_VARIANT)
            cond.add_input(_VARIANT)
            push = _push_node(body.unique("push"), acc, v)
            body.add(push)
            body.add_output(body.ref(push.name, 0), _VARIANT)
        node.attr["body"].func.name = self.register(body)
        node.attr["cond"].func.name = self.register(cond)
        shape = container.const("element_shape", -1)
        size = container.const("max_elements", -1)
        lists = []
        for k in order:
            empty = node_def_pb2.NodeDef(name=container.unique("accumulator"), op="EmptyTensorList")
            empty.input.extend([shape, size])
            empty.attr["element_dtype"].type = values[k].dtype
            empty.attr["shape_type"].type = _INT32
            container.add(empty)
            lists.append(container.ref(empty.name, 0))
        container.set_data_inputs(node, lists)
        node.attr["T"].list.type.extend([_VARIANT] * len(order))
        _unknown_shapes(node, len(order))
        result: dict[int, _Value] = {}
        for j, k in enumerate(order):
            result[k] = _Value(container.ref(node.name, n + j), _VARIANT, ("list",) + values[k].kinds)
        if replay is not None:  # the cond's last evaluation, on the loop's results
            outputs = [container.ref(node.name, i) for i in range(n)]
            final = _call_node(container.unique("cond_replay"), replay[0], outputs, types, replay[1])
            container.add(final)
            for j, k in enumerate(in_cond):
                push = _push_node(container.unique("push"), result[k].ref, replay[3][j])
                push.input[1] = container.ref(final.name, replay[2] + j)
                container.add(push)
                result[k] = _Value(container.ref(push.name, 0), _VARIANT, result[k].kinds)
        return [result[k] for k in range(len(inner))]


def function_attr(node: Any, attr: str) -> Any:
    """The function a node calls through `attr` (`body`, `then_branch`, `f`, `branches:<k>`)."""
    if attr.startswith("branches:"):
        return node.attr["branches"].list.func[int(attr.partition(":")[2])]
    return node.attr[attr].func


def _push_node(name: str, handle: str, value: _Value) -> node_def_pb2.NodeDef:
    push = node_def_pb2.NodeDef(name=name, op="TensorListPushBack")
    push.input.extend([handle, value.ref])
    push.attr["element_dtype"].type = value.dtype
    return push


def _call_node(name: str, function: str, args: list[str], types: list[int], outs: list[int]) -> node_def_pb2.NodeDef:
    call = node_def_pb2.NodeDef(name=name, op="StatefulPartitionedCall")
    call.input.extend(args)
    call.attr["f"].func.name = function
    call.attr["Tin"].list.type.extend(types)
    call.attr["Tout"].list.type.extend(outs)
    return call


def _unknown_shapes(node: Any, count: int) -> None:
    """Extend a node's declared output shapes by `count` unknown ones."""
    for attr in ("output_shapes", "_output_shapes"):
        if attr in node.attr:
            for _ in range(count):
                node.attr[attr].list.shape.append(tensor_shape_pb2.TensorShapeProto(unknown_rank=True))


def library_of(graph_def: graph_pb2.GraphDef) -> dict[str, function_pb2.FunctionDef]:
    """A GraphDef's functions by name."""
    return {f.signature.name: f for f in graph_def.library.function}


def own_function_names(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """`graph_def` with every library function renamed `<name>_graphscope_<n>` (and every
    reference to it: function attributes, ops that call a function by name, gradients).

    TensorFlow's inliner keeps the name of a function it changed (a loop body whose calls it
    inlined), or adds `_rewritten`, while the eager context, where every imported function is
    registered by name, may already hold another definition under that name: the traced one,
    or one TensorFlow's runtime optimized for a call of the model. Either import would then fail
    ("Attempting to add a duplicate function"), ours or a later one of the user's.
    """
    if not graph_def.library.function:
        return graph_def
    k = next(_names)
    names = {f.signature.name: f"{f.signature.name}_graphscope_{k}" for f in graph_def.library.function}
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    for f in out.library.function:
        f.signature.name = names[f.signature.name]
    for nodes in [out.node, *(f.node_def for f in out.library.function)]:
        for node in nodes:
            if node.op in names:
                node.op = names[node.op]
            for value in node.attr.values():
                _rename(value, names)
    for g in out.library.gradient:
        g.function_name = names.get(g.function_name, g.function_name)
        g.gradient_func = names.get(g.gradient_func, g.gradient_func)
    return out


def _rename(value: Any, names: dict[str, str]) -> None:
    """Rename the functions an attribute value names (nested function attributes included)."""
    kind = value.WhichOneof("value")
    funcs = [value.func] if kind == "func" else list(value.list.func) if kind == "list" else []
    for func in funcs:
        func.name = names.get(func.name, func.name)
        for inner in func.attr.values():
            _rename(inner, names)


# --------------------------------------------------------------------------- decoding


def decode(value: tf.Tensor, kinds: tuple[str, ...], dtype: tf.DType) -> Any:
    """Unwrap an exposed value (see `rewrite`): a loop's list becomes an array with one entry per
    iteration on a new leading axis (a list of values when their shapes differ), a branch's
    optional its value or None when the branch did not run."""
    if not kinds:  # the value itself: a copy, since list items may share buffers with state
        return read_only(np.array(value))
    kind, rest = kinds[0], kinds[1:]
    inner = tf.variant if rest else dtype
    if kind == "optional":
        if not bool(tf.raw_ops.OptionalHasValue(optional=value)):
            return None
        (got,) = tf.raw_ops.OptionalGetValue(optional=value, output_types=[inner], output_shapes=[None])
        return decode(got, rest, dtype)
    n = int(tf.raw_ops.TensorListLength(input_handle=value))
    if not rest and n:
        try:  # one copy when every iteration's value has the same shape
            stacked = tf.raw_ops.TensorListStack(input_handle=value, element_shape=-1, element_dtype=dtype)
            return read_only(np.asarray(stacked))
        except tf.errors.InvalidArgumentError:
            pass
    items = []
    for i in range(n):
        item = tf.raw_ops.TensorListGetItem(input_handle=value, index=i, element_shape=-1, element_dtype=inner)
        items.append(decode(item, rest, dtype))
    return _combine(items)


def iterations(value: Any, kinds: tuple[str, ...], at: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Any]]:
    """(iteration, array) for each item of a decoded value in its wrappers (`decode`'s result):
    the iteration index in each enclosing loop, outermost first; none for a branch that did not
    run."""
    if not kinds:
        yield at, np.asarray(value)
    elif value is None:
        return
    elif kinds[0] == "optional":
        yield from iterations(value, kinds[1:], at)
    else:
        for i, item in enumerate(value):
            yield from iterations(item, kinds[1:], (*at, i))


def _combine(items: list[Any]) -> Any:
    """One array when every item is an array of the same shape, else the list itself."""
    if items and all(isinstance(a, np.ndarray) for a in items) and len({a.shape for a in items}) == 1:
        return read_only(np.stack(items))
    return items


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
