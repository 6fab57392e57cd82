"""Two runs compared layer by layer: where does a port, a mixed-precision copy, another
checkpoint or a reloaded SavedModel start to give other values?

    cmp = gs.compare(gs.trace(keras2_model), gs.trace(keras3_port), x)
    cmp.first            # the first row (in a's topological order) outside tolerance, or None
    print(cmp)           # a table: max |a-b|, max relative error, cosine, per layer
    cmp.plot()           # the error along the depth of the model, log scale

Each side is run once: one executor fetching every compared tensor of `a`, one of `b` (a Bundle
or a mapping is read, not run). Floats are numpy's and TensorFlow's others (bfloat16, the
float8s, from ml_dtypes). Two float32 or two float64 values are compared in their dtype, where
each difference is exactly rounded; others (float16, bfloat16, two dtypes, ints against floats)
in float64; the cosine's sums always in float64. Integers against integers are compared
exactly (2**60 + 1 differs from 2**60). Complex values (an FFT's) are compared in complex128,
|a - b| and |b| their moduli, the cosine that of their real and imaginary parts. A pair is within tolerance when
`numpy.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)` holds, that is
`|a - b| <= atol + rtol * |b|` everywhere (b is the reference). NaN agrees with NaN, an infinity
with the same infinity; where one side is not finite and the other is anything else (a number,
NaN, the other infinity), max_abs and max_rel are inf and the pair is outside tolerance.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from graphscope.bundle import Bundle
from graphscope.display.tables import comparison_table
from graphscope.errors import ArgumentError, GraphscopeError, InputError, OptionError, TensorNotFoundError, closest
from graphscope.ir.query import drawn
from graphscope.ir.records import Shape, Tensor, shape_text
from graphscope.ir.views import Shown, view

if TYPE_CHECKING:
    from graphscope.scope import Scope

__all__ = ["Comparison", "Row", "Unmatched", "compare"]

MATCHES = ("layers", "tensors")


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One compared pair. `name`: a's layer path (`match="layers"` or a callable; `path[k]` for
    output k of a layer with several) or canonical tensor name (`match="tensors"`); `tensor`:
    a's tensor; `other`: what it was paired with in b. `max_abs` is max |a - b|, `max_rel` max
    |a - b| / |b| over the elements where b is not 0 (inf when b is all zeros and a is not),
    `cosine` the cosine similarity of the two values flattened (1.0 when both are all zeros;
    from float64 sums of squares: exact near 1, within about 1e-15 times |a|/|b| elsewhere);
    NaN where they cannot be computed (a shape mismatch; the cosine of values holding NaN or
    Inf). A position where one side is not finite and the other differs (see the module) makes
    max_abs and max_rel inf. `ok`: within tolerance (see the module).
    `note` says what else there is to know (a shape or dtype mismatch, a branch that ran on one
    side only). `iteration`: for values computed inside a loop (one per iteration on both
    sides), the first iteration outside tolerance."""

    name: str
    layer: str | None
    tensor: str
    other: str
    shape: Shape
    dtype: str
    max_abs: float
    max_rel: float
    cosine: float
    ok: bool
    note: str = ""
    shape_b: Shape = None
    dtype_b: str = ""
    iteration: int | None = None

    def __repr__(self) -> str:
        state = "ok" if self.ok else "outside tolerance"
        return (f"<Row {self.name}: max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g} "
                f"cosine={self.cosine:.6g} {state}{f' ({self.note})' if self.note else ''}>")


class Unmatched(tuple[tuple[str, ...], tuple[str, ...]]):
    """The names found on one side only: `.a` (a's, in its order) and `.b` (b's)."""

    __slots__ = ()

    def __new__(cls, a: Any = (), b: Any = ()) -> Unmatched:
        return super().__new__(cls, (tuple(a), tuple(b)))

    @property
    def a(self) -> tuple[str, ...]:
        return self[0]

    @property
    def b(self) -> tuple[str, ...]:
        return self[1]

    def __bool__(self) -> bool:
        return bool(self.a or self.b)

    def __repr__(self) -> str:
        return f"Unmatched(a={list(self.a)!r}, b={list(self.b)!r})"


class Comparison(Shown):
    """The result of `compare`: `.rows` in a's topological order, `.first`, `.unmatched`."""

    def __init__(self, rows: list[Row], unmatched: Unmatched, *, rtol: float, atol: float, match: str,
                 skipped: Mapping[str, str] | None = None) -> None:
        self.rows: tuple[Row, ...] = tuple(rows)
        self.unmatched = unmatched
        self.rtol = rtol
        self.atol = atol
        self.match = match
        self.skipped: dict[str, str] = dict(skipped or {})  # a's names that could not be fetched -> why

    @property
    def first(self) -> Row | None:
        """The first row (in a's topological order) outside tolerance, a shape or dtype kind
        mismatch included; None when every row is within tolerance."""
        return next((r for r in self.rows if not r.ok), None)

    @property
    def ok(self) -> bool:
        """Whether every row is within tolerance."""
        return self.first is None

    def __getitem__(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name or r.tensor == name:
                return r
        raise TensorNotFoundError(f"no row named {name!r} in this comparison; rows: "
                                  f"{', '.join(r.name for r in self.rows[:8])}{', ...' if len(self.rows) > 8 else ''}")

    def __len__(self) -> int:
        return len(self.rows)

    def plot(self) -> Any:
        """A matplotlib Figure: max |a - b| (and max relative error) per row along the depth of
        the model, log scale, the first row outside tolerance marked. Needs matplotlib."""
        from graphscope.display.plot import plot_comparison  # matplotlib, only when drawing

        return plot_comparison(self)

    def __repr__(self) -> str:
        first = self.first
        state = "all within tolerance" if first is None else f"first outside tolerance: {first.name}"
        return (f"<Comparison {len(self.rows)} rows ({self.match}), {state}; "
                f"{len(self.unmatched.a)} + {len(self.unmatched.b)} unmatched>")


view.register(Comparison)(comparison_table)


def compare(
    a: Scope,
    b: Any,
    inputs: Any,
    *,
    inputs_b: Any = None,
    match: str | Callable[[str], str | None] = "layers",
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> Comparison:
    """Compare a's values on `inputs` with b's, pair by pair, in a's topological order.

    Args:
        a: a Scope.
        b: a Scope (a port, a mixed-precision copy, another checkpoint, a reloaded SavedModel),
            a Bundle (a stored earlier run: its stored values are compared, sample for sample,
            with a's on `inputs`), or a mapping from names (layer paths or canonical tensor
            names) to arrays.
        inputs: what a is fed (as for `Scope.run`); b too, unless `inputs_b` is given (a
            dict by a's input names feeds b's inputs in order where b names them otherwise).
        inputs_b: what b is fed, when its inputs differ from a's.
        match: "layers" pairs layer outputs by layer path; "tensors" pairs every tensor by
            canonical name; a callable maps each of a's layer paths to a name b knows (a layer
            path or a tensor name; for a mapping, its key), or None to leave it out.
        rtol, atol: the tolerance, as `numpy.allclose`'s: `|a - b| <= atol + rtol * |b|`.

    Returns:
        A `Comparison`. Values inside loops are compared iteration by iteration where both
        sides have one value per iteration (`Row.iteration` names the first outside tolerance).

    Raises:
        TensorNotFoundError: b shares no names with a (the message says what was tried and
            the closest names).
        InputError: a and b take different inputs and `inputs_b` is not given.

    >>> import graphscope as gs, keras, numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    >>> x = np.ones((1, 3), "float32")
    >>> cmp = gs.compare(gs.trace(model), {"dense": model(x).numpy() + 0.5}, x)
    >>> cmp.first.name, round(cmp.first.max_abs, 6), cmp.unmatched
    ('dense', 0.5, Unmatched(a=[], b=[]))
    """
    if not (hasattr(a, "model_graph") and hasattr(a, "run")):
        raise ArgumentError(f"compare's a is a Scope (gs.trace(model)), got {type(a).__name__}")
    if rtol < 0 or atol < 0 or not (math.isfinite(rtol) and math.isfinite(atol)):
        raise OptionError(f"rtol and atol are finite numbers >= 0, got rtol={rtol!r}, atol={atol!r}")
    if isinstance(match, str) and match not in MATCHES:
        raise OptionError(
            f"match={match!r}: choose 'layers', 'tensors', or a function from a's layer paths to b's names"
        )
    if not (isinstance(match, str) or callable(match)):
        raise ArgumentError(f"match is 'layers', 'tensors' or a function, got {type(match).__name__}")
    side = _side(b)
    mode = match if isinstance(match, str) else "mapped"
    rows_a = _rows_of(a.model_graph, "tensors" if mode == "tensors" else "layers")
    if mode == "tensors":
        rows_a = _with_layer_outputs(a.model_graph, rows_a, side)
    pairs, unmatched_b = _pair(rows_a, side, match, mode)
    if not pairs:
        raise TensorNotFoundError(_nothing_shared(rows_a, side, mode))
    if side.kind == "bundle" and inputs_b is None:
        _check_stored_inputs(a, side.obj, inputs, [t.name for _, t, _ in pairs])
    if side.kind == "scope" and inputs_b is None:
        _check_same_inputs(a, side.obj)
        if isinstance(inputs, Mapping) and list(side.obj.inputs) != list(a.inputs) and set(inputs) == set(a.inputs):
            inputs_b = [inputs[n] for n in a.inputs]  # b names its inputs otherwise: fed in order
    fetchable, why_a = _fetchable(a, [t for _, t, _ in pairs])
    skipped = {n: why_a[t.name] for n, t, _ in pairs if t.name in why_a}
    pairs = [p for p in pairs if p[1].name in fetchable]
    if side.kind == "scope":
        b_ok, b_why = _fetchable(side.obj, [side.tensors[o] for _, _, o in pairs])
        skipped.update({n: f"b's {o!r}: {b_why[o]}" for n, _, o in pairs if o in b_why})
        pairs = [p for p in pairs if p[2] in b_ok]
    values_a = a.run(list(dict.fromkeys(t.name for _, t, _ in pairs)), inputs)
    values_b = side.values([o for _, _, o in pairs], inputs if inputs_b is None else inputs_b)
    def row(pair: tuple[str, Tensor, str]) -> Row:
        name, t, other = pair
        with np.errstate(all="ignore"):  # NaN and Inf are compared, not warned about
            return _row(name, t, other, values_a[t.name], values_b[other], t.name in values_a.per_iteration,
                        rtol, atol)

    # numpy lets go of the GIL for the passes over the values: rows on all cores, in order
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(pairs), os.cpu_count() or 1))) as pool:
        rows = _noting_draws(list(pool.map(row, pairs)), pairs, a, side)
    paired = {name for name, _, _ in pairs}
    unmatched_a = [n for n, _ in rows_a if n not in paired and n not in skipped]
    return Comparison(rows, Unmatched(unmatched_a, unmatched_b), rtol=rtol, atol=atol, match=mode, skipped=skipped)


def _noting_draws(rows: list[Row], pairs: list[tuple[str, Tensor, str]], a: Any, side: _Side) -> list[Row]:
    """Rows outside tolerance whose values depend on random numbers drawn anew each run (dropout
    traced with training=True), on either side, with a note that says so: they differ from run
    to run, whatever the weights. Nothing is walked where every row is within tolerance."""
    if all(r.ok for r in rows):
        return rows
    graph_a = a.model_graph.graph
    graph_b = side.obj.model_graph.graph if side.kind == "scope" else None
    draws_a = drawn(graph_a)
    draws_b = drawn(graph_b) if graph_b is not None else {}
    out = []
    for r, (_, t, o) in zip(rows, pairs):
        other = side.tensors.get(o) if graph_b is not None else None
        draw = None
        if not r.ok and t.op in draws_a:
            draw = graph_a.nodes[draws_a[t.op]]["op"]
        elif not r.ok and other is not None and other.op in draws_b:
            draw = graph_b.nodes[draws_b[other.op]]["op"]
        if draw is not None:
            where = f"layer {draw.layer!r}" if draw.layer else f"op {draw.name!r}"
            note = f"random: depends on numbers {where} draws anew each run"
            r = dataclasses.replace(r, note=f"{r.note}; {note}" if r.note else note)
        out.append(r)
    return out


# ---- the two sides


def _rows_of(graph: Any, mode: str) -> list[tuple[str, Tensor]]:
    """(row name, tensor) of a model graph, in topological order: every layer call's outputs
    (InputLayers left out; `path[k]` for output k of several), or every tensor with a value.
    Tensors of unused ops (see `graphscope.ir.query.unused`) are left out."""
    position = {name: k for k, name in enumerate(graph.graph)}
    dead = graph.unused
    found: list[tuple[int, int, Any, str, Tensor]] = []
    if mode == "layers":
        returned = _return_order(graph.layers)
        for layer in graph.layers:
            if layer.type == "InputLayer":
                continue
            outputs = list(layer.outputs)
            for k, t in enumerate(outputs):
                if t.is_handle or t.op in dead:
                    continue
                name = layer.name if len(outputs) == 1 else f"{layer.name}[{k}]"
                found.append((position.get(t.op, 0), t.index, returned(layer.name, t.name), name, t))
    else:
        for order, t in enumerate(graph.tensors.values()):
            if not t.is_handle and t.op not in dead:
                found.append((position.get(t.op, 0), t.index, order, t.name, t))
    found.sort(key=lambda f: f[:3])
    return [(name, t) for *_, name, t in found]


def _return_order(layers: Any) -> Any:
    """A sort key for the rows of one tensor: the order the layer calls returned it. Several
    calls can share a tensor (a layer returning what its sublayer computed, an identity layer
    passing it on); the layer records list a layer before its sublayers and a layer's calls
    together, in the order the layers were made, which is not the order of the calls. Calls are
    compared level by level along their paths: a sublayer before the layer holding it, and of
    two calls inside one layer, the one passed the tensor after the other (its producer); record
    order otherwise. `.first` then names the call that made a value, not one that passed it on."""
    index = {layer.name: k for k, layer in enumerate(layers)}
    inputs = {layer.name: set(layer.inputs.names) for layer in layers}
    done = (2, 0)  # after every level key: a call comes after the calls inside it

    def key(name: str, tensor: str) -> tuple[tuple[int, int], ...]:
        parts = name.split("/")
        levels = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
        return tuple((int(tensor in inputs.get(level, ())), index.get(level, -1)) for level in levels) + (done,)

    return key


def _with_layer_outputs(graph: Any, rows: list[tuple[str, Tensor]], side: _Side) -> list[tuple[str, Tensor]]:
    """`match="tensors"` pairs by canonical name. A layer output whose tensor b names otherwise
    (a tf_keras LSTM's output is `lstm/PartitionedCall:1`, Keras 3's `lstm/transpose_1:0`) is
    paired by its layer path as well, in a row named by the path, so a port's broken layer is
    not skipped while only the plumbing around it pairs."""
    extra = [(n, t) for n, t in _rows_of(graph, "layers") if t.name not in side.tensors and n in side.layers]
    if not extra:
        return rows
    position = {name: k for k, name in enumerate(graph.graph)}
    return sorted(rows + extra, key=lambda r: (position.get(r[1].op, 0), r[1].index))


@dataclasses.dataclass
class _Side:
    """b as something to pair names with and read values from."""

    kind: str  # "scope" | "bundle" | "mapping"
    obj: Any
    layers: dict[str, str]  # b's layer row names -> tensor (or key) names
    tensors: dict[str, Any]  # b's tensor names (mapping keys) -> Tensor (or None)

    def resolve(self, name: str) -> str | None:
        """A name b knows (a layer path or a tensor name; a key), as the name its value is read by."""
        if name in self.layers:
            return self.layers[name]
        if name in self.tensors:
            return name
        if self.kind == "mapping":
            return None
        try:
            if self.kind == "bundle":
                return self.obj[name].name if name in self.obj else None
            (t,) = self.obj.model_graph.resolve(name)
        except (GraphscopeError, ValueError):
            return None
        return t.name if t.name in self.tensors else None

    def values(self, names: list[str], inputs: Any) -> Mapping[str, Any]:
        if self.kind == "scope":
            return self.obj.run(list(dict.fromkeys(names)), inputs)
        if self.kind == "mapping":
            return self.obj
        return {n: _stored_value(self.obj[n]) for n in dict.fromkeys(names)}


def _side(b: Any) -> _Side:
    if isinstance(b, Bundle):
        graph = b.model_graph
        stored = set(b.names)
        layers = {n: t.name for n, t in _rows_of(graph, "layers") if t.name in stored}
        return _Side("bundle", b, layers, {n: graph.tensors.get(n) for n in b.names})
    if isinstance(b, Mapping):
        bad = [k for k in b if not isinstance(k, str)]
        if bad:
            raise ArgumentError(f"a mapping b is keyed by names (layer paths or tensor names), got {bad[0]!r}")
        return _Side("mapping", b, {}, {k: None for k in b})
    if hasattr(b, "model_graph") and hasattr(b, "run"):
        graph = b.model_graph
        layers = {n: t.name for n, t in _rows_of(graph, "layers")}
        dead = graph.unused
        tensors = {n: t for n, t in graph.tensors.items() if not t.is_handle and t.op not in dead}
        return _Side("scope", b, layers, tensors)
    raise ArgumentError(
        f"compare's b is a Scope, a Bundle (gs.open) or a mapping from names to arrays, got {type(b).__name__}"
    )


def _pair(rows_a: list[tuple[str, Tensor]], side: _Side, match: Any,
          mode: str) -> tuple[list[tuple[str, Tensor, str]], list[str]]:
    """(a's row name, a's tensor, b's name) for every pair, and b's names left unpaired."""
    pairs: list[tuple[str, Tensor, str]] = []
    for name, t in rows_a:
        if mode == "mapped":
            target = match(name)
            other = None if target is None else side.resolve(str(target))
        elif mode == "layers":
            other = side.layers.get(name)
            if other is None and side.kind == "mapping":
                other = name if name in side.tensors else (t.name if t.name in side.tensors else None)
        else:  # a tensor by its name; a layer output row (no ':' in its name) by its layer path
            other = name if name in side.tensors else side.layers.get(name) if ":" not in name else None
        if other is not None:
            pairs.append((name, t, other))
    used = {o for _, _, o in pairs}
    if side.kind == "mapping":
        left = [k for k in side.tensors if k not in used]
    elif mode == "tensors":
        left = [n for n in side.tensors if n not in used]
    else:
        left = [n for n, o in side.layers.items() if o not in used]
    return pairs, left


def _nothing_shared(rows_a: list[tuple[str, Tensor]], side: _Side, mode: str) -> str:
    """What was tried, the closest names, and what to do instead."""
    what = {"layers": "layer paths", "tensors": "tensor names", "mapped": "names the match function gave"}[mode]
    names_a = [n for n, _ in rows_a]
    names_b = list(side.tensors) if side.kind == "mapping" or mode == "tensors" else list(side.layers)
    tried = f"a's {len(names_a)}"
    if side.kind == "mapping" and mode == "layers":
        what, tried = "layer paths or tensor names", f"a's {len(names_a)} layer paths and their tensor names"
        names_a = names_a + [t.name for _, t in rows_a]
    near = []
    for n in names_a:
        found = closest(n, names_b, n=1)
        if found:
            near.append(f"{n!r} ~ {found[0]!r}")
        if len(near) == 3:
            break
    shown_a = ", ".join(names_a[:4]) + (", ..." if len(names_a) > 4 else "")
    shown_b = ", ".join(names_b[:4]) + (", ..." if len(names_b) > 4 else "")
    ways = ("match='tensors' pairs canonical tensor names, match=fn maps a's layer paths to b's names, "
            "a mapping b is keyed by a's layer paths or tensor names")
    return (f"b shares no {what} with a: tried {tried} ({shown_a or 'none'}) against b's "
            f"{len(names_b)} ({shown_b or 'none'}); closest: {'; '.join(near) or 'none'}. {ways}")


def _check_same_inputs(a: Any, b: Any) -> None:
    """a and b are fed the same arrays: refuse when their inputs differ in count, shape or kind."""
    ins_a, ins_b = list(a.model_graph.inputs), list(b.model_graph.inputs)

    def spelled(ins: list[Tensor], names: list[str]) -> str:
        return ", ".join(f"{n}: {t.dtype}{shape_text(t.shape)}" for n, t in zip(names, ins)) or "nothing"

    differ = len(ins_a) != len(ins_b)
    for x, y in zip(ins_a, ins_b):
        if x.shape is not None and y.shape is not None:
            if len(x.shape) != len(y.shape) or any(p is not None and q is not None and p != q
                                                   for p, q in zip(x.shape, y.shape)):
                differ = True
        if np.dtype(_np_dtype(x.dtype)).kind != np.dtype(_np_dtype(y.dtype)).kind:
            differ = True
    if differ:
        raise InputError(
            f"a and b take different inputs (a: {spelled(ins_a, a.inputs)}; b: {spelled(ins_b, b.inputs)}), and "
            "one set of inputs was given: pass b's own as inputs_b=..."
        )


def _check_stored_inputs(a: Any, bundle: Bundle, inputs: Any, fetches: list[str]) -> None:
    """Refuse to compare a's values on `inputs` with a stored run made on other inputs: the
    store keeps a fingerprint of the first batch it was extracted from (`describe_call`), and
    values sample for sample mean nothing on other samples (a reordered or changed dataset would
    read as a regression)."""
    from graphscope.data.sources import Batches
    from graphscope.data.store import fingerprint

    call = bundle.attrs.get("call") or {}
    want, size = call.get("first_batch"), call.get("batch_size")
    if not want or not size:
        return  # a store written before the fingerprint was kept: nothing to check against
    first = Batches(inputs, a.executor(fetches).signature, size).first()
    if fingerprint(first) != want:
        raise InputError(
            f"b is a run stored at {bundle.path!r} from other inputs: the first {size} sample(s) of the "
            "inputs given are not those it was extracted from (same arrays, dtypes and order); pass the "
            "inputs it was extracted from, or extract a new run on these"
        )


def _np_dtype(name: str) -> Any:
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16, string, ...
        return np.dtype("float32") if "float" in name else np.dtype(object)


def _fetchable(scope: Any, tensors: list[Tensor]) -> tuple[set[str], dict[str, str]]:
    """The tensors of `tensors` an executor can fetch, and why each other one cannot."""
    from graphscope.errors import UnsupportedFetchError

    locator = scope._runtime.program.locator
    ok, why = set(), {}
    for t in tensors:
        try:
            locator.locate(t)
        except UnsupportedFetchError as e:
            why[t.name] = str(e)
        else:
            ok.add(t.name)
    return ok, why


def _stored_value(stored: Any) -> Any:
    """A stored tensor's value as a run gives it: every sample (a list, where they differ in
    shape), or the one batch's value."""
    if stored.layout == "sample":
        return list(stored) if stored.ragged else np.asarray(stored)
    if len(stored) == 1:
        return stored[0]
    return _Unusable(f"stored once per batch over {len(stored)} batches, not per sample: compare one batch's "
                     "value (bundle[name][k]) through a mapping b")


@dataclasses.dataclass(frozen=True)
class _Unusable:
    reason: str


# ---- comparing two values


def _row(name: str, t: Tensor, other: str, x: Any, y: Any, per_iteration: bool, rtol: float, atol: float) -> Row:
    base = dict(name=name, layer=t.layer, tensor=t.name, other=other)
    nan = float("nan")
    if isinstance(y, _Unusable):
        return Row(**base, shape=_shape(x), dtype=_dtype(x), max_abs=nan, max_rel=nan, cosine=nan, ok=False,
                   note=y.reason)
    if x is None or y is None:
        both = x is None and y is None
        note = "ran on neither side (a branch not taken)" if both else f"ran on {'b' if x is None else 'a'} only"
        return Row(**base, shape=_shape(x), dtype=_dtype(x), max_abs=nan, max_rel=nan, cosine=nan, ok=both,
                   note=note, shape_b=_shape(y), dtype_b=_dtype(y))
    if isinstance(x, list) or isinstance(y, list):  # one value per iteration, shapes differing
        xs = list(x) if isinstance(x, list) else list(np.asarray(x))
        ys = list(y) if isinstance(y, list) else list(np.asarray(y))
        if len(xs) != len(ys):
            return Row(**base, shape=(len(xs),), dtype=_dtype(x), max_abs=nan, max_rel=nan, cosine=nan, ok=False,
                       note=f"{len(xs)} iterations vs {len(ys)}", shape_b=(len(ys),), dtype_b=_dtype(y))
        stats = [_stats(np.asarray(p), np.asarray(q), rtol, atol) for p, q in zip(xs, ys)]
        bad = [s for s in stats if s[4]]
        if bad:
            return Row(**base, shape=(len(xs),), dtype=_dtype(x), max_abs=nan, max_rel=nan, cosine=nan, ok=False,
                       note=f"iteration {stats.index(bad[0])}: {bad[0][4]}", shape_b=(len(ys),), dtype_b=_dtype(y),
                       iteration=stats.index(bad[0]))
        flat_x = np.concatenate([_flat64(p) for p in xs]) if xs else np.zeros(0)
        flat_y = np.concatenate([_flat64(q) for q in ys]) if ys else np.zeros(0)
        first = next((k for k, s in enumerate(stats) if not s[3]), None)
        finite = np.isfinite(flat_x).all() and np.isfinite(flat_y).all()
        return Row(**base, shape=(len(xs),), dtype=_dtype(x), max_abs=max((s[0] for s in stats), default=0.0),
                   max_rel=max((s[1] for s in stats), default=0.0),
                   cosine=_cosine(flat_x, flat_y, np.abs(flat_x - flat_y)) if finite else float("nan"),
                   ok=first is None, note="per iteration", shape_b=(len(ys),), dtype_b=_dtype(y), iteration=first)
    x, y = np.asarray(x), np.asarray(y)
    max_abs, max_rel, cosine, ok, problem = _stats(x, y, rtol, atol)
    how = ("exactly" if _int_kind(x.dtype) and _int_kind(y.dtype)
           else "in complex128" if "c" in (x.dtype.kind, y.dtype.kind) else "in float64")
    note = problem or (f"{x.dtype} vs {y.dtype}, compared {how}" if x.dtype != y.dtype else "")
    iteration = None
    if per_iteration and not problem and x.ndim:
        iteration = next((k for k in range(x.shape[0]) if not _close(x[k], y[k], rtol, atol)), None)
        note = note or "per iteration"
    return Row(**base, shape=x.shape, dtype=str(x.dtype), max_abs=max_abs, max_rel=max_rel, cosine=cosine, ok=ok,
               note=note, shape_b=y.shape, dtype_b=str(y.dtype), iteration=iteration)


def _float_kind(dtype: np.dtype) -> bool:
    """A float dtype: numpy's, or one of ml_dtypes' that TensorFlow uses (bfloat16, the float8s),
    which numpy sees as kind 'V'."""
    if dtype.kind == "f":
        return True
    if dtype.kind != "V":
        return False
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - TensorFlow depends on ml_dtypes
        return False
    try:
        ml_dtypes.finfo(dtype)
    except (ValueError, TypeError):
        return False
    return True


def _int_kind(dtype: np.dtype) -> bool:
    """An integer (or bool) dtype: numpy's, or ml_dtypes' int4, uint4, ..."""
    if dtype.kind in "biu":
        return True
    if dtype.kind != "V":
        return False
    try:
        import ml_dtypes

        ml_dtypes.iinfo(dtype)
    except (ImportError, ValueError, TypeError):
        return False
    return True


def _stats(x: np.ndarray, y: np.ndarray, rtol: float, atol: float) -> tuple[float, float, float, bool, str]:
    """max_abs, max_rel, cosine, within tolerance, and what makes the pair incomparable ('' if nothing)."""
    nan = float("nan")
    if x.shape != y.shape:
        return nan, nan, nan, False, f"shape {shape_text(x.shape)} vs {shape_text(y.shape)}"
    ints = _int_kind(x.dtype) and _int_kind(y.dtype)
    numeric = ints or all(_float_kind(t) or _int_kind(t) or t.kind == "c" for t in (x.dtype, y.dtype))
    if not numeric:
        if x.dtype.kind != y.dtype.kind:
            return nan, nan, nan, False, f"dtype {x.dtype} vs {y.dtype}"
        if np.array_equal(x, y):
            return 0.0, 0.0, 1.0, True, ""
        return nan, nan, nan, False, "values differ"
    if not x.size:
        return 0.0, 0.0, 1.0, True, ""
    if ints:
        return _stats_ints(x, y, rtol, atol)
    if "c" in (x.dtype.kind, y.dtype.kind):
        return _stats_complex(x, y, rtol, atol)
    # one float dtype: compared in it (each difference is exactly rounded); else in float64
    work = x.dtype if x.dtype == y.dtype and x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    a, b = np.asarray(x, work).ravel(), np.asarray(y, work).ravel()
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, handled below
        d = np.subtract(a, b)
    np.abs(d, out=d)
    max_abs = float(d.max())
    if not math.isfinite(max_abs):  # NaN or Inf somewhere: the careful way
        return _stats_nonfinite(a.astype(np.float64), b.astype(np.float64), rtol, atol)
    if max_abs == 0:
        return 0.0, 0.0, 1.0, True, ""
    scale = np.abs(b)
    ok = max_abs <= atol
    if not ok:
        bound = np.multiply(scale, rtol)
        bound += atol
        ok = bool(np.less_equal(d, bound).all())
        del bound
    zeros = scale == 0
    if zeros.all():
        max_rel = float("inf")
    else:
        if zeros.any():
            scale[zeros] = np.inf  # |a-b| / inf = 0: elements where b is 0 count in max_abs only
        max_rel = float(np.divide(d, scale, out=scale).max())
    return max_abs, max_rel, _cosine(a, b, d), ok, ""


def _stats_complex(x: np.ndarray, y: np.ndarray, rtol: float, atol: float) -> tuple[float, float, float, bool, str]:
    """`_stats` where a side is complex, in complex128: |a - b| and |b| are moduli, so the pair is
    within tolerance as `numpy.allclose` decides for complex values; the cosine is that of the
    values as real vectors (each number's real and imaginary parts). A value with a NaN or
    infinite part agrees only with one whose parts are each the same (NaN with NaN); it is
    otherwise outside tolerance, its difference inf, and there is no cosine. The finite values
    beside it are compared by their moduli all the same."""
    a, b = np.asarray(x, np.complex128).ravel(), np.asarray(y, np.complex128).ravel()
    parts_a, parts_b = a.view(np.float64), b.view(np.float64)
    if not (np.isfinite(parts_a).all() and np.isfinite(parts_b).all()):
        return _stats_complex_nonfinite(a, b, rtol, atol)
    d = np.abs(a - b)
    max_abs = float(d.max())
    if max_abs == 0:
        return 0.0, 0.0, 1.0, True, ""
    scale = np.abs(b)
    ok = bool(np.less_equal(d, atol + rtol * scale).all())
    nonzero = scale != 0
    max_rel = float((d[nonzero] / scale[nonzero]).max()) if nonzero.any() else float("inf")
    return max_abs, max_rel, _cosine(parts_a, parts_b, np.abs(parts_a - parts_b)), ok, ""


def _stats_complex_nonfinite(a: np.ndarray, b: np.ndarray, rtol: float,
                             atol: float) -> tuple[float, float, float, bool, str]:
    """`_stats_complex` of complex128 values, some with a NaN or infinite part (see there)."""
    pa, pb = a.view(np.float64).reshape(-1, 2), b.view(np.float64).reshape(-1, 2)
    same = ((pa == pb) | (np.isnan(pa) & np.isnan(pb))).all(axis=1)
    finite = np.isfinite(a) & np.isfinite(b)
    clash = ~same & ~finite
    diff = np.zeros(a.shape)
    diff[finite] = np.abs(a[finite] - b[finite])
    scale = np.abs(b[finite])
    ok = not clash.any() and bool(np.less_equal(diff[finite], atol + rtol * scale).all())
    diff[clash] = np.inf
    max_abs = float(diff.max())
    if clash.any():
        max_rel = float("inf")
    else:  # as for finite values: elements where b is 0 count in max_abs only, unless b is all zeros
        nonzero = scale != 0
        rel = diff[finite][nonzero] / scale[nonzero]
        max_rel = float(rel.max()) if rel.size else (0.0 if max_abs == 0 else float("inf"))
    return max_abs, max_rel, float("nan"), ok, ""


def _flat64(v: Any) -> np.ndarray:
    """A value raveled as float64, a complex one as its real and imaginary parts."""
    v = np.asarray(v)
    return np.asarray(v, np.complex128).ravel().view(np.float64) if v.dtype.kind == "c" else np.asarray(v, np.float64).ravel()


def _stats_nonfinite(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[float, float, float, bool, str]:
    """`_stats` of float64 values holding NaN or Inf. Where both are NaN, or both the same
    infinity, they agree (difference 0, as `numpy.allclose(equal_nan=True)`); where one is not
    finite and the other differs from it (a number, NaN, the other infinity), the difference is
    inf, absolute and relative, and the pair is outside tolerance."""
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    finite = np.isfinite(a) & np.isfinite(b)
    clash = ~same & ~finite
    diff = np.abs(np.subtract(a, b, where=finite, out=np.zeros_like(a)))
    diff[same] = 0.0
    diff[clash] = np.inf
    max_abs = float(diff.max())
    if clash.any():
        max_rel = float("inf")
    else:  # as for finite values: elements where b is 0 count in max_abs only, unless b is all zeros
        nonzero = finite & (b != 0)
        rel = diff[nonzero] / np.abs(b[nonzero])
        max_rel = float(rel.max()) if rel.size else (0.0 if max_abs == 0 else float("inf"))
    return max_abs, max_rel, float("nan"), _close(a, b, rtol, atol), ""  # no cosine with NaN or Inf


def _as_exact_ints(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y raveled as int64 (signed) or uint64 (both unsigned) without loss.
    Mixed signed and unsigned 64-bit values go through Python ints where they do not fit int64."""
    x, y = x.ravel(), y.ravel()
    if x.dtype.kind == "V" or y.dtype.kind == "V":  # ml_dtypes' int4, ...: small, via int64
        x, y = x.astype(np.int64), y.astype(np.int64)
    unsigned = x.dtype.kind in "bu" and y.dtype.kind in "bu"
    if unsigned:
        return x.astype(np.uint64), y.astype(np.uint64)
    big = np.iinfo(np.int64).max
    for v in (x, y):
        if v.dtype == np.uint64 and v.size and int(v.max()) > big:
            return np.asarray([int(e) for e in x], object), np.asarray([int(e) for e in y], object)
    return x.astype(np.int64), y.astype(np.int64)


def _stats_ints(x: np.ndarray, y: np.ndarray, rtol: float, atol: float) -> tuple[float, float, float, bool, str]:
    """`_stats` of two integer arrays, compared exactly: |a - b| and |b| as exact unsigned 64-bit
    integers (two's complement arithmetic wraps, and the true values lie within 0 .. 2**64-1),
    |a - b| <= atol + rtol*|b| decided exactly for each integer |a - b|."""
    a, b = _as_exact_ints(x, y)
    if a.dtype == object:  # values past int64 on a signed side: Python ints
        d = np.asarray([abs(p - q) for p, q in zip(a, b)], object)
        scale = np.asarray([abs(q) for q in b], object)
        bound = atol + rtol * scale.astype(np.float64)
        ok = all(p <= math.floor(t) if math.isfinite(t) else True for p, t in zip(d, bound))
        d_f, scale_f = d.astype(np.float64), scale.astype(np.float64)
        max_abs = int(d.max())
    else:
        u = np.uint64
        with np.errstate(over="ignore"):
            au, bu = a.view(u) if a.dtype == np.int64 else a, b.view(u) if b.dtype == np.int64 else b
            d = np.where(a >= b, au - bu, bu - au)  # exact: the true difference is below 2**64
            scale = np.where(b < 0, u(0) - bu, bu) if b.dtype == np.int64 else bu
        max_abs = int(d.max())
        if max_abs == 0:
            return 0.0, 0.0, 1.0, True, ""
        # d <= bound exactly for integer d: d <= floor(bound); below 2**64 an integral float64 is an exact uint64
        bound = np.floor(np.maximum(atol + rtol * scale.astype(np.float64), 0.0))
        past = bound >= 2.0**64
        ok = bool(np.all(past | (d <= np.where(past, 0.0, bound).astype(u))))
        d_f, scale_f = d.astype(np.float64), scale.astype(np.float64)
    if max_abs == 0:
        return 0.0, 0.0, 1.0, True, ""
    nonzero = scale_f != 0
    max_rel = float((d_f[nonzero] / scale_f[nonzero]).max()) if nonzero.any() else float("inf")
    cosine = _cosine(np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel(), d_f)
    return float(max_abs), max_rel, cosine, ok, ""


def _close(x: Any, y: Any, rtol: float, atol: float) -> bool:
    """`numpy.allclose(x, y, rtol, atol, equal_nan=True)`, integers compared exactly."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return False
    if _int_kind(x.dtype) and _int_kind(y.dtype):
        return _stats_ints(x, y, rtol, atol)[3] if x.size else True
    if "c" in (x.dtype.kind, y.dtype.kind):
        return _stats_complex(x, y, rtol, atol)[3] if x.size else True
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _cosine(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> float:
    """The cosine of two finite flat arrays, given `d = |a - b|`: 1.0 for two zero arrays, 0.0
    for one. Computed as 1 - (|a-b|^2 - (|a| - |b|)^2) / (2 |a| |b|), so that it stays exact
    near 1 (two values that nearly agree) from sums of squares alone. Everything in float64: the
    sums, and |a - b| again for narrower values (exact for two float32s of nearby magnitude); an
    error in a sum relative to |a|^2 is magnified |a|/|b| times where the norms differ."""
    aa, bb, dd = _sums_of_squares(a, b, d)
    if aa == 0 and bb == 0:
        return 1.0
    if aa == 0 or bb == 0:
        return 0.0
    na, nb = math.sqrt(aa), math.sqrt(bb)
    return float(min(1.0, max(-1.0, 1.0 - (dd - (na - nb) ** 2) / (2.0 * na * nb))))


_CHUNK = 1 << 16


def _sums_of_squares(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> tuple[float, float, float]:
    """|a|^2, |b|^2, |a - b|^2 in float64. einsum, not np.dot: a float64 BLAS dot can cost ten
    times more where its threads wait for busy cores. Narrower values go through a float64
    buffer a chunk at a time (no array-sized copies), |a - b| recomputed there exactly."""
    if a.dtype == np.float64:
        return tuple(float(np.einsum("i,i->", v, v)) for v in (a, b, d))  # type: ignore[return-value]
    buf = np.empty((3, min(_CHUNK, a.size)))
    sums = np.zeros(3)
    for start in range(0, a.size, _CHUNK):
        n = min(_CHUNK, a.size - start)
        x, y, w = buf[0, :n], buf[1, :n], buf[2, :n]
        np.copyto(x, a[start:start + n])
        np.copyto(y, b[start:start + n])
        np.subtract(x, y, out=w)
        sums += np.einsum("ij,ij->i", buf[:, :n], buf[:, :n])
    return float(sums[0]), float(sums[1]), float(sums[2])


def _shape(v: Any) -> Shape:
    if v is None or isinstance(v, _Unusable):
        return None
    if isinstance(v, list):
        return (len(v),)
    return tuple(np.shape(v))


def _dtype(v: Any) -> str:
    if v is None or isinstance(v, _Unusable):
        return ""
    if isinstance(v, list):
        present = [np.asarray(e) for e in v if e is not None]
        return str(present[0].dtype) if present else ""
    return str(np.asarray(v).dtype)
