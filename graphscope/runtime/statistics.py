"""Statistics of fetched tensors reduced inside the graph, one batch at a time (the runtime half of
`Scope.statistics`; `graphscope.data.statistics` streams a dataset through it).

Each fetched value (each iteration's value, inside loops) is laid out as `[rows, L, entries]`
(entries: the channels of `axis`; `L` the axis before them; for `axis=None` the last axis's,
merged into one on the host) and reduced
in the compiled function to eight float64 numbers per entry (`ir.statistics.Moments.from_sums`),
so only those leave TensorFlow:

- the fast path: sums over `L` in the value's precision (float32 for 16-bit floats), then over
  the rows in float64 (about 1e-7 of the values' scale times the square root of `L` from
  numpy's float64 figures; summing all in float64 is four times slower on CPU), of `x - shift`
  and its square (with XLA, the two parts of one complex sum: one pass over the values), min, max
  and the zero count. `shift` is the entry's mean over the first row:
  the sum of squares then exceeds the squared deviations' by a factor of at most 1 + rows, which
  bounds how much of its float32 precision the subtraction cancels (with the first value as the
  shift, an outlier first value made that factor up to the count of values: a tight cluster
  after a first value of 0, 2048 values a row, gave a std 37% off). Fused into one XLA
  computation where TensorFlow has XLA (four passes over memory instead of eight); plain ops
  otherwise.
- when a sum comes out non-finite (a NaN or Inf among the values, or a float32 overflow), or an
  entry's values spread over less than `TINY` (their float32 squares would underflow), the
  batch is run again by a second function (built the first time it is needed) that computes the
  figures in float64 with the non-finite values masked out and the deviations taken from the
  mean in a second pass. (Built into the first function behind a `tf.cond` per tensor, it made
  building and optimising ResNet50's function five times slower.) A model that draws random
  numbers draws new ones for that batch; every figure of the batch comes from the second run.

Histograms take a second pass over the data (`Summary` with `edges`): each value's bin, by
binary search among float64 edges held in a variable the caller sets, is counted per entry.
Integer and boolean tensors are reduced as float64 (booleans as 0 and 1).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from graphscope.errors import ArgumentError, OptionError, UnsupportedFetchError
from graphscope.ir.records import Tensor
from graphscope.ir.statistics import Moments
from graphscope.runtime import edit as editing
from graphscope.runtime.executor import Runner
from graphscope.runtime.expose import decode, iterations
from graphscope.runtime.reduce import Reduction
from graphscope.runtime.runtime import Runtime

__all__ = ["Summary", "check_fetch", "entry_axis", "finite"]

NUMBERS = ("float16", "bfloat16", "float32", "float64", "bool", "int8", "int16", "int32", "int64", "uint8",
           "uint16", "uint32", "uint64")
FUSE = True  # fuse the fast path with XLA where TensorFlow has it (tests turn it off to check the plain ops)


def entry_axis(t: Tensor, axis: int | None) -> int | None:
    """`axis` as a non-negative axis of `t`'s value (None stays None).

    Raises:
        ArgumentError: `axis` is not a whole number.
        OptionError: `t` has no such axis, its rank is unknown, or the axis is its batch axis.
    """
    if axis is None:
        return None
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise ArgumentError(f"axis must be a whole number or None, got {axis!r}")
    if t.shape is None:
        raise OptionError(
            f"cannot take statistics of {t.name!r} per entry of axis {axis}: its rank is not known until it runs; "
            "pass axis=None for one figure per tensor"
        )
    rank = len(t.shape)
    if not -rank <= axis < rank:
        shape = "a scalar" if rank == 0 else f"rank {rank} ({list(t.shape)})"
        raise OptionError(
            f"{t.name!r} has no axis {axis}: it is {shape}; pass axis=None for one figure per tensor"
            + (f", or an axis from {-rank} to {rank - 1}" if rank else "")
        )
    given, axis = int(axis), int(axis) % rank
    if axis == 0 and t.shape[0] is None and not t.context:
        if rank == 1:
            raise OptionError(
                f"{t.name!r} has one axis ([None]), its batch axis: axis {given} is that axis, whose size changes "
                "with the batch (one figure per sample cannot be merged over a dataset); pass axis=None for one "
                "figure per tensor"
            )
        raise OptionError(
            f"axis {axis} of {t.name!r} is its batch axis (its size changes with the batch): statistics per "
            "sample cannot be merged over a dataset; pass the channel axis (-1, the default) or axis=None"
        )
    return axis


def check_fetch(t: Tensor) -> None:
    """Refuse a tensor whose statistics cannot be taken: not a number, or inside a branch (also
    where the loop computing it lies in one)."""
    if t.dtype not in NUMBERS:
        raise UnsupportedFetchError(
            f"cannot take statistics of {t.name!r}: it is {t.dtype}, and statistics are taken of numbers "
            "(floats; integers and booleans as float64, booleans as 0 and 1)"
        )
    branch = next((f for f in reversed(t.function) if ":" in f and not f.endswith(":body")), None)
    if branch is not None and branch.endswith(":cond"):
        raise UnsupportedFetchError(
            f"cannot take statistics of {t.name!r}: it is computed inside {branch}, a loop's condition (run once "
            "more than its body); fetch a value of the loop's body or the loop's output instead"
        )
    if branch is not None:
        inner = f"inside {t.context}, " if branch != t.context else ""
        raise UnsupportedFetchError(
            f"cannot take statistics of {t.name!r}: it is computed {inner}inside {branch}, a branch that may not "
            "run for every sample; fetch the branch op's output instead"
        )


# --------------------------------------------------------------------------- in-graph reductions


def _entries(x: tf.Tensor, axis: int | None) -> tf.Tensor:
    """`x` as `[rows, L, entries]`, in the precision it is summed in over `L`."""
    if x.dtype == tf.bool or x.dtype.is_integer:
        x = tf.cast(x, tf.float64)
    elif x.dtype in (tf.float16, tf.bfloat16):
        x = tf.cast(x, tf.float32)
    rank = x.shape.rank
    if axis is None:
        return tf.reshape(x, [-1, 1, 1])
    if axis != rank - 1:
        x = tf.transpose(x, [k for k in range(rank) if k != axis] + [axis])
    shape = tf.shape(x)
    entries = x.shape[-1] if x.shape[-1] is not None else shape[-1]
    inner = (x.shape[-2] if x.shape[-2] is not None else shape[-2]) if rank >= 2 else 1
    return tf.reshape(x, [-1, inner, entries])


def _sum(x: tf.Tensor) -> tf.Tensor:
    """Summed over `L` in `x`'s precision, then over the rows in float64."""
    return tf.reduce_sum(tf.cast(tf.reduce_sum(x, 1), tf.float64), 0)


def _fast(x: tf.Tensor, *, paired: bool = False) -> tf.Tensor:
    """The packed figures (`Moments.from_sums`) of `[rows, L, entries]` values, all finite.

    `paired` (under XLA): the sums of `d = x - shift` and of its square as the real and
    imaginary parts of one complex sum, added apart in `x`'s precision as two float sums would
    be: one pass over the values instead of two (on ResNet50's layer outputs, 17% less CPU time
    for the fused reductions; as plain ops the complex sum is a third slower than two float ones)."""
    # the first row's mean (0 when there are none; see the module's docstring)
    shift = tf.math.divide_no_nan(tf.reduce_sum(x[:1], [0, 1]), tf.cast(tf.shape(x)[1], x.dtype))
    d = x - shift
    if paired:
        sums = tf.reduce_sum(tf.cast(tf.reduce_sum(tf.complex(d, d * d), 1), tf.complex128), 0)
        s1, s2 = tf.math.real(sums), tf.math.imag(sums)
    else:
        s1, s2 = _sum(d), _sum(d * d)
    size = tf.cast(tf.shape(x)[0] * tf.shape(x)[1], tf.float64)
    n = tf.fill(tf.shape(shift), size)
    return tf.stack([
        n, s1, s2, tf.cast(shift, tf.float64),
        tf.cast(tf.reduce_min(x, [0, 1]), tf.float64), tf.cast(tf.reduce_max(x, [0, 1]), tf.float64),
        _sum(tf.cast(tf.equal(x, 0), x.dtype)), n,
    ], 1)


_fast_fused = tf.function(functools.partial(_fast, paired=True), jit_compile=True, reduce_retracing=True)


def _masked(x: tf.Tensor) -> tf.Tensor:
    """The packed figures of `[rows, L, entries]` values over their finite ones, in float64, the
    deviations taken from the mean (a second pass)."""
    x = tf.cast(x, tf.float64)
    finite = tf.math.is_finite(x)
    zero = tf.zeros_like(x)
    n = tf.reduce_sum(tf.cast(finite, tf.float64), [0, 1])
    mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(finite, x, zero), [0, 1]), n)
    d = tf.where(finite, x - mean, zero)
    inf = tf.constant(np.inf, tf.float64)
    size = tf.cast(tf.shape(x)[0] * tf.shape(x)[1], tf.float64)
    return tf.stack([
        n, tf.reduce_sum(d, [0, 1]), tf.reduce_sum(d * d, [0, 1]), mean,
        tf.reduce_min(tf.where(finite, x, inf), [0, 1]), tf.reduce_max(tf.where(finite, x, -inf), [0, 1]),
        tf.reduce_sum(tf.cast(tf.equal(x, 0), tf.float64), [0, 1]), tf.fill(tf.shape(n), size),
    ], 1)


# fused summaries are called one at a time in a process: two chains of XLA launches side by side
# (two threads, or Beam's workers in threads) would be launches side by side again
_FUSED_CALLS = threading.Lock()


@functools.cache
def _has_xla() -> bool:
    """Whether this TensorFlow compiles with XLA on the default device (some builds cannot)."""
    try:
        tf.function(lambda v: v + 1, jit_compile=True)(tf.constant([1.0]))
        return True
    except Exception:  # noqa: BLE001 - any failure means: no XLA here
        return False


def _packed(x: tf.Tensor) -> tf.Tensor:
    """`[entries, 8]` figures of `[rows, L, entries]` values by the fast path (fused with XLA
    where TensorFlow has it)."""
    return (_fast_fused if FUSE and _has_xla() else _fast)(x)


def _histogram(x: tf.Tensor, edges: tf.Tensor) -> tf.Tensor:
    """`[entries, bins]` counts of the finite values of `[rows, L, entries]` in the bins of
    `edges` (`[entries, bins + 1]`, float64): value v is in bin i when `edges[i] <= v <
    edges[i + 1]`, the last bin closed, as `numpy.histogram`; values outside are not counted."""
    entries = tf.shape(x)[2]
    bins = tf.shape(edges)[1] - 1
    v = tf.transpose(tf.reshape(tf.cast(x, tf.float64), tf.stack([-1, entries])))
    index = tf.searchsorted(edges, v, side="right", out_type=tf.int32) - 1
    index = tf.where(tf.equal(v, edges[:, -1:]), bins - 1, index)
    valid = tf.math.is_finite(v) & (index >= 0) & (index < bins)
    overflow = entries * bins
    flat = tf.where(valid, tf.range(entries)[:, None] * bins + index, overflow)
    counts = tf.math.bincount(tf.reshape(flat, [-1]), minlength=overflow + 1, maxlength=overflow + 1,
                              dtype=tf.float64)
    return tf.reshape(counts[:overflow], tf.stack([entries, bins]))


# --------------------------------------------------------------------------- the reduced executor


class Summary(Runner):
    """A function of the inputs that returns each fetch's figures on one batch, reduced inside
    the graph: `{name: Moments}` (every iteration of a loop merged), or with `bins`, `{name:
    histogram counts}` in the bins of edges set by `set_edges`.

    The fast path's figures are right only where every value is finite (`finite` says whether
    they are); `masked` reduces in float64 with non-finite values left out, at several times
    the cost: the caller runs a batch again with it when the fast figures are not finite."""

    def __init__(self, runtime: Runtime, fetches: Sequence[Tensor], axes: dict[str, int | None],
                 feeds: Sequence[tuple[str, Tensor]], edits: Sequence[editing.Edit], *,
                 bins: int | None = None, masked: bool = False) -> None:
        self._setup(feeds)
        self.masked = masked
        self.fetches = list({t.name: t for t in fetches}.values())
        order = sorted(t.name for t in self.fetches)
        self.axes = {name: axes[name] for name in order}
        self.bins = bins
        self.lock = threading.Lock()  # the edges are set, then a whole pass runs
        self._edges: dict[str, tf.Variable] = {}
        if bins is not None:
            self._edges = {name: tf.Variable(np.zeros((1, bins + 1)), shape=tf.TensorShape(None), dtype=tf.float64,
                                             trainable=False) for name in order}

        ranks = {t.name: None if t.shape is None else len(t.shape) for t in self.fetches}
        ops = {t.name: t.op for t in self.fetches}

        def layout(value: tf.Tensor, k: int) -> tf.Tensor:
            name = order[k]
            axis, rank = self.axes[name], ranks[name]
            if value.shape.rank is None and rank is not None:  # an item of a loop's list
                value = tf.ensure_shape(value, [None] * rank)
            if bins is None:
                # per tensor: per entry of the last axis, merged on the host (summed over fewer
                # values in float32 than the whole tensor's last axis would be)
                return _entries(value, rank - 1 if axis is None and rank and rank >= 2 else axis)
            return _entries(value, axis)

        def leaf(value: tf.Tensor, k: int, after: Sequence[tf.Tensor] = ()) -> tf.Tensor:
            x = layout(value, k)
            if after:  # the reduction waits for `after`, by a control edge on its own input
                with tf.control_dependencies(after):
                    x = tf.identity(x)
            if bins is None:
                return _masked(x) if masked else _packed(x)
            return _histogram(x, tf.reshape(self._edges[order[k]].read_value(), [-1, bins + 1]))

        position = {name: k for k, name in enumerate(runtime.graph.graph)}
        fused = self._fused = bins is None and not masked and FUSE and _has_xla()

        def top(items: list[tuple[int, tf.Tensor]]) -> list[tf.Tensor]:
            """The top-level values' reductions. Fused ones run one at a time, in the order the
            values are computed (each waits for the one before): XLA launches running side by side
            crashed TensorFlow 2.21 now and then (a segfault in 1 of 3 first calls on DenseNet121's
            426 layer outputs, 2 of 8 with two chains; none in 18 with one launch at a time)."""
            if not fused:
                return [leaf(v, k) for k, v in items]
            out: dict[int, tf.Tensor] = {}
            previous: list[tf.Tensor] = []
            for k, v in sorted(items, key=lambda item: position.get(ops[order[item[0]]], 0)):
                out[k] = leaf(v, k, previous)
                previous = [out[k]]
            return [out[k] for k, _ in items]

        compiled = runtime.program.compiled(self.signature.tensors, self.fetches, edits,
                                            reduce=Reduction(leaf, top=top))
        assert compiled.order == order, (compiled.order, order)
        self._adopt(runtime, compiled)
        self._top = [name for name, kinds in zip(compiled.order, compiled.kinds) if not kinds]
        self._wrapped = [(name, kinds) for name, kinds in zip(compiled.order, compiled.kinds) if kinds]

    def set_edges(self, edges: dict[str, np.ndarray]) -> None:
        """The histogram edges of each fetch (`[entries, bins + 1]`, float64) for the next calls;
        a fetch without edges (a loop that never ran in the first pass) counts nothing."""
        for name, variable in self._edges.items():
            variable.assign(np.asarray(edges.get(name, np.zeros((1, self.bins + 1))), np.float64))

    def __call__(self, *inputs: Any) -> dict[str, Any]:
        if self._fused:  # one chain of XLA launches at a time in the process (see `top` above)
            with _FUSED_CALLS:
                outs = self._outputs(inputs)
        else:
            outs = self._outputs(inputs)
        found: dict[str, list[np.ndarray]] = {name: [np.asarray(outs[k])] for k, name in enumerate(self._top)}
        for (name, kinds), out in zip(self._wrapped, outs[len(self._top):]):
            found[name] = [item for _, item in iterations(decode(out, kinds, tf.float64), kinds)]
        if self.bins is not None:
            return {name: _histograms(name, parts) for name, parts in found.items()}
        return {name: _moments(name, parts, whole=self.axes[name] is None) for name, parts in found.items()}


def _moments(name: str, parts: list[np.ndarray], *, whole: bool) -> Moments | None:
    """The merged figures of one batch (every iteration of a loop), its entries merged into one
    when `whole`; None for a loop that never ran."""
    merged = None
    for p in parts:
        m = Moments.from_sums(p)
        if whole:
            m = m.whole()
        merged = m if merged is None else merged.merge(m, name=name)
    return merged


# a spread below it is taken again in float64: float32 squares of deviations under 1e-19 fall under
# float32's normal range (1.2e-38) and lose their precision or are flushed to 0; at 1e-17 they are
# still 1e-34, four orders above. (2**-30 sent MobileNetV3Small's activations with random weights,
# spread over 1e-10 and less, to the float64 pass: its first call took 8.5 s instead of 3.)
TINY = 1e-17


def finite(figures: dict[str, Moments | None]) -> bool:
    """Whether the fast path's figures of a batch hold: no value was NaN or Inf and nothing
    overflowed (their means and squared deviations are finite), and nothing underflowed (no
    entry's values spread over less than `TINY` without being all equal)."""
    return all(m is None or (np.isfinite(m.mean).all() and np.isfinite(m.m2).all()
                             and not ((m.max - m.min > 0) & (m.max - m.min < TINY)).any())
               for m in figures.values())


def _histograms(name: str, parts: list[np.ndarray]) -> np.ndarray | None:
    if not parts:
        return None
    shapes = {p.shape for p in parts}
    if len(shapes) > 1:
        raise OptionError(
            f"cannot merge the histograms of {name!r}: its channels change from one loop iteration to the next; "
            "pass axis=None for one histogram per tensor"
        )
    return np.sum(parts, axis=0)
