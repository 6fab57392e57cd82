"""The executable form of a traced function, and the pruned functions compiled from it.

A `Program` holds the traced function once per scope with every `PartitionedCall` inlined, its
weight-update ops removed, and its captured variable handles bound to the model's own variables
(shared, never copied). `Program.compiled(feeds, fetches)` is that graph pruned to the ops the
fetches need (`prune.select`), fed from model inputs or intermediate tensors, with values inside
loops, branches and kept calls exposed (`expose`), compiled once per feed list and fetch set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.backend.mirror import Mirrored
from graphscope.backend.trace import Traced
from graphscope.errors import ArgumentError, DisconnectedError, UnsupportedFetchError
from graphscope.ir.records import Tensor
from graphscope.runtime import expose, prune
from graphscope.runtime.cache import LRU
from graphscope.runtime.locate import Locator

__all__ = ["Compiled", "Program"]


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A compiled function: called with the feeds at `used` (positions in the feed list), it
    returns the fetches named in `order`; `kinds[k]` are the wrappers fetch k's value comes in
    (`expose.Exposed.kinds`; empty for a plain tensor); `kept` are the executable names of the
    top-level ops it holds."""

    function: Any
    order: list[str]
    kinds: list[tuple[str, ...]]
    kept: list[str]
    used: list[int]


class Program:
    """A traced function made executable once: inlined, without weight updates, its variables
    bound to the model's own."""

    def __init__(self, traced: Traced, mirrored: Mirrored) -> None:
        cf = traced.function
        self.tensors: dict[str, Tensor] = mirrored.graph.tensors
        graph_def = _tf.inline_calls(cf)
        self.captures = {internal.op.name: external for external, internal in cf.graph.captures}
        self._bound = set(self.captures)  # placeholders bound to variables, never model inputs
        variable_names = {id(v.handle): v.name for v in cf.graph.variables if hasattr(v, "handle")}
        rng = {
            internal.op.name
            for external, internal in cf.graph.captures
            if _tf.RNG_STATE_VARIABLE.search(variable_names.get(id(external), ""))
        }
        self.graph_def = prune.without_weight_updates(graph_def, keep=rng)
        self.nodes = {n.name: n for n in self.graph_def.node}
        # random-generator state updates, by the state variable's placeholder: an executor that
        # reads a generator's state also advances it, so each call draws new numbers (as Keras)
        self.rng_updates: dict[str, list[str]] = {}
        for node in self.graph_def.node:
            if prune.WRITE_OPS.fullmatch(node.op) and node.input:
                source = prune.resource_source(self.nodes, node.input[0])
                if source in rng:
                    self.rng_updates.setdefault(source, []).append(node.name)
        self._compiled = LRU()
        self.library = expose.library_of(self.graph_def)
        self.locator = Locator(self.nodes, self.library, self.tensors, mirrored.sites)
        # executable op name -> canonical op name, for top-level ops and inlined calls' ops
        self.canonical_ops: dict[str, str] = {}
        for t in self.tensors.values():
            raw = t.raw_name.rpartition(":")[0]
            path = mirrored.sites[t.name].path
            if t.index == 0 and raw in self.nodes and all(attr == "f" for _, attr in path):
                self.canonical_ops[raw] = t.op

    def compiled(self, feeds: Sequence[Tensor], fetches: Sequence[Tensor]) -> Compiled:
        """The compiled function for this feed list and fetch *set*, built once and reused (the
        most recently used `cache.CACHE_SIZE` are kept).

        Raises:
            DisconnectedError: a fetch needs a model input that is not fed.
            UnsupportedFetchError: a fetch or feed TensorFlow's optimizer removed, or a feed
                inside a function TensorFlow does not inline.
        """
        order = sorted({t.name for t in fetches})
        key = (tuple(t.name for t in feeds), tuple(order))
        cached = self._compiled.get(key)
        if cached is None:
            cached = self._compile(list(feeds), [self.tensors[n] for n in order])
            self._compiled.put(key, cached)
        return cached

    def _compile(self, feeds: list[Tensor], fetches: list[Tensor]) -> Compiled:
        # executable tensor name -> the placeholder that replaces it, in the feeds' order
        feed_names: dict[str, str] = {}
        for k, t in enumerate(feeds):
            where = self.locator.locate(t)
            if not isinstance(where, str):
                raise UnsupportedFetchError(
                    f"cannot feed {t.name!r}: it is computed inside {t.function[-1]}, a function "
                    "TensorFlow does not inline (an XLA helper); feed its input or its result instead"
                )
            where = prune.normal(where)
            if where in feed_names:
                other = feeds[list(feed_names).index(where)].name
                raise ArgumentError(
                    f"feeds {other!r} and {t.name!r} hold the same value (one is the other's alias "
                    "in the executable graph): feed one of them"
                )
            feed_names[where] = f"graphscope_feed_{k}"
        located = [self.locator.locate(t) for t in fetches]
        targets = [w for w in located if isinstance(w, expose.Target)]
        nodes, functions = self.nodes, []
        exposed = iter(())
        if targets:
            try:
                patch = expose.expose(self.nodes, self.library, targets)
            except LookupError as e:
                raise UnsupportedFetchError(
                    f"cannot reach inside the loops/branches for {', '.join(t.name for t in fetches)}: {e}; "
                    "fetch the loop's or branch's own outputs instead (and please report this)"
                ) from None
            nodes = {**self.nodes, **patch.nodes}
            functions = patch.functions
            exposed = iter(patch.exposed)
        fetch_names, kinds = [], []
        for where in located:
            if isinstance(where, str):
                fetch_names.append(prune.normal(where))
                kinds.append(())
            else:
                e = next(exposed)
                fetch_names.append(e.tensor)
                kinds.append(e.kinds)
        selected = prune.select(nodes, feed_names, fetch_names, captures=self._bound)
        if selected.missing:
            self._disconnected(selected.missing, dict(zip(fetch_names, fetches)))
        kept = selected.kept
        updates = [u for state, ops in self.rng_updates.items() if state in kept for u in ops]
        if updates:
            kept = prune.select(nodes, feed_names, fetch_names + updates, captures=self._bound).kept
        # the function takes the feeds the fetches reach, in the feed list's order
        fed = [(k, where, placeholder) for k, (where, placeholder) in enumerate(feed_names.items())
               if where in selected.reached]
        used = [k for k, _, _ in fed]
        specs = [feeds[k] for k in used]
        out = prune.graph_def(self.graph_def, nodes, functions,
                              [(where, placeholder, feeds[k]) for k, where, placeholder in fed], kept)
        captures = {f"{name}:0": handle for name, handle in self.captures.items() if name in kept}
        inputs = [f"{placeholder}:0" for _, _, placeholder in fed]
        outputs = [f"{feed_names[f]}:0" if f in feed_names else f for f in fetch_names]
        function = _function(out, inputs, outputs, updates, captures, specs)
        top = [n.name for n in self.graph_def.node if n.name in kept]
        return Compiled(function, [t.name for t in fetches], kinds, top, used)

    def _disconnected(self, missing: dict[str, list[str]], fetches: dict[str, Tensor]) -> None:
        lines = ", ".join(
            f"{self.canonical_ops.get(name, name)}:0 (needed by {', '.join(dict.fromkeys(fetches[f].name for f in needed))})"
            for name, needed in missing.items()
        )
        raise DisconnectedError(
            f"the fetches need input{'s' if len(missing) > 1 else ''} that the feeds do not give: "
            f"{lines}; add {'them' if len(missing) > 1 else 'it'} to feeds=[...], or feed a tensor "
            "between it and the fetches"
        )


def _function(graph: Any, inputs: list[str], outputs: list[str], updates: list[str],
              captures: dict[str, Any], specs: list[Tensor]) -> _tf.FlatFunction:
    pending = [graph]  # the GraphDef is needed while building only; the closure outlives it

    def run(*args: tf.Tensor) -> list[tf.Tensor]:
        # One C++ import into the function being built. The traced function's own capture
        # placeholders are imported with it and bound to the model's variable handles, so the
        # weights are the model's own (binding is 3x cheaper than capturing each handle through
        # input_map, which makes a placeholder per handle in Python). The GraphDef keeps the
        # ordering edges of the traced function; only the random-generator updates, which no
        # fetch depends on, are tied to the outputs here so that they run.
        values = tf.graph_util.import_graph_def(
            pending[0],
            input_map=dict(zip(inputs, args)),
            return_elements=outputs + updates + list(captures),
            name="",
        )
        returned = len(outputs) + len(updates)
        values, internal = values[:returned], values[returned:]
        for handle, placeholder in zip(captures.values(), internal):
            _tf.bind_capture(handle, placeholder)
        if not updates:
            return values
        with tf.control_dependencies(values[len(outputs) :]):
            return [tf.identity(v) for v in values[: len(outputs)]]

    # wrap_function builds the function without tf.function's automatic-control-dependency
    # pass, which would cost a third of the build and add nothing the GraphDef lacks
    signature = [tf.TensorSpec(t.shape, t.dtype) for t in specs]
    function = _tf.FlatFunction(tf.compat.v1.wrap_function(run, signature))
    pending.clear()  # and the traced graph goes with the wrapper: a third of the memory
    return function
