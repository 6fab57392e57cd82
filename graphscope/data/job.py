"""The dataset job: a dataset through an executor into a store, streaming and resumable.

Inputs are prefetched on one thread, the executor runs on the calling one, values are written on
another; at most two batches of inputs and two of values are alive at once, so memory stays
flat. Re-running the same call continues after the last batch a store records (see
`graphscope.data.store`); a finished store is left as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from graphscope.data.layout import fixed_batch, plan
from graphscope.data.sources import Batches, Prefetch
from graphscope.data.store import Field, Store, fingerprint, read_root, weights_fingerprint
from graphscope.display.progress import SampleProgress
from graphscope.errors import InputError, StoreError
from graphscope.ir.records import Tensor
from graphscope.ir.serialize import graph_data
from graphscope.runtime.executor import Executor
from graphscope.runtime.runtime import Runtime
from graphscope.version import __version__

__all__ = ["check_fixed", "check_out", "describe", "describe_call", "extract", "prepare"]

def prepare(runtime: Runtime, fetches: Any) -> tuple[Executor, dict[str, Any]]:
    """The executor a job runs (each fetched tensor once, keyed by canonical name, fed the
    model's inputs) and what its store records about the model (see `describe`)."""
    tensors = list({t.name: t for t in runtime.graph.resolve(fetches)}.values())
    return runtime.executor([t.name for t in tensors]), describe(runtime, tensors)


def describe(runtime: Runtime, tensors: list[Tensor]) -> dict[str, Any]:
    """What a store records: the model, its weights fingerprint, the input signature, the
    graphscope version, and each tensor's raw name, layer, op type and dtype."""
    graph = runtime.graph
    variables = runtime.traced.function.graph.variables
    return {
        "model": graph.name,
        "fingerprint": weights_fingerprint((v.name, v.value()) for v in variables),  # no copy
        "input_signature": [
            {"name": name, "dtype": t.dtype, "shape": None if t.shape is None else list(t.shape)}
            for name, t in zip(graph.input_names, graph.inputs)
        ],
        "graphscope_version": __version__,
        "tensors": {
            t.name: {"raw_name": t.raw_name, "layer": t.layer, "op_type": t.op_type, "dtype": t.dtype}
            for t in tensors
        },
    }


def extract(
    runtime: Runtime,
    fetches: Any,
    data: Any,
    *,
    out: str | os.PathLike[str],
    batch_size: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run `fetches` (names, Tensors, a Selection or a Layer) on every batch of `data` and write
    their values to a store at `out`; see `graphscope.data.store` for the layout. Returns the
    final progress."""
    out = os.fspath(out)
    executor, about = prepare(runtime, fetches)
    fixed = fixed_batch(executor)
    # arrays of a model whose batch size is fixed: in batches of that size, unless told otherwise
    batches = Batches(data, executor.signature, batch_size, arrays_batch=fixed)
    first = batches.first()
    if fixed is not None:
        check_fixed(batches, first, fixed)
    call = describe_call(executor.fetches, first, about)
    store, progress = _resume(out, call)
    if progress is not None and progress["complete"]:
        _check_finished(out, batches, progress)
        return progress
    if store is not None and progress is not None:
        _check_resumed(out, store.samples, batches.samples, progress)
    computed: Mapping[str, Any] | None = None
    if store is None:
        fields, computed = plan(executor, first)
        store = Store.create(
            out, fields, batch_size=len(first[0]), samples=batches.samples, batches=batches.count(),
            about=about, graph=graph_data(runtime.graph.graph), call=call,
        )
        progress = read_root(store.group)["progress"]
    _clean_partial_files(out)
    return _stream(out, executor, store, batches, progress, quiet=quiet, first=computed)


def describe_call(fetches: Sequence[Tensor], first: list[np.ndarray], about: dict[str, Any]) -> dict[str, Any]:
    """What makes two extractions the same job (to continue one, the call must match)."""
    return {
        "fetches": [t.name for t in fetches],
        # the graph's own names: a canonical name can come to mean another tensor (before issue
        # 20, a shared layer's calls were numbered in the order they ran), a raw name cannot
        "raw_fetches": [t.raw_name for t in fetches],
        "batch_size": len(first[0]),
        "first_batch": fingerprint(first),
        "fingerprint": about["fingerprint"],
        "model": about["model"],
    }


def check_fixed(batches: Batches, first: list[np.ndarray], fixed: int) -> None:
    """Refuse data a model whose batch size is fixed cannot take in whole batches of it."""
    if len(first[0]) != fixed:
        total = f"{batches.samples} samples" if batches.samples is not None else "batches"
        raise InputError(
            f"this model's batch size is fixed at {fixed}, got {total} in batches of {len(first[0])}: pass "
            f"batch_size={fixed} (arrays are batched so when batch_size is left out) and a number of samples "
            "divisible by it, or trace a model built with a free batch size"
        )
    if batches.samples is not None and batches.samples % fixed:
        raise InputError(
            f"this model's batch size is fixed at {fixed}, got {batches.samples} samples: the last batch would hold "
            f"{batches.samples % fixed}; pass a number of samples divisible by {fixed}, or trace a model built with "
            "a free batch size"
        )


def check_out(out: str, call: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """The zarr group at `out` and its metadata when it holds a run of the same call; None when
    there is nothing there (no directory, an empty one, a store created but never written).
    Anything else is refused (a directory of other files, a store of a different call): writing
    the store would delete it."""
    import zarr

    if not os.path.exists(out):
        return None
    if not os.path.isdir(out) or (os.listdir(out) and not os.path.exists(os.path.join(out, "zarr.json"))):
        raise StoreError(f"{out!r} exists and is not a graphscope store; choose another path for out")
    if not os.listdir(out):
        return None
    try:
        group = zarr.open_group(out, mode="r+")
        attrs = read_root(group)
    except Exception:  # zarr's errors for damaged or foreign metadata vary by version
        raise StoreError(f"{out!r} exists and is not a graphscope store; choose another path for out") from None
    if attrs.get("progress") is None:
        return None  # created, never written: start again
    before = attrs.get("call", {})
    differs = [k for k in call if before.get(k) != call[k]]
    if differs:
        what = {
            "fetches": "the fetched tensors",
            "raw_fetches": "the fetched tensors' TensorFlow names (or the store was written by a graphscope "
            "that numbered shared layers' calls in the order they ran)",
            "batch_size": "the batch size",
            "first_batch": "the data (its first batch)",
            "fingerprint": "the model's weights",
            "model": "the model",
        }
        raise StoreError(
            f"{out!r} holds a run of a different call ({', '.join(what[k] for k in differs)} "
            "differ); delete it to start again, or choose another path for out"
        )
    return group, attrs


def _resume(out: str, call: dict[str, Any]) -> tuple[Store | None, dict[str, Any] | None]:
    """The store at `out` and its progress when it was written by the same call; (None, None)
    when there is none to continue (no directory, or a store whose first batch never finished)."""
    found = check_out(out, call)
    if found is None:
        return None, None
    group, attrs = found
    fields = [Field.from_attrs(f) for f in attrs["tensors"].values()]
    progress = dict(attrs["progress"])
    store = Store(group, fields, batch_size=call["batch_size"], samples=attrs.get("total"))
    if not progress["complete"]:
        store.truncate(progress["batches"], progress["samples"], progress["values"])
    return store, progress


def _other_data(out: str, data: str, run: str) -> StoreError:
    return StoreError(
        f"{out!r} holds a run of a different call (the data differ: {data}, the stored run's {run}; "
        "its first batch is the same); delete it to start again, or choose another path for out"
    )


def _check_finished(out: str, batches: Batches, progress: dict[str, Any]) -> None:
    """Refuse data of another length than the finished run at `out` (the first batch matched):
    left alone, the store would be handed back holding rows the data lacks, or lacking some it
    holds. Data whose length is not known up front is read through (the model is not run)."""
    run = f"{progress['samples']} samples"
    if batches.samples is not None:
        if batches.samples != progress["samples"]:
            raise _other_data(out, f"{batches.samples} samples", run)
        return
    more = next(batches.iterate(skip=progress["batches"]), None) is not None
    assert batches.skipped is not None
    if more or batches.skipped != (progress["batches"], progress["samples"]):
        skipped, samples = batches.skipped
        got = f"more than {progress['samples']} samples" if more else f"{samples} samples in {skipped} batches"
        raise _other_data(out, got, f"{run} in {progress['batches']} batches")


def _check_resumed(out: str, total: int | None, samples: int | None, progress: dict[str, Any]) -> None:
    """Refuse to continue a run at `out` with data of another length, where it is known up front
    (`total`: the stored run's, `samples`: the data's); `_stream` checks the rest as it reads."""
    if samples is None:
        return
    if total is not None and samples != total:
        raise _other_data(out, f"{samples} samples", f"{total} samples")
    if samples < progress["samples"]:
        raise _other_data(out, f"{samples} samples", f"{progress['samples']} samples written already")


def _check_skipped(out: str, batches: Batches, resumed: tuple[int, int]) -> None:
    """Refuse data whose batches passed over (`batches.skipped`) are not the (batches, samples)
    written already: the data end sooner, or are batched otherwise, and the rows to come would
    be written at the wrong samples."""
    assert batches.skipped is not None
    if batches.skipped != resumed:
        raise _other_data(out, f"{batches.skipped[1]} samples in {batches.skipped[0]} batches",
                          f"{resumed[1]} samples in {resumed[0]} batches written already")


def _clean_partial_files(out: str) -> None:
    """Remove temporary files a killed write left (zarr writes `<chunk>.partial`, then renames)."""
    for root, _, files in os.walk(out):
        for name in files:
            if ".partial" in name:
                os.remove(os.path.join(root, name))


def _stream(
    out: str,
    run: Callable[[list[np.ndarray]], Mapping[str, Any]],
    store: Store,
    batches: Batches,
    progress: dict[str, Any],
    *,
    quiet: bool,
    first: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The loop: inputs prefetched on one thread, the executor here, writes on another; at most
    two batches of inputs and two of values alive at once, so memory stays flat. `first`: the
    first batch's values when already computed (by `plan`)."""
    done, start = progress["batches"], progress["samples"]
    resumed = (done, start)
    totals = dict(progress["values"])
    total = store.samples
    if total is None and batches.count() is not None:  # batches known, samples estimated
        total = batches.count() * store.batch_size
    bar = SampleProgress(total, start, quiet=quiet)
    source = Prefetch(batches.iterate(skip=done))
    pending: Future[None] | None = None

    def write(k: int, begin: int, values: Mapping[str, Any], n: int) -> None:
        store.write(k, begin, values, n, totals)
        store.record({"batches": k + 1, "samples": begin + n, "values": dict(totals), "complete": False})
        bar.advance(n)

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="graphscope-write") as writer:
            for arrays in source:
                if done == resumed[0] and resumed != (0, 0):  # `skipped` is set before a batch is read
                    _check_skipped(out, batches, resumed)
                n = len(arrays[0])
                if resumed != (0, 0) and store.samples is not None and start + n > store.samples:
                    raise _other_data(out, f"more than {store.samples} samples", f"{store.samples} samples")
                values = first if first is not None and done == 0 else run(arrays)
                if pending is not None:
                    pending.result()
                pending = writer.submit(write, done, start, values, n)
                done, start = done + 1, start + n
            if pending is not None:
                pending.result()
    finally:
        source.close()
        bar.close()
    if resumed != (0, 0):  # data of unknown length, continued: as long as the run it continues?
        _check_skipped(out, batches, resumed)
        if store.samples is not None and start != store.samples:
            raise _other_data(out, f"{start} samples", f"{store.samples} samples")
    return store.finish(done, start, totals)
