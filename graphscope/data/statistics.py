"""Statistics of tensors over a dataset without storing them (`Scope.statistics`): each batch is
reduced inside the graph (`graphscope.runtime.statistics.Summary`) and the batches' figures
merged on the host (`Moments.merge`, Chan et al.'s update in float64). Inputs are prefetched on
a thread; nothing but a few numbers per channel is kept, so memory stays flat however large the
dataset.

With `bins`, a second pass over the data counts each entry's values in `bins` equal bins between
its min and max over the whole data, found by the first pass: exactly `numpy.histogram(values,
bins)` of the concatenated values. A one-pass iterable (a generator) cannot be read twice and is
refused with `bins`. Where the second pass computes other values than the first (a model that
draws random numbers, data drawn anew), values outside the first pass's range are not counted,
and a warning says how many.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from graphscope.data.job import check_fixed
from graphscope.data.layout import fixed_batch
from graphscope.data.sources import Batches, Prefetch
from graphscope.display.progress import SampleProgress
from graphscope.errors import ArgumentError, OptionError, outside_stacklevel
from graphscope.ir.records import Tensor
from graphscope.ir.statistics import Moments, Statistics, TensorStats, histogram_edges
from graphscope.runtime import edit as editing
from graphscope.runtime.runtime import Runtime
from graphscope.runtime.statistics import Summary, check_fetch, entry_axis, finite

__all__ = ["add_histograms", "batch_figures", "checked_fetches", "edges_of", "finish", "merge_figures", "statistics",
           "summary"]


def summary(runtime: Runtime, fetches: Any, *, axis: int | None = -1, bins: int | None = None, feeds: Any = None,
            edits: Any = None, kind: str = "fast") -> tuple[list[tuple[str, Tensor]], Summary]:
    """The fetches (key, tensor) and the cached reduced executor for them (`kind`): the moments
    one ("fast"), the one for batches holding NaN or Inf ("masked"), or the one counting values
    in `bins` bins ("histogram")."""
    pairs, axes = checked_fetches(runtime, fetches, axis=axis, bins=bins)
    tensors = list({t.name: t for _, t in pairs}.values())
    feed_pairs = runtime._feed_pairs(feeds)
    edit_list = runtime._edits(edits)
    histogram = kind == "histogram"
    key = ("statistics", kind, tuple(sorted(axes.items(), key=str)), bins if histogram else None,
           tuple((k, t.name) for k, t in feed_pairs), tuple(e.key for e in edit_list))
    executor = runtime._executors.get(key)
    if executor is None:
        runtime._note_unused(tensors)
        editing.check_relevant(runtime.graph, edit_list, tensors)
        executor = Summary(runtime, tensors, axes, feed_pairs, edit_list, bins=bins if histogram else None,
                           masked=kind == "masked")
        runtime._executors.put(key, executor)
    return pairs, executor


def checked_fetches(runtime: Runtime, fetches: Any, *, axis: int | None = -1,
                    bins: int | None = None) -> tuple[list[tuple[str, Tensor]], dict[str, int | None]]:
    """The fetches (key, tensor) and each tensor's entry axis (by name), once every check has
    passed, without building anything (Beam checks a pipeline with it before it runs).

    Raises:
        ArgumentError: no fetch.
        OptionError: `bins` not a whole number >= 1, or an axis a tensor lacks.
        UnsupportedFetchError: a tensor that is not a number, or one inside a branch.
    """
    pairs = runtime.graph.resolve_pairs(fetches)
    if not pairs:
        raise ArgumentError("nothing to take statistics of: give at least one tensor name")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1):
        raise OptionError(f"bins must be a whole number >= 1 (or None for no histogram), got {bins!r}")
    tensors = list({t.name: t for _, t in pairs}.values())
    for t in tensors:
        check_fetch(t)
    return pairs, {t.name: entry_axis(t, axis) for t in tensors}


def statistics(runtime: Runtime, fetches: Any, data: Any, *, batch_size: int | None = None, axis: int | None = -1,
               bins: int | None = None, feeds: Any = None, edits: Any = None, quiet: bool = False) -> Statistics:
    """See `Scope.statistics`."""
    pairs, moments = summary(runtime, fetches, axis=axis, bins=bins, feeds=feeds, edits=edits)
    fixed = fixed_batch(moments)
    # arrays of a model whose batch size is fixed: in batches of that size, unless told otherwise
    batches = Batches(data, moments.signature, batch_size, arrays_batch=fixed)
    if bins is not None and batches.one_pass:
        raise ArgumentError(
            "bins= takes two passes over the data (the first finds each channel's range), and a generator can "
            "be read once: pass arrays, a .npy file's array, a tf.data.Dataset or a list of batches"
        )
    first = batches.first()
    if fixed is not None:
        check_fixed(batches, first, fixed)
    passes = 2 if bins is not None else 1
    total = batches.samples * passes if batches.samples is not None else None
    bar = SampleProgress(total, 0, quiet=quiet, label="statistics" if passes == 1 else "statistics (2 passes)")
    try:
        masked = lambda: summary(runtime, fetches, axis=axis, feeds=feeds, edits=edits, kind="masked")[1]  # noqa: E731
        merged, samples, count = _fold(batches.iterate(), lambda arrays: batch_figures(moments, arrays, masked),
                                       merge_figures, bar.advance)
        edges: dict[str, np.ndarray] = {}
        hists: dict[str, np.ndarray] = {}
        if bins is not None:
            _, counter = summary(runtime, fetches, axis=axis, bins=bins, feeds=feeds, edits=edits, kind="histogram")
            edges = edges_of(merged, bins)
            with counter.lock:
                counter.set_edges(edges)
                hists = _fold(batches.iterate(), counter, add_histograms, bar.advance)[0]
    finally:
        bar.close()
    return finish(pairs, moments.axes, merged, edges, hists, bins=bins, samples=samples, batches=count)


def edges_of(merged: dict[str, Moments], bins: int) -> dict[str, np.ndarray]:
    """Each tensor's histogram edges, from its min and max over the whole data (the first pass)."""
    return {name: histogram_edges(m.min, m.max, bins) for name, m in merged.items()}


def finish(pairs: list[tuple[str, Tensor]], axes: dict[str, int | None], merged: dict[str, Moments],
           edges: dict[str, np.ndarray], hists: dict[str, np.ndarray], *, bins: int | None, samples: int,
           batches: int) -> Statistics:
    """The `Statistics` of merged figures (with `bins`, the histogram counts `hists` of the
    second pass in the bins of `edges`), keyed as the fetches were given (`pairs`)."""
    if bins is not None:
        merged = {name: m.with_histogram(hists[name]) for name, m in merged.items() if name in hists}
    out = {}
    for key, t in pairs:
        m = merged.get(t.name)
        if m is None:  # a loop that never ran: no values
            m = Moments.empty(1 if axes[t.name] is None else 0, bins)
        _check_histogram(t.name, m)
        out[key] = TensorStats.of(t.name, m, axis=axes[t.name], dtype=t.dtype, edges=edges.get(t.name))
    return Statistics(out, samples=samples, batches=batches)


def _check_histogram(name: str, m: Moments) -> None:
    """Warn where the histogram's pass counted fewer values than the first pass found: the
    values changed between the passes, and those outside the first pass's range are not counted."""
    if m.histogram is None:
        return
    missing = int((m.count - m.histogram.sum(-1)).sum())
    if missing:
        warnings.warn(
            f"{name}: {missing} of its {int(m.count.sum())} finite values are not in its histogram: the pass that "
            "counts the bins computed other values than the pass that found each channel's range (a model that "
            "draws random numbers, as dropout traced with training=True, or data drawn anew on each pass, as "
            "random augmentations), and values outside that range are not counted; trace in inference mode and "
            "read the same data twice for histograms of every value",
            UserWarning,
            stacklevel=outside_stacklevel(),
        )


def _fold(batches: Iterator[list[np.ndarray]], figures_of: Callable[[list[np.ndarray]], dict[str, Any]],
          combine: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
          advance: Callable[[int], None]) -> tuple[dict[str, Any], int, int]:
    """Every batch's figures (`figures_of`) combined (inputs prefetched on a thread):
    `(combined, samples, batches)`."""
    combined: dict[str, Any] = {}
    samples = count = 0
    source = Prefetch(batches)
    try:
        for arrays in source:
            combined = combine(combined, figures_of(arrays))
            n = len(arrays[0])
            samples, count = samples + n, count + 1
            advance(n)
    finally:
        source.close()
    return combined, samples, count


def batch_figures(run: Summary, arrays: list[np.ndarray], masked: Callable[[], Summary]) -> dict[str, Moments | None]:
    """One batch's figures: the fast path's, or where they are not finite (a NaN or Inf among the
    values, an overflow), `masked()`'s."""
    figures = run(arrays)
    return figures if finite(figures) else masked()(arrays)


def merge_figures(a: dict[str, Moments], b: dict[str, Moments | None]) -> dict[str, Moments]:
    """Two parts' figures merged, tensor by tensor (`Moments.merge`; None: a loop that never
    ran): the merge of one process's batches and of Beam's workers."""
    merged = dict(a)
    for name, m in b.items():
        if m is not None:
            merged[name] = m if name not in merged else merged[name].merge(m, name=name)
    return merged


def add_histograms(a: dict[str, np.ndarray], b: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """Two parts' histogram counts added, tensor by tensor (None: a loop that never ran)."""
    sums = dict(a)
    for name, h in b.items():
        if h is not None:
            sums[name] = h if name not in sums else sums[name] + h
    return sums
