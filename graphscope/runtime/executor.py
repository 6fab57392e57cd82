"""Executors: a pruned subgraph run on numpy inputs, returning numpy arrays.

`Runtime` is what a scope runs with: the `Program` compiled from the traced function, the
executors built so far (cached by fetches and feeds), and the one way names become the tensors
to fetch and feed (`ModelGraph.resolve_pairs`). Every check (fetchable tensors, inputs that are
needed but not fed, feeds that reach nothing) happens when an executor is built.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.backend.mirror import Mirrored
from graphscope.backend.trace import Traced
from graphscope.errors import (
    ArgumentError,
    DisconnectedError,
    ExecutionError,
    InputError,
    TensorNotFoundError,
    UnsupportedFetchError,
    suggestion,
)
from graphscope.ir.graph import ModelGraph
from graphscope.ir.records import Results, Tensor, shape_text
from graphscope.runtime import edit as editing
from graphscope.runtime.cache import LRU, Identity
from graphscope.runtime.compile import Compiled, Program
from graphscope.runtime.convert import to_dtype
from graphscope.runtime.expose import decode, read_only

__all__ = ["Executor", "GradientExecutor", "InputSignature", "Runtime"]


class Runtime:
    """Executors for one traced function, built from one `Program` (made on first use)."""

    def __init__(self, traced: Traced, mirrored: Mirrored) -> None:
        self.traced = traced
        self.mirrored = mirrored
        self.graph: ModelGraph = mirrored.graph
        self._program: Program | None = None
        self._executors = LRU()
        self._lock = threading.Lock()
        self._variables: dict[str, list[str]] | None = None

    @property
    def program(self) -> Program:
        """The inlined, executable form of the traced function (built once, on first use)."""
        with self._lock:
            if self._program is None:
                self._program = Program(self.traced, self.mirrored)
            return self._program

    def executor(self, fetches: Any, *, feeds: Any = None, edits: Any = None) -> Executor:
        """A pruned executor for `fetches` (names, Tensors, a Selection or a Layer), fed the
        model's inputs, or exactly `feeds` when given, with `edits` ({tensor: array or
        callable}) applied. Cached: the same fetches, feeds and edits return the same
        executor; the same fetch *set* reuses the compiled function."""
        fetch_pairs = self.graph.resolve_pairs(fetches)
        if not fetch_pairs:
            raise TensorNotFoundError("nothing to fetch: give at least one tensor name")
        feed_pairs = self._feed_pairs(feeds)
        edit_list = editing.resolve(self.graph, edits)
        key = (tuple((k, t.name) for k, t in fetch_pairs), tuple((k, t.name) for k, t in feed_pairs),
               tuple(e.key for e in edit_list))
        executor = self._executors.get(key)
        if executor is None:
            executor = Executor(self, fetch_pairs, feed_pairs, explicit_feeds=feeds is not None, edits=edit_list)
            self._executors.put(key, executor)
        return executor

    def run(self, fetches: Any, inputs: Any, *, feeds: Any = None, edits: Any = None) -> Results:
        """One-shot `executor(fetches, feeds=feeds, edits=edits)(inputs)`; a list or tuple holds
        positional inputs (for one input: see `InputSignature.bind`)."""
        return _call(self.executor(fetches, feeds=feeds, edits=edits), inputs)

    def gradient_executor(self, of: Any, wrt: Any, *, target: Any = None, feeds: Any = None,
                          edits: Any = None) -> GradientExecutor:
        """A cached function of the inputs that returns the gradient of `sum(target(of))` with
        respect to each entry of `wrt`; see `GradientExecutor`."""
        pairs = self.graph.resolve_pairs(of)
        if len(pairs) != 1:
            raise ArgumentError(
                f"a gradient is taken of one tensor, but {of!r} names {len(pairs)}"
                + (f": {', '.join(t.name for _, t in pairs[:5])}" if pairs else "")
                + "; pick one, or sum them in target="
            )
        (_, of_tensor), = pairs
        entries = self._wrt(wrt)
        feed_pairs = self._feed_pairs(feeds)
        edit_list = editing.resolve(self.graph, edits)
        key = ("gradient", of_tensor.name, tuple((k, w if isinstance(w, str) else w.name) for k, w in entries),
               Identity(target), tuple((k, t.name) for k, t in feed_pairs), tuple(e.key for e in edit_list))
        executor = self._executors.get(key)
        if executor is None:
            executor = GradientExecutor(self, of_tensor, entries, feed_pairs, target=target, edits=edit_list)
            self._executors.put(key, executor)
        return executor

    def gradients(self, of: Any, wrt: Any, inputs: Any, *, target: Any = None, feeds: Any = None,
                  edits: Any = None) -> Results:
        """One-shot `gradient_executor(of, wrt, ...)(inputs)`."""
        return _call(self.gradient_executor(of, wrt, target=target, feeds=feeds, edits=edits), inputs)

    def _feed_pairs(self, feeds: Any) -> list[tuple[str, Tensor]]:
        if feeds is None:
            return list(zip(self.graph.input_names, self.graph.inputs))
        return self.graph.resolve_pairs(feeds, feeding=True)

    @property
    def variables(self) -> dict[str, list[str]]:
        """Each variable the traced function reads, by path (`conv1/kernel`), with the names of
        the executable graph's placeholders its handle is bound to."""
        if self._variables is None:
            bound: dict[int, list[str]] = {}
            for placeholder, handle in self.program.captures.items():
                bound.setdefault(id(handle), []).append(placeholder)
            found = {}
            for v in self.traced.function.graph.variables:
                handle = getattr(v, "handle", None)
                if handle is not None and id(handle) in bound:
                    found[v.name.removesuffix(":0")] = bound[id(handle)]
            self._variables = found
        return self._variables

    def _wrt(self, wrt: Any) -> list[tuple[str, Tensor | str]]:
        """`wrt` as (key as given, Tensor or the variable's bound placeholders joined by spaces)."""
        items = list(wrt) if isinstance(wrt, (list, tuple)) else [wrt]
        if not items:
            raise ArgumentError("wrt is empty: give the tensors, inputs or variables to differentiate with respect to")
        variables = self.variables
        out: list[tuple[str, Tensor | str]] = []
        for item in items:
            path = _variable_path(item)
            if path is not None or (isinstance(item, str) and item.removesuffix(":0") in variables):
                path = path or item.removesuffix(":0")
                if path not in variables:
                    raise TensorNotFoundError(
                        f"the traced function does not read variable {path!r}." + suggestion(path, variables)
                    )
                out.append((path, " ".join(variables[path])))
                continue
            try:
                pairs = self.graph.resolve_pairs(item)
            except TensorNotFoundError:
                if not isinstance(item, str):
                    raise
                names = [*variables, *self.graph.input_names, *self.graph.tensors]
                raise TensorNotFoundError(
                    f"no tensor, input or variable named {item!r}." + suggestion(item, names)
                ) from None
            if len(pairs) != 1:
                raise ArgumentError(
                    f"{item!r} names {len(pairs)} tensors ({', '.join(t.name for _, t in pairs[:5])}); a gradient "
                    "is taken with respect to one tensor per entry of wrt: list them"
                )
            (key, tensor), = pairs
            if not (tf.as_dtype(tensor.dtype).is_floating or tf.as_dtype(tensor.dtype).is_complex):
                raise ArgumentError(
                    f"cannot differentiate with respect to {tensor.name!r}: it is {tensor.dtype}, and gradients "
                    "are defined for floating-point tensors only"
                )
            out.append((item if isinstance(item, str) else key, tensor))
        return out


def _variable_path(item: Any) -> str | None:
    """A variable's path (`conv1/kernel`) when `item` is a Keras or tf.Variable, else None."""
    if isinstance(item, tf.Variable):
        return item.name.removesuffix(":0")
    value = getattr(item, "value", None)
    if isinstance(getattr(item, "path", None), str) and isinstance(value, tf.Variable):  # a Keras 3 Variable
        return value.name.removesuffix(":0")
    return None


def _call(executor: Any, inputs: Any) -> Results:
    """Call an executor with `inputs` (a list or tuple holds positional inputs, or is the one
    input's value: see `InputSignature.bind`)."""
    return executor(inputs)


class InputSignature:
    """What an executor is fed: names (every spelling of each input accepted by name), dtypes and
    static shapes; `bind` turns what a caller passes into the arrays, in order."""

    def __init__(self, feeds: Sequence[tuple[str, Tensor]]) -> None:
        self.names: list[str] = [k for k, _ in feeds]
        self.tensors: list[Tensor] = [t for _, t in feeds]
        self._aliases: dict[str, int] = {}
        for k, (name, t) in enumerate(feeds):
            for alias in (name, t.name, t.raw_name, t.op, t.raw_name.rpartition(":")[0]):
                self._aliases.setdefault(alias, k)

    def __len__(self) -> int:
        return len(self.names)

    def position(self, name: str) -> int | None:
        """Which input `name` (any spelling) is, or None."""
        return self._aliases.get(name)

    def bind(self, *inputs: Any) -> list[Any]:
        """The inputs in order, from one value (one input), a list/tuple (positional inputs) or
        a dict by name; values are not converted.

        For a one-input executor a list or tuple is that input's value, an array written as
        nested lists (`[[1., 2., 3.], [4., 5., 6.]]` is a 2x3 array), except a list or tuple of
        one array or tensor of the input's rank (any rank when that is unknown): `[x]` holds
        `x`, as it would for an executor of several inputs.

        Raises:
            InputError: the wrong number of inputs, or a name the executor does not take.
        """
        n = len(self.names)
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            return self._by_name(inputs[0])
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            if n == 1 and not self._holds_one(inputs[0]):
                return [inputs[0]]  # one input's value, written as (nested) lists
            inputs = tuple(inputs[0])  # a list/tuple holds the positional inputs
        if len(inputs) != n:
            raise InputError(
                f"this executor takes {n} input{'s' if n != 1 else ''} ({', '.join(self.names)}), "
                f"got {len(inputs)}: pass "
                + ("one array" if n == 1 else "a list of arrays in that order, or a dict by name")
            )
        return list(inputs)

    def _holds_one(self, given: list[Any] | tuple[Any, ...]) -> bool:
        """Whether a list/tuple passed for the one input is `[x]`: one array or tensor of the
        input's rank, rather than the input's value written as lists."""
        if len(given) != 1 or not isinstance(given[0], (np.ndarray, np.generic, tf.Tensor, tf.Variable)):
            return False
        shape = self.tensors[0].shape
        return shape is None or len(given[0].shape) == len(shape)

    def _by_name(self, given: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = [None] * len(self.names)
        for key, value in given.items():
            k = self._aliases.get(key)
            if k is None:
                raise InputError(
                    f"unknown input {key!r}: this executor takes {', '.join(self.names)}."
                    + suggestion(str(key), self.names)
                )
            out[k] = value
        missing = [self.names[k] for k, v in enumerate(out) if v is None]
        if missing:
            raise InputError(f"missing input{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        return out

    def convert(self, k: int, value: Any) -> tf.Tensor:
        """Input k as a tensor of its dtype, checked against its static shape."""
        name, spec = self.names[k], self.tensors[k]
        array = to_dtype(value, spec.dtype, f"input {name!r}")
        if spec.shape is not None:
            ok = array.ndim == len(spec.shape) and all(
                d is None or d == a for d, a in zip(spec.shape, array.shape)
            )
            if not ok:
                raise InputError(
                    f"input {name!r} expects shape {shape_text(spec.shape)} (? for any size), "
                    f"got {shape_text(array.shape)}"
                )
        return tf.constant(array)



class _Runner:
    """What executors and gradient executors share: an input signature, a compiled function,
    and turning TensorFlow's failures into one line naming the op."""

    signature: InputSignature
    _function: Any
    _used: list[int]
    _canonical_ops: dict[str, str]
    _edit_ops: dict[str, str]

    def _setup(self, feeds: Sequence[tuple[str, Tensor]]) -> None:
        self.signature = InputSignature(feeds)
        for t in self.signature.tensors:
            if t.context:
                raise UnsupportedFetchError(
                    f"cannot feed {t.name!r}: it is computed inside {t.context}, where it has one "
                    "value per iteration or none when the branch does not run; feed a tensor "
                    "outside loops and branches"
                )

    def _adopt(self, runtime: Runtime, compiled: Compiled) -> None:
        self._function = compiled.function
        self._used = compiled.used
        self._canonical_ops = runtime.program.canonical_ops
        self._edit_ops = compiled.edit_ops

    @property
    def inputs(self) -> list[str]:
        """The names this executor is fed by, in order."""
        return list(self.signature.names)

    def _outputs(self, inputs: tuple[Any, ...]) -> list[tf.Tensor]:
        arrays = self.signature.bind(*inputs)
        fed = [self.signature.convert(k, arrays[k]) for k in self._used]
        try:
            return self._function(*fed)
        except tf.errors.OpError as e:
            raise ExecutionError(self._explain(e)) from None

    def _explain(self, e: tf.errors.OpError) -> str:
        """One line: the op that failed (canonical name) and TensorFlow's own reason."""
        candidates = _tf.failed_op_names(e)
        known = self._canonical_ops
        # names may carry the prefixes of the functions they were inlined into: try each suffix
        suffixes = [c.split("/")[k:] for c in candidates for k in range(c.count("/") + 1)]
        where = next((known["/".join(p)] for p in suffixes if "/".join(p) in known), None)
        edit = next((self._edit_ops[p[0]] for p in suffixes if p[0] in self._edit_ops), None)
        if where is None and edit is not None:
            place = f" in the edit of {edit!r}"
        else:
            where = where or next(iter(candidates), None)
            place = f" in op {where!r}" if where else ""
        return f"TensorFlow failed{place}: {_tf.failure_reason(e)}"


class Executor(_Runner):
    """Runs a pruned subgraph: the ops needed for `fetches`, fed `inputs`, with `edits` applied.

    Call it with one array (one input), a list/tuple (positional inputs; for one input, its value
    as nested lists, or `[x]`: see `InputSignature.bind`) or a dict (by input or feed name); it
    returns `{fetch: numpy.ndarray}` keyed the way the fetches were given, all computed in one
    execution. Arrays are read-only: zero-copy views of TensorFlow's buffers, or copies where a
    value may share a buffer with a variable or constant (never a live variable). Calls are
    thread-safe (TensorFlow functions may be called from several threads at once).
    """

    def __init__(
        self,
        runtime: Runtime,
        fetches: Sequence[tuple[str, Tensor]],
        feeds: Sequence[tuple[str, Tensor]],
        *,
        explicit_feeds: bool,
        edits: Sequence[editing.Edit] = (),
    ) -> None:
        self._keys = [k for k, _ in fetches]
        self.fetches: list[Tensor] = [t for _, t in fetches]
        self.edits: dict[str, Any] = {e.tensor.name: e.array if e.array is not None else e.fn for e in edits}
        self._setup(feeds)
        for t in self.fetches:
            if t.is_handle:
                raise UnsupportedFetchError(
                    f"cannot fetch {t.name!r}: it is a {t.dtype} tensor (a handle, not a value); "
                    "fetch a tensor that reads it instead, e.g. a ReadVariableOp"
                )
        _check_edits_matter(runtime.graph, edits, self.fetches)
        program = runtime.program
        compiled = program.compiled(self.signature.tensors, self.fetches, edits)
        if explicit_feeds and len(compiled.used) < len(self.signature):
            unused = [t.name for k, t in enumerate(self.signature.tensors) if k not in compiled.used]
            raise DisconnectedError(
                f"feed{'s' if len(unused) > 1 else ''} {', '.join(unused)} "
                f"{'are' if len(unused) > 1 else 'is'} not upstream of any fetch "
                f"({', '.join(t.name for t in self.fetches)}); feed tensors that the fetches depend on"
            )
        self._adopt(runtime, compiled)
        self._kinds = dict(zip(compiled.order, compiled.kinds))
        self._position = {n: k for k, n in enumerate(compiled.order)}
        G = runtime.graph.graph
        tensors = runtime.graph.tensors
        # results are zero-copy read-only views, except values that may share a buffer with a
        # variable or a constant of the function (or, edited, an edit's constant): those are copied
        self._copy = {n for n in compiled.order if _may_alias_state(G, tensors[n]) or n in self.edits}
        self._dtypes = {n: tf.as_dtype(tensors[n].dtype) for n in compiled.order}
        position = {name: k for k, name in enumerate(G)}
        runs = {program.canonical_ops[n] for n in compiled.kept if n in program.canonical_ops}
        runs |= {self.signature.tensors[k].op for k in self._used if self.signature.tensors[k].op_type == "Placeholder"}
        self.ops: list[str] = sorted(runs, key=position.__getitem__)

    def __repr__(self) -> str:
        edits = f", {len(self.edits)} edit{'s' if len(self.edits) != 1 else ''}" if self.edits else ""
        return (
            f"<Executor {len(self.fetches)} fetch{'es' if len(self.fetches) != 1 else ''} "
            f"from {', '.join(self.inputs) or 'nothing'}{edits}: {len(self.ops)} ops>"
        )

    def __call__(self, *inputs: Any) -> Results:
        outs = self._outputs(inputs)
        values: dict[str, Any] = {}
        for name, k in self._position.items():
            kinds = self._kinds[name]
            if kinds:
                values[name] = decode(outs[k], kinds, self._dtypes[name])
                continue
            array = np.asarray(outs[k])  # a view of TF's buffer, read-only for good
            values[name] = read_only(array.copy()) if name in self._copy else array
        looped = [key for key, t in zip(self._keys, self.fetches) if "list" in self._kinds[t.name]]
        return Results(((key, values[t.name]) for key, t in zip(self._keys, self.fetches)), per_iteration=looped)


class GradientExecutor(_Runner):
    """The gradient of `sum(target(value of of))` (`target` defaults to the value itself) with
    respect to each entry of `wrt`, as a function of the inputs.

    `wrt` entries are model inputs, tensors outside loop bodies and branches (pre-activations
    inside layers included; gradients flow through loops, branches and nested functions to
    them) and variables (by path, `conv1/kernel`). Called like an `Executor`, it returns
    `{entry: gradient}` keyed as given, each gradient shaped like its entry. Built once (one
    backward pass for all entries); no weight moves.
    """

    def __init__(
        self,
        runtime: Runtime,
        of: Tensor,
        wrt: Sequence[tuple[str, Tensor | str]],
        feeds: Sequence[tuple[str, Tensor]],
        *,
        target: Any = None,
        edits: Sequence[editing.Edit] = (),
    ) -> None:
        self.of = of
        self.wrt: list[str] = [k for k, _ in wrt]
        self.target = target
        self._setup(feeds)
        if of.context:
            raise UnsupportedFetchError(
                f"cannot take the gradient of {of.name!r}: it is computed inside {of.context}, where it has a value "
                "per iteration (or none when the branch does not run); take it of a tensor outside loops and "
                "branches (the loop's or branch's output)"
            )
        if not (tf.as_dtype(of.dtype).is_floating or tf.as_dtype(of.dtype).is_complex) and target is None:
            raise ArgumentError(
                f"cannot differentiate {of.name!r}: it is {of.dtype}; take the gradient of a floating-point tensor"
            )
        _check_edits_matter(runtime.graph, edits, [of])
        compiled = runtime.program.gradient(self.signature.tensors, of, [w for _, w in wrt], target, edits, self.wrt)
        self._adopt(runtime, compiled)

    def __repr__(self) -> str:
        return f"<GradientExecutor d {self.of.name} / d {', '.join(self.wrt)} from {', '.join(self.inputs) or 'nothing'}>"

    def __call__(self, *inputs: Any) -> Results:
        # zero-copy read-only views, as executors' results (a copy of every layer output's
        # gradient would cost a third of the backward pass); a gradient that Grappler reduces to
        # a variable's value stays as it was when the variable is assigned (TensorFlow copies a
        # variable's buffer on write while another tensor shares it; tested)
        outs = self._outputs(inputs)
        return Results((key, read_only(np.asarray(value))) for key, value in zip(self.wrt, outs))


def _check_edits_matter(graph: ModelGraph, edits: Sequence[editing.Edit], fetches: Sequence[Tensor]) -> None:
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
        if not any(c in needed for c in consumers):
            raise DisconnectedError(
                f"the edit of {t.name!r} changes nothing the fetches ({', '.join(sorted(wanted))}) depend on: "
                "edit a tensor upstream of them, or fetch one downstream of the edit"
            )


# ops whose output may share its input's buffer (TensorFlow forwards instead of copying)
_FORWARDING = {"Identity", "IdentityN", "Reshape", "Squeeze", "ExpandDims", "StopGradient",
               "PreventGradient", "EnsureShape", "Bitcast", "Snapshot", "CheckNumerics"}


def _may_alias_state(G: Any, t: Tensor) -> bool:
    """Whether `t` may be a view of a variable's or a constant's buffer."""
    tensors: dict[str, Tensor] = G.graph["tensors"]
    seen = set()
    while t.name not in seen:
        seen.add(t.name)
        if t.op_type in ("ReadVariableOp", "Const", "ResourceGather") or t.dtype == "resource":
            return True
        op = G.nodes[t.op]["op"]
        if t.op_type not in _FORWARDING and not (t.op_type == "Placeholder" and op.inputs):
            return False
        if not op.inputs:
            return False
        t = tensors[op.inputs[t.index if t.op_type == "IdentityN" else 0]]
    return False
