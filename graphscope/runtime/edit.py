"""Edits: a tensor's value replaced inside the executable graph, for one executor.

An edit maps a tensor to a replacement: an array (patched in on every call, broadcast to the
tensor's shape: activation patching) or a callable `fn(value) -> value` written with TF ops or
`keras.ops` (zero a channel, scale, steer, clamp), traced once. The variables a callable reads
stay inputs of its ops, bound to the variables themselves as the model's weights are: every call
reads their current values, so an executor kept across assignments follows them and the cache
key is the callable alone (a variable the call writes and reads back is read through the call's
private copy, `writes`, as the call's own reads are). Other tensors it captures are constants of
their values at the trace.
The executable graph is
rewritten so that every consumer of the tensor reads the replacement instead, and a fetch of the
tensor itself returns it; everything not downstream of an edit is computed as before. The model
and the `Program`'s own graph are never changed: the rewrite touches copies.

- At the top level the replacement's ops are spliced into the GraphDef under
  `graphscope_edit_<k>/`, so gradients flow through them like through any other op.
- Inside a loop body, a branch or a call TensorFlow does not inline, the chain of functions down
  to the tensor is cloned (as `expose` does) and the innermost clone calls the replacement's
  function on the value, so a callable applies at every iteration, or whenever the branch runs.
  The variable handles it reads are passed down the chain as new arguments of each clone (a
  loop's body passes them on unchanged, loop variables of the loop's own, not accumulators, so
  that a gradient with respect to a variable the callable reads takes the path through it; a
  branch op's other branches take them too).
  An array has no meaning there (one value for every iteration?) and is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2, node_def_pb2, resource_handle_pb2

from graphscope.backend import tf_internals as _tf
from graphscope.errors import ArgumentError, DisconnectedError, InputError
from graphscope.ir.graph import ModelGraph
from graphscope.ir.records import Tensor, shape_text
from graphscope.runtime import expose, writes
from graphscope.runtime.cache import Identity
from graphscope.runtime.convert import to_dtype

__all__ = ["Edit", "EditPatch", "apply", "check_relevant", "resolve"]

_names = itertools.count()  # edit node prefixes are process-unique, as expose's clones are


@dataclasses.dataclass(frozen=True, eq=False)
class Edit:
    """One tensor's replacement: `array` (already checked against the tensor) or `fn`."""

    tensor: Tensor
    array: np.ndarray | None = None
    fn: Callable[[Any], Any] | None = None

    @functools.cached_property
    def key(self) -> tuple:
        """What executors with this edit are cached by: the array's contents (hashed once), or
        the callable itself (by identity, held: see `cache.Identity`). The variables a callable
        reads are not part of it: the executor reads them live, on every call."""
        if self.array is not None:
            digest = hashlib.sha1(np.ascontiguousarray(self.array).view(np.uint8).reshape(-1)).hexdigest()
            return (self.tensor.name, "array", self.array.dtype.str, self.array.shape, digest)
        return (self.tensor.name, "callable", Identity(self.fn))

    @functools.cached_property
    def traced(self) -> Any:
        """The replacement as a ConcreteFunction of the tensor's value, what it reads captured
        (traced once per `Edit`, when it is applied: see `_traced`)."""
        return _traced(self)

    def replacement(self, value: tf.Tensor) -> tf.Tensor:
        """The replacement for `value` (a symbolic tensor of the edited tensor's dtype)."""
        if self.array is not None:
            return tf.broadcast_to(tf.constant(self.array, dtype=value.dtype), tf.shape(value))
        return self.fn(value)


def resolve(graph: ModelGraph, edits: Mapping[Any, Any] | None) -> list[Edit]:
    """The edits a caller passes (`{tensor: array or callable}`), each to exactly one tensor.

    Raises:
        ArgumentError: `edits` is not a mapping, a key names several tensors, or a value is
            neither an array nor a callable.
        InputError: an array that cannot take the tensor's place (its dtype or shape).
        TensorNotFoundError: a key names no tensor (with the closest names).
    """
    if edits is None:
        return []
    if not isinstance(edits, Mapping):
        raise ArgumentError(
            f"edits must be a dict {{tensor name: array or callable}}, got {type(edits).__name__}"
        )
    out: list[Edit] = []
    seen: dict[str, Any] = {}
    for key, value in edits.items():
        # an edit puts a value in, as a feed does: a name that is both an input's and an output
        # key's (keras-hub's `token_ids`) means the input, as for feeds and gradients' wrt
        pairs = graph.resolve_pairs(key, feeding=True)
        if len(pairs) != 1:
            raise ArgumentError(
                f"an edit replaces one tensor, but {key!r} names {len(pairs)}: "
                f"{', '.join(t.name for _, t in pairs[:5])}{', ...' if len(pairs) > 5 else ''}; edit each by its name"
            )
        (_, tensor), = pairs
        if tensor.name in seen:
            raise ArgumentError(f"{key!r} and {seen[tensor.name]!r} are the same tensor {tensor.name!r}: edit it once")
        seen[tensor.name] = key
        if tensor.is_handle:
            raise InputError(f"cannot edit {tensor.name!r}: it is a {tensor.dtype} handle, not a value")
        if callable(value):
            out.append(Edit(tensor, fn=value))
        elif isinstance(value, (np.ndarray, np.generic, tf.Tensor, int, float, bool, list, tuple)):
            out.append(Edit(tensor, array=_array_for(tensor, value)))
        else:
            raise ArgumentError(
                f"the edit of {tensor.name!r} must be an array (patched in) or a callable fn(value) -> value, "
                f"got {type(value).__name__}"
            )
    return out


def check_relevant(graph: ModelGraph, edits: Sequence[Edit], fetches: Sequence[Tensor]) -> None:
    """Refuse an edit that no fetch depends on (in the mirrored graph, bodies included)."""
    if not edits:
        return
    G = graph.graph
    wanted = {t.name for t in fetches}
    # the ops the fetches depend on: the graph's ancestor index (one walk), and their own ops
    needed = {t.op for t in graph.ancestors(list(fetches))} | {t.op for t in fetches}
    for e in edits:
        t = e.tensor
        if t.name in wanted:
            continue
        consumers = [c for c in G.successors(t.op) if t.index in G.edges[t.op, c]["outputs"]]
        if not any(c in needed for c in consumers) and t.op in graph.unused:
            others = counterparts(graph, t)
            raise DisconnectedError(
                f"the edit of {t.name!r} changes nothing: no output of the model depends on it (it is computed but "
                "never used, like the call Keras makes of an RNN's cell outside its loop only to learn shapes); edit "
                + (f"the tensor the model uses instead ({', '.join(others)})" if others else
                   "a tensor the model uses (scope.find lists only those)")
            )
        if not any(c in needed for c in consumers):
            raise DisconnectedError(
                f"the edit of {t.name!r} changes nothing the fetches ({', '.join(sorted(wanted))}) depend on: "
                "edit a tensor upstream of them, or fetch one downstream of the edit"
            )


def counterparts(graph: ModelGraph, t: Tensor, limit: int = 3) -> list[str]:
    """Names of used tensors like the unused `t`: of the same op type and output index, created
    by the same layer or another call of it (`lstm/lstm_cell@2` -> `lstm/lstm_cell`); only those
    whose op has `t`'s op's own name (`Sigmoid_1`) where there are some."""
    if t.layer is None:
        return []
    base = _call_free(t.layer)
    found = [u for u in graph.find(op_type=re.escape(t.op_type))  # used ones only
             if u.index == t.index and u.layer is not None and _call_free(u.layer) == base]
    own = t.op.rpartition("/")[2]
    found = [u for u in found if u.op.rpartition("/")[2] == own] or found
    return [u.name for u in found[:limit]]


def _call_free(layer: str) -> str:
    """A layer path without its calls' numbers (`lstm/lstm_cell@2` -> `lstm/lstm_cell`)."""
    return re.sub(r"@\d+(?=/|$)", "", layer)


def _array_for(tensor: Tensor, value: Any) -> np.ndarray:
    """`value` as an array of `tensor`'s dtype that broadcasts to its shape (a private copy:
    the caller may change theirs afterwards)."""
    array = to_dtype(value, tensor.dtype, f"the edit of {tensor.name!r}")
    if tensor.shape is not None:
        rank = len(tensor.shape)
        fits = array.ndim <= rank and all(
            a == 1 or d is None or a == d for a, d in zip(array.shape[::-1], tensor.shape[::-1])
        )
        if not fits:
            raise InputError(
                f"the edit of {tensor.name!r} has shape {shape_text(array.shape)}, which does not broadcast "
                f"to the tensor's shape {shape_text(tensor.shape)} (? for any size)"
            )
    return expose.read_only(np.array(array))  # a copy: the caller's array may change


# --------------------------------------------------------------------------- the rewrite


@dataclasses.dataclass
class EditPatch:
    """What `apply` rewrote: top-level nodes to replace or add, the function library with the
    clones and replacement functions (`library`; `functions` are the new ones), where each
    edited tensor's new value is (`outputs`, by canonical name: a top-level tensor or a
    `Target`), the top-level node each edit lives in or under (`anchors`), and the
    placeholders to bind to the variables the callables read (`captures`)."""

    nodes: dict[str, node_def_pb2.NodeDef]
    library: dict[str, function_pb2.FunctionDef]
    functions: list[function_pb2.FunctionDef]
    outputs: dict[str, str | expose.Target]
    anchors: dict[str, str]
    prefixes: dict[str, str]  # spliced node name prefix -> the edited tensor's name
    captures: dict[str, Any]  # new placeholder tensor -> the variable handle to bind it to


def apply(
    nodes: dict[str, node_def_pb2.NodeDef],
    library: dict[str, function_pb2.FunctionDef],
    edits: list[tuple[Edit, str | expose.Target]],
    captures: Mapping[str, Any] | None = None,
    private: Mapping[str, str] | None = None,
) -> EditPatch:
    """Rewrite the executable graph (`nodes`, `library`: left unchanged) so that each edited
    tensor, located at a top-level tensor name or a `Target`, is replaced. The variables a
    callable reads are read through placeholders bound to them: those of `captures`
    (placeholder op -> handle: the model's own) where the variable is the model's, else new
    ones (`EditPatch.captures`, by placeholder tensor name) to bind as the model's are. A
    variable the call runs against a private copy (`private`: placeholder -> the copy's handle
    node, `writes.Isolated.private`) is read through that copy, as the call's own reads are:
    after the copy is set and after the edited tensor is computed (the writes the call makes
    before it seen), before the call's other uses of the copy not upstream of it (its later
    writes not seen).

    Raises:
        InputError: an array edit inside a loop or branch, or a callable that fails, or returns
            a value of another dtype or shape.
    """
    patch = EditPatch({}, dict(library), [], {}, {}, {}, {})
    top = expose.Top(nodes, patch.library)
    # variable handle (by id) -> the placeholder it is bound to: the model's, then the edits'
    private = private or {}
    bound = {id(handle): private.get(name, name) for name, handle in (captures or {}).items()
             if handle.dtype == tf.resource}
    # a private copy's handle -> what a read of it waits for: the copy's initial assignment
    waits = {f"{h}:0": f"^{h}/init" for h in set(private.values()) if f"{h}/init" in nodes}
    for edit, where in edits:
        if not isinstance(where, str) and edit.array is not None and edit.tensor.context:
            raise InputError(
                f"cannot patch {edit.tensor.name!r} with an array: it is computed inside {edit.tensor.context}, "
                "where it takes a value on every iteration (or only when the branch runs); pass a callable "
                "fn(value) -> value, which applies each time"
            )
        traced = _trace(edit)
        prefix = f"graphscope_edit_{next(_names)}"
        patch.prefixes[prefix] = edit.tensor.name
        handles = _handles(top, prefix, traced, patch, bound)
        if isinstance(where, str):
            patch.outputs[edit.tensor.name] = _splice(top, nodes, where, traced, prefix, handles, patch)
            patch.anchors[edit.tensor.name] = patch.outputs[edit.tensor.name].partition(":")[0]
            spliced = [n for name, n in top.changed.items() if name.startswith(f"{prefix}/")]
            _wait(top, nodes, spliced, waits, f"^{where.partition(':')[0]}")
        else:  # inside a loop, a branch or a call TensorFlow does not inline (an XLA helper)
            # the replacement is called as a function there, with those it calls; the variables
            # it reads are passed down to it, as inputs of each function on the way
            function = traced.function
            _add_functions(patch, [*traced.graph_def.library.function, function.function_def])
            call = functools.partial(_call, where=where, traced=traced)
            node = _within(top, list(where.steps), patch, call, handles)
            patch.outputs[edit.tensor.name] = dataclasses.replace(where, node=node, arg=None, index=0)
            patch.anchors[edit.tensor.name] = where.steps[0][0]
            _wait(top, nodes, [top.get(where.steps[0][0])], waits, None)  # inside, the call waits for the value
    patch.nodes = top.changed
    return patch


def _wait(top: expose.Top, nodes: Mapping[str, Any], readers: list[node_def_pb2.NodeDef],
          waits: Mapping[str, str], source: str | None) -> None:
    """Order the `readers` (new or changed top-level nodes) that take a private copy's handle
    as the model's own reads are: after the copy's initial assignment (`waits`) and `source`
    (the edited tensor's op: the writes made before it seen), and before every other op that
    takes the handle and is not upstream of them (the call's later writes)."""
    readers = [node for node in readers if any(i in waits for i in node.input)]
    if not readers:
        return
    for node in readers:
        controls = [waits[i] for i in node.input if i in waits] + ([source] if source else [])
        node.input.extend(c for c in dict.fromkeys(controls) if c not in node.input)
    handles = {i for node in readers for i in node.input if i in waits}
    handles |= {h.partition(":")[0] for h in handles}  # the model's ops spell it without ":0"
    names = {node.name for node in readers}
    upstream = _upstream(top, nodes, [i for node in readers for i in node.input])
    for name in [*nodes, *top.changed]:
        node = top.changed.get(name) or nodes[name]
        if name in names or name in upstream or not any(i in handles for i in node.input):
            continue
        node = top.get(name)
        node.input.extend(f"^{r}" for r in sorted(names) if f"^{r}" not in node.input)


def _upstream(top: expose.Top, nodes: Mapping[str, Any], refs: list[str]) -> set[str]:
    """The top-level ops `refs` (inputs, control ones too) depend on."""
    seen: set[str] = set()
    pending = [r.lstrip("^").partition(":")[0] for r in refs]
    while pending:
        name = pending.pop()
        node = top.changed.get(name) or nodes.get(name)
        if name in seen or node is None:
            continue
        seen.add(name)
        pending.extend(i.lstrip("^").partition(":")[0] for i in node.input)
    return seen


def _traced(edit: Edit) -> Any:
    """The replacement as a ConcreteFunction of the tensor's value, its captures (variables it
    reads) kept.

    Raises:
        InputError: the callable fails on the tensor, or returns another dtype or shape.
    """
    t = edit.tensor
    spec = tf.TensorSpec(t.shape, t.dtype)
    try:
        function = tf.function(lambda value: tf.convert_to_tensor(edit.replacement(value))).get_concrete_function(spec)
    except Exception as e:  # noqa: BLE001 - whatever the user's function raised
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # autograph frames the cause with "in user code:" and file lines; the cause comes last
        reason = lines[-1] if lines else type(e).__name__
        reason = reason if reason.split(":")[0].endswith(("Error", "Exception")) else f"{type(e).__name__}: {reason}"
        raise InputError(
            f"the edit of {t.name!r} failed on a {t.dtype} tensor of shape {shape_text(t.shape)}: {reason}"
        ) from None
    (out,) = function.outputs
    if out.dtype != spec.dtype:
        raise InputError(
            f"the edit of {t.name!r} returns {out.dtype.name}, but the tensor is {t.dtype}: cast the result"
        )
    if not out.shape.is_compatible_with(spec.shape):
        raise InputError(
            f"the edit of {t.name!r} returns shape {shape_text(out.shape.as_list() if out.shape.rank is not None else None)}, "
            f"but the tensor has shape {shape_text(t.shape)}: an edit must keep the shape"
        )
    return function


@dataclasses.dataclass
class _Traced:
    """A callable's trace, as the rewrite copies it: the ConcreteFunction (its argument the
    tensor's value, then its captures), its GraphDef, and per capture (in the function's input
    order) the external value: a variable's handle (a resource: bound live) or a tensor (made a
    constant of its value at trace time)."""

    function: Any
    graph_def: Any
    value: str  # the value argument's placeholder op
    captures: list[tuple[str, Any]]  # (placeholder op, external)
    kinds: dict[int, Any]  # id(variable handle) -> its variable's dtype and shape (a DtypeAndShape)

    @staticmethod
    def live(external: Any) -> bool:
        return external.dtype == tf.resource


def _trace(edit: Edit) -> _Traced:
    """The replacement's trace, with its captures: the variables it reads stay inputs, bound to
    the variables themselves where the replacement is placed (read live on every call); other
    captured tensors become constants. The trace is dropped from `edit` then.

    Raises:
        InputError: the callable writes a variable (or a random generator's state).
    """
    function = edit.traced
    edit.__dict__.pop("traced", None)
    graph_def = function.graph.as_graph_def()
    written = sorted({n.op for n in [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
                      if writes.WRITE_OPS.fullmatch(n.op)})
    if written:
        raise InputError(
            f"the edit of {edit.tensor.name!r} changes state ({', '.join(written)}): an edit reads variables "
            "(at their current values) but may not write them; compute the new value without assigning, "
            "and assign outside the edit if you mean to"
        )
    by_internal = {id(internal): external for external, internal in function.graph.captures}
    captures = [(t.op.name, by_internal[id(t)]) for t in function.inputs[1:]]
    kinds = {}
    for v in function.graph.variables:
        kind = resource_handle_pb2.ResourceHandleProto.DtypeAndShape(dtype=v.dtype.as_datatype_enum)
        kind.shape.CopyFrom(v.shape.as_proto())
        kinds[id(v.handle)] = kind
    return _Traced(function, graph_def, function.inputs[0].op.name, captures, kinds)


def _constant(name: str, value: Any) -> node_def_pb2.NodeDef:
    """A Const node holding an eager tensor's current value."""
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = value.dtype.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.numpy()))
    return node


def _handles(top: expose.Top, prefix: str, traced: _Traced, patch: EditPatch,
             bound: dict[int, str]) -> list[tuple[str, Any]]:
    """The top-level tensor each live capture of `traced` is read from: the placeholder its
    variable is already bound to (the model's own, or another edit's), or a new one under
    `prefix`, bound to the variable (`patch.captures`); each with its variable's dtype and shape
    where known (for the function arguments it is passed down as)."""
    refs = []
    for k, (_, external) in enumerate(traced.captures):
        if not traced.live(external):
            continue
        if id(external) not in bound:
            node = node_def_pb2.NodeDef(name=f"{prefix}/variable_{k}", op="Placeholder")
            node.attr["dtype"].type = external.dtype.as_datatype_enum
            top.add(node)
            bound[id(external)] = node.name
            patch.captures[f"{node.name}:0"] = external
        refs.append((f"{bound[id(external)]}:0", traced.kinds.get(id(external))))
    return refs


def _add_functions(patch: EditPatch, fdefs: Iterable[function_pb2.FunctionDef]) -> None:
    """FunctionDefs into the library being built, each once."""
    for fdef in fdefs:
        if fdef.signature.name not in patch.library:
            patch.library[fdef.signature.name] = fdef
            patch.functions.append(fdef)


def _splice(top: expose.Top, nodes: Mapping[str, Any], ref: str, traced: _Traced, prefix: str,
            handles: list[str], patch: EditPatch) -> str:
    """Copy the replacement's ops into the top-level graph under `prefix`, reading `ref` and the
    variables at `handles` (one per live capture); point every consumer of `ref` at the result;
    return the result's tensor name."""
    source, _, index = ref.partition(":")
    placeholder = traced.value
    live = iter(handles)
    inputs = {name: next(live)[0] for name, external in traced.captures if traced.live(external)}
    constants = {name: external for name, external in traced.captures if not traced.live(external)}
    graph_def = traced.graph_def

    def mapped(name: str) -> str:
        control = name.startswith("^")
        node, _, out = name.lstrip("^").partition(":")
        if node == placeholder:
            return f"^{source}" if control else ref
        if node in inputs:
            return f"^{inputs[node].partition(':')[0]}" if control else inputs[node]
        return f"{'^' if control else ''}{prefix}/{node}{':' + out if out else ''}"

    added = []
    for node in graph_def.node:
        if node.name == placeholder or node.name in inputs:
            continue
        if node.name in constants:
            added.append(_constant(f"{prefix}/{node.name}", constants[node.name]))
            continue
        copy = node_def_pb2.NodeDef()
        copy.CopyFrom(node)
        copy.name = f"{prefix}/{node.name}"
        del copy.input[:]
        copy.input.extend(mapped(i) for i in node.input)
        if "_class" in copy.attr:
            del copy.attr["_class"]
        added.append(copy)
    _add_functions(patch, graph_def.library.function)  # what the spliced ops call
    result = mapped(traced.function.outputs[0].name)
    spellings = {ref, source} if index == "0" else {ref}
    consumers = [n for n in [*nodes, *top.changed] if any(i in spellings for i in _node_of(top, n).input)]
    for name in dict.fromkeys(consumers):
        node = top.get(name)
        replaced = [result if i in spellings else i for i in node.input]
        del node.input[:]
        node.input.extend(replaced)
    for copy in added:
        top.add(copy)
    return result


def _node_of(top: expose.Top, name: str) -> Any:
    return top.changed.get(name) or top.nodes[name]


_RESOURCE = tf.resource.as_datatype_enum


def _within(container: expose.Container, steps: list[tuple[str, str]], patch: EditPatch,
            edit: Callable[[expose.Body, list[str]], str], handles: list[tuple[str, Any]]) -> str:
    """Clone the functions along `steps` (each parent pointed at its clone), passing the variable
    handles at `handles` (refs in `container`, with their variables' dtype and shape) down as new
    inputs of each, and apply `edit` to the innermost clone with the handles' refs there;
    returns what `edit` returns."""
    (name, attr), rest = steps[0], steps[1:]
    node = container.get(name)
    func = expose.function_attr(node, attr)
    body = expose.Body(patch.library[func.name], patch.library)
    inner = [(_resource_input(body, kind), kind) for _, kind in handles]
    loop = node.op in ("While", "StatelessWhile")
    if loop and handles and attr == "body":  # a loop variable: the body passes it on
        for ref, _ in inner:
            body.add_output(ref, _RESOURCE)
    result = _within(body, rest, patch, edit, inner) if rest else edit(body, [ref for ref, _ in inner])
    _register(patch, body)
    func.name = body.fdef.signature.name
    if handles:
        container.set_data_inputs(node, [ref for ref, _ in handles])
        if loop:
            node.attr["T"].list.type.extend([_RESOURCE] * len(handles))
            for key in ("output_shapes", "_output_shapes"):  # the new outputs': scalar handles
                if key in node.attr:
                    for _ in handles:
                        node.attr[key].list.shape.add()
            # outputs of a loop past `_num_original_outputs` are while_v2's accumulators, which
            # its gradient gives no gradient: the handles are loop variables like the model's own
            # (a variable the edit reads gets its gradient through them); expose's lists, added
            # after the edits, stay accumulators
            if "_num_original_outputs" in node.attr:
                node.attr["_num_original_outputs"].i = len(node.attr["T"].list.type)
        else:  # a call or a branch: one more argument
            node.attr["Tin"].list.type.extend([_RESOURCE] * len(handles))
        # the node's other functions take the same arguments (a branch's; a loop's cond or body)
        others = [a for a in ("then_branch", "else_branch") if a in node.attr and a != attr]
        if "branches" in node.attr:  # (reading a missing attr would add it)
            others += [f"branches:{k}" for k in range(len(node.attr["branches"].list.func)) if f"branches:{k}" != attr]
        if loop and attr == "cond":
            others.append("body")
        for other in others:
            clone = expose.Body(patch.library[expose.function_attr(node, other).name], patch.library)
            for _, kind in handles:
                arg = _resource_input(clone, kind)
                if other == "body":
                    clone.add_output(arg, _RESOURCE)
            _register(patch, clone)
            expose.function_attr(node, other).name = clone.fdef.signature.name
    if loop and attr == "body":  # the cond under a new name too: TensorFlow's gradient names the
        # cond it rewrites after it, and two loops of one cond but different bodies would clash there
        cond = expose.Body(patch.library[node.attr["cond"].func.name], patch.library)
        for _, kind in handles:
            _resource_input(cond, kind)
        _register(patch, cond)
        node.attr["cond"].func.name = cond.fdef.signature.name
    if attr == "f":  # an XLA call: an edited body runs without XLA, as an exposed one does
        for key in _tf.XLA_ATTRS:
            if key in node.attr:
                del node.attr[key]
    return result


def _resource_input(body: expose.Body, kind: Any) -> str:
    """A new resource argument of `body`, with its variable's dtype and shape where known (a
    gradient through a call that takes a handle needs them)."""
    name = body.add_input(_RESOURCE)
    if kind is not None:
        body.fdef.signature.input_arg[-1].handle_data.add().CopyFrom(kind)
    return name


def _register(patch: EditPatch, body: expose.Body) -> None:
    patch.library[body.fdef.signature.name] = body.fdef
    patch.functions.append(body.fdef)


def _call(body: expose.Body, handles: list[str], where: expose.Target, traced: _Traced) -> str:
    """Inside `body`: call the replacement on the target's value (and the variables at `handles`,
    one per live capture; the other captures as constants) and point every consumer (and the
    body's results) at it; returns the call's node name."""
    ref = body.arg(where.arg) if where.arg is not None else body.ref(where.node, where.index)
    # a loop body's argument that the body passes on unchanged (a value computed before the loop,
    # captured into it): each iteration sees the loop's value, edited; the edit is not carried
    invariant = None
    if where.arg is not None and where.steps[-1][1] == "body":
        invariant = _passed_on(body.fdef, where.arg)
    call = node_def_pb2.NodeDef(name=body.unique("edit"), op="StatefulPartitionedCall")
    call.input.append(ref)
    call.attr["f"].func.name = traced.function.function_def.signature.name
    call.attr["Tin"].list.type.append(where.dtype)
    call.attr["Tout"].list.type.append(where.dtype)
    live = iter(handles)
    for _, external in traced.captures:
        if traced.live(external):
            call.input.append(next(live))
        else:
            constant = _constant(body.unique("edit_constant"), external)
            body.add(constant)
            call.input.append(body.ref(constant.name, 0))
        call.attr["Tin"].list.type.append(external.dtype.as_datatype_enum)
    body.add(call)
    out = body.ref(call.name, 0)
    for node in body.fdef.node_def:
        if node.name != call.name and ref in node.input:
            node.input[:] = [out if i == ref else i for i in node.input]
    for key, value in list(body.fdef.ret.items()):
        if value == ref:  # a value the body computes (or a branch's result): edited where it goes
            body.fdef.ret[key] = out
    if invariant is not None:
        body.fdef.ret[invariant] = ref
    return call.name


def _passed_on(fdef: function_pb2.FunctionDef, position: int) -> str | None:
    """The result of a loop body that returns its argument at `position` unchanged (directly or
    through `Identity` ops), if it does: a loop invariant, the same in every iteration."""
    if position >= len(fdef.signature.output_arg):
        return None
    nodes = {n.name: n for n in fdef.node_def}
    result = fdef.signature.output_arg[position].name
    value = fdef.ret[result]
    while value.partition(":")[0] in nodes and nodes[value.partition(":")[0]].op == "Identity":
        value = nodes[value.partition(":")[0]].input[0]
    return result if value == fdef.signature.input_arg[position].name else None
