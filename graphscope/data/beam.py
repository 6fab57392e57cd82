"""Extraction on Apache Beam (`pip install "tf-graphscope[beam]"`): the same zarr store as
`Scope.extract`, written by many workers.

    import apache_beam as beam
    from graphscope.beam import ExtractToZarr

    with beam.Pipeline(options=options) as p:
        (p
         | ReadNpy("images.npy")                          # (sample index, sample) pairs
         | ExtractToZarr("model.keras", ["block4_conv3/BiasAdd:0"], out="run.zarr", batch_size=32))

`GraphscopeModelHandler` loads the model on each worker and runs the pruned executor, so Beam's
`RunInference` does the work; each element it runs is one whole batch (samples
`[k*batch_size, (k+1)*batch_size)`), the same batches `Scope.extract` makes, so per-batch
values and chunks match. Workers write whole chunks, never the same one; a ragged tensor's
`values` (whose positions depend on every earlier sample) are written by one worker per tensor.
The store is created (and the layout probed on the first batch) by one worker before any
batch is written, and marked complete after the last.

`ComputeStatistics` takes the same pairs and batches to one `Statistics`, equal to
`Scope.statistics` on the same data: each batch is reduced in the graph by a worker, and the
workers' partial figures merged by a `CombineFn` with the same merge as one process.

`ReadNpy` makes the pairs from `.npy` files the workers read themselves (memory-mapped): only
sample indices travel through the pipeline. `beam.Create(list(enumerate(images)))` works too,
but Beam pickles every array into the pipeline: 512 ResNet50-sized samples (56 MB) took 37 s
on the DirectRunner before any work started.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.utils.shared import Shared

from graphscope.backend.mirror import mirror
from graphscope.backend.trace import trace_function
from graphscope.data.job import check_out, describe_call, prepare
from graphscope.data.layout import plan
from graphscope.data.sources import read_array
from graphscope.data.statistics import (
    add_histograms, batch_figures, checked_fetches, edges_of, finish, merge_figures, summary,
)
from graphscope.data.store import Store
from graphscope.errors import ArgumentError, InputError
from graphscope.ir.records import Tensor
from graphscope.ir.serialize import graph_data
from graphscope.ir.statistics import Moments, Statistics
from graphscope.runtime.executor import Executor
from graphscope.runtime.runtime import Runtime

__all__ = ["ComputeStatistics", "ExtractToZarr", "GraphscopeModelHandler", "ReadNpy"]


def _runtime(model: str | os.PathLike[str] | Callable[[], Any]) -> Runtime:
    """The model traced and mirrored on a worker, ready to build executors."""
    traced = trace_function(model() if callable(model) else os.fspath(model))
    return Runtime(traced, mirror(traced))


class GraphscopeModelHandler(ModelHandler[Sequence[np.ndarray], PredictionResult, Any]):
    """Runs graphscope executors inside `RunInference`.

    Each example is one batch: a list of arrays, one per model input. Its result's inference
    is `{tensor name: value}` for `fetches`, its example the batch's number of samples (the
    arrays are not carried on).

    Args:
        model: a `.keras`/`.h5` file or SavedModel directory every worker can read, or a
            picklable function that builds the model (e.g. `functools.partial(make_model)`).
        fetches: tensor names.
    """

    def __init__(self, model: str | os.PathLike[str] | Callable[[], Any], fetches: Sequence[str]) -> None:
        super().__init__(max_batch_size=1)  # an example is a whole batch already
        self._model = model
        self._fetches = list(fetches)

    def load_model(self) -> Executor:
        executor, _ = prepare(_runtime(self._model), self._fetches)
        return executor

    def run_inference(
        self, batch: Sequence[Sequence[np.ndarray]], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        # the example is the batch's sample count: the input arrays are not carried on
        return [PredictionResult(_count(arrays), dict(model(_ordered(model, arrays)))) for arrays in batch]

    def get_num_bytes(self, batch: Sequence[Sequence[np.ndarray]]) -> int:
        return sum(int(np.asarray(a).nbytes) for arrays in batch for a in _arrays(arrays))

    def get_metrics_namespace(self) -> str:
        return "graphscope"


class ReadNpy(beam.PTransform):
    """(sample index, sample) pairs from `.npy` files, one per model input (samples on axis 0),
    read by the workers: each memory-maps the files once, and only indices are sent to it.

    A sample is an array for one file, a tuple of arrays (one per file, in order) for several.
    The files must be readable where the pipeline is built (for the sample count) and on
    every worker, at the same paths (a shared file system on a cluster).

    Args:
        paths: the `.npy` files, in the order of the model's inputs.
    """

    def __init__(self, *paths: str | os.PathLike[str]) -> None:
        super().__init__()
        if not paths:
            raise ArgumentError("ReadNpy needs at least one .npy file: one per model input, in order")
        self._paths = [os.path.abspath(p) for p in paths]  # workers may start elsewhere
        counts = [len(_memmap(p)) for p in self._paths]
        if len(set(counts)) > 1:
            raise InputError(
                f"the .npy files hold different numbers of samples ({', '.join(map(str, counts))}); "
                "give each input one entry per sample"
            )
        self.samples = counts[0]

    def expand(self, begin: Any) -> Any:
        return begin | "Indices" >> beam.Create(range(self.samples)) | "Read" >> beam.ParDo(_ReadSamples(self._paths))


def _memmap(path: str) -> np.ndarray:
    array = read_array(path, mmap=True)
    if isinstance(array, dict):
        raise InputError(f"{path!r} is an .npz archive; give one .npy file per model input, in order")
    if array.ndim == 0:
        raise InputError(f"{path!r} holds a scalar; each .npy file needs the samples on its first axis")
    return array


class _ReadSamples(beam.DoFn):
    """index -> (index, sample), from the memory-mapped files (opened once per worker)."""

    def __init__(self, paths: list[str]) -> None:
        self._paths = paths
        self._arrays: list[np.ndarray] = []

    def setup(self) -> None:
        self._arrays = [_memmap(p) for p in self._paths]

    def process(self, index: int) -> Iterable[tuple[int, Any]]:
        sample = tuple(np.array(a[index]) for a in self._arrays)
        yield index, sample if len(sample) > 1 else sample[0]


class ExtractToZarr(beam.PTransform):
    """(sample index, sample) pairs -> the zarr store `Scope.extract` would write at `out`.

    A sample is an array (one model input), a tuple/list of arrays (one per input, in order) or
    a dict of them by input name (as keras-hub models take them; every sample the same keys); indices
    run from 0 to the number of samples - 1. The output is one element: the final progress.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Callable[[], Any],
        fetches: Sequence[str],
        *,
        out: str | os.PathLike[str],
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        self._model = model
        self._fetches = list(fetches)
        self._out = os.fspath(out)
        self._batch_size = batch_size

    def expand(self, samples: Any) -> Any:
        b, out = self._batch_size, self._out
        batches = samples | _Batches(b)
        count = samples | "Count" >> beam.combiners.Count.Globally()
        created = (
            batches
            | "FirstBatch" >> beam.Filter(lambda kv: kv[0] == 0)
            | "Create" >> beam.Map(_create, self._model, self._fetches, out, count=beam.pvalue.AsSingleton(count))
        )
        results = batches | "Run" >> RunInference(KeyedModelHandler(GraphscopeModelHandler(self._model, self._fetches)))
        written = results | "Write" >> beam.ParDo(
            _WriteBatch(out, b), fields=beam.pvalue.AsSingleton(created)
        ).with_outputs("values", main="done")
        totals = (
            written.values
            | "GroupValues" >> beam.GroupByKey()
            | "WriteValues" >> beam.Map(_write_values, out, b, fields=beam.pvalue.AsSingleton(created))
            | "Totals" >> beam.CombineGlobally(_merge)
        )
        return (
            written.done
            | "Wait" >> beam.combiners.Count.Globally()
            | "Finish" >> beam.Map(
                _finish, out, b,
                count=beam.pvalue.AsSingleton(count),
                fields=beam.pvalue.AsSingleton(created),
                totals=beam.pvalue.AsSingleton(totals),
            )
        )


class _Batches(beam.PTransform):
    """(sample index, sample) pairs -> (batch number, one array per input): samples
    `[k*size, (k+1)*size)` stacked, the batches one process makes."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def expand(self, samples: Any) -> Any:
        b = self._size
        return (
            samples
            | "ByBatch" >> beam.Map(lambda kv: (int(kv[0]) // b, kv))
            | "GroupBatch" >> beam.GroupByKey()
            | "Stack" >> beam.Map(_stack, b)
        )


def _stack(element: tuple[int, Iterable[tuple[int, Any]]], size: int) -> tuple[int, Batch]:
    """A batch's samples, in index order, stacked into one array per input: a list (samples
    that are arrays, or tuples of them in the order of the inputs), or a dict by input name
    (samples that are dicts, as keras-hub models take them), which the worker orders."""
    batch, items = element
    ordered = sorted(items, key=lambda kv: kv[0])
    first = batch * size
    if [i for i, _ in ordered] != list(range(first, first + len(ordered))):
        raise ValueError(f"batch {batch} is missing samples: sample indices must run 0, 1, 2, ... without gaps")
    if isinstance(ordered[0][1], Mapping):
        keys = list(ordered[0][1])
        odd = next((i for i, s in ordered if not isinstance(s, Mapping) or sorted(s) != sorted(keys)), None)
        if odd is not None:
            raise InputError(
                f"sample {odd} is not a dict of the keys of sample {first} ({', '.join(map(str, keys))}): "
                "give every sample the same form, a dict of the same input names"
            )
        return batch, {k: np.stack([np.asarray(s[k]) for _, s in ordered]) for k in keys}
    samples = [s if isinstance(s, (tuple, list)) else (s,) for _, s in ordered]
    return batch, [np.stack([np.asarray(s[k]) for s in samples]) for k in range(len(samples[0]))]


# one batch's inputs: one array per input in order, or a dict of them by input name
Batch = list[np.ndarray] | dict[str, np.ndarray]


def _arrays(arrays: Batch) -> list[np.ndarray]:
    return list(arrays.values()) if isinstance(arrays, Mapping) else list(arrays)


def _count(arrays: Batch) -> int:
    """A batch's number of samples."""
    return len(_arrays(arrays)[0])


def _ordered(run: Any, arrays: Batch) -> list[np.ndarray]:
    """A batch's arrays in the order of the inputs of `run` (an executor or summary), a dict's
    by input name (or any spelling of it the executor takes)."""
    return run.signature.bind(arrays) if isinstance(arrays, Mapping) else list(arrays)


def _create(first: tuple[int, Batch], model: Any, fetches: list[str], out: str, count: int) -> list[Any]:
    """Probe the layout on batch 0 and create the store; the fields, for every writer."""
    runtime = _runtime(model)
    executor, about = prepare(runtime, fetches)
    arrays = _ordered(executor, first[1])
    size = len(arrays[0])
    call = describe_call(executor.fetches, arrays, about)
    check_out(out, call)  # a directory of other files, or another call's store, is not replaced
    fields, _ = plan(executor, arrays)
    Store.create(
        out, fields, batch_size=size, samples=count, batches=-(-count // size),
        about=about, graph=graph_data(runtime.graph.graph), call=call,
    )
    return fields


def _open(out: str, fields: list[Any], batch_size: int, count: int | None = None) -> Any:
    import zarr

    return Store(zarr.open_group(out, mode="r+"), fields, batch_size=batch_size, samples=count)


def _merge(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Dicts merged into one (associative, as Beam's combiners need)."""
    merged: dict[str, int] = {}
    for part in parts:
        merged.update(part)
    return merged


class _WriteBatch(beam.DoFn):
    """Write one batch's dense chunks and ragged shapes; hand its ragged values on to their
    tensor's writer (their positions depend on every earlier batch)."""

    def __init__(self, out: str, batch_size: int) -> None:
        self._out = out
        self._batch_size = batch_size

    def process(self, element: tuple[int, PredictionResult], fields: list[Any]) -> Any:
        batch, result = element
        store = _open(self._out, fields, self._batch_size)
        n = int(result.example)
        handed: list[tuple[str, tuple[int, np.ndarray, np.ndarray]]] = []

        def hand_on(f: Any, sizes: np.ndarray, flat: np.ndarray) -> None:
            handed.append((f.key, (batch, sizes, flat)))

        store.write(batch, batch * self._batch_size, result.inference, n, {}, ragged=hand_on)
        for item in handed:
            yield beam.pvalue.TaggedOutput("values", item)
        yield n


def _write_values(
    element: tuple[str, Iterable[tuple[int, np.ndarray, np.ndarray]]], out: str, batch_size: int, fields: list[Any]
) -> dict[str, int]:
    """One ragged tensor's values and offsets, batch after batch; its total."""
    key, pieces = element
    store = _open(out, fields, batch_size)
    field = next(f for f in fields if f.key == key)
    total = 0
    for batch, sizes, flat in sorted(pieces, key=lambda p: p[0]):
        at = batch * batch_size if field.layout == "sample" else batch
        total = store.write_values(field, at, total, sizes, flat)
    return {key: total}


def _finish(_: int, out: str, batch_size: int, count: int, fields: list[Any], totals: dict[str, int]) -> dict[str, Any]:
    store = _open(out, fields, batch_size, count)
    batches = -(-count // batch_size)
    return store.finish(batches, count, {f.key: totals.get(f.key, 0) for f in fields if f.ragged})


# --------------------------------------------------------------------------- statistics


class ComputeStatistics(beam.PTransform):
    """(sample index, sample) pairs -> one `Statistics`, equal to `Scope.statistics(fetches,
    samples, batch_size=..., axis=..., bins=...)`.

    The samples are grouped into the batches one process makes (`[k*batch_size,
    (k+1)*batch_size)`); a worker reduces each batch inside the graph (the model loaded once
    per worker process), and a `CombineFn` merges the batches' figures with `Moments.merge`,
    the merge `Scope.statistics` uses, so only the order of the merges differs (counts, min,
    max and histograms are equal; means and deviations to float64 rounding). With `bins`, a
    second pass over the batches counts the values in the bins between each entry's min and
    max over the whole data (the first pass's result, a side input); a `CombineFn` adds the
    counts.

    The model is traced once where the pipeline is built, to check the fetches (a tensor
    inside a branch, an axis a tensor lacks, `bins` < 1 are refused there, before anything
    runs); the result is keyed as the fetches are given (a Layer's or Selection's tensors by
    their canonical names). No samples give a `Statistics` of 0 samples (where one process
    refuses empty data: a pipeline's input is not known until it runs).

    Args:
        model: a `.keras`/`.h5` file or SavedModel directory every worker (and the process
            building the pipeline) can read, or a picklable function that builds the model.
        fetches: tensor or layer names, Tensors, a Selection or a Layer (what
            `Scope.statistics` takes).
        batch_size: samples per batch.
        axis: the channel axis (default -1); None for one figure per tensor.
        bins: also count each entry's values in `bins` equal bins between its min and max.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Callable[[], Any],
        fetches: Any,
        *,
        batch_size: int = 32,
        axis: int | None = -1,
        bins: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ArgumentError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self._pairs, self._axes = checked_fetches(_runtime(model), fetches, axis=axis, bins=bins)
        self._model = model
        self._axis = axis
        self._bins = None if bins is None else int(bins)
        self._batch_size = int(batch_size)

    def expand(self, samples: Any) -> Any:
        names, bins = list(self._axes), self._bins
        model = _SharedModel(self._model, names, self._axis, bins)
        batches = samples | "Batches" >> _Batches(self._batch_size)
        moments = (
            batches
            | "Reduce" >> beam.ParDo(_Reduce(model))
            | "Merge" >> beam.CombineGlobally(_MergeFigures())
        )
        finish_args = {"pairs": self._pairs, "axes": self._axes, "bins": bins}
        if bins is None:
            return moments | "Finish" >> beam.Map(_finish_statistics, edges={}, hists={}, **finish_args)
        edges = moments | "Edges" >> beam.Map(lambda merged: edges_of(merged[0], bins))
        hists = (
            batches
            | "Count" >> beam.ParDo(_Count(model), edges=beam.pvalue.AsSingleton(edges))
            | "Add" >> beam.CombineGlobally(_AddHistograms())
        )
        return moments | "Finish" >> beam.Map(
            _finish_statistics, edges=beam.pvalue.AsSingleton(edges), hists=beam.pvalue.AsSingleton(hists),
            **finish_args,
        )


_Merged = tuple[dict[str, Moments], int, int]  # ({tensor name: Moments}, samples, batches)


class _Loaded:
    """A worker's model and its reduced executors: the moments one (the one for batches holding
    NaN or Inf built when one comes), the one counting histograms."""

    def __init__(self, model: Any, names: list[str], axis: int | None, bins: int | None) -> None:
        runtime = _runtime(model)
        self.moments = summary(runtime, names, axis=axis)[1]
        self.masked = lambda: summary(runtime, names, axis=axis, kind="masked")[1]
        self.counter = summary(runtime, names, axis=axis, bins=bins, kind="histogram")[1] if bins is not None else None


class _SharedModel:
    """The model every statistics DoFn of one transform uses in a worker process, loaded once
    there (`apache_beam.utils.shared`: both passes share it)."""

    def __init__(self, model: Any, names: list[str], axis: int | None, bins: int | None) -> None:
        self._handle = Shared()
        self._args = (model, names, axis, bins)

    def acquire(self) -> _Loaded:
        return self._handle.acquire(lambda: _Loaded(*self._args))


class _WithModel(beam.DoFn):
    """A DoFn holding the worker's loaded model (`_SharedModel`), acquired in `setup`."""

    def __init__(self, model: _SharedModel) -> None:
        self._model = model
        self._loaded: _Loaded | None = None

    def setup(self) -> None:
        self._loaded = self._model.acquire()


class _Reduce(_WithModel):
    """(batch number, arrays) -> ({tensor name: Moments} of the batch, its sample count)."""

    def process(self, element: tuple[int, Batch]) -> Iterable[tuple[dict[str, Moments | None], int]]:
        arrays = _ordered(self._loaded.moments, element[1])
        yield batch_figures(self._loaded.moments, arrays, self._loaded.masked), len(arrays[0])


class _Count(_WithModel):
    """(batch number, arrays) -> {tensor name: histogram counts} of the batch in the bins of
    `edges` (the side input: each tensor's, from the whole data's min and max)."""

    def process(self, element: tuple[int, Batch], edges: dict[str, np.ndarray]) -> Iterable[dict[str, Any]]:
        counter = self._loaded.counter
        with counter.lock:  # the edges are set, then the batch runs
            counter.set_edges(edges)
            yield counter(_ordered(counter, element[1]))


class _MergeFigures(beam.CombineFn):
    """The batches' figures merged: `({tensor name: Moments}, samples, batches)`, by
    `merge_figures`, the merge of one process."""

    def create_accumulator(self) -> _Merged:
        return {}, 0, 0

    def add_input(self, acc: _Merged, element: tuple[dict[str, Moments | None], int]) -> _Merged:
        figures, n = element
        return merge_figures(acc[0], figures), acc[1] + n, acc[2] + 1

    def merge_accumulators(self, accs: Iterable[_Merged]) -> _Merged:
        merged: dict[str, Moments] = {}
        samples = batches = 0
        for figures, n, k in accs:
            merged, samples, batches = merge_figures(merged, figures), samples + n, batches + k
        return merged, samples, batches

    def extract_output(self, acc: _Merged) -> _Merged:
        return acc


class _AddHistograms(beam.CombineFn):
    """The batches' histogram counts added, tensor by tensor."""

    def create_accumulator(self) -> dict[str, np.ndarray]:
        return {}

    def add_input(self, acc: dict[str, np.ndarray], counts: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        return add_histograms(acc, counts)

    def merge_accumulators(self, accs: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        total: dict[str, np.ndarray] = {}
        for acc in accs:
            total = add_histograms(total, acc)
        return total

    def extract_output(self, acc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return acc


def _finish_statistics(merged: _Merged, *, pairs: list[tuple[str, Tensor]], axes: dict[str, int | None],
                       bins: int | None, edges: dict[str, np.ndarray], hists: dict[str, np.ndarray]) -> Statistics:
    """The `Statistics`, keyed as the fetches were given (the histograms added to the figures)."""
    figures, samples, batches = merged
    return finish(pairs, axes, figures, edges, hists, bins=bins, samples=samples, batches=batches)
