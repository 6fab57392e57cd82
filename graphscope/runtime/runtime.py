"""The runtime of one scope: the `Program` compiled from the traced function, the executors
built so far (cached by fetches, feeds and edits), and the one way names become the tensors to
fetch, feed and edit (`ModelGraph.resolve_pairs`, `edit.resolve`, `gradients.resolve_wrt`)."""

from __future__ import annotations

import threading
import warnings
from typing import Any

from graphscope.backend.mirror import Mirrored
from graphscope.backend.trace import Traced
from graphscope.errors import ArgumentError, TensorNotFoundError, UnusedTensorWarning, outside_stacklevel
from graphscope.ir.graph import ModelGraph
from graphscope.ir.records import Results, Tensor
from graphscope.runtime import edit as editing
from graphscope.runtime.cache import LRU, Identity
from graphscope.runtime.compile import Program
from graphscope.runtime.executor import Executor
from graphscope.runtime.gradients import BoundVariables, GradientExecutor, bound_variables, resolve_wrt
from graphscope.runtime.inputs import call_once

__all__ = ["Runtime"]


class Runtime:
    """Executors for one traced function, built from one `Program` (made on first use)."""

    def __init__(self, traced: Traced, mirrored: Mirrored) -> None:
        self.traced = traced
        self.mirrored = mirrored
        self.graph: ModelGraph = mirrored.graph
        self._program: Program | None = None
        self._executors = LRU()
        self._lock = threading.Lock()
        self._variables: BoundVariables | None = None

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
        edit_list = self._edits(edits)
        key = (tuple((k, t.name) for k, t in fetch_pairs), tuple((k, t.name) for k, t in feed_pairs),
               tuple(e.key for e in edit_list))
        executor = self._executors.get(key)
        if executor is None:
            self._note_unused([t for _, t in fetch_pairs])
            executor = Executor(self, fetch_pairs, feed_pairs, explicit_feeds=feeds is not None, edits=edit_list,
                                arguments=self._arguments(feeds))
            self._executors.put(key, executor)
        return executor

    def _note_unused(self, fetches: list[Tensor]) -> None:
        """Warn, once per executor built, of fetches no output of the model depends on."""
        dead = self.graph.unused
        names = [t.name for t in fetches if t.op in dead]
        if names:
            used = editing.counterparts(self.graph, self.graph.tensors[names[0]])
            warnings.warn(
                f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}: no output of the model depends on "
                f"{'it' if len(names) == 1 else 'them'} (computed but never used, like the call Keras makes of an "
                "RNN's cell outside its loop only to learn shapes); the values are real, but not part of what the "
                "model computes" + (f"; the model uses {', '.join(used)}" if used else ""),
                UnusedTensorWarning,
                stacklevel=outside_stacklevel(),
            )


    def run(self, fetches: Any, inputs: Any, *, feeds: Any = None, edits: Any = None) -> Results:
        """One-shot `executor(fetches, feeds=feeds, edits=edits)(inputs)`; a list or tuple holds
        positional inputs (for one input: see `InputSignature.bind`)."""
        return call_once(self.executor(fetches, feeds=feeds, edits=edits), inputs)

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
        entries = resolve_wrt(self, wrt)
        feed_pairs = self._feed_pairs(feeds)
        edit_list = self._edits(edits)
        key = ("gradient", of_tensor.name, tuple((k, w if isinstance(w, str) else w.name) for k, w in entries),
               Identity(target), tuple((k, t.name) for k, t in feed_pairs), tuple(e.key for e in edit_list))
        executor = self._executors.get(key)
        if executor is None:
            self._note_unused([of_tensor])
            executor = GradientExecutor(self, of_tensor, entries, feed_pairs, target=target, edits=edit_list,
                                        arguments=self._arguments(feeds))
            self._executors.put(key, executor)
        return executor

    def gradients(self, of: Any, wrt: Any, inputs: Any, *, target: Any = None, feeds: Any = None,
                  edits: Any = None) -> Results:
        """One-shot `gradient_executor(of, wrt, ...)(inputs)`."""
        return call_once(self.gradient_executor(of, wrt, target=target, feeds=feeds, edits=edits), inputs)

    def _edits(self, edits: Any) -> list[editing.Edit]:
        """`editing.resolve`, with the way to change a weight where a key is a variable's path."""
        try:
            return editing.resolve(self.graph, edits)
        except TensorNotFoundError:
            paths = [k for k in (edits or {}) if isinstance(k, str) and k.removesuffix(":0") in self.variables]
            if not paths:
                raise
            bound = {f"{p}:0" for p in self.variables[paths[0].removesuffix(":0")]}
            reads = [t.name for t in self.graph.tensors.values() if t.op_type == "ReadVariableOp"
                     and any(self.graph.tensors[i].raw_name in bound for i in self.graph.op(t.op).inputs)]
            raise TensorNotFoundError(
                f"{paths[0]!r} is a variable, and edits replace values the model computes: edit the value "
                f"that reads it ({', '.join(reads[:3]) or 'its ReadVariableOp'}), or assign the variable "
                "itself (and put it back after)"
            ) from None

    def _arguments(self, feeds: Any) -> Any:
        """The arguments the model's inputs are fed in (`Traced.arguments`), when they are fed."""
        arguments = getattr(self.traced, "arguments", None)
        if feeds is not None or arguments is None or len(self.graph.inputs) != len(self.traced.input_names):
            return None
        return arguments

    def _feed_pairs(self, feeds: Any) -> list[tuple[str, Tensor]]:
        if feeds is None:
            return list(zip(self.graph.input_names, self.graph.inputs))
        return self.graph.resolve_pairs(feeds, feeding=True)

    @property
    def variables(self) -> BoundVariables:
        """Each variable the traced function reads, by its Keras path or TensorFlow name
        (`conv1/kernel`), with the names of the executable graph's placeholders its handle is
        bound to (found once)."""
        if self._variables is None:
            self._variables = bound_variables(self.traced, self.program)
        return self._variables
