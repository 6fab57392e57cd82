"""The executable form of a traced function, and the pruned functions compiled from it.

A `Program` holds the traced function once per scope with every `PartitionedCall` inlined, no
write left on a model variable (`writes`: dropped, or redirected to a private copy), and its
captured variable handles bound to the model's own variables (shared, never copied).
`Program.compiled(feeds, fetches)` is that graph pruned to the ops the fetches need
(`prune.select`), fed from model inputs or intermediate tensors, with values inside loops,
branches and kept calls exposed (`expose`), compiled once per feed list and fetch set;
`Program.gradient` is the same with a backward step on top (`gradients.Gradient.step`).
`Program._compile` is the list of steps, each a method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.backend.mirror import Mirrored
from graphscope.backend.trace import Traced
from graphscope.errors import ArgumentError, DisconnectedError, ExecutionError, UnsupportedFetchError
from graphscope.ir.records import Tensor
from graphscope.runtime import edit as editing
from graphscope.runtime import expose, prune, writes
from graphscope.runtime.cache import LRU, Identity
from graphscope.runtime.locate import Locator

if TYPE_CHECKING:
    from graphscope.runtime.gradients import Gradient

__all__ = ["Compiled", "Program", "Pruned"]


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


@dataclasses.dataclass(frozen=True)
class Pruned:
    """How one compiled function is fed and what it binds: `placeholders` maps each fed
    executable tensor to the placeholder that replaces it (every feed, in the feed list's order);
    `used` are the positions in the feed list of those the kept ops reach and `fed` the same as
    (executable tensor, placeholder, the fed Tensor): the function's arguments, in order; `kept`
    are the ops kept, `captures` the variable handles of the kept capture placeholders (by
    placeholder tensor name: the model's, then those the edits' callables read through)."""

    placeholders: dict[str, str]
    used: list[int]
    fed: list[tuple[str, str, Tensor]]
    kept: set[str]
    captures: dict[str, Any]

    @property
    def inputs(self) -> list[str]:
        """The placeholder tensors the function's arguments are imported as."""
        return [f"{placeholder}:0" for _, placeholder, _ in self.fed]

    @property
    def specs(self) -> list[Tensor]:
        """The fed tensors, one per argument (their dtypes and shapes)."""
        return [t for _, _, t in self.fed]


@dataclasses.dataclass
class _Rewrite:
    """The executable graph as one compilation rewrites it (the Program's own is never changed):
    its nodes with replacements over the Program's, the function library, the functions added;
    and, from the edits, where each edited value now is (`edited`, by where it was), the
    top-level node each edit lives in or under (`anchors`, by edited tensor), the spliced op
    prefixes (`prefixes`: `Compiled.edit_ops`) and the placeholders the edits read variables
    through (`captures`: placeholder tensor -> handle, bound like the model's)."""

    nodes: dict[str, Any]
    library: Any
    functions: list[Any]
    edited: dict[Any, Any] = dataclasses.field(default_factory=dict)
    anchors: dict[str, str] = dataclasses.field(default_factory=dict)
    prefixes: dict[str, str] = dataclasses.field(default_factory=dict)
    captures: dict[str, Any] = dataclasses.field(default_factory=dict)  # edits' placeholders -> handles


class Program:
    """A traced function made executable once: inlined, writing no model variable, its variables
    bound to the model's own."""

    def __init__(self, traced: Traced, mirrored: Mirrored) -> None:
        cf = traced.function
        self.tensors: dict[str, Tensor] = mirrored.graph.tensors
        try:
            inlined = _tf.inline_calls(cf)
        except tf.errors.OpError as e:  # TensorFlow's optimizer cannot read the graph (a float8_e5m2 tensor)
            raise ExecutionError(
                f"TensorFlow could not prepare the traced function {traced.name!r} to run parts of it: "
                f"{_tf.failure_reason(e)}; its tensors can be listed and searched, not run (the model itself "
                "still runs as it is)"
            ) from None
        graph_def = expose.own_function_names(inlined)
        self.captures = {internal.op.name: external for external, internal in cf.graph.captures}
        self._bound = set(self.captures)  # placeholders bound to variables, never model inputs
        rng = _rng_states(cf)
        variables = {name: external for name, external in self.captures.items() if external.dtype == tf.resource}
        isolated = writes.isolate(graph_def, variables, keep=rng)
        self.graph_def = isolated.graph_def
        # placeholder -> the handle of the private copy its variable is run against (a variable
        # the call writes and reads back)
        self.private = isolated.private
        self.nodes = {n.name: n for n in self.graph_def.node}
        self.rng_updates = _rng_updates(self.graph_def, self.nodes, rng)
        self.output_checks = _output_checks(cf.graph.outputs, self.nodes)
        self._compiled = LRU()
        # the custom gradients (swish) of the traced graph, made to work on the imported copies
        self.custom_gradients = _tf.CustomGradients(cf.graph)
        self.library = expose.library_of(self.graph_def)
        self.locator = Locator(self.nodes, self.library, self.tensors, mirrored.sites, cf.graph)
        self.canonical_ops = _canonical_ops(self.tensors, self.nodes, mirrored)

    def compiled(self, feeds: Sequence[Tensor], fetches: Sequence[Tensor],
                 edits: Sequence[editing.Edit] = (), *, reduce: Any = None) -> Compiled:
        """The compiled function for this feed list, fetch *set* and edits, built once and
        reused (the most recently used `cache.CACHE_SIZE` are kept). With `reduce`,
        `fn(values, kinds, dtypes) -> tensors`, the fetched values (in `Compiled.order`, each in
        the wrappers `kinds` names: a loop's list, a branch's optional) are reduced inside the
        function and what it returns comes back instead of them (`numerics`: a few numbers per
        tensor); cached by its identity.

        Raises:
            DisconnectedError: a fetch needs a model input that is not fed, or an edit changes
                nothing a fetch depends on.
            UnsupportedFetchError: a fetch or feed TensorFlow's optimizer removed, or a feed
                inside a function TensorFlow does not inline.
            InputError: an edit that cannot replace its tensor.
        """
        order = sorted({t.name for t in fetches})
        key = (tuple(t.name for t in feeds), tuple(order), tuple(e.key for e in edits))
        if reduce is not None:
            key = ("reduce", Identity(reduce), *key)
        cached = self._compiled.get(key)
        if cached is None:
            cached = self._compile(list(feeds), [self.tensors[n] for n in order], list(edits), reduce=reduce)
            self._compiled.put(key, cached)
        return cached

    def gradient(self, feeds: Sequence[Tensor], gradient: Gradient, edits: Sequence[editing.Edit] = ()) -> Compiled:
        """A compiled function of the feeds that returns `gradient` (`gradients.Gradient`: of
        what, with respect to what). Cached like `compiled`, by the gradient's `target` too.

        Raises:
            DisconnectedError: no gradient flows from `of` to some entry of `wrt`.
        """
        of, wrt = gradient.of, gradient.wrt
        key = ("gradient", tuple(t.name for t in feeds), of.name,
               tuple(w if isinstance(w, str) else w.name for w in wrt), Identity(gradient.target),
               Identity(gradient.reduce), tuple(e.key for e in edits))
        cached = self._compiled.get(key)
        if cached is None:
            cached = self._compile(list(feeds), [of], list(edits), gradient=gradient)
            self._compiled.put(key, cached)
        return cached

    def _compile(self, feeds: list[Tensor], fetches: list[Tensor], edits: list[editing.Edit],
                 gradient: Gradient | None = None, reduce: Any = None) -> Compiled:
        """The steps of a compilation, in order; each checks what it can refuse."""
        placeholders = self._placeholders(feeds)
        rewrite = self._apply_edits(edits)
        located = self._locate(fetches, gradient.tensors if gradient else [], rewrite.edited)
        fetch_names, kinds = self._expose(rewrite, located, fetches)
        wanted = fetch_names[: len(fetches)]  # the gradient's forward pass needs `of` alone
        bound = self._bound | {name.partition(":")[0] for name in rewrite.captures}
        selected = self._select(rewrite.nodes, placeholders, wanted, fetches, bound)
        self._check_anchors(rewrite, selected.kept, fetches, feeds)
        kept, reached, ties = self._tie(rewrite.nodes, placeholders, wanted, selected, bound)
        pruned = self._pruned(feeds, placeholders, kept, reached, rewrite.captures)
        if gradient is None:
            outputs, then = [f"{placeholders[f]}:0" if f in placeholders else f for f in fetch_names], None
            if reduce is not None:
                then = _reduced(reduce, kinds, [tf.as_dtype(t.dtype) for t in fetches])
        else:
            outputs, then = gradient.step(self, fetch_names, pruned)
        graph = prune.graph_def(self.graph_def, rewrite.nodes, rewrite.functions, pruned.fed, kept)
        if gradient is not None:
            # TensorFlow's gradient of a branch registers `<branch>_rewritten` process-wide, and a
            # branch an edit leaves alone keeps its name while its rewrite follows the other
            # branch's outputs: names of this compilation's own ("duplicate function" otherwise)
            graph = expose.own_function_names(graph)
        function = _function(graph, pruned.inputs, outputs, ties, pruned.captures, pruned.specs, then)
        top = [n.name for n in self.graph_def.node if n.name in kept]
        return Compiled(function, [t.name for t in fetches], kinds, top, pruned.used, rewrite.prefixes)

    def _placeholders(self, feeds: list[Tensor]) -> dict[str, str]:
        """Executable tensor name -> the placeholder that replaces it, in the feeds' order."""
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
        return feed_names

    def _apply_edits(self, edits: list[editing.Edit]) -> _Rewrite:
        """The executable graph with `edits` applied (`edit.apply`), or as it is without edits."""
        if not edits:
            return _Rewrite(self.nodes, self.library, [])
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
        patch = editing.apply(self.nodes, self.library, located_edits, self.captures, self.private)
        return _Rewrite(
            {**self.nodes, **patch.nodes}, patch.library, list(patch.functions),
            edited={where: patch.outputs[e.tensor.name] for e, where in located_edits},
            anchors={e.tensor.name: patch.anchors[e.tensor.name] for e in edits},
            prefixes=patch.prefixes, captures=patch.captures,
        )

    def _locate(self, fetches: list[Tensor], wrt: list[Tensor],
                edited: dict[Any, str | expose.Target]) -> list[str | expose.Target]:
        """Where each fetch, then each `wrt` tensor, is in the executable graph (where its edit
        put it, for an edited one): a top-level tensor or a `Target` inside a body."""
        located = []
        for t in [*fetches, *wrt]:
            where = self.locator.locate(t)
            where = prune.normal(where) if isinstance(where, str) else where
            located.append(edited.get(where, where))
        for t, where in zip(wrt, located[len(fetches):]):
            if not isinstance(where, str):
                raise UnsupportedFetchError(
                    f"cannot take a gradient with respect to {t.name!r}: it is computed inside "
                    f"{t.context or t.function[-1]}, where it has a value per iteration (or per call); take it with "
                    "respect to a tensor outside loops and branches (the loop's input or output)"
                )
        return located

    def _expose(self, rewrite: _Rewrite, located: list[str | expose.Target],
                fetches: list[Tensor]) -> tuple[list[str], list[tuple[str, ...]]]:
        """The top-level tensor each located value is fetched as, and the wrappers it comes in
        (`expose.Exposed.kinds`; none for a top-level tensor): values inside loops and branches
        are exposed (`rewrite` gains the clones)."""
        targets = [w for w in located if isinstance(w, expose.Target)]
        exposed = iter(())
        if targets:
            try:
                exposing = expose.expose(rewrite.nodes, rewrite.library, targets)
            except LookupError as e:
                raise UnsupportedFetchError(
                    f"cannot reach inside the loops/branches for {', '.join(t.name for t in fetches)}: {e}; "
                    "fetch the loop's or branch's own outputs instead (and please report this)"
                ) from None
            rewrite.nodes = {**rewrite.nodes, **exposing.nodes}
            rewrite.functions += exposing.functions
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
        return fetch_names, kinds

    def _select(self, nodes: dict[str, Any], placeholders: dict[str, str], wanted: list[str],
                fetches: list[Tensor], bound: set[str]) -> prune.Selected:
        """The ops `wanted` need from the placeholders (`prune.select`; `bound`: those bound to
        variables); refuses fetches that need an input the feeds do not give."""
        selected = prune.select(nodes, placeholders, wanted, captures=bound)
        if selected.missing:
            self._disconnected(selected.missing, dict(zip(wanted, fetches)))
        return selected

    def _check_anchors(self, rewrite: _Rewrite, kept: set[str], fetches: list[Tensor], feeds: list[Tensor]) -> None:
        """Refuse an edit whose spliced ops the fetches do not need (from these feeds)."""
        for name, anchor in rewrite.anchors.items():
            if anchor not in kept:
                raise DisconnectedError(
                    f"the edit of {name!r} changes nothing the fetches "
                    f"({', '.join(t.name for t in fetches)}) depend on"
                    + (" from these feeds" if feeds and len(feeds) else "")
                    + ": edit a tensor upstream of them, or fetch one downstream of the edit"
                )

    def _tie(self, nodes: dict[str, Any], placeholders: dict[str, str], wanted: list[str],
             selected: prune.Selected, bound: set[str]) -> tuple[set[str], set[str], list[str]]:
        """The kept ops and reached feeds once the ops that run though no fetch needs them are
        added (the checks an output waits for, the random-generator updates of state the kept
        ops read), and those ops."""
        kept, reached = selected.kept, selected.reached
        checks = [c for f in wanted for c in self.output_checks.get(f, ())]
        if checks:
            extra = prune.select(nodes, placeholders, wanted + checks, captures=bound)
            kept, reached = extra.kept, reached | extra.reached
        updates = [u for state, ops in self.rng_updates.items() if state in kept for u in ops]
        if updates:
            kept = prune.select(nodes, placeholders, wanted + checks + updates, captures=bound).kept
        return kept, reached, updates + [c for c in dict.fromkeys(checks) if c in kept]

    def _pruned(self, feeds: list[Tensor], placeholders: dict[str, str], kept: set[str], reached: set[str],
                edit_captures: dict[str, Any]) -> Pruned:
        """The function's arguments (the feeds the fetches reach, in the feed list's order) and
        the variables it binds (the model's, then those the edits read)."""
        used = [k for k, where in enumerate(placeholders) if where in reached]
        fed = [(where, placeholder, feeds[k]) for k, (where, placeholder) in enumerate(placeholders.items())
               if where in reached]
        captures = {f"{name}:0": handle for name, handle in self.captures.items() if name in kept}
        captures.update((name, handle) for name, handle in edit_captures.items() if name.partition(":")[0] in kept)
        return Pruned(placeholders, used, fed, kept, captures)

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


def _rng_states(cf: Any) -> set[str]:
    """The capture placeholders of the random generators' state variables (Keras seed
    generators), whose writes are kept."""
    variable_names = {id(v.handle): v.name for v in cf.graph.variables if hasattr(v, "handle")}
    return {
        internal.op.name
        for external, internal in cf.graph.captures
        if _tf.RNG_STATE_VARIABLE.search(variable_names.get(id(external), ""))
    }


def _rng_updates(graph_def: Any, nodes: dict[str, Any], rng: set[str]) -> dict[str, list[str]]:
    """Random-generator state updates, by the state variable's placeholder: an executor that
    reads a generator's state also advances it, so each call draws new numbers (as Keras)."""
    updates: dict[str, list[str]] = {}
    for node in graph_def.node:
        if writes.WRITE_OPS.fullmatch(node.op) and node.input:
            source = prune.resource_source(nodes, node.input[0])
            if source in rng:
                updates.setdefault(source, []).append(node.name)
    return updates


def _output_checks(outputs: Sequence[Any], nodes: dict[str, Any]) -> dict[str, list[str]]:
    """What the function's results wait for (asserts, prints: control inputs of the Identity
    copies TensorFlow makes of them), by the tensor each copies: fetching an output's computed
    tensor (what its key means) runs the model's checks, as the output does."""
    checks: dict[str, list[str]] = {}
    for out in outputs:
        ref = prune.normal(out.name)
        controls: list[str] = []
        while (node := nodes.get(ref.partition(":")[0])) is not None and node.op in ("Identity", "IdentityN"):
            controls += [i[1:] for i in node.input if i.startswith("^")]
            data = [i for i in node.input if not i.startswith("^")]
            index = int(ref.rpartition(":")[2]) if node.op == "IdentityN" else 0
            if index >= len(data):
                break
            ref = prune.normal(data[index])
            checks.setdefault(ref, []).extend(controls)
    return checks


def _canonical_ops(tensors: dict[str, Tensor], nodes: dict[str, Any], mirrored: Mirrored) -> dict[str, str]:
    """Executable op name -> canonical op name, for top-level ops and inlined calls' ops."""
    canonical: dict[str, str] = {}
    for t in tensors.values():
        raw = t.raw_name.rpartition(":")[0]
        path = mirrored.sites[t.name].path
        if t.index == 0 and raw in nodes and all(attr == "f" for _, attr in path):
            canonical[raw] = t.op
    return canonical


def _reduced(reduce: Any, kinds: list[tuple[str, ...]], dtypes: list[tf.DType]) -> Any:
    """The step (`then` of `_function`) that reduces the fetched values inside the function."""

    def then(values: list[tf.Tensor], arguments: list[tf.Tensor], bound: dict[str, tf.Tensor]) -> list[tf.Tensor]:
        return list(reduce(values, kinds, dtypes))

    return then


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
