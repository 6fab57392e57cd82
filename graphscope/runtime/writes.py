"""Writes in the executable graph: running an executor never moves a model variable or table.

A call of the model may write its variables: batch-norm statistics in training mode, a counter
assigned in a loop body or a branch, a scatter into a table inside a nested `tf.function`, at
the top level or in any function it calls, at any depth. `isolate` finds, for each variable the
graph captures, every op that writes it (`WRITE_OPS`), following the handle through `Identity`
ops and into the functions of `While`/`If`/`Case` ops and calls, and then:

- where nothing in the call reads the variable back after a write, the writes are dropped: the
  top-level ones removed, and the calls (loops, branches, calls TensorFlow did not inline) made
  to call clones of their functions without them;
- otherwise every use of the variable is redirected to a private copy: a fresh variable made on
  each call (an anonymous resource, freed after the call) and set to the variable's current
  value before anything uses it. The call computes what one call of the model computes, a read
  that follows a write seeing the write, and the model's variable keeps its value.

The variables in `keep` (random-generator state) are left alone: they advance, as in Keras.

Other resources a model owns across calls (lookup tables, queues: `STATE_WRITE_OPS`) are handled
the same way, except that they have no private copy: a call that reads one back after writing
it is refused with `UnsupportedModelError`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator, Mapping
from typing import Any

from tensorflow.core.framework import function_pb2, graph_pb2

from graphscope.backend import tf_internals as _tf
from graphscope.errors import UnsupportedModelError

__all__ = ["STATE_WRITE_OPS", "WRITE_OPS", "Isolated", "isolate"]

# Every op that writes a variable through a resource input: assignments, scatters, optimizer
# steps (`Resource(Sparse)Apply*`), strided-slice assignment, `count_up_to`, and TensorFlow's
# stateful random ops, which advance a `tf.random.Generator`'s state variable
# (`StatefulPartitionedCall` is a call).
_VARIABLE_WRITES = (
    r"Assign(Add|Sub)?Variable(Op|XlaConcatND)"
    r"|Resource(Sparse)?Apply\w+|ResourceScatter\w+|ResourceStridedSliceAssign|ResourceCountUpTo"
    r"|RngSkip|RngReadAndSkip|Stateful(?!PartitionedCall$)\w+"
)
# Every op that changes a resource other than a variable that a model can own across calls:
# lookup tables (`MutableHashTable`, `DenseHashTable`: insert, remove, import), queues (a dequeue
# takes elements out), stacks, gradient accumulators, readers and boosted-tree ensembles. Such a
# resource has no private copy: a call that reads one back after writing it is refused
# (`UnsupportedModelError`). A table's initializer (`InitializeTable*`, and the import a
# `StaticHashTable`'s initializer runs, `tf_internals.TABLE_INITIALIZER`) is not a write: it
# fills a table once and is a no-op after, and a table made inside the function needs it.
# TensorArrays, TensorLists, datasets and iterators made in the call are values of the call, not
# the model's state; summary writers write files.
STATE_WRITE_OPS = re.compile(
    r"LookupTable(Insert|Remove|Import)(V2)?"
    r"|Queue(Enqueue|EnqueueMany|Dequeue|DequeueMany|DequeueUpTo|Close)(V2)?"
    r"|Stack(Push|Pop|Close)(V2)?|ResourceAccumulator(ApplyGradient|TakeGradient|SetGlobalStep)"
    r"|Reader(Read|ReadUpTo|Reset|RestoreState)(V2)?"
    r"|BoostedTrees(CenterBias|CreateEnsemble|DeserializeEnsemble|UpdateEnsemble(V2)?"
    r"|CreateQuantileStreamResource|FlushQuantileSummaries|QuantileStreamResource(AddSummaries|Deserialize|Flush))"
)
WRITE_OPS = re.compile(f"{_VARIABLE_WRITES}|{STATE_WRITE_OPS.pattern}")
_PRIVATE = "graphscope_private"


def _writes(node: Any) -> bool:
    """Whether `node` writes the resource it is given (a table's initializer does not)."""
    return bool(WRITE_OPS.fullmatch(node.op)) and not _tf.TABLE_INITIALIZER.fullmatch(node.name)

_names = itertools.count()  # clones get process-unique names: functions live in one registry


@dataclasses.dataclass(frozen=True)
class Isolated:
    """The graph with no write left on a model variable, and for each placeholder whose variable
    is replaced by a private copy, the copy's handle (a node of `graph_def`)."""

    graph_def: graph_pb2.GraphDef
    private: dict[str, str]


@dataclasses.dataclass
class _Effect:
    """What a function (or a top-level op) does with one variable handle."""

    writes: bool = False
    reads: bool = False


def isolate(base: graph_pb2.GraphDef, variables: Mapping[str, Any], *, keep: set[str]) -> Isolated:
    """`base` with every write on the variables captured through `variables` (placeholder name
    -> the variable's eager handle) dropped or redirected to a private copy (see the module's
    docstring); the placeholders in `keep` are left alone. `base` is returned unchanged when
    nothing in it writes a variable."""
    library = {f.signature.name: f for f in base.library.function}
    if not any(_writes(n) for n in base.node) and not any(
        _writes(n) for f in library.values() for n in f.node_def
    ):
        return Isolated(base, {})
    nodes = {n.name: n for n in base.node}
    consumers, controlled = _consumers(base)
    functions = _Functions(library)
    groups: dict[int, list[str]] = {}  # one variable, captured by one or more placeholders
    for name, handle in variables.items():
        if name in nodes and name not in keep:
            groups.setdefault(id(handle), []).append(name)
    dropped: set[str] = set()
    stripped: dict[str, set[int]] = {}  # call op -> inputs whose writes its functions drop
    copies: dict[str, list[str]] = {}  # first placeholder -> every placeholder of that variable
    for placeholders in groups.values():
        uses = _classify(consumers, functions, placeholders)
        if not uses.writes and not uses.calls and not uses.private:
            continue
        if uses.private or _read_after(nodes, {*uses.writes, *uses.calls}, uses.reads):
            if _tf.variable_spec(variables[placeholders[0]]) is None:
                raise _no_private_copy(nodes, placeholders[0], uses)
            copies[placeholders[0]] = placeholders
            continue
        dropped.update(uses.writes)
        for call, positions in uses.calls.items():
            stripped.setdefault(call, set()).update(positions)
    if not dropped and not stripped and not copies:
        return Isolated(base, {})
    touched = {c for w in dropped for c in controlled.get(w, ())} | set(stripped)
    touched.update(use.name for ps in copies.values() for p in ps for use, _ in consumers.get(f"{p}:0", ()))
    out = _rewrite(base, variables, dropped, copies, touched)
    for node in out.graph_def.node:
        if node.name in stripped:
            functions.without_writes(node, stripped[node.name])
    out.graph_def.library.function.extend(functions.created)
    return out


@dataclasses.dataclass
class _Uses:
    """How the top level uses one variable: ops that write it, calls whose functions only write
    it (call -> inputs), ops that read it, and whether only a private copy will do."""

    writes: list[str] = dataclasses.field(default_factory=list)
    calls: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    reads: list[str] = dataclasses.field(default_factory=list)
    private: bool = False


def _classify(consumers: Mapping[str, list[tuple[Any, int]]], functions: _Functions,
              placeholders: list[str]) -> _Uses:
    """How the top level uses the variable captured by `placeholders`. Only a private copy will
    do for a write whose result is used (`RngReadAndSkip`), a call whose functions write and
    read the variable, or a call that writes it through one input and reads it through another."""
    uses = _Uses()
    for use, position in _uses(consumers, [f"{p}:0" for p in placeholders]):
        if _writes(use):
            uses.writes.append(use.name)
            uses.private |= any(ref.partition(":")[0] == use.name for ref in consumers)  # its result is used
            continue
        effect = functions.of_node(use, position)
        if effect is not None and effect.writes:
            uses.private |= effect.reads
            uses.calls.setdefault(use.name, set()).add(position)
        elif effect is None or effect.reads:
            uses.reads.append(use.name)
    uses.private |= not uses.calls.keys().isdisjoint(uses.reads)
    return uses


def _no_private_copy(nodes: Mapping[str, Any], placeholder: str, uses: _Uses) -> UnsupportedModelError:
    """The refusal for a resource that is not a variable (a lookup table, a queue) which the call
    writes and reads back after the write, or writes through an op whose result it uses."""
    written = [*uses.writes, *uses.calls]
    ops = ", ".join(f"{name!r} ({nodes[name].op})" for name in written[:3]) + (", ..." if len(written) > 3 else "")
    return UnsupportedModelError(
        f"the model's resource {placeholder!r} is not a tf.Variable (a lookup table, a queue): the "
        f"call writes it ({ops}) and reads it back (after the write, or from what the write returns), "
        "and only a variable can get a "
        "private copy, so an executor would change the model's state; trace a function that does "
        "not update it, or keep that state in a tf.Variable"
    )


def _consumers(base: graph_pb2.GraphDef) -> tuple[dict[str, list[tuple[Any, int]]], dict[str, list[str]]]:
    """Each top-level tensor (`node:index`) -> the ops that take it as a data input, and where;
    each op -> the ops that take it as a control input."""
    data: dict[str, list[tuple[Any, int]]] = {}
    control: dict[str, list[str]] = {}
    for node in base.node:
        for position, ref in enumerate(node.input):
            if ref[0] == "^":
                control.setdefault(ref[1:], []).append(node.name)
            else:
                data.setdefault(ref if ":" in ref else ref + ":0", []).append((node, position))
    return data, control


def _uses(consumers: Mapping[str, list[tuple[Any, int]]], refs: list[str],
          output: str = "{}:{}") -> Iterator[tuple[Any, int]]:
    """The ops that use the handles `refs`, looking through `Identity` ops and through loops (a
    `While` passes loop variable k on as its output k); `output` spells output k of a node
    (`node:k` at the top level, `node:output:k` inside a function)."""
    todo, seen = list(refs), set(refs)
    while todo:
        ref = todo.pop()
        for use, position in consumers.get(ref, ()):
            follow = None
            if use.op == "Identity":
                follow = output.format(use.name, 0)
            else:
                yield use, position
                if use.op in ("While", "StatelessWhile"):
                    follow = output.format(use.name, position)
            if follow is not None and follow not in seen:
                seen.add(follow)
                todo.append(follow)


class _Functions:
    """What the library's functions do with their resource arguments, at any depth (memoized),
    and clones of them without the writes on arguments nothing reads (`without_writes`)."""

    def __init__(self, library: Mapping[str, Any]) -> None:
        self.library = library
        self.effects: dict[tuple[str, int], _Effect] = {}
        self.writing: dict[str, bool] = {}
        self.consumers: dict[str, dict[str, list[tuple[Any, int]]]] = {}
        self.clones: dict[tuple[str, frozenset[int]], str] = {}
        self.created: list[Any] = []  # the clones' FunctionDefs

    def of_node(self, node: Any, position: int) -> _Effect | None:
        """What the functions `node` calls do with its data input `position`; None when it calls
        none."""
        called = self._called(node)
        if not called:
            return None
        effect = _Effect()
        for name, inner in self._arguments(node, called, {position}):
            if inner:
                found = self.of_arg(name, next(iter(inner)))
            else:  # an argument list graphscope cannot map (a dataset's function)
                found = _Effect(writes=self.writes_anything(name), reads=True)
            effect.writes |= found.writes
            effect.reads |= found.reads
        return effect

    def of_arg(self, name: str, position: int) -> _Effect:
        key = (name, position)
        if key in self.effects:
            return self.effects[key]
        self.effects[key] = _Effect()  # functions are never recursive; this only guards a cycle
        effect = _Effect()
        consumers = self._consumers(name)
        for use, k in self._uses(name, position):
            if _writes(use):
                effect.writes = True
                effect.reads |= any(ref.startswith(f"{use.name}:") for ref in consumers)  # its result is used
                continue
            inner = self.of_node(use, k)
            effect.writes |= inner is not None and inner.writes
            effect.reads |= inner is None or inner.reads
        self.effects[key] = effect
        return effect

    def without_writes(self, node: Any, positions: set[int]) -> None:
        """Make `node` call clones of its functions without the writes on its data inputs
        `positions` (variables only written there, never read)."""
        called = self._called(node)
        targets = {
            name: inner for name, inner in self._arguments(node, called, positions)
            if any(self.of_arg(name, k).writes for k in inner)
        }
        if node.op in targets and targets[node.op]:
            node.op = self._clone(node.op, frozenset(targets[node.op]))
        for value in node.attr.values():
            kind = value.WhichOneof("value")
            for func in [value.func] if kind == "func" else value.list.func if kind == "list" else []:
                if targets.get(func.name):
                    func.name = self._clone(func.name, frozenset(targets[func.name]))

    def _clone(self, name: str, positions: frozenset[int]) -> str:
        key = (name, positions)
        if key in self.clones:
            return self.clones[key]
        fdef = function_pb2.FunctionDef()
        fdef.CopyFrom(self.library[name])
        fdef.signature.name = f"{name}_graphscope_{next(_names)}"
        removed: set[str] = set()
        calls: dict[str, set[int]] = {}
        for position in positions:
            for use, k in self._uses(name, position):
                if _writes(use):
                    removed.add(use.name)
                else:
                    calls.setdefault(use.name, set()).add(k)
        del fdef.node_def[:]
        fdef.node_def.extend(n for n in self.library[name].node_def if n.name not in removed)
        for node in fdef.node_def:
            if node.name in calls:
                self.without_writes(node, calls[node.name])
            control = [i for i in node.input if i.startswith("^") and i[1:] in removed]
            for ref in control:
                node.input.remove(ref)
        for key_, target in list(fdef.control_ret.items()):
            if target in removed:
                del fdef.control_ret[key_]
                if key_ in fdef.signature.control_output:
                    fdef.signature.control_output.remove(key_)
        self.clones[key] = fdef.signature.name
        self.created.append(fdef)
        return fdef.signature.name

    def writes_anything(self, name: str) -> bool:
        """Whether function `name` or any function it calls has a write op."""
        if name not in self.writing:
            self.writing[name] = False
            fdef = self.library[name]
            self.writing[name] = any(
                _writes(n) or any(self.writes_anything(f) for f in self._called(n))
                for n in fdef.node_def
            )
        return self.writing[name]

    def _called(self, node: Any) -> list[str]:
        """The library functions `node` calls: through its function-valued attributes, or as
        its op."""
        return [f for f in [node.op, *_called(node)] if f in self.library]

    def _arguments(self, node: Any, called: list[str], positions: set[int]) -> list[tuple[str, set[int]]]:
        """For each function `node` calls, the arguments its data inputs `positions` become
        (empty when they cannot be mapped)."""
        data = sum(1 for i in node.input if not i.startswith("^"))
        out = []
        for name in called:
            args = len(self.library[name].signature.input_arg)
            inner = {p - (data - args) for p in positions}  # If/Case take the branch selector first
            out.append((name, inner if all(0 <= k < args for k in inner) else set()))
        return out

    def _consumers(self, name: str) -> dict[str, list[tuple[Any, int]]]:
        if name not in self.consumers:
            consumers: dict[str, list[tuple[Any, int]]] = {}
            for node in self.library[name].node_def:
                for k, ref in enumerate(node.input):
                    if not ref.startswith("^"):
                        consumers.setdefault(ref, []).append((node, k))
            self.consumers[name] = consumers
        return self.consumers[name]

    def _uses(self, name: str, position: int) -> Iterator[tuple[Any, int]]:
        """The ops of function `name` that use its argument `position` (a handle), looking
        through `Identity` ops and loops, as `_uses` does at the top level."""
        return _uses(self._consumers(name), [self.library[name].signature.input_arg[position].name],
                     "{}:output:{}")


def _called(node: Any) -> list[str]:
    """The functions a node calls, through any of its function-valued attributes."""
    out = []
    for value in node.attr.values():
        kind = value.WhichOneof("value")
        if kind == "func":
            out.append(value.func.name)
        elif kind == "list":
            out.extend(f.name for f in value.list.func)
    return out


def _read_after(nodes: Mapping[str, Any], writes: set[str], reads: list[str]) -> bool:
    """Whether any of `reads` runs after one of `writes` (has it among its ancestors, through
    data or control inputs: TensorFlow orders ops on one resource by control edges)."""
    if not writes or not reads:
        return False
    after: dict[str, bool] = {}  # node -> has a write among its ancestors (itself included)
    for read in reads:
        stack = [(read, False)]
        while stack:
            name, expanded = stack.pop()
            if name in after:
                continue
            node = nodes.get(name)
            inputs = [] if node is None else [i.lstrip("^").split(":")[0] for i in node.input]
            if not expanded:
                stack.append((name, True))
                stack.extend((i, False) for i in inputs if i not in after)
                continue
            after[name] = name in writes or any(after.get(i, False) for i in inputs)
        if after[read]:
            return True
    return False


def _rewrite(base: graph_pb2.GraphDef, variables: Mapping[str, Any], dropped: set[str],
             copies: dict[str, list[str]], touched: set[str]) -> Isolated:
    """`base` without the `dropped` writes, the variables in `copies` (first placeholder -> all
    of that variable's) replaced by private copies; `touched`: the nodes whose inputs change."""
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(base.versions)
    out.library.CopyFrom(base.library)
    redirect: dict[str, tuple[str, str]] = {}  # placeholder -> (its copy's handle, the copy's init)
    private: dict[str, str] = {}
    for k, (first, placeholders) in enumerate(copies.items()):
        spec = _tf.variable_spec(variables[first])
        if spec is None:
            raise LookupError(f"the variable captured as {first!r} has no dtype and shape")
        dtype, shape = spec
        handle = out.node.add(name=f"{_PRIVATE}_{k}", op="VarHandleOp")
        handle.attr["dtype"].type = dtype.as_datatype_enum
        handle.attr["shape"].shape.CopyFrom(shape.as_proto())
        handle.attr["shared_name"].s = _tf.anonymous_resource_name().encode()
        handle.attr["container"].s = b""
        handle.attr["_class"].list.s.append(f"loc:@{first}".encode())  # on the variable's device
        value = out.node.add(name=f"{_PRIVATE}_{k}/value", op="ReadVariableOp", input=[first])
        value.attr["dtype"].type = dtype.as_datatype_enum
        init = out.node.add(name=f"{_PRIVATE}_{k}/init", op="AssignVariableOp", input=[handle.name, f"{value.name}:0"])
        init.attr["dtype"].type = dtype.as_datatype_enum
        for p in placeholders:
            redirect[p] = (handle.name, init.name)
            private[p] = handle.name
    added = len(out.node)
    out.node.extend(n for n in base.node if n.name not in dropped)
    for node in out.node[added:]:
        if node.name not in touched or node.name.startswith(f"{_PRIVATE}_"):
            continue
        refs = list(node.input)
        del node.input[:]
        inits = []
        for ref in refs:
            if ref.startswith("^"):
                if ref[1:] not in dropped:
                    node.input.append(ref)
                continue
            name, _, index = ref.partition(":")
            if name in redirect and index in ("", "0"):
                handle, init = redirect[name]
                node.input.append(handle)
                inits.append(f"^{init}")
            else:
                node.input.append(ref)
        node.input.extend(dict.fromkeys(inits))
    return Isolated(out, private)
