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
from graphscope.errors import DisconnectedError, ExecutionError, InputError, TensorNotFoundError, UnsupportedFetchError, suggestion
from graphscope.ir.graph import ModelGraph
from graphscope.ir.records import Results, Tensor, shape_text
from graphscope.runtime.cache import LRU
from graphscope.runtime.compile import Program
from graphscope.runtime.expose import decode, read_only

__all__ = ["Executor", "InputSignature", "Runtime"]


class Runtime:
    """Executors for one traced function, built from one `Program` (made on first use)."""

    def __init__(self, traced: Traced, mirrored: Mirrored) -> None:
        self.traced = traced
        self.mirrored = mirrored
        self.graph: ModelGraph = mirrored.graph
        self._program: Program | None = None
        self._executors = LRU()
        self._lock = threading.Lock()

    @property
    def program(self) -> Program:
        """The inlined, executable form of the traced function (built once, on first use)."""
        with self._lock:
            if self._program is None:
                self._program = Program(self.traced, self.mirrored)
            return self._program

    def executor(self, fetches: Any, *, feeds: Any = None) -> Executor:
        """A pruned executor for `fetches` (names, Tensors, a Selection or a Layer), fed the
        model's inputs, or exactly `feeds` when given. Cached: the same fetches and feeds return
        the same executor; the same fetch *set* reuses the compiled function."""
        fetch_pairs = self.graph.resolve_pairs(fetches)
        if not fetch_pairs:
            raise TensorNotFoundError("nothing to fetch: give at least one tensor name")
        if feeds is None:
            feed_pairs = list(zip(self.graph.input_names, self.graph.inputs))
        else:
            feed_pairs = self.graph.resolve_pairs(feeds)
        key = (tuple((k, t.name) for k, t in fetch_pairs), tuple((k, t.name) for k, t in feed_pairs))
        executor = self._executors.get(key)
        if executor is None:
            executor = Executor(self, fetch_pairs, feed_pairs, explicit_feeds=feeds is not None)
            self._executors.put(key, executor)
        return executor

    def run(self, fetches: Any, inputs: Any, *, feeds: Any = None) -> Results:
        """One-shot `executor(fetches, feeds=feeds)(inputs)`; a tuple holds positional inputs."""
        executor = self.executor(fetches, feeds=feeds)
        return executor(*inputs) if isinstance(inputs, tuple) else executor(inputs)


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

        Raises:
            InputError: the wrong number of inputs, or a name the executor does not take.
        """
        n = len(self.names)
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            return self._by_name(inputs[0])
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])  # a list/tuple holds the positional inputs
        if len(inputs) != n:
            raise InputError(
                f"this executor takes {n} input{'s' if n != 1 else ''} ({', '.join(self.names)}), "
                f"got {len(inputs)}: pass "
                + ("one array" if n == 1 else "a list of arrays in that order, or a dict by name")
            )
        return list(inputs)

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
        expected = tf.as_dtype(spec.dtype)
        if isinstance(value, tf.Tensor):
            value = value.numpy()
        array = np.asarray(value)
        if array.dtype.kind not in "biufc":
            raise InputError(
                f"input {name!r} must be a numeric array ({expected.name}), got an array of dtype "
                f"{array.dtype}"
            )
        target = np.dtype(expected.as_numpy_dtype)
        if array.dtype != target:
            castable = np.can_cast(array.dtype, target, casting="same_kind") or (
                array.dtype.kind in "biu" and target.kind in "fc"
            )
            if not castable:
                raise InputError(
                    f"input {name!r} expects {expected.name}, got {array.dtype} "
                    "(which would lose information); convert it first"
                )
            array = array.astype(target)
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



class Executor:
    """Runs a pruned subgraph: the ops needed for `fetches`, fed `inputs`.

    Call it with one array (one input), a list/tuple (positional inputs) or a dict (by input or
    feed name); it returns `{fetch: numpy.ndarray}` keyed the way the fetches were given, all
    computed in one execution. Arrays are read-only: zero-copy views of TensorFlow's buffers, or
    copies where a value may share a buffer with a variable or constant (never a live variable).
    Calls are thread-safe (TensorFlow functions may be called from several threads at once).
    """

    def __init__(
        self,
        runtime: Runtime,
        fetches: Sequence[tuple[str, Tensor]],
        feeds: Sequence[tuple[str, Tensor]],
        *,
        explicit_feeds: bool,
    ) -> None:
        self._keys = [k for k, _ in fetches]
        self.fetches: list[Tensor] = [t for _, t in fetches]
        self.signature = InputSignature(feeds)
        for t in self.fetches:
            if t.is_handle:
                raise UnsupportedFetchError(
                    f"cannot fetch {t.name!r}: it is a {t.dtype} tensor (a handle, not a value); "
                    "fetch a tensor that reads it instead, e.g. a ReadVariableOp"
                )
        for t in self.signature.tensors:
            if t.context:
                raise UnsupportedFetchError(
                    f"cannot feed {t.name!r}: it is computed inside {t.context}, where it has one "
                    "value per iteration or none when the branch does not run; feed a tensor "
                    "outside loops and branches"
                )
        program = runtime.program
        compiled = program.compiled(self.signature.tensors, self.fetches)
        if explicit_feeds and len(compiled.used) < len(self.signature):
            unused = [t.name for k, t in enumerate(self.signature.tensors) if k not in compiled.used]
            raise DisconnectedError(
                f"feed{'s' if len(unused) > 1 else ''} {', '.join(unused)} "
                f"{'are' if len(unused) > 1 else 'is'} not upstream of any fetch "
                f"({', '.join(t.name for t in self.fetches)}); feed tensors that the fetches depend on"
            )
        self._function = compiled.function
        self._used = compiled.used
        self._kinds = dict(zip(compiled.order, compiled.kinds))
        self._position = {n: k for k, n in enumerate(compiled.order)}
        G = runtime.graph.graph
        tensors = runtime.graph.tensors
        # results are zero-copy read-only views, except values that may share a buffer with a
        # variable or a constant of the function: those are copied
        self._copy = {n for n in compiled.order if _may_alias_state(G, tensors[n])}
        self._dtypes = {n: tf.as_dtype(tensors[n].dtype) for n in compiled.order}
        position = {name: k for k, name in enumerate(G)}
        runs = {program.canonical_ops[n] for n in compiled.kept if n in program.canonical_ops}
        runs |= {self.signature.tensors[k].op for k in self._used if self.signature.tensors[k].op_type == "Placeholder"}
        self.ops: list[str] = sorted(runs, key=position.__getitem__)
        self._canonical_ops = program.canonical_ops

    @property
    def inputs(self) -> list[str]:
        """The names this executor is fed by, in order."""
        return list(self.signature.names)

    def __repr__(self) -> str:
        return (
            f"<Executor {len(self.fetches)} fetch{'es' if len(self.fetches) != 1 else ''} "
            f"from {', '.join(self.inputs) or 'nothing'}: {len(self.ops)} ops>"
        )

    def __call__(self, *inputs: Any) -> Results:
        arrays = self.signature.bind(*inputs)
        fed = [self.signature.convert(k, arrays[k]) for k in self._used]
        try:
            outs = self._function(*fed)
        except tf.errors.OpError as e:
            raise ExecutionError(self._explain(e)) from None
        values: dict[str, Any] = {}
        for name, k in self._position.items():
            kinds = self._kinds[name]
            if kinds:
                values[name] = decode(outs[k], kinds, self._dtypes[name])
                continue
            array = np.asarray(outs[k])  # a view of TF's buffer, read-only for good
            values[name] = read_only(array.copy()) if name in self._copy else array
        return Results((key, values[t.name]) for key, t in zip(self._keys, self.fetches))

    def _explain(self, e: tf.errors.OpError) -> str:
        """One line: the op that failed (canonical name) and TensorFlow's own reason."""
        candidates = _tf.failed_op_names(e)
        known = self._canonical_ops
        # names may carry the prefixes of the functions they were inlined into: try each suffix
        suffixes = [c.split("/")[k:] for c in candidates for k in range(c.count("/") + 1)]
        where = next((known["/".join(p)] for p in suffixes if "/".join(p) in known), None)
        where = where or next(iter(candidates), None)
        reason = _tf.failure_reason(e)
        return f"TensorFlow failed{f' in op {where!r}' if where else ''}: {reason}"


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
