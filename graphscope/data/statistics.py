"""Statistics of tensors over a dataset without storing them (`Scope.statistics`): each batch is
reduced inside the graph (`graphscope.runtime.statistics.Summary`) and the batches' figures
merged on the host (`Moments.merge`, Chan et al.'s update in float64). Inputs are prefetched on
a thread; nothing but a few numbers per channel is kept, so memory stays flat however large the
dataset.

With `bins`, a second pass over the data counts each entry's values in `bins` equal bins between
its min and max over the whole data, found by the first pass: exactly `numpy.histogram(values,
bins)` of the concatenated values. A one-pass iterable (a generator) cannot be read twice and is
refused with `bins`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from graphscope.data.job import check_fixed
from graphscope.data.layout import fixed_batch
from graphscope.data.sources import Batches, Prefetch
from graphscope.display.progress import SampleProgress
from graphscope.errors import ArgumentError, OptionError
from graphscope.ir.records import Tensor
from graphscope.ir.statistics import Moments, Statistics, TensorStats, histogram_edges
from graphscope.runtime.runtime import Runtime
from graphscope.runtime.statistics import Summary, check_fetch, entry_axis, finite, merge

__all__ = ["finish", "merge_batches", "statistics", "summary"]


def summary(runtime: Runtime, fetches: Any, *, axis: int | None = -1, bins: int | None = None, feeds: Any = None,
            edits: Any = None, kind: str = "fast") -> tuple[list[tuple[str, Tensor]], Summary]:
    """The fetches (key, tensor) and the cached reduced executor for them (`kind`): the moments
    one ("fast"), the one for batches holding NaN or Inf ("masked"), or the one counting values
    in `bins` bins ("histogram")."""
    pairs = runtime.graph.resolve_pairs(fetches)
    if not pairs:
        raise ArgumentError("nothing to take statistics of: give at least one tensor name")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1):
        raise OptionError(f"bins must be a whole number >= 1 (or None for no histogram), got {bins!r}")
    tensors = list({t.name: t for _, t in pairs}.values())
    for t in tensors:
        check_fetch(t)
    axes = {t.name: entry_axis(t, axis) for t in tensors}
    feed_pairs = runtime._feed_pairs(feeds)
    edit_list = runtime._edits(edits)
    histogram = kind == "histogram"
    key = ("statistics", kind, tuple(sorted(axes.items(), key=str)), bins if histogram else None, tuple((k, t.name) for k, t in feed_pairs), tuple(e.key for e in edit_list))
    executor = runtime._executors.get(key)
    if executor is None:
        runtime._note_unused(tensors)
        from graphscope.runtime import edit as editing

        editing.check_relevant(runtime.graph, edit_list, tensors)
        executor = Summary(runtime, tensors, axes, feed_pairs, edit_list, bins=bins if histogram else None,
                           masked=kind == "masked")
        runtime._executors.put(key, executor)
    return pairs, executor


def statistics(runtime: Runtime, fetches: Any, data: Any, *, batch_size: int | None = None, axis: int | None = -1,
               bins: int | None = None, feeds: Any = None, edits: Any = None, quiet: bool = False) -> Statistics:
    """See `Scope.statistics`."""
    pairs, moments = summary(runtime, fetches, axis=axis, bins=bins, feeds=feeds, edits=edits)
    batches = Batches(data, moments.signature, batch_size)
    if bins is not None and batches.one_pass:
        raise ArgumentError(
            "bins= takes two passes over the data (the first finds each channel's range), and a generator can "
            "be read once: pass arrays, a .npy file's array, a tf.data.Dataset or a list of batches"
        )
    first = batches.first()
    fixed = fixed_batch(moments)
    if fixed is not None:
        check_fixed(batches, first, fixed)
    passes = 2 if bins is not None else 1
    total = batches.samples * passes if batches.samples is not None else None
    bar = SampleProgress(total, 0, quiet=quiet, label="statistics" if passes == 1 else "statistics (2 passes)")
    try:
        masked = lambda: summary(runtime, fetches, axis=axis, feeds=feeds, edits=edits, kind="masked")[1]  # noqa: E731
        merged, samples, count = merge_batches(moments, batches.iterate(), bar.advance, masked=masked)
        edges: dict[str, np.ndarray] = {}
        if bins is not None:
            _, counter = summary(runtime, fetches, axis=axis, bins=bins, feeds=feeds, edits=edits, kind="histogram")
            edges = {name: histogram_edges(m.min, m.max, bins) for name, m in merged.items()}
            with counter.lock:
                counter.set_edges({name: edges.get(name, np.zeros((1, bins + 1))) for name in counter.axes})
                hists = _sum_batches(counter, batches.iterate(), bar.advance)
            merged = {name: m.with_histogram(hists[name]) for name, m in merged.items() if name in hists}
    finally:
        bar.close()
    return finish(pairs, moments.axes, merged, edges, bins=bins, samples=samples, batches=count)


def finish(pairs: list[tuple[str, Tensor]], axes: dict[str, int | None], merged: dict[str, Moments],
           edges: dict[str, np.ndarray], *, bins: int | None, samples: int, batches: int) -> Statistics:
    """The `Statistics` of merged figures, keyed as the fetches were given (`pairs`)."""
    out = {}
    for key, t in pairs:
        m = merged.get(t.name)
        if m is None:  # a loop that never ran: no values
            m = Moments.empty(1 if axes[t.name] is None else 0, bins)
        out[key] = TensorStats.of(t.name, m, axis=axes[t.name], dtype=t.dtype, edges=edges.get(t.name))
    return Statistics(out, samples=samples, batches=batches)


def merge_batches(run: Summary, batches: Iterator[list[np.ndarray]], advance: Callable[[int], None] = lambda n: None,
                  *, masked: Callable[[], Summary]) -> tuple[dict[str, Moments], int, int]:
    """Every batch's figures merged (inputs prefetched on a thread): `({name: Moments}, samples,
    batches)`. A batch whose fast figures are not finite is run again by `masked()`."""
    merged: dict[str, Moments] = {}
    samples = count = 0
    source = Prefetch(batches)
    try:
        for arrays in source:
            figures = run(arrays)
            if not finite(figures):
                figures = masked()(arrays)
            for name, m in figures.items():
                if m is None:
                    continue
                merged[name] = m if name not in merged else merge(name, merged[name], m)
            n = len(arrays[0])
            samples, count = samples + n, count + 1
            advance(n)
    finally:
        source.close()
    return merged, samples, count


def _sum_batches(run: Summary, batches: Iterator[list[np.ndarray]], advance: Callable[[int], None]) -> dict[str, np.ndarray]:
    sums: dict[str, np.ndarray] = {}
    source = Prefetch(batches)
    try:
        for arrays in source:
            for name, h in run(arrays).items():
                if h is not None:
                    sums[name] = h if name not in sums else sums[name] + h
            advance(len(arrays[0]))
    finally:
        source.close()
    return sums
