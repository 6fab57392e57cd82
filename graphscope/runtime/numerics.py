"""Where non-finite values start, forward or backward (`Scope.numerics`).

Every float (or complex) tensor the feeds compute is fetched by one pruned function, but each value is reduced
inside the function before it leaves (`Program.compiled(..., reduce=)`): values inside loops and
branches are exposed as usual (`expose`), and their lists and optionals reduced item by item in
the graph, so what comes back is a few numbers per tensor per iteration, never the values.

- A first, quick pass reduces each value to the sum of its values times 0, which is finite
  exactly when every value is (and never overflows).
- Only when some sum is not finite, a second pass reduces each value to its NaN, +Inf and -Inf
  counts and the min and max of its finite values, and the origins are found on the host: a
  tensor holding non-finite values while its op's inputs are all finite at that iteration (a
  loop body's argument holds, at iteration i, the value of iteration i - 1). Tensors that only
  pass a value along (body arguments, While/If/call outputs, Identity, list and optional reads)
  are never origins. Models that draw random numbers draw new ones in the second pass.
- `backward=of`: after a finite forward pass, the gradient of `sum(of)` with respect to every
  float tensor outside loops and branches that `of` is computed from, each reduced to the same
  counts inside the gradient function (`gradients.Gradient(reduce=)`). A backward origin is a
  tensor whose gradient is non-finite while the gradients of its consumers' outputs are finite
  (looking through consumers that only pass a value along, to their own consumers' outputs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import networkx as nx
import numpy as np
import tensorflow as tf

from graphscope.errors import ArgumentError, DisconnectedError, UnsupportedFetchError
from graphscope.ir.numerics import Counts, Numerics, Origin
from graphscope.ir.records import Selection, Tensor
from graphscope.runtime import edit as editing
from graphscope.runtime.executor import Runner
from graphscope.runtime.expose import decode, iterations
from graphscope.runtime.gradients import Gradient
from graphscope.runtime.reduce import Reduction
from graphscope.runtime.runtime import Runtime

__all__ = ["numerics"]

FLOATS = ("float16", "bfloat16", "float32", "float64")
# what is checked: floats, and complex values (FNet's FFT), counted as their real and imaginary parts
CHECKED = (*FLOATS, "complex64", "complex128")
# ops whose outputs only pass a value along: never origins
_PASSING = {"Identity", "IdentityN", "Snapshot", "StopGradient", "PreventGradient", "While", "StatelessWhile",
            "If", "StatelessIf", "Case", "StatelessCase", "PartitionedCall", "StatefulPartitionedCall"}
_PASSING_PREFIXES = ("TensorList", "TensorArray", "Optional")
_COPYING = {"Identity", "Snapshot", "StopGradient", "PreventGradient"}  # one input, its value as it is
_NO_GRADIENT = [0.0, 0.0, 0.0, math.inf, -math.inf, -1.0]  # the stats of an entry no gradient reaches


# --------------------------------------------------------------------------- in-graph reductions


def _parts(x: tf.Tensor) -> tf.Tensor:
    """`x` itself, or a complex `x` as its real and imaginary parts (one flat float tensor): a
    complex number is counted as its two parts."""
    if not x.dtype.is_complex:
        return x
    flat = tf.reshape(x, [-1])
    return tf.concat([tf.math.real(flat), tf.math.imag(flat)], 0)


def _sum(x: tf.Tensor) -> tf.Tensor:
    """A scalar that is finite exactly when every value of `x` is: the sum of `x * 0` (0 for a
    finite value, NaN for NaN and ±Inf), which cannot overflow as the sum of `x` can."""
    x = _parts(x)
    return tf.cast(tf.reduce_sum(x * tf.constant(0, x.dtype)), tf.float64)


def _counts(x: tf.Tensor | None) -> tf.Tensor:
    """[NaN count, +Inf count, -Inf count, min finite, max finite, size] as float64."""
    if x is None:
        return tf.constant(_NO_GRADIENT, tf.float64)
    x = _parts(x)
    if x.dtype in (tf.float16, tf.bfloat16):
        x = tf.cast(x, tf.float32)
    inf = tf.constant(math.inf, x.dtype)
    finite = tf.math.is_finite(x)

    def count(mask: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(mask, tf.float64))

    return tf.stack([
        count(tf.math.is_nan(x)), count(tf.equal(x, inf)), count(tf.equal(x, -inf)),
        tf.cast(tf.reduce_min(tf.where(finite, x, inf)), tf.float64),
        tf.cast(tf.reduce_max(tf.where(finite, x, -inf)), tf.float64),
        tf.cast(tf.size(x), tf.float64),
    ])


# tensors counted together (fewer ops to build and optimise), up to so many values per example
# (a group's values are held until all are computed, and copied: bounded like one big tensor's)
_GROUP = 128
_GROUP_VALUES = 1 << 21


def _counts_many(values: Sequence[tf.Tensor | None]) -> tf.Tensor:
    """`_counts` of each of `values`, stacked ([n, 6]), built with a few ops per group of
    neighbours of one precision (up to `_GROUP` of them, `_GROUP_VALUES` per example): a handful
    of ops per tensor, not thirty (building and optimising the function was most of a first
    call's cost: 19 s of EfficientNetB0's)."""
    by_dtype: dict[tf.DType, list[tuple[int, tf.Tensor]]] = {}
    absent = []
    for k, v in enumerate(values):
        if v is None:
            absent.append(k)
            continue
        v = _parts(v)
        if v.dtype in (tf.float16, tf.bfloat16):
            v = tf.cast(v, tf.float32)
        by_dtype.setdefault(v.dtype, []).append((k, v))
    rows, order = [], []
    for items in by_dtype.values():
        group: list[tuple[int, tf.Tensor]] = []
        held = 0
        for k, v in items + [(-1, None)]:
            size = math.prod(d or 1 for d in v.shape) if v is not None and v.shape.rank is not None else 1
            if group and (v is None or len(group) == _GROUP or held + size > _GROUP_VALUES):
                rows.append(_group_counts([u for _, u in group]))
                order += [j for j, _ in group]
                group, held = [], 0
            if v is not None:
                group.append((k, v))
                held += size
    if absent:
        rows.append(tf.constant([_NO_GRADIENT] * len(absent), tf.float64))
        order += absent
    if not rows:
        return tf.zeros([0, 6], tf.float64)
    found = tf.concat(rows, 0) if len(rows) > 1 else rows[0]
    if order == sorted(order):
        return found
    position = {k: row for row, k in enumerate(order)}
    return tf.gather(found, [position[k] for k in range(len(values))])


def _group_counts(xs: list[tf.Tensor]) -> tf.Tensor:
    """`_counts` of each of `xs` (one dtype, float32 or float64), as sorted segments of one vector
    (sorted segment reductions and a bincount: a few times faster than unsorted ones)."""
    k = len(xs)
    if k == 1:
        return tf.expand_dims(_counts(xs[0]), 0)
    flat_shape = tf.constant([-1])
    flat = [tf.reshape(x, flat_shape) for x in xs]
    sizes = tf.concat(tf.shape_n(flat), 0)
    values = tf.concat(flat, 0)
    total = tf.size(values)
    # each value's tensor: 1 added where each tensor after the first starts, summed up
    starts = tf.cumsum(sizes)[:-1, None]
    ids = tf.cumsum(tf.scatter_nd(starts, tf.ones([k - 1], tf.int32), total[None] + 1))[:-1]
    inf = tf.constant(math.inf, values.dtype)
    finite = tf.math.is_finite(values)
    kind = (tf.cast(tf.math.is_nan(values), tf.int32) + 2 * tf.cast(tf.equal(values, inf), tf.int32)
            + 3 * tf.cast(tf.equal(values, -inf), tf.int32))  # 0 finite, 1 NaN, 2 +Inf, 3 -Inf
    counts = tf.reshape(tf.math.bincount(4 * ids + kind, minlength=4 * k, maxlength=4 * k), [k, 4])
    some = counts[:, 0] > 0  # else a segment's min and max are not +-inf (nor there, for the last empty ones)

    def extreme(reduce: Any, fill: tf.Tensor) -> tf.Tensor:
        found = reduce(tf.where(finite, values, fill), ids)
        found = tf.pad(found, [[0, k - tf.shape(found)[0]]])
        return tf.cast(tf.where(some, found, fill), tf.float64)

    return tf.concat([
        tf.cast(counts[:, 1:], tf.float64),
        tf.stack([extreme(tf.math.segment_min, inf), extreme(tf.math.segment_max, -inf), tf.cast(sizes, tf.float64)], 1),
    ], 1)


def _added(tensors: list[tf.Tensor | None]) -> tf.Tensor:
    sums = [_sum(t) for t in tensors if t is not None]
    return tf.add_n(sums) if sums else tf.constant(0.0, tf.float64)


def _gradient_total(grads: list[tf.Tensor | None], values: list[tf.Tensor | None]) -> list[tf.Tensor]:
    """The forward values' sums added up (finite when every value is), the gradients' likewise,
    and which entries a gradient reaches."""
    return [_added(values), _added(grads), tf.constant([g is not None for g in grads])]


def _gradient_counts(grads: list[tf.Tensor | None], values: list[tf.Tensor | None]) -> list[tf.Tensor]:
    return [_counts_many(grads)]


QUICK = Reduction(lambda x, k: _sum(x), total=True)
COUNTS = Reduction(lambda x, k: _counts(x), top=lambda items: [_counts_many([v for _, v in items])])


class _Reduced(Runner):
    """A function of the inputs returning the fetches reduced inside the graph (`reduce.Reduction`):
    with `total`, one number; else `{name: {iteration: counts}}` (iteration `()` outside loops;
    none for a branch that did not run)."""

    def __init__(self, runtime: Runtime, fetches: list[Tensor], feeds: Sequence[tuple[str, Tensor]],
                 edits: list[editing.Edit], reduction: Reduction, arguments: Any = None) -> None:
        self._setup(feeds, arguments)
        self.total = reduction.total
        compiled = runtime.program.compiled(self.signature.tensors, fetches, edits, reduce=reduction)
        self._adopt(runtime, compiled)
        self._top = [name for name, kinds in zip(compiled.order, compiled.kinds) if not kinds]
        self._wrapped = [(name, kinds) for name, kinds in zip(compiled.order, compiled.kinds) if kinds]

    def __call__(self, *inputs: Any) -> Any:
        outs = self._outputs(inputs)
        if self.total:
            return float(outs[0])
        rows = np.asarray(outs[0])
        found = {name: {(): rows[k]} for k, name in enumerate(self._top)}
        for (name, kinds), out in zip(self._wrapped, outs[1:]):
            found[name] = dict(iterations(decode(out, kinds, tf.float64), kinds))
        return found


class _ReducedGradient(Runner):
    """The gradient of `sum(of)` with respect to each of `wrt`, reduced inside the graph: with
    `total`, (a number finite when every forward value of `wrt` is, one finite when every
    gradient is, the entries a gradient reaches); else
    `{name: counts}` (size -1 where no gradient reaches)."""

    def __init__(self, runtime: Runtime, of: Tensor, wrt: list[Tensor], feeds: Sequence[tuple[str, Tensor]],
                 edits: list[editing.Edit], total: bool, arguments: Any = None) -> None:
        self._setup(feeds, arguments)
        self.wrt, self.total = wrt, total
        reduce = _gradient_total if total else _gradient_counts
        gradient = Gradient(of, list(wrt), None, [t.name for t in wrt], reduce=reduce)
        self._adopt(runtime, runtime.program.gradient(self.signature.tensors, gradient, edits))

    def __call__(self, *inputs: Any) -> Any:
        outs = self._outputs(inputs)
        if self.total:
            reached = np.asarray(outs[2])
            return float(outs[0]), float(outs[1]), [t.name for t, r in zip(self.wrt, reached) if r]
        return dict(zip((t.name for t in self.wrt), np.asarray(outs[0])))


# --------------------------------------------------------------------------- the check


def numerics(runtime: Runtime, inputs: Any, *, feeds: Any = None, edits: Any = None,
             backward: Any = None) -> Numerics:
    """See `Scope.numerics`."""
    feed_pairs = runtime._feed_pairs(feeds)
    edit_list = runtime._edits(edits)
    of = _target(runtime, backward) if backward is not None else None
    if of is not None and of.name in {t.name for _, t in feed_pairs}:
        raise DisconnectedError(
            f"cannot check the gradient of {of.name!r}: it is fed, so nothing computes it (the gradient of "
            "sum(x) with respect to x itself is 1 everywhere); name a tensor computed from the inputs, such as "
            "a layer's output or the model's"
        )
    checked = _checked(runtime, [t for _, t in feed_pairs])
    if not checked:
        raise DisconnectedError("no float tensor is computed from these feeds: feed the model's inputs")
    editing.check_relevant(runtime.graph, edit_list, checked)
    if of is not None:
        return _backward(runtime, of, checked, inputs, feed_pairs, edit_list)
    if math.isfinite(_executor(runtime, "quick", checked, feed_pairs, edit_list)(inputs)):
        return Numerics("forward", Selection(), (), {}, len(checked))
    return _forward_report(runtime, checked, inputs, feed_pairs, edit_list, None)


def _reaching(runtime: Runtime, edits: list[editing.Edit], fetches: list[Tensor]) -> list[editing.Edit]:
    """The edits that change something `fetches` depend on."""
    if not edits:
        return edits
    needed = {t.op for t in runtime.graph.ancestors(fetches)} | {t.op for t in fetches}
    return [e for e in edits if e.tensor.op in needed]


def _forward_report(runtime: Runtime, checked: list[Tensor], inputs: Any, feeds: list[tuple[str, Tensor]],
                    edits: list[editing.Edit], of: Tensor | None) -> Numerics:
    """The counted pass and the forward origins."""
    stats = _executor(runtime, "counts", checked, feeds, edits)(inputs)
    return _forward(runtime, stats, {t.name for _, t in feeds}, {e.tensor.name for e in edits}, of)


def _executor(runtime: Runtime, kind: str, fetches: list[Tensor], feeds: list[tuple[str, Tensor]],
              edits: list[editing.Edit]) -> Any:
    """A reduced executor (`kind`: quick, counts, gradient quick, gradient counts), cached with
    the runtime's executors."""
    key = ("numerics", kind, tuple(t.name for t in fetches), tuple((k, t.name) for k, t in feeds),
           tuple(e.key for e in edits))
    executor = runtime._executors.get(key)
    if executor is None:
        # fed the model's inputs, they are also taken in the nests its arguments are, as by an executor
        model_inputs = [(k, t.name) for k, t in runtime._feed_pairs(None)]
        arguments = runtime._arguments(None) if [(k, t.name) for k, t in feeds] == model_inputs else None
        if kind.startswith("gradient"):
            of, *wrt = fetches
            executor = _ReducedGradient(runtime, of, wrt, feeds, edits, total=kind == "gradient quick",
                                        arguments=arguments)
        else:
            executor = _Reduced(runtime, fetches, feeds, edits, QUICK if kind == "quick" else COUNTS, arguments)
        runtime._executors.put(key, executor)
    return executor


def _target(runtime: Runtime, backward: Any) -> Tensor:
    """The one float tensor outside loops and branches a backward check differentiates."""
    pairs = runtime.graph.resolve_pairs(backward)
    if len(pairs) != 1:
        raise ArgumentError(
            f"backward= names one tensor, but {backward!r} names {len(pairs)}"
            + (f": {', '.join(t.name for _, t in pairs[:5])}" if pairs else "") + "; pick one"
        )
    (_, of), = pairs
    if of.context:
        raise UnsupportedFetchError(
            f"cannot check the gradient of {of.name!r}: it is computed inside {of.context}, where it has a value "
            "per iteration; name a tensor outside loops and branches (the loop's or branch's output)"
        )
    if of.dtype not in FLOATS:
        raise ArgumentError(f"cannot differentiate {of.name!r}: it is {of.dtype}; name a floating-point tensor")
    return of


def _checked(runtime: Runtime, fed: list[Tensor]) -> list[Tensor]:
    """Every float (or complex) tensor the feeds compute, in topological order: not a handle, not of an op no
    output depends on, and kept by TensorFlow's optimizer (the rest cannot be fetched). Found
    once per feed list (cached with the runtime's executors)."""
    key = ("numerics checked", tuple(t.name for t in fed))
    found = runtime._executors.get(key)
    if found is None:
        found = _fetchable(runtime, fed)
        runtime._executors.put(key, found)
    return found


def _fetchable(runtime: Runtime, fed: list[Tensor]) -> list[Tensor]:
    graph, program = runtime.graph, runtime.program
    unused = graph.unused
    fed_ops = {t.op for t in fed}
    inputs = {t.op for t in graph.inputs} - fed_ops
    computable: dict[str, bool] = {}

    def can(op_name: str) -> bool:
        if op_name not in computable:
            computable[op_name] = op_name in fed_ops or (
                op_name not in inputs and all(can(graph.tensors[i].op) for i in _op(graph, op_name).inputs))
        return computable[op_name]

    out = []
    for t in graph.tensors.values():
        if t.dtype not in CHECKED or t.op in unused or not can(t.op):
            continue
        try:
            program.locator.locate(t)
        except UnsupportedFetchError:
            continue
        out.append(t)
    return out


# --------------------------------------------------------------------------- forward origins


def _op(graph: Any, name: str) -> Any:
    """The op record called `name` (not `graph.op`, which resolves a name as a tensor's first:
    a function body's `Identity` would be an outer tensor's op)."""
    return graph.graph.nodes[name]["op"]


def _bad(v: np.ndarray) -> bool:
    return bool(v[0] or v[1] or v[2])


def _as_counts(values: Sequence[np.ndarray]) -> Counts:
    """One Counts over several iterations' reductions."""
    lo = min(float(v[3]) for v in values) if values else math.inf
    hi = max(float(v[4]) for v in values) if values else -math.inf
    return Counts(
        nan=int(sum(v[0] for v in values)), posinf=int(sum(v[1] for v in values)),
        neginf=int(sum(v[2] for v in values)), size=int(sum(v[5] for v in values)),
        min=lo if math.isfinite(lo) else None, max=hi if math.isfinite(hi) else None,
    )


def passes_along(t: Tensor) -> bool:
    """Whether `t` only passes a value along (never an origin)."""
    if t.op_type in _PASSING or t.op_type.startswith(_PASSING_PREFIXES):
        return True
    return t.op_type == "Placeholder" and bool(t.function)  # a body's or a called function's argument


def _at(stats: dict[tuple[int, ...], np.ndarray], it: tuple[int, ...]) -> list[np.ndarray]:
    """An input's reductions at consumer iteration `it` (its own loops are a prefix of them)."""
    if not stats:
        return []
    depth = len(next(iter(stats)))
    if depth <= len(it):
        v = stats.get(it[:depth])
        return [] if v is None else [v]
    return [v for k, v in stats.items() if k[: len(it)] == it]


def _forward(runtime: Runtime, stats: dict[str, dict[tuple[int, ...], np.ndarray]], fed: set[str],
             edited: set[str], of: Tensor | None) -> Numerics:
    """The forward report from every tensor's counts: origins (an edited tensor holds what its
    edit made, so it may be one even where it would only pass a value along)."""
    graph = runtime.graph
    tensors = graph.tensors
    order = _order(runtime)
    bad = {n: _as_counts(list(v.values())) for n, v in stats.items() if any(_bad(x) for x in v.values())}
    found: list[tuple[tuple, Origin]] = []
    for name in bad:
        t = tensors[name]
        if passes_along(t) and name not in edited:
            continue
        inputs = [] if name in fed else _data_inputs(runtime, t)
        for it in sorted(k for k, v in stats[name].items() if _bad(v)):
            if any(_bad(v) for u in inputs for v in _at(stats.get(u, {}), it)):
                continue
            shown = tuple((u, _as_counts(_at(stats[u], it)) if u in stats else None) for u in inputs)
            origin = Origin(t, it, _as_counts([stats[name][it]]), shown, _chain(runtime, t))
            found.append((_key(runtime, t, it, order), origin))
            break
    found.sort(key=lambda pair: pair[0])
    details = tuple(o for _, o in found)
    return Numerics("forward", Selection(o.tensor for o in details), details,
                    _ordered(bad, order), len(stats), of=of, examined=of is None)


def _data_inputs(runtime: Runtime, t: Tensor) -> list[str]:
    return list(dict.fromkeys(i for i in _op(runtime.graph, t.op).inputs if not runtime.graph.tensors[i].is_handle))


def _order(runtime: Runtime) -> dict[str, int]:
    return {name: k for k, name in enumerate(runtime.graph.tensors)}


def _ordered(bad: dict[str, Counts], order: dict[str, int]) -> dict[str, Counts]:
    return dict(sorted(bad.items(), key=lambda item: order[item[0]]))


def _key(runtime: Runtime, t: Tensor, it: tuple[int, ...], order: dict[str, int]) -> tuple[int, ...]:
    """Execution order: each enclosing loop by its position, then the iteration (a cond's
    evaluation before the body's), each branch by its position; then the position in the graph."""
    key: list[int] = []
    loops = iter(it)
    for entry in t.function:
        if ":" not in entry:
            continue  # a called function's ops are in the caller's order
        op, _, attr = entry.partition(":")
        position = order.get(f"{op}:0", 0)
        if attr in ("body", "cond"):
            key += [position, next(loops, 0), 0 if attr == "cond" else 1]
        else:
            key += [position, 0, 0]
    return (*key, order[t.name])


def _weight(graph: Any, t: Tensor) -> bool:
    """A variable's value: read, or a cast or copy of one read."""
    if t.op_type == "ReadVariableOp":
        return True
    inputs = _op(graph, t.op).inputs
    return t.op_type in ("Cast", "Identity") and bool(inputs) and all(_weight(graph, graph.tensors[i]) for i in inputs)


def _chain(runtime: Runtime, t: Tensor, limit: int = 24) -> tuple[str, ...]:
    """From the nearest layer boundary (a tensor of another layer, an input) down to `t`,
    following at each op its first float input that is not a constant, nor a weight where
    there is another (one of the same layer first)."""
    graph = runtime.graph
    chain = [t.name]
    current = t
    while len(chain) < limit:
        candidates = [graph.tensors[i] for i in _op(graph, current.op).inputs]
        candidates = [u for u in candidates if u.dtype in CHECKED and u.op_type != "Const"]
        values = [u for u in candidates if not _weight(graph, u)]  # the data path before the weights
        candidates = values or candidates
        if not candidates:
            break
        current = next((u for u in candidates if u.layer == t.layer), candidates[0])
        chain.append(current.name)
        if current.layer != t.layer or current.op_type == "Placeholder" and not current.function:
            break
    return tuple(reversed(chain))


# --------------------------------------------------------------------------- backward origins


def _split(runtime: Runtime, of: Tensor,
           checked: list[Tensor]) -> tuple[set[str], list[Tensor], list[Tensor], set[str]]:
    """The ops `of` is computed from; the checked tensors the gradient function checks (those
    ops' tensors outside loops and branches: its `wrt`, whose forward values it reduces too);
    the rest, which a quick pass of their own checks; and those of the rest that only copy a
    value it checks (`_copies`). Found once per target and checked list (cached with the
    runtime's executors)."""
    key = ("numerics split", of.name, tuple(t.name for t in checked))
    found = runtime._executors.get(key)
    if found is None:
        upstream = nx.ancestors(runtime.graph.graph, of.op) | {of.op}
        locate = runtime.program.locator.locate
        wrt = [t for t in checked if t.op in upstream and not t.context and not any(":" in f for f in t.function)
               and isinstance(locate(t), str)]
        covered = {t.name for t in wrt}
        rest = [t for t in checked if t.name not in covered]
        found = upstream, wrt, rest, _copies(runtime, wrt, rest)
        runtime._executors.put(key, found)
    return found


def _copies(runtime: Runtime, wrt: list[Tensor], rest: list[Tensor]) -> set[str]:
    """The tensors of `rest` that only copy a value the gradient function checks (an Identity of
    a `wrt` tensor, or of such a copy: the model's output, say), finite when it is: the quick
    pass of the rest leaves them out unless an edit replaces them (ResNet50: its one rest tensor,
    a forward pass saved)."""
    graph = runtime.graph
    covered = {t.name for t in wrt}
    copies: set[str] = set()
    for t in rest:  # topological order: a copy of a copy follows it
        inputs = _data_inputs(runtime, t)
        if t.op_type in _COPYING and not t.function and inputs and all(i in covered or i in copies for i in inputs) \
                and all(graph.tensors[i].dtype == t.dtype for i in inputs):
            copies.add(t.name)
    return copies


def _backward(runtime: Runtime, of: Tensor, checked: list[Tensor], inputs: Any, feeds: list[tuple[str, Tensor]],
              edits: list[editing.Edit]) -> Numerics:
    G = runtime.graph.graph
    upstream, wrt, rest, copies = _split(runtime, of, checked)
    if not wrt:
        raise DisconnectedError(
            f"no gradient reaches any tensor from {of.name!r}: it is computed from no float tensor outside loops "
            "and branches; name a tensor computed from the model's inputs"
        )
    # the gradient function checks its forward values (the tensors `of` is computed from, outside
    # loops and branches); the rest of the forward pass is checked by a quick pass of its own,
    # less the copies of values already checked (unless fed, or an edit replaces them)
    kept = {e.tensor.name for e in edits} | {t.name for _, t in feeds}
    rest = [t for t in rest if t.name not in copies or t.name in kept]
    mine = [e for e in edits if e.tensor.op in upstream]  # the edits the gradient function holds
    forward, total, reached_names = _executor(runtime, "gradient quick", [of, *wrt], feeds, mine)(inputs)
    if not math.isfinite(forward) or rest and not math.isfinite(_executor(runtime, "quick", rest, feeds,
                                                                          _reaching(runtime, edits, rest))(inputs)):
        report = _forward_report(runtime, checked, inputs, feeds, edits, of)
        if not report.ok:
            return report  # else a random op drew other numbers: the backward pass decides
    fed = {t.name for _, t in feeds}
    sources = {t.name for t in wrt if t.name in fed or t.op_type == "ReadVariableOp"}  # inputs and weights
    if not sources & set(reached_names):
        raise DisconnectedError(
            f"no gradient flows from {of.name!r} to the inputs or weights it is computed from (every path goes "
            "through ops without a gradient: argmax, casts to integers, stop_gradient); name a tensor gradients reach"
        )
    if math.isfinite(total):
        return Numerics("backward", Selection(), (), {}, len(reached_names), of=of)
    grads = _executor(runtime, "gradient counts", [of, *wrt], feeds, mine)(inputs)
    reached = {n: v for n, v in grads.items() if v[5] >= 0}
    bad = {n: _as_counts([v]) for n, v in reached.items() if _bad(v)}
    order = _order(runtime)
    if not bad:  # a random op drew other numbers: every gradient is finite
        return Numerics("backward", Selection(), (), {}, len(reached), of=of)
    forward = _executor(runtime, "counts", checked, feeds, edits)(inputs)
    graph = runtime.graph
    consumers: dict[str, list[str]] = {}
    for op_name in G:
        for i in _op(graph, op_name).inputs:
            consumers.setdefault(i, []).append(op_name)
    found = []
    for name in bad:
        t = graph.tensors[name]
        if passes_along(t):
            continue
        ops = consumers.get(name, [])
        if any(o in bad for o in _downstream(graph, ops, consumers)):
            continue
        names = dict.fromkeys(i for c in ops for i in _op(graph, c).inputs if not graph.tensors[i].is_handle)
        shown = tuple((u, _as_counts(list(forward[u].values())) if u in forward else None) for u in names)
        found.append(Origin(t, (), bad[name], shown, _chain(runtime, t)))
    found.sort(key=lambda o: -order[o.tensor.name])  # walking from `of` toward the inputs
    return Numerics("backward", Selection(o.tensor for o in found), tuple(found), _ordered(bad, order),
                    len(reached), of=of)


def _downstream(graph: Any, ops: list[str], consumers: dict[str, list[str]]) -> Iterator[str]:
    """The outputs of `ops` whose gradients flow back into their inputs': an output that only
    passes a value along (Identity's, a loop's, a branch's, a call's) is never an origin, so it
    is looked through to its own consumers' outputs."""
    seen: set[str] = set()
    stack = list(ops)
    while stack:
        for o in _op(graph, stack.pop()).outputs:
            if o in seen:
                continue
            seen.add(o)
            if passes_along(graph.tensors[o]):
                stack.extend(consumers.get(o, []))
            else:
                yield o
