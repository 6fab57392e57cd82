"""Executors: a pruned subgraph run on numpy inputs, returning numpy arrays (`Executor`), and
what executors and gradient executors share (`Runner`: an input signature, a compiled
function, TensorFlow's failures turned into one line naming the op). Every check (fetchable
tensors, inputs that are needed but not fed, feeds that reach nothing, edits that change
nothing fetched) happens when an executor is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.errors import DisconnectedError, ExecutionError, UnsupportedFetchError
from graphscope.ir.records import Results, Tensor
from graphscope.runtime import edit as editing
from graphscope.runtime.alias import may_alias_state
from graphscope.runtime.expose import decode, read_only
from graphscope.runtime.inputs import InputSignature

if TYPE_CHECKING:
    from graphscope.runtime.compile import Compiled
    from graphscope.runtime.runtime import Runtime

__all__ = ["Executor", "Runner"]


class Runner:
    """What executors and gradient executors share: an input signature, a compiled function,
    and turning TensorFlow's failures into one line naming the op."""

    signature: InputSignature
    _function: Any
    _used: list[int]
    _canonical_ops: dict[str, str]
    _edit_ops: dict[str, str]

    def _setup(self, feeds: Sequence[tuple[str, Tensor]], arguments: Any = None) -> None:
        self.signature = InputSignature(feeds, arguments)
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


class Executor(Runner):
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
        arguments: Any = None,
    ) -> None:
        self._keys = [k for k, _ in fetches]
        self.fetches: list[Tensor] = [t for _, t in fetches]
        self.edits: dict[str, Any] = {e.tensor.name: e.array if e.array is not None else e.fn for e in edits}
        self._setup(feeds, arguments)  # fed the model's inputs: also in the nests it takes them
        for t in self.fetches:
            if t.is_handle:
                raise UnsupportedFetchError(
                    f"cannot fetch {t.name!r}: it is a {t.dtype} tensor (a handle, not a value); "
                    "fetch a tensor that reads it instead, e.g. a ReadVariableOp"
                )
        editing.check_relevant(runtime.graph, edits, self.fetches)
        compiled = runtime.program.compiled(self.signature.tensors, self.fetches, edits)
        if explicit_feeds:
            self._check_feeds_used(compiled)
        self._adopt(runtime, compiled)
        self._kinds = dict(zip(compiled.order, compiled.kinds))
        self._position = {n: k for k, n in enumerate(compiled.order)}
        G = runtime.graph.graph
        tensors = runtime.graph.tensors
        # results are zero-copy read-only views, except values that may share a buffer with a
        # variable or a constant of the function (or, edited, an edit's constant): those are copied
        self._copy = {n for n in compiled.order if may_alias_state(G, tensors[n]) or n in self.edits}
        self._dtypes = {n: tf.as_dtype(tensors[n].dtype) for n in compiled.order}
        self.ops: list[str] = self._ops(runtime, compiled)

    def _check_feeds_used(self, compiled: Compiled) -> None:
        """Refuse feeds given explicitly that no fetch depends on."""
        if len(compiled.used) < len(self.signature):
            unused = [t.name for k, t in enumerate(self.signature.tensors) if k not in compiled.used]
            raise DisconnectedError(
                f"feed{'s' if len(unused) > 1 else ''} {', '.join(unused)} "
                f"{'are' if len(unused) > 1 else 'is'} not upstream of any fetch "
                f"({', '.join(t.name for t in self.fetches)}); feed tensors that the fetches depend on"
            )

    def _ops(self, runtime: Runtime, compiled: Compiled) -> list[str]:
        """The canonical names of the ops this executor runs, in graph order (the fed
        placeholders it uses included)."""
        program = runtime.program
        position = {name: k for k, name in enumerate(runtime.graph.graph)}
        runs = {program.canonical_ops[n] for n in compiled.kept if n in program.canonical_ops}
        runs |= {self.signature.tensors[k].op for k in self._used if self.signature.tensors[k].op_type == "Placeholder"}
        return sorted(runs, key=position.__getitem__)

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
