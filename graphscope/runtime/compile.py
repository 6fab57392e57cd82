"""The executable form of a traced function, and the pruned functions compiled from it.

A `Program` holds the traced function once per scope with every `PartitionedCall` inlined, no
write left on a model variable (`writes`: dropped, or redirected to a private copy), and its
captured variable handles bound to the model's own variables (shared, never copied).
`Program.compiled(feeds, fetches)` is that graph pruned to the ops the fetches need
(`prune.select`), fed from model inputs or intermediate tensors, with values inside loops,
branches and kept calls exposed (`expose`), compiled once per feed list and fetch set.
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
from graphscope.runtime import edit as editing
from graphscope.runtime import expose, prune, writes
from graphscope.runtime.cache import LRU, Identity
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
    edit_ops: dict[str, str] = dataclasses.field(default_factory=dict)  # spliced op prefix -> edited tensor


class Program:
    """A traced function made executable once: inlined, writing no model variable, its variables
    bound to the model's own."""

    def __init__(self, traced: Traced, mirrored: Mirrored) -> None:
        cf = traced.function
        self.tensors: dict[str, Tensor] = mirrored.graph.tensors
        graph_def = expose.own_function_names(_tf.inline_calls(cf))
        self.captures = {internal.op.name: external for external, internal in cf.graph.captures}
        self._bound = set(self.captures)  # placeholders bound to variables, never model inputs
        variable_names = {id(v.handle): v.name for v in cf.graph.variables if hasattr(v, "handle")}
        rng = {
            internal.op.name
            for external, internal in cf.graph.captures
            if _tf.RNG_STATE_VARIABLE.search(variable_names.get(id(external), ""))
        }
        variables = {name: external for name, external in self.captures.items() if external.dtype == tf.resource}
        isolated = writes.isolate(graph_def, variables, keep=rng)
        self.graph_def = isolated.graph_def
        # placeholder -> the handle of the private copy its variable is run against (a variable
        # the call writes and reads back)
        self.private = isolated.private
        self.nodes = {n.name: n for n in self.graph_def.node}
        # random-generator state updates, by the state variable's placeholder: an executor that
        # reads a generator's state also advances it, so each call draws new numbers (as Keras)
        self.rng_updates: dict[str, list[str]] = {}
        for node in self.graph_def.node:
            if writes.WRITE_OPS.fullmatch(node.op) and node.input:
                source = prune.resource_source(self.nodes, node.input[0])
                if source in rng:
                    self.rng_updates.setdefault(source, []).append(node.name)
        # what the function's results wait for (asserts, prints: control inputs of the Identity
        # copies TensorFlow makes of them), by the tensor each copies: fetching an output's
        # computed tensor (what its key means) runs the model's checks, as the output does
        self.output_checks: dict[str, list[str]] = {}
        for out in cf.graph.outputs:
            ref = prune.normal(out.name)
            controls: list[str] = []
            while (node := self.nodes.get(ref.partition(":")[0])) is not None and node.op in ("Identity", "IdentityN"):
                controls += [i[1:] for i in node.input if i.startswith("^")]
                data = [i for i in node.input if not i.startswith("^")]
                index = int(ref.rpartition(":")[2]) if node.op == "IdentityN" else 0
                if index >= len(data):
                    break
                ref = prune.normal(data[index])
                self.output_checks.setdefault(ref, []).extend(controls)
        self._compiled = LRU()
        # the custom gradients (swish) of the traced graph, made to work on the imported copies
        self.custom_gradients = _tf.CustomGradients(cf.graph)
        self.library = expose.library_of(self.graph_def)
        self.locator = Locator(self.nodes, self.library, self.tensors, mirrored.sites)
        # executable op name -> canonical op name, for top-level ops and inlined calls' ops
        self.canonical_ops: dict[str, str] = {}
        for t in self.tensors.values():
            raw = t.raw_name.rpartition(":")[0]
            path = mirrored.sites[t.name].path
            if t.index == 0 and raw in self.nodes and all(attr == "f" for _, attr in path):
                self.canonical_ops[raw] = t.op

    def compiled(self, feeds: Sequence[Tensor], fetches: Sequence[Tensor],
                 edits: Sequence[editing.Edit] = ()) -> Compiled:
        """The compiled function for this feed list, fetch *set* and edits, built once and
        reused (the most recently used `cache.CACHE_SIZE` are kept).

        Raises:
            DisconnectedError: a fetch needs a model input that is not fed, or an edit changes
                nothing a fetch depends on.
            UnsupportedFetchError: a fetch or feed TensorFlow's optimizer removed, or a feed
                inside a function TensorFlow does not inline.
            InputError: an edit that cannot replace its tensor.
        """
        order = sorted({t.name for t in fetches})
        key = (tuple(t.name for t in feeds), tuple(order), tuple(e.key for e in edits))
        cached = self._compiled.get(key)
        if cached is None:
            cached = self._compile(list(feeds), [self.tensors[n] for n in order], list(edits))
            self._compiled.put(key, cached)
        return cached

    def gradient(self, feeds: Sequence[Tensor], of: Tensor, wrt: Sequence[Tensor | str],
                 target: Any, edits: Sequence[editing.Edit] = (), labels: Sequence[str] | None = None) -> Compiled:
        """A compiled function of the feeds that returns the gradient of
        `sum(target(value of of))` with respect to each entry of `wrt`: a tensor outside loops
        and branches (fed or computed), or the name of a placeholder bound to a variable
        (`captures`; several for one variable are given as one entry joined by spaces, and
        their gradients are added); `labels` name the entries in errors. Cached like
        `compiled`, by `target` too.

        Raises:
            DisconnectedError: no gradient flows from `of` to some entry of `wrt`.
        """
        key = ("gradient", tuple(t.name for t in feeds), of.name,
               tuple(w if isinstance(w, str) else w.name for w in wrt), Identity(target), tuple(e.key for e in edits))
        cached = self._compiled.get(key)
        if cached is None:
            names = list(labels) if labels is not None else [w if isinstance(w, str) else w.name for w in wrt]
            cached = self._compile(list(feeds), [of], list(edits), gradient=(list(wrt), target, names))
            self._compiled.put(key, cached)
        return cached

    def _compile(self, feeds: list[Tensor], fetches: list[Tensor], edits: list[editing.Edit],
                 gradient: tuple[list[Tensor | str], Any, list[str]] | None = None) -> Compiled:
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
        nodes, library, functions = self.nodes, self.library, []
        edited: dict[Any, str | expose.Target] = {}  # where an edited value was -> where it is now
        patch = None
        if edits:
            located_edits = []
            for e in edits:
                where = self.locator.locate(e.tensor)
                where = prune.normal(where) if isinstance(where, str) else where
                if any(w == where for _, w in located_edits):
                    other = next(o for o, w in located_edits if w == where)
                    raise ArgumentError(
                        f"edits of {other.tensor.name!r} and {e.tensor.name!r} replace the same value (one is the "
                        "other's alias in the executable graph): edit one of them"
                    )
                located_edits.append((e, where))
            patch = editing.apply(self.nodes, self.library, located_edits)
            nodes = {**self.nodes, **patch.nodes}
            library = patch.library
            functions = list(patch.functions)
            edited = {where: patch.outputs[e.tensor.name] for e, where in located_edits}
        wrt_tensors = [w for w in (gradient[0] if gradient else []) if isinstance(w, Tensor)]
        located = []
        for t in [*fetches, *wrt_tensors]:
            where = self.locator.locate(t)
            where = prune.normal(where) if isinstance(where, str) else where
            located.append(edited.get(where, where))
        for t, where in zip(wrt_tensors, located[len(fetches):]):
            if not isinstance(where, str):
                raise UnsupportedFetchError(
                    f"cannot take a gradient with respect to {t.name!r}: it is computed inside "
                    f"{t.context or t.function[-1]}, where it has a value per iteration (or per call); take it with "
                    "respect to a tensor outside loops and branches (the loop's input or output)"
                )
        targets = [w for w in located if isinstance(w, expose.Target)]
        exposed = iter(())
        if targets:
            try:
                exposing = expose.expose(nodes, library, targets)
            except LookupError as e:
                raise UnsupportedFetchError(
                    f"cannot reach inside the loops/branches for {', '.join(t.name for t in fetches)}: {e}; "
                    "fetch the loop's or branch's own outputs instead (and please report this)"
                ) from None
            nodes = {**nodes, **exposing.nodes}
            functions += exposing.functions
            exposed = iter(exposing.exposed)
        fetch_names, kinds = [], []
        for where in located:
            if isinstance(where, str):
                fetch_names.append(where)
                kinds.append(())
            else:
                e = next(exposed)
                fetch_names.append(e.tensor)
                kinds.append(e.kinds)
        wanted = fetch_names[: len(fetches)]  # the gradient's forward pass needs `of` alone
        selected = prune.select(nodes, feed_names, wanted, captures=self._bound)
        if selected.missing:
            self._disconnected(selected.missing, dict(zip(wanted, fetches)))
        kept = selected.kept
        if patch is not None:
            for e in edits:
                if patch.anchors[e.tensor.name] not in kept:
                    raise DisconnectedError(
                        f"the edit of {e.tensor.name!r} changes nothing the fetches "
                        f"({', '.join(t.name for t in fetches)}) depend on"
                        + (" from these feeds" if feeds and len(feeds) else "")
                        + ": edit a tensor upstream of them, or fetch one downstream of the edit"
                    )
        reached = selected.reached
        checks = [c for f in wanted for c in self.output_checks.get(f, ())]
        if checks:
            extra = prune.select(nodes, feed_names, wanted + checks, captures=self._bound)
            kept, reached = extra.kept, reached | extra.reached
        updates = [u for state, ops in self.rng_updates.items() if state in kept for u in ops]
        if updates:
            kept = prune.select(nodes, feed_names, wanted + checks + updates, captures=self._bound).kept
        # the function takes the feeds the fetches reach, in the feed list's order
        fed = [(k, where, placeholder) for k, (where, placeholder) in enumerate(feed_names.items())
               if where in reached]
        used = [k for k, _, _ in fed]
        specs = [feeds[k] for k in used]
        graph = prune.graph_def(self.graph_def, nodes, functions,
                                [(where, placeholder, feeds[k]) for k, where, placeholder in fed], kept)
        captures = {f"{name}:0": handle for name, handle in self.captures.items() if name in kept}
        inputs = [f"{placeholder}:0" for _, _, placeholder in fed]
        then = None
        if gradient is None:
            outputs = [f"{feed_names[f]}:0" if f in feed_names else f for f in fetch_names]
        else:
            outputs, then = self._gradient(fetches[0], gradient, fetch_names, feed_names, fed, captures, kept)
        ties = updates + [c for c in dict.fromkeys(checks) if c in kept]  # run though no fetch needs them
        function = _function(graph, inputs, outputs, ties, captures, specs, then)
        top = [n.name for n in self.graph_def.node if n.name in kept]
        return Compiled(function, [t.name for t in fetches], kinds, top, used,
                        patch.prefixes if patch is not None else {})

    def _gradient(self, of: Tensor, gradient: tuple[list[Tensor | str], Any, list[str]], fetch_names: list[str],
                  feed_names: dict[str, str], fed: list[tuple[int, str, str]],
                  captures: dict[str, Any], kept: set[str]) -> tuple[list[str], Any]:
        """The tensors a gradient function imports (`of`, then every computed `wrt` tensor) and
        the step that builds the gradient from them (`then` of `_function`)."""
        wrt, target, labels = gradient
        args = {where: j for j, (_, where, _) in enumerate(fed)}  # fed tensor -> function argument
        outputs = [fetch_names[0]]
        sources: list[tuple[str, Any]] = []  # per wrt: ("arg", j) | ("out", k) | ("captures", (names, copies' k))
        names = iter(fetch_names[1:])

        def unreachable(label: str) -> DisconnectedError:
            return DisconnectedError(
                f"no gradient flows from {of.name!r} to {label!r}: it is not upstream of {of.name!r} (or a feed "
                f"cuts it off); take the gradient with respect to something {of.name!r} is computed from"
            )

        for w, label in zip(wrt, labels):
            if isinstance(w, str):
                bound = [f"{n}:0" for n in w.split(" ") if f"{n}:0" in captures]
                if not bound:
                    raise unreachable(label)
                # a variable the call writes and reads back is read through its private copy
                copies = dict.fromkeys(f"{self.private[n]}:0" for n in w.split(" ") if self.private.get(n) in kept)
                sources.append(("captures", (bound, list(range(len(outputs), len(outputs) + len(copies))))))
                outputs.extend(copies)
                continue
            where = next(names)
            fed_but_unused = where in feed_names and where not in args
            pruned = where not in feed_names and where.partition(":")[0] not in kept
            if fed_but_unused or pruned:
                raise unreachable(label)
            if where in args:
                sources.append(("arg", args[where]))
            else:
                sources.append(("out", len(outputs)))
                outputs.append(where)

        def then(values: list[tf.Tensor], arguments: list[tf.Tensor], bound: dict[str, tf.Tensor]) -> list[tf.Tensor]:
            value = values[0]
            if target is not None:
                value = tf.convert_to_tensor(target(value))
            if not (value.dtype.is_floating or value.dtype.is_complex):
                raise ArgumentError(
                    f"cannot differentiate {of.name!r}{' (after target)' if target is not None else ''}: it is "
                    f"{value.dtype.name}; take the gradient of a floating-point tensor"
                )
            total = tf.reduce_sum(value)
            xs, spans = [], []
            for kind, where in sources:
                if kind == "captures":
                    placeholders, copies = where
                    spans.append((len(xs), len(placeholders) + len(copies)))
                    xs.extend(bound[n] for n in placeholders)
                    xs.extend(values[k] for k in copies)
                else:
                    spans.append((len(xs), 1))
                    xs.append(arguments[where] if kind == "arg" else values[where])
            try:
                with self.custom_gradients.active():
                    grads = tf.gradients(total, xs) if xs else []
            except LookupError as e:
                raise UnsupportedFetchError(
                    f"cannot differentiate {of.name!r}: {e}; take the gradient of a tensor before that op, "
                    "or with respect to one after it (and please report this)"
                ) from None
            out = []
            for label, (start, count) in zip(labels, spans):
                parts = [tf.convert_to_tensor(g) for g in grads[start:start + count] if g is not None]
                if not parts:
                    raise DisconnectedError(
                        f"no gradient flows from {of.name!r} to {label!r}: it is not upstream of it, or every path "
                        "between them goes through ops without a gradient (argmax, NMS indices, casts to integers)"
                    )
                out.append(tf.add_n(parts) if len(parts) > 1 else parts[0])
            return out

        return outputs, then
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
              captures: dict[str, Any], specs: list[Tensor], then: Any = None) -> _tf.FlatFunction:
    pending = [graph]  # the GraphDef is needed while building only; the closure outlives it

    def run(*args: tf.Tensor) -> list[tf.Tensor]:
        # One C++ import into the function being built. The traced function's own capture
        # placeholders are imported with it and bound to the model's variable handles, so the
        # weights are the model's own (binding is 3x cheaper than capturing each handle through
        # input_map, which makes a placeholder per handle in Python). The GraphDef keeps the
        # ordering edges of the traced function; only the random-generator updates and the
        # checks an output waits for, which no fetch depends on, are tied to the outputs here so
        # that they run.
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
        if then is not None:  # a step built on the imported values (a gradient)
            values = [*then(values[: len(outputs)], list(args), dict(zip(captures, internal))), *values[len(outputs):]]
            outputs_count = len(values) - len(updates)
        else:
            outputs_count = len(outputs)
        if not updates:
            return values
        with tf.control_dependencies(values[outputs_count:]):
            return [tf.identity(v) for v in values[:outputs_count]]

    # wrap_function builds the function without tf.function's automatic-control-dependency
    # pass, which would cost a third of the build and add nothing the GraphDef lacks
    signature = [tf.TensorSpec(t.shape, t.dtype) for t in specs]
    function = _tf.FlatFunction(tf.compat.v1.wrap_function(run, signature))
    pending.clear()  # and the traced graph goes with the wrapper: a third of the memory
    return function
