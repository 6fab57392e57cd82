"""Pruned subgraph executors.

A `Runtime` holds the traced function once per scope with every `PartitionedCall` inlined, its
weight-update ops removed, and its captured variable handles bound to the model's own variables
(shared, never copied). An `Executor` is that function pruned to the ops a set of fetches needs,
fed from model inputs or from intermediate tensors. Every check (fetchable tensors, inputs that
are needed but not fed, feeds that reach nothing) happens when the executor is built.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from graphscope import _tf, rewrite
from graphscope._display import RichDisplay
from graphscope.errors import (
    DisconnectedError,
    ExecutionError,
    InputError,
    UnsupportedFetchError,
    suggestion,
)
from graphscope.graph import Tensor
from graphscope.tracing import Traced

__all__ = ["LRU", "Executor", "Results", "Runtime"]

# Ops that write a resource variable. They are removed from executors so that running one never
# moves a weight (a training-mode graph's batch-norm statistics); random-number generator state
# (Keras SeedGenerator variables) is left to advance, as it does in Keras.
_WRITE_OPS = re.compile(
    r"Assign(Add|Sub)?VariableOp|Resource(Sparse)?Apply\w+|ResourceScatter\w+|ResourceStridedSliceAssign"
)
_RNG_VARIABLE = re.compile(r"seed_generator_state")
# compiled functions (and, in Scope, executors) kept per scope; older ones are rebuilt on demand
CACHE_SIZE = 64


class LRU:
    """A thread-safe mapping that keeps the `size` most recently used entries."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value for `key` (now the most recently used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Runtime:
    """The executable form of a traced function, built once per scope: a GraphDef with every
    function call inlined and weight updates removed, and the live variables its captured
    placeholders stand for."""

    def __init__(self, traced: Traced, G: nx.DiGraph) -> None:
        cf = traced.function
        self.tensors: dict[str, Tensor] = G.graph["tensors"]
        graph_def = _tf.inline_calls(cf)
        self.captures = {internal.op.name: external for external, internal in cf.graph.captures}
        variable_names = {id(v.handle): v.name for v in cf.graph.variables if hasattr(v, "handle")}
        rng = {
            internal.op.name
            for external, internal in cf.graph.captures
            if _RNG_VARIABLE.search(variable_names.get(id(external), ""))
        }
        self.graph_def = _without_weight_updates(graph_def, keep=rng)
        self.nodes = {n.name: n for n in self.graph_def.node}
        # random-generator state updates, by the state variable's placeholder: an executor that
        # reads a generator's state also advances it, so each call draws new numbers (as Keras)
        self.rng_updates: dict[str, list[str]] = {}
        for node in self.graph_def.node:
            if _WRITE_OPS.fullmatch(node.op) and node.input:
                source = _resource_source(self.nodes, node.input[0])
                if source in rng:
                    self.rng_updates.setdefault(source, []).append(node.name)
        self._compiled = LRU()
        self.library = rewrite.library_of(self.graph_def)
        self._functions: dict[str, dict[str, Any]] = {}
        # executable op name -> canonical op name, for top-level ops and inlined calls' ops
        self.canonical_ops = {}
        for t in self.tensors.values():
            raw = t.raw_name.rpartition(":")[0]
            if t.index == 0 and raw in self.nodes and all(attr == "f" for _, attr in t.site):
                self.canonical_ops[raw] = t.op

    def locate(self, t: Tensor) -> str | rewrite.Target:
        """Where `t` is computed at run time: a top-level tensor name, or a `rewrite.Target`
        inside a loop, branch or call the inliner kept. Raises UnsupportedFetchError when
        TensorFlow's optimizer removed it."""
        seen = {t.name}
        while True:
            where = self._direct(t)
            if where is not None:
                return where
            if t.alias is None or t.alias in seen:
                raise UnsupportedFetchError(
                    f"cannot run {t.name!r}: TensorFlow's function inliner did not keep its op "
                    f"({t.raw_name.rpartition(':')[0]!r}) in the executable graph; fetch a tensor "
                    "that consumes it instead"
                )
            seen.add(t.alias)
            t = self.tensors[t.alias]

    def _direct(self, t: Tensor) -> str | rewrite.Target | None:
        """Follow `t.site` through the executable graph: inlined calls add a name prefix, kept
        calls and control-flow ops become steps of a Target. None when `t`'s op is not there."""
        nodes: Mapping[str, Any] = self.nodes
        prefix = ""
        steps: list[tuple[str, str]] = []
        for local, attr in t.site:
            name = prefix + local
            node = nodes.get(name)
            if attr == "f" and (node is None or node.op not in rewrite.CALLS):
                prefix = f"{name}/"  # the call was inlined: its ops are named under it
                continue
            if node is None:
                return None
            function = rewrite.function_attr(node, attr).name
            if function not in self.library:
                return None
            steps.append((name, attr))
            nodes = self._function_nodes(function)
            prefix = ""
        dtype = tf.as_dtype(t.dtype).as_datatype_enum
        if t.arg is not None and steps and not prefix:
            return rewrite.Target(tuple(steps), None, t.arg, t.index, dtype)
        local = prefix + t.local
        if local not in nodes:
            return None
        if not steps:
            return f"{local}:{t.index}"
        return rewrite.Target(tuple(steps), local, None, t.index, dtype)

    def _function_nodes(self, function: str) -> dict[str, Any]:
        nodes = self._functions.get(function)
        if nodes is None:
            nodes = {n.name: n for n in self.library[function].node_def}
            self._functions[function] = nodes
        return nodes

    def compiled(
        self, feeds: Sequence[Tensor], fetches: Sequence[Tensor]
    ) -> tuple[Any, list[str], list[str], list[tuple[str, ...]]]:
        """The compiled function for this feed list and fetch *set*, built once and reused.

        Returns the function, the fetch names in the order it returns them, the executable
        names of the top-level ops it holds, and for each fetch the wrappers its value comes
        in (`rewrite.Exposed.kinds`; empty for a plain tensor). The most recently used
        `CACHE_SIZE` functions are kept.
        """
        order = sorted({t.name for t in fetches})
        key = (tuple(t.name for t in feeds), tuple(order))
        cached = self._compiled.get(key)
        if cached is None:
            function, kept, kinds = self.prune(feeds, [self.tensors[n] for n in order])
            cached = (function, order, kept, kinds)
            self._compiled.put(key, cached)
        return cached

    def prune(
        self, feeds: Sequence[Tensor], fetches: Sequence[Tensor]
    ) -> tuple[Any, list[str], list[tuple[str, ...]]]:
        """A compiled function computing `fetches` from `feeds`, holding only the ops in between.

        Fetches inside loops, branches and kept calls are exposed by rewriting the functions on
        the way (see `rewrite`). Returns the ConcreteFunction, the executable names of the
        top-level ops it holds, and each fetch's wrappers.
        """
        feed_names = {}
        for k, t in enumerate(feeds):
            where = self.locate(t)
            if not isinstance(where, str):
                raise UnsupportedFetchError(
                    f"cannot feed {t.name!r}: it is computed inside {t.function[-1]}, a function "
                    "TensorFlow does not inline (an XLA helper); feed its input or its result instead"
                )
            feed_names[_normal(where)] = f"graphscope_feed_{k}"
        located = [self.locate(t) for t in fetches]
        targets = [w for w in located if isinstance(w, rewrite.Target)]
        nodes, functions = self.nodes, []
        exposed = iter(())
        if targets:
            try:
                patch = rewrite.expose(self.nodes, self.library, targets)
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
                fetch_names.append(_normal(where))
                kinds.append(())
            else:
                e = next(exposed)
                fetch_names.append(e.tensor)
                kinds.append(e.kinds)
        kept = self._select(nodes, feed_names, fetch_names)
        updates = [u for state, ops in self.rng_updates.items() if state in kept for u in ops]
        if updates:
            kept = self._select(nodes, feed_names, fetch_names + updates)
        out = self._graph_def(nodes, functions, feeds, feed_names, kept)
        captures = {f"{name}:0": handle for name, handle in self.captures.items() if name in kept}
        placeholders = [f"{p}:0" for p in feed_names.values()]
        outputs = [f"{feed_names[f]}:0" if f in feed_names else f for f in fetch_names]

        pending = [out]  # the GraphDef is needed while building only; the closure outlives it

        def run(*args: tf.Tensor) -> list[tf.Tensor]:
            # One C++ import into the function being built. The traced function's own capture
            # placeholders are imported with it and bound to the model's variable handles, so
            # the weights are the model's own (binding is 3x cheaper than capturing each handle
            # through input_map, which makes a placeholder per handle in Python). The GraphDef
            # keeps the ordering edges of the traced function; only the random-generator
            # updates, which no fetch depends on, are tied to the outputs here so that they run.
            values = tf.graph_util.import_graph_def(
                pending[0],
                input_map=dict(zip(placeholders, args)),
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
        signature = [tf.TensorSpec(t.shape, t.dtype) for t in feeds]
        function = _tf.FlatFunction(tf.compat.v1.wrap_function(run, signature))
        pending.clear()  # and the traced graph goes with the wrapper: a third of the memory
        return function, [n.name for n in self.graph_def.node if n.name in kept], kinds

    def _graph_def(
        self,
        nodes: Mapping[str, Any],
        functions: list[Any],
        feeds: Sequence[Tensor],
        feed_names: dict[str, str],
        kept: set[str],
    ) -> graph_pb2.GraphDef:
        """The `kept` nodes, with each fed tensor replaced by a placeholder of its own."""
        out = graph_pb2.GraphDef()
        out.versions.CopyFrom(self.graph_def.versions)
        out.library.CopyFrom(self.graph_def.library)
        out.library.function.extend(functions)
        for t, placeholder in zip(feeds, feed_names.values()):
            node = out.node.add(name=placeholder, op="Placeholder")
            node.attr["dtype"].type = tf.as_dtype(t.dtype).as_datatype_enum
            node.attr["shape"].shape.CopyFrom(tf.TensorShape(t.shape).as_proto())
        for node in nodes.values():
            if node.name not in kept:
                continue
            copy = out.node.add()
            copy.CopyFrom(node)
            if "_class" in copy.attr:  # colocation hints naming nodes left out (fed, pruned)
                hints = [h for h in copy.attr["_class"].list.s if h.decode().removeprefix("loc:@") in kept]
                del copy.attr["_class"].list.s[:]
                copy.attr["_class"].list.s.extend(hints)
                if not hints:
                    del copy.attr["_class"]
            del copy.input[:]
            for i in node.input:
                if i.startswith("^"):
                    if i[1:] in kept:
                        copy.input.append(i)
                elif _normal(i) in feed_names:
                    copy.input.append(f"{feed_names[_normal(i)]}:0")
                else:
                    copy.input.append(i)
        return out

    def _select(self, nodes: Mapping[str, Any], feeds: dict[str, str], fetches: list[str]) -> set[str]:
        """Nodes needed for `fetches` when `feeds` are given: data inputs up to the feeds, and
        control inputs that can themselves run from the feeds."""
        runnable: dict[str, bool] = {}

        def inputs_of(name: str) -> list[str]:
            return [i for i in nodes[name].input if i.startswith("^") or _normal(i) not in feeds]

        # post-order without recursion: can each node run with what is fed?
        for root in {f.split(":")[0] for f in fetches if f not in feeds}:
            stack = [(root, False)]
            while stack:
                name, expanded = stack.pop()
                if name in runnable:
                    continue
                node = nodes[name]
                if not expanded:
                    stack.append((name, True))
                    stack.extend((i.lstrip("^").split(":")[0], False) for i in inputs_of(name) if i.lstrip("^").split(":")[0] not in runnable)
                    continue
                is_input = node.op == "Placeholder" and name not in self.captures
                runnable[name] = not is_input and all(
                    runnable.get(i.split(":")[0], False) for i in inputs_of(name) if not i.startswith("^")
                )
        kept: set[str] = set()
        todo = [f.split(":")[0] for f in fetches if f not in feeds]
        while todo:
            name = todo.pop()
            if name in kept:
                continue
            if not runnable.get(name, False):
                raise DisconnectedError(
                    f"op {self.canonical_ops.get(name, name)!r} needs a model input that the "
                    "feeds do not give"
                )
            kept.add(name)
            for i in inputs_of(name):
                source = i.lstrip("^").split(":")[0]
                if i.startswith("^") and not runnable.get(source, False):
                    continue  # an ordering-only edge to something upstream of the feeds
                todo.append(source)
        return kept


def _normal(tensor: str) -> str:
    """`name` -> `name:0` (GraphDef inputs leave out output 0)."""
    return tensor if ":" in tensor else f"{tensor}:0"


def _resource_source(nodes: dict[str, Any], name: str) -> str:
    """The node a resource input comes from, looking through Identity ops."""
    node = nodes.get(name.split(":")[0].lstrip("^"))
    while node is not None and node.op == "Identity" and node.input:
        node = nodes.get(node.input[0].split(":")[0])
    return node.name if node is not None else name


def _without_weight_updates(graph_def: graph_pb2.GraphDef, *, keep: set[str]) -> graph_pb2.GraphDef:
    """Drop top-level ops that write variables (except those writing to placeholders in `keep`)."""
    producers = {n.name: n for n in graph_def.node}
    dropped = {
        n.name
        for n in graph_def.node
        if _WRITE_OPS.fullmatch(n.op) and n.input and _resource_source(producers, n.input[0]) not in keep
    }
    if not dropped:
        return graph_def
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    del out.node[:]
    for n in graph_def.node:
        if n.name in dropped:
            continue
        copy = out.node.add()
        copy.CopyFrom(n)
        del copy.input[:]
        copy.input.extend(i for i in n.input if not (i.startswith("^") and i[1:] in dropped))
    return out


class Results(RichDisplay, dict):  # type: ignore[type-arg]
    """`{name: numpy.ndarray}`; printing it shows a table of shapes and value statistics."""

    def __rich__(self) -> Any:
        from graphscope import render

        return render.results_table(self)

    def __repr__(self) -> str:
        from graphscope import render

        shown = ", ".join(f"{k} {render.value_kind(v)}" for k, v in list(self.items())[:2])
        return f"<Results {len(self)} value{'s' if len(self) != 1 else ''}: {shown}{', ...' if len(self) > 2 else ''}>"


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
        G: nx.DiGraph,
        runtime: Runtime,
        fetches: Sequence[tuple[str, Tensor]],
        feeds: Sequence[tuple[str, Tensor]],
        *,
        explicit_feeds: bool,
    ) -> None:
        self._keys = [k for k, _ in fetches]
        self.fetches: list[Tensor] = [t for _, t in fetches]
        self.inputs: list[str] = [k for k, _ in feeds]
        self._feeds: list[Tensor] = [t for _, t in feeds]
        self._aliases: dict[str, int] = {}  # every spelling of each input, for dict calls
        for k, (name, t) in enumerate(feeds):
            for alias in (name, t.name, t.raw_name, t.op, t.raw_name.rpartition(":")[0]):
                self._aliases.setdefault(alias, k)
        for t in self.fetches:
            _check_fetchable(t)
        for t in self._feeds:
            if t.context:
                raise UnsupportedFetchError(
                    f"cannot feed {t.name!r}: it is computed inside {t.context}, where it has one "
                    "value per iteration or none when the branch does not run; feed a tensor "
                    "outside loops and branches"
                )
        needed = _needed_feeds(G, self.fetches, self._feeds, explicit=explicit_feeds)
        self._used = [i for i, t in enumerate(self._feeds) if t.name in needed]
        used_feeds = [self._feeds[i] for i in self._used]
        self._function, order, kept, kinds = runtime.compiled(used_feeds, self.fetches)
        self._kinds = dict(zip(order, kinds))
        self._position = {n: k for k, n in enumerate(order)}
        tensors = G.graph["tensors"]
        # results are zero-copy read-only views, except values that may share a buffer with a
        # variable or a constant of the function: those are copied
        self._copy = {n for n in order if _may_alias_state(G, tensors[n])}
        self._dtypes = {n: tf.as_dtype(tensors[n].dtype) for n in order}
        position = {name: k for k, name in enumerate(G)}
        runs = {runtime.canonical_ops[n] for n in kept if n in runtime.canonical_ops}
        runs |= {t.op for t in used_feeds if t.op_type == "Placeholder"}  # fed model inputs
        self.ops: list[str] = sorted(runs, key=position.__getitem__)
        self._runtime = runtime

    def __repr__(self) -> str:
        return (
            f"<Executor {len(self.fetches)} fetch{'es' if len(self.fetches) != 1 else ''} "
            f"from {', '.join(self.inputs) or 'nothing'}: {len(self.ops)} ops>"
        )

    def __call__(self, *inputs: Any) -> Results:
        arrays = self._arrange(inputs)
        fed = [self._convert(k, arrays[k]) for k in self._used]
        try:
            outs = self._function(*fed)
        except tf.errors.OpError as e:
            raise ExecutionError(self._explain(e)) from None
        values: dict[str, Any] = {}
        for name, k in self._position.items():
            kinds = self._kinds[name]
            if kinds:
                values[name] = _decode(outs[k], kinds, self._dtypes[name])
                continue
            array = np.asarray(outs[k])  # a view of TF's buffer, read-only for good
            values[name] = _read_only(array.copy()) if name in self._copy else array
        return Results((key, values[t.name]) for key, t in zip(self._keys, self.fetches))

    # ---- inputs

    def _arrange(self, inputs: tuple[Any, ...]) -> list[Any]:
        n = len(self.inputs)
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            return self._by_name(inputs[0])
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])  # a list/tuple holds the positional inputs
        if len(inputs) != n:
            raise InputError(
                f"this executor takes {n} input{'s' if n != 1 else ''} ({', '.join(self.inputs)}), "
                f"got {len(inputs)}: pass "
                + ("one array" if n == 1 else "a list of arrays in that order, or a dict by name")
            )
        return list(inputs)

    def _by_name(self, given: Mapping[str, Any]) -> list[Any]:
        aliases = self._aliases
        out: list[Any] = [None] * len(self.inputs)
        for key, value in given.items():
            if key not in aliases:
                raise InputError(
                    f"unknown input {key!r}: this executor takes {', '.join(self.inputs)}."
                    + suggestion(str(key), self.inputs)
                )
            out[aliases[key]] = value
        missing = [self.inputs[k] for k, v in enumerate(out) if v is None]
        if missing:
            raise InputError(f"missing input{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        return out

    def _convert(self, k: int, value: Any) -> tf.Tensor:
        name, spec = self.inputs[k], self._feeds[k]
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
                want = "(" + ", ".join("None" if d is None else str(d) for d in spec.shape) + ")"
                raise InputError(f"input {name!r} expects shape {want}, got {tuple(array.shape)}")
        return tf.constant(array)

    def _explain(self, e: tf.errors.OpError) -> str:
        """One line: the op that failed (canonical name) and TensorFlow's own reason."""
        text = e.message or str(e)
        candidates = [getattr(getattr(e, "op", None), "name", None)]
        candidates += re.findall(r"\{\{node ([^}]+)\}\}", text) + re.findall(r"\[\[([^\]{}]+)\]\]", text)
        candidates += re.findall(r"Detected at node (\S+)", text)
        known = self._runtime.canonical_ops
        # names may carry the prefixes of the functions they were inlined into: try each suffix
        suffixes = [c.split("/")[k:] for c in candidates if c for k in range(c.count("/") + 1)]
        where = next((known["/".join(p)] for p in suffixes if "/".join(p) in known), None)
        where = where or next((c for c in candidates if c), None)
        reason = next(
            (
                line.strip()
                for line in text.splitlines()
                if line.strip()
                and not line.startswith(("Graph execution error", "Detected at node", "<stack traces"))
                and not line.strip().startswith("[[")
            ),
            type(e).__name__,
        )
        reason = re.sub(r"\s*\[Op:__inference\w*\]$", "", reason)[:400]
        return f"TensorFlow failed{f' in op {where!r}' if where else ''}: {reason}"


# ops whose output may share its input's buffer (TensorFlow forwards instead of copying)
_FORWARDING = {"Identity", "IdentityN", "Reshape", "Squeeze", "ExpandDims", "StopGradient",
               "PreventGradient", "EnsureShape", "Bitcast", "Snapshot", "CheckNumerics"}


def _may_alias_state(G: nx.DiGraph, t: Tensor) -> bool:
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


def _check_fetchable(t: Tensor) -> None:
    if t.dtype in ("resource", "variant"):
        raise UnsupportedFetchError(
            f"cannot fetch {t.name!r}: it is a {t.dtype} tensor (a handle, not a value); "
            "fetch a tensor that reads it instead, e.g. a ReadVariableOp"
        )


def _decode(value: tf.Tensor, kinds: tuple[str, ...], dtype: tf.DType) -> Any:
    """Unwrap an exposed value (see `rewrite`): a loop's list becomes an array with one entry per
    iteration on a new leading axis (a list of values when their shapes differ), a branch's
    optional its value or None when the branch did not run."""
    if not kinds:  # the value itself: a copy, since list items may share buffers with state
        return _read_only(np.array(value))
    kind, rest = kinds[0], kinds[1:]
    inner = tf.variant if rest else dtype
    if kind == "optional":
        if not bool(tf.raw_ops.OptionalHasValue(optional=value)):
            return None
        (got,) = tf.raw_ops.OptionalGetValue(optional=value, output_types=[inner], output_shapes=[None])
        return _decode(got, rest, dtype)
    n = int(tf.raw_ops.TensorListLength(input_handle=value))
    if not rest and n:
        try:  # one copy when every iteration's value has the same shape
            stacked = tf.raw_ops.TensorListStack(input_handle=value, element_shape=-1, element_dtype=dtype)
            return _read_only(np.asarray(stacked))
        except tf.errors.InvalidArgumentError:
            pass
    items = []
    for i in range(n):
        item = tf.raw_ops.TensorListGetItem(input_handle=value, index=i, element_shape=-1, element_dtype=inner)
        items.append(_decode(item, rest, dtype))
    return _combine(items)


def _combine(items: list[Any]) -> Any:
    """One array when every item is an array of the same shape, else the list itself."""
    if items and all(isinstance(a, np.ndarray) for a in items) and len({a.shape for a in items}) == 1:
        return _read_only(np.stack(items))
    return items


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _needed_feeds(G: nx.DiGraph, fetches: list[Tensor], feeds: list[Tensor], *, explicit: bool) -> set[str]:
    """Feeds the fetches reach; raises when they reach a model input nobody feeds."""
    tensors: dict[str, Tensor] = G.graph["tensors"]
    fed = {t.name for t in feeds}
    model_inputs = set(G.graph["inputs"])
    reached_feeds: set[str] = set()
    missing: dict[str, list[str]] = {}
    for fetch in fetches:
        seen: set[str] = set()
        todo = [fetch.name]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in fed:
                reached_feeds.add(name)
                continue
            if name in model_inputs:
                missing.setdefault(name, []).append(fetch.name)
                continue
            t = tensors[name]
            todo.extend(G.nodes[t.op]["op"].inputs)
            # a value inside a body runs only when the op calling the body runs: it needs
            # that op's inputs too (a constant in a loop body needs the loop's)
            for frame in t.function:
                todo.extend(G.nodes[frame.partition(":")[0]]["op"].inputs)  # "<op>" or "<op>:<role>"
    if missing:
        lines = ", ".join(f"{m} (needed by {', '.join(dict.fromkeys(f))})" for m, f in missing.items())
        raise DisconnectedError(
            f"the fetches need input{'s' if len(missing) > 1 else ''} that the feeds do not give: "
            f"{lines}; add {'them' if len(missing) > 1 else 'it'} to feeds=[...], or feed a tensor "
            "between it and the fetches"
        )
    if explicit:
        unused = [t.name for t in feeds if t.name not in reached_feeds]
        if unused:
            raise DisconnectedError(
                f"feed{'s' if len(unused) > 1 else ''} {', '.join(unused)} "
                f"{'are' if len(unused) > 1 else 'is'} not upstream of any fetch "
                f"({', '.join(t.name for t in fetches)}); feed tensors that the fetches depend on"
            )
    return reached_feeds
