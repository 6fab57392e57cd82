"""Datasets -> executors -> an on-disk zarr store, streaming and resumable.

A store is a zarr v3 group. Each fetched tensor is one array (or, when its values differ in
shape from sample to sample, one group of three arrays) named after the tensor
(`conv1/BiasAdd:0` -> `conv1.BiasAdd_0`):

- **sample layout**: one entry per sample, samples on axis 0, chunked by batch. Tensors with the
  batch on their first axis, and values inside a loop that runs once per sample (`tf.map_fn`
  over the batch: one iteration per sample) are stored this way.
- **batch layout**: one entry per batch, on axis 0: tensors without a batch axis, and values
  inside any other loop (all of that batch's iterations, stacked).
- **ragged**: entries whose shapes differ (NMS indices per image) are stored as `values` (each
  entry flattened, all concatenated), `offsets` (entry i is `values[offsets[i]:offsets[i+1]]`)
  and `shapes` (entry i's shape).

Which layout a tensor gets is decided on the first batch: a value's leading axis is the sample
axis when it follows the batch size (the first batch and its first sample alone give B and 1
entries); with a model whose batch size is fixed, when it equals that batch size.

The mirrored graph is kept as node-link JSON (`graphscope/graph.json`, a uint8 array of its
UTF-8 bytes). The root group's attributes (`graphscope`) hold the model's name, a fingerprint of its weights,
the input signature, the graphscope version, the fetched names and their arrays, and the
progress: how many batches and samples are written. Each batch's chunks are written first (each
chunk file atomically, by zarr's local store), then the progress (zarr.json, replaced
atomically). Re-running the same call continues after the last batch recorded; whatever a
crash left past it is overwritten or cut off, so no chunk a reader is pointed at is incomplete.
Unwritten float samples read as NaN.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from graphscope.errors import ArgumentError, InputError, StoreError, UnsupportedFetchError
from graphscope.graph import Tensor

if TYPE_CHECKING:
    from graphscope.execute import Executor

__all__ = [
    "DEFAULT_BATCH_SIZE", "Field", "extract", "fingerprint", "read_array", "store_key", "weights_fingerprint",
]

DEFAULT_BATCH_SIZE = 32
# chunks are one batch along the samples; trailing axes are split when a chunk would pass this
CHUNK_BYTES = 64 * 2**20
# elements per chunk of a ragged tensor's `values`
VALUES_CHUNK = 2**20
FORMAT = 1  # the store layout's version, in the attributes


def _compressors() -> list[Any]:
    """Blosc: LZ4 over bit-shuffled values. On ResNet50 activations it costs the writer 15-20
    ms per 6.8 MB batch, zarr's default zstd 45-50 (for 12 % vs 22 % smaller than raw): on a
    small machine the writer's time is taken from the model, and most of it is the file
    system's, per byte written."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")]


@dataclass(frozen=True)
class Field:
    """How one fetched tensor is stored."""

    name: str  # canonical tensor name
    key: str  # the array's (or ragged group's) name in the store
    layout: str  # "sample" | "batch"
    ragged: bool
    dtype: str  # numpy dtype name
    shape: tuple[int, ...] | None  # each entry's shape (dense only)
    ndim: int  # each entry's rank


def store_key(name: str) -> str:
    """A tensor's array name: `/` -> `.`, other characters outside `[A-Za-z0-9_.-]` -> `_`."""
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", name.replace("/", "."))
    return key if not key.startswith(("_", ".")) else f"t{key}"


def fingerprint(arrays: Iterable[Any]) -> str:
    """sha256 over the dtypes, shapes and bytes of `arrays`, in order (a batch of inputs)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def weights_fingerprint(named: Iterable[tuple[str, Any]]) -> str:
    """sha256 of a model's weights, given as (name, array) in any order: sorted by name, then
    by content, so the same weights give the same fingerprint in every process."""
    digests = sorted((name, fingerprint([value])) for name, value in named)
    return hashlib.sha256("".join(f"{n}={d};" for n, d in digests).encode()).hexdigest()


# --------------------------------------------------------------------------- input batches


def read_array(path: str, *, mmap: bool = False) -> Any:
    """An array from a .npy (memory-mapped with `mmap`), or a dict of arrays from an .npz;
    pickles are refused (files from the command line, and Beam's `ReadNpy`)."""
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise InputError(f"input file {path!r} does not exist; give the path of a .npy or .npz file") from None
    except OSError as e:
        raise InputError(f"cannot open input file {path!r}: {e.strerror}; give a readable .npy or .npz file") from None
    if head != b"\x93NUMPY" and not head.startswith(b"PK"):
        raise InputError(
            f"{path!r} is not a .npy or .npz file (it does not start with NumPy's or a zip's "
            "signature); save arrays with numpy.save or numpy.savez"
        )
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return loaded
    except ValueError as e:  # object arrays (pickles), or a damaged header
        raise InputError(
            f"cannot read {path!r} as a .npy/.npz file without unpickling ({e}); "
            "save plain numeric arrays with numpy.save or numpy.savez"
        ) from None
    except (EOFError, OSError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {path!r}: the file is damaged ({e}); save it again with numpy.save") from None


class Batches:
    """The batches of `data` for `executor`'s inputs: each a list of arrays, one per input."""

    def __init__(self, data: Any, executor: Executor, batch_size: int | None) -> None:
        import tensorflow as tf

        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ArgumentError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.inputs = list(executor.inputs)
        self._by_name = executor._by_name  # dicts: by input name, or any spelling of it
        self.samples: int | None = None
        self._arrays: list[np.ndarray] | None = None
        self._dataset = None
        self._iterable: Iterable[Any] | None = None
        self._first: list[np.ndarray] | None = None
        self._rest: Iterator[Any] = iter(())
        self.batch_count: int | None = None
        self.batch_size = batch_size
        arrays = self._as_arrays(data)
        if arrays is not None:
            self._arrays = arrays
            self.samples = len(arrays[0])
            self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        elif isinstance(data, tf.data.Dataset):
            if batch_size is not None:
                n = int(data.cardinality())
                self.samples = n if n >= 0 else None
                data = data.batch(batch_size)
            n = int(data.cardinality())
            self.batch_count = n if n >= 0 else None
            self._dataset = data
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
            if batch_size is not None:
                raise ArgumentError(
                    "batch_size applies to arrays and tf.data.Datasets; an iterable's items are "
                    "its batches: leave batch_size out, or pass the arrays themselves"
                )
            self._iterable = data
        else:
            raise ArgumentError(
                f"data must be numpy arrays (a dict or list of them for several inputs), a "
                f"tf.data.Dataset or an iterable of batches, got {type(data).__name__}"
            )

    def _as_arrays(self, data: Any) -> list[np.ndarray] | None:
        """The per-input arrays when `data` is arrays (not batches); None otherwise."""
        n = len(self.inputs)
        if isinstance(data, np.ndarray):
            arrays = [data]
        elif isinstance(data, Mapping) and all(isinstance(v, np.ndarray) for v in data.values()):
            arrays = self._by_name(data)
        elif (
            isinstance(data, (list, tuple))
            and n > 1
            and len(data) == n
            and all(isinstance(v, np.ndarray) for v in data)
        ):
            arrays = list(data)
        else:
            return None
        if len(arrays) != n:
            raise InputError(
                f"the model takes {n} inputs ({', '.join(self.inputs)}), got {len(arrays)} array(s): "
                "pass a list of arrays in that order, or a dict by name"
            )
        if any(a.ndim == 0 for a in arrays):
            raise InputError("each input array needs the samples on its first axis; got a scalar")
        counts = {len(a) for a in arrays}
        if len(counts) > 1:
            raise InputError(
                f"the input arrays hold different numbers of samples ({', '.join(str(len(a)) for a in arrays)}); "
                "give each input one entry per sample"
            )
        if not counts or counts == {0}:
            raise InputError("the input arrays hold no samples; give at least one")
        return arrays

    def count(self) -> int | None:
        """How many batches there are, when known."""
        if self.samples is not None and self.batch_size:
            return -(-self.samples // self.batch_size)
        return self.batch_count

    def iterate(self, skip: int = 0) -> Iterator[list[np.ndarray]]:
        """The batches after the first `skip`, each a list of arrays (one per input)."""
        if self._arrays is not None:
            b = self.batch_size
            assert b is not None
            for start in range(skip * b, self.samples or 0, b):
                yield [a[start : start + b] for a in self._arrays]
            return
        if self._dataset is not None:
            import tensorflow as tf

            dataset = self._dataset.skip(skip).prefetch(tf.data.AUTOTUNE)
            for element in dataset.as_numpy_iterator():
                yield self._element(element)
            return
        first = self.first()
        if skip == 0:
            yield first
        for k, element in enumerate(self._rest, start=1):
            if k >= skip:
                yield self._element(element)

    def first(self) -> list[np.ndarray]:
        """The first batch. A one-pass iterator (a generator) is read once: `iterate` gives
        this batch again, then the rest."""
        if self._iterable is not None:
            if self._first is None:
                self._rest = iter(self._iterable)
                item = next(self._rest, None)
                if item is None:
                    raise InputError("data holds no batches; give at least one")
                self._first = self._element(item)
            return self._first
        for batch in self.iterate():
            return batch
        raise InputError("data holds no batches; give at least one")

    def _element(self, element: Any) -> list[np.ndarray]:
        """One batch as a list of arrays; Keras' `(x, y[, sample_weight])` tuples give x."""
        n = len(self.inputs)
        if isinstance(element, tuple) and element and isinstance(element[0], (tuple, list, Mapping)):
            element = element[0]
        elif isinstance(element, tuple) and n == 1 and len(element) in (2, 3):
            element = element[0]
        if isinstance(element, Mapping):
            arrays = self._by_name(element)
        elif isinstance(element, (list, tuple)):
            arrays = list(element)
        else:
            arrays = [element]
        arrays = [np.asarray(a.numpy() if hasattr(a, "numpy") else a) for a in arrays]
        if len(arrays) != n:
            raise InputError(
                f"a batch holds {len(arrays)} array(s), the model takes {n} ({', '.join(self.inputs)}): "
                "give one array per input, in that order, or a dict by name"
            )
        counts = {len(a) if a.ndim else -1 for a in arrays}
        if len(counts) != 1 or -1 in counts:
            raise InputError(
                "each batch needs one array per input with the samples on the first axis, all "
                f"of the same length; got shapes {', '.join(str(a.shape) for a in arrays)}"
            )
        return arrays


# --------------------------------------------------------------------------- layout


def fixed_batch(executor: Executor) -> int | None:
    """The batch size a model's inputs fix, or None when it is free."""
    return next((t.shape[0] for t in executor._feeds if t.shape and t.shape[0] is not None), None)


def plan(executor: Executor, first: list[np.ndarray]) -> tuple[list[Field], Mapping[str, Any]]:
    """Decide the layout of each of `executor`'s fetches from its values on the first batch
    (see the module doc). Returns the fields and the first batch's values."""
    b = len(first[0])
    fixed = fixed_batch(executor)
    full = executor(first)
    small = executor([a[:1] for a in first]) if b > 1 and fixed is None else None
    keys: set[str] = set()
    fields = []
    for t in executor.fetches:
        if t.context is not None and not t.context.endswith(":body"):
            raise UnsupportedFetchError(
                f"cannot store {t.name!r}: it is computed inside {t.context}, a branch that may "
                "not run for every sample; fetch the branch op's output instead"
            )
        value = full[t.name]
        lead = _leading(value)
        if fixed is not None or small is None:
            per_sample = lead == b and (fixed is not None or _batch_axis(t, b))
        else:
            per_sample = lead == b and _leading(small[t.name]) == 1
        entries = _entries(value) if per_sample else [value]
        if any(e is None or isinstance(e, list) for e in entries):
            raise UnsupportedFetchError(
                f"cannot store {t.name!r}: its values differ in shape from one loop iteration to "
                "the next inside a loop that runs per batch; fetch the loop's outputs instead"
            )
        dtype = np.dtype(entries[0].dtype)
        if dtype.kind not in "biufc":
            raise UnsupportedFetchError(
                f"cannot store {t.name!r}: {dtype} values are not numbers; fetch a numeric tensor"
            )
        static = _entry_shape(t, per_sample)
        ragged = static is None or any(d is None for d in static)
        key = store_key(t.name)
        while key in keys:
            key += "_"
        keys.add(key)
        fields.append(
            Field(
                name=t.name,
                key=key,
                layout="sample" if per_sample else "batch",
                ragged=ragged,
                dtype=dtype.name,
                shape=None if ragged else tuple(entries[0].shape),
                ndim=entries[0].ndim,
            )
        )
    return fields, full


def _leading(value: Any) -> int | None:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, np.ndarray) and value.ndim:
        return value.shape[0]
    return None


def _batch_axis(t: Tensor, b: int) -> bool:
    """With one sample per batch, whether `t`'s first axis is the batch (from its static shape)."""
    if t.context is not None:
        return True  # a loop over a one-sample batch: one iteration
    return bool(t.shape) and t.shape[0] in (None, b)


def _entries(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, np.ndarray)) else [value]


def _entry_shape(t: Tensor, per_sample: bool) -> tuple[int | None, ...] | None:
    """Each entry's static shape; None where unknown."""
    if t.shape is None:
        return None
    if t.context is not None:  # a loop's values: one per iteration
        return t.shape if per_sample else None
    return t.shape[1:] if per_sample else t.shape


# --------------------------------------------------------------------------- the store


class Store:
    """Writing one extraction's zarr store."""

    def __init__(self, group: Any, fields: list[Field], *, batch_size: int, samples: int | None) -> None:
        self.group = group
        self.fields = fields
        self.batch_size = batch_size
        self.samples = samples  # the total, when known up front

    @classmethod
    def create(
        cls,
        out: str,
        fields: list[Field],
        *,
        batch_size: int,
        samples: int | None,
        batches: int | None,
        about: dict[str, Any],
        graph: dict[str, Any],
        call: dict[str, Any],
    ) -> Store:
        """A new store at `out` (replacing any there) with empty arrays for `fields`, its
        attributes, and a progress of nothing written."""
        import zarr

        group = zarr.open_group(out, mode="w", zarr_format=3)
        # the graph's node-link JSON as the bytes of a uint8 array: zarr's attribute writer
        # takes ~0.4 s for ResNet50's 1.8 MB of JSON, a compressed array a few milliseconds
        text = np.frombuffer(json.dumps(graph, separators=(",", ":")).encode(), dtype=np.uint8)
        compressors = _compressors()
        group.create_group("graphscope").create_array(
            "graph.json", data=text, chunks=(max(len(text), 1),), compressors=compressors
        )
        for f in fields:
            attrs = {k: v for k, v in about.items() if k != "tensors"}
            attrs.update(about["tensors"][f.name], name=f.name, layout=f.layout, ragged=f.ragged)
            n = (samples if f.layout == "sample" else batches) or 0
            axis = "sample" if f.layout == "sample" else "batch"
            rows = batch_size if f.layout == "sample" else 1
            if f.ragged:
                g = group.create_group(f.key, attributes=attrs)
                g.create_array("values", shape=(0,), chunks=(VALUES_CHUNK,), dtype=f.dtype,
                               compressors=compressors, dimension_names=[f"{f.key}.values"])
                offsets = g.create_array("offsets", shape=(n + 1,), chunks=(rows,), dtype="int64",
                                         fill_value=-1, dimension_names=[f"{axis}+1"])
                offsets[0] = 0
                g.create_array("shapes", shape=(n, max(f.ndim, 1)), chunks=(rows, max(f.ndim, 1)),
                               dtype="int64", fill_value=-1, dimension_names=[axis, f"{f.key}.rank"])
            else:
                assert f.shape is not None
                dtype = np.dtype(f.dtype)
                group.create_array(
                    f.key,
                    shape=(n, *f.shape),
                    chunks=_chunks(rows, f.shape, dtype.itemsize),
                    dtype=dtype,
                    fill_value=np.nan if dtype.kind in "fc" else 0,
                    compressors=compressors,
                    dimension_names=[axis, *(f"{f.key}.{k}" for k in range(1, len(f.shape) + 1))],
                    attributes=attrs,
                )
        group.attrs["graphscope"] = {
            **{k: v for k, v in about.items() if k != "tensors"},
            "format": FORMAT,
            "call": call,
            "tensors": {f.name: asdict(f) for f in fields},
            "total": samples,
            "progress": None,
        }
        store = cls(group, fields, batch_size=batch_size, samples=samples)
        store.record({"batches": 0, "samples": 0, "values": {f.key: 0 for f in fields if f.ragged}, "complete": False})
        return store

    def truncate(self, batches: int, samples: int, values: Mapping[str, int]) -> None:
        """Cut every array back to what the progress records (growing arrays only)."""
        for f in self.fields:
            n = samples if f.layout == "sample" else batches
            if f.ragged:
                g = self.group[f.key]
                g["values"].resize((values[f.key],))
                if self.samples is None:
                    g["offsets"].resize((n + 1,))
                    g["shapes"].resize((n, g["shapes"].shape[1]))
            elif self.samples is None:
                a = self.group[f.key]
                a.resize((n, *a.shape[1:]))

    def write(self, batch: int, start: int, values: Mapping[str, Any], size: int,
              totals: dict[str, int], *, ragged: Callable[[Field, np.ndarray, np.ndarray], None] | None = None) -> None:
        """Write one batch's values (batch index, first sample, values by name, samples in it).

        `totals` holds, per ragged key, the values before this batch and is moved past it. A
        ragged tensor's entry sizes and flattened values go to `ragged(field, sizes, values)`
        when given (Beam: one writer per tensor places them), else into its arrays here.
        Every other write covers whole chunks of this batch, so batches can be written by
        different workers at once.
        """
        for f in self.fields:
            value = values[f.name]
            at, n = (start, size) if f.layout == "sample" else (batch, 1)
            entries = _entries(value) if f.layout == "sample" else [value]
            if len(entries) != n:
                raise StoreError(
                    f"{f.name!r} gave {len(entries)} entries for a batch of {n} samples; the first "
                    "batch gave one per sample, so its loop does not run once per sample: fetch the "
                    "loop's outputs instead"
                )
            if f.ragged:
                self._write_ragged(f, at, entries, totals, ragged)
                continue
            array = self.group[f.key]
            if array.shape[0] < at + n:
                array.resize((at + n, *array.shape[1:]))
            block = np.stack(entries) if f.layout == "batch" or isinstance(value, list) else value
            if block.shape[1:] != array.shape[1:]:
                raise StoreError(
                    f"{f.name!r} has shape {block.shape[1:]} per entry in batch {batch}, "
                    f"{array.shape[1:]} before; its entries cannot be stored in one dense array "
                    "(please report this: its static shape promised they could)"
                )
            array[at : at + n] = block

    def _write_ragged(self, f: Field, at: int, entries: list[Any], totals: dict[str, int],
                      sink: Callable[[Field, np.ndarray, np.ndarray], None] | None) -> None:
        arrays = [np.asarray(e) for e in entries]
        if any(a.ndim != f.ndim for a in arrays):
            raise StoreError(
                f"{f.name!r} changed rank between batches ({f.ndim} first); fetch a tensor of a "
                "fixed rank (its loop's outputs, for a loop)"
            )
        n = len(arrays)
        shapes = self.group[f.key]["shapes"]
        if shapes.shape[0] < at + n:
            shapes.resize((at + n, shapes.shape[1]))
        shapes[at : at + n] = np.array([a.shape or (1,) for a in arrays], dtype=np.int64).reshape(n, -1)
        sizes = np.array([a.size for a in arrays], dtype=np.int64)
        flat = np.concatenate([a.ravel() for a in arrays]).astype(f.dtype, copy=False)
        if sink is not None:
            sink(f, sizes, flat)
        else:
            totals[f.key] = self.write_values(f, at, totals[f.key], sizes, flat)

    def write_values(self, f: Field, at: int, begin: int, sizes: np.ndarray, flat: np.ndarray) -> int:
        """Put entries `at...` of a ragged tensor (their sizes, their values flattened) at
        position `begin` of its values, and their offsets; returns where the next begin."""
        g = self.group[f.key]
        values, offsets = g["values"], g["offsets"]
        end = begin + len(flat)
        if values.shape[0] < end:
            values.resize((end,))
        if len(flat):
            values[begin:end] = flat
        n = len(sizes)
        if offsets.shape[0] < at + n + 1:
            offsets.resize((at + n + 1,))
        offsets[at + 1 : at + n + 1] = begin + np.cumsum(sizes)
        return end

    def record(self, progress: dict[str, Any]) -> None:
        """Record the progress (one atomic replace of the root's zarr.json)."""
        attrs = dict(self.group.attrs["graphscope"])
        attrs["progress"] = progress
        self.group.attrs["graphscope"] = attrs

    def finish(self, batches: int, samples: int, totals: dict[str, int]) -> dict[str, Any]:
        """Shrink arrays sized up front to what was written (a dataset shorter than announced),
        and record the store complete."""
        if self.samples is not None and self.samples != samples:
            self.samples = None
            self.truncate(batches, samples, totals)
        final = {"batches": batches, "samples": samples, "values": dict(totals), "complete": True}
        self.record(final)
        return final


def _chunks(rows: int, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """`rows` along axis 0; trailing axes halved (largest first) until a chunk fits CHUNK_BYTES."""
    dims = [max(d, 1) for d in shape]
    while rows * int(np.prod(dims)) * itemsize > CHUNK_BYTES and max(dims, default=1) > 1:
        k = dims.index(max(dims))
        dims[k] = -(-dims[k] // 2)
    return (rows, *dims)


# --------------------------------------------------------------------------- the job


def extract(
    executor: Executor,
    data: Any,
    *,
    out: str | os.PathLike[str],
    batch_size: int | None = None,
    about: dict[str, Any],
    graph: Callable[[], dict[str, Any]],
    quiet: bool = False,
) -> dict[str, Any]:
    """Run `executor` (fetches keyed by canonical name, fed the model's inputs) on every batch
    of `data` and write the values to `out`.

    `about` holds the store's attributes (model, fingerprint, input signature, per-tensor
    records); `graph()` the mirrored graph's node-link data. Returns the final progress.
    """
    out = os.fspath(out)
    batches = Batches(data, executor, batch_size)
    first = batches.first()
    fixed = fixed_batch(executor)
    if fixed is not None:
        _check_fixed(batches, first, fixed)
    call = describe_call(executor.fetches, first, about)
    store, progress = _resume(out, call)
    if progress is not None and progress["complete"]:
        return progress
    computed: Mapping[str, Any] | None = None
    if store is None:
        fields, computed = plan(executor, first)
        store = Store.create(
            out, fields, batch_size=len(first[0]), samples=batches.samples, batches=batches.count(),
            about=about, graph=graph(), call=call,
        )
        progress = store.group.attrs["graphscope"]["progress"]
    _clean_partial_files(out)
    return _stream(executor, store, batches, progress, quiet=quiet, first=computed)


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


def _check_fixed(batches: Batches, first: list[np.ndarray], fixed: int) -> None:
    if len(first[0]) != fixed or (batches.samples is not None and batches.samples % fixed):
        total = f"{batches.samples} samples" if batches.samples is not None else "batches"
        raise InputError(
            f"this model's batch size is fixed at {fixed}, got {total} of {len(first[0])}: pass "
            f"batch_size={fixed} and a number of samples divisible by it, or trace a model built "
            "with a free batch size"
        )


def _resume(out: str, call: dict[str, Any]) -> tuple[Store | None, dict[str, Any] | None]:
    """The store at `out` and its progress when it was written by the same call; (None, None)
    when there is none to continue (no directory, or a store whose first batch never finished)."""
    import zarr

    if not os.path.exists(out):
        return None, None
    if not os.path.isdir(out) or (os.listdir(out) and not os.path.exists(os.path.join(out, "zarr.json"))):
        raise StoreError(f"{out!r} exists and is not a graphscope store; choose another path for out")
    if not os.listdir(out):
        return None, None
    try:
        group = zarr.open_group(out, mode="r+")
        attrs = dict(group.attrs["graphscope"])
    except Exception:  # zarr's errors for damaged or foreign metadata vary by version
        raise StoreError(f"{out!r} exists and is not a graphscope store; choose another path for out") from None
    if attrs.get("progress") is None:
        return None, None  # created, never written: start again
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
    fields = [Field(**{**f, "shape": None if f["shape"] is None else tuple(f["shape"])})
              for f in attrs["tensors"].values()]
    progress = dict(attrs["progress"])
    store = Store(group, fields, batch_size=call["batch_size"], samples=attrs.get("total"))
    if not progress["complete"]:
        store.truncate(progress["batches"], progress["samples"], progress["values"])
    return store, progress


def _clean_partial_files(out: str) -> None:
    """Remove temporary files a killed write left (zarr writes `<chunk>.partial`, then renames)."""
    for root, _, files in os.walk(out):
        for name in files:
            if ".partial" in name:
                os.remove(os.path.join(root, name))


def _stream(
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
    totals = dict(progress["values"])
    total = store.samples
    if total is None and batches.count() is not None:  # batches known, samples estimated
        total = batches.count() * store.batch_size
    bar = _Bar(total, start, quiet=quiet)
    source = _Prefetch(batches.iterate(skip=done))
    pending: Future[None] | None = None

    def write(k: int, begin: int, values: Mapping[str, Any], n: int) -> None:
        store.write(k, begin, values, n, totals)
        store.record({"batches": k + 1, "samples": begin + n, "values": dict(totals), "complete": False})
        bar.advance(n)

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="graphscope-write") as writer:
            for arrays in source:
                values = first if first is not None and done == 0 else run(arrays)
                if pending is not None:
                    pending.result()
                n = len(arrays[0])
                pending = writer.submit(write, done, start, values, n)
                done, start = done + 1, start + n
            if pending is not None:
                pending.result()
    finally:
        source.close()
        bar.close()
    return store.finish(done, start, totals)


class _Prefetch:
    """Iterate `source` on a thread, `depth` items ahead."""

    def __init__(self, source: Iterator[Any], depth: int = 2) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True, name="graphscope-read")
        self._thread.start()

    def _fill(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:  # raised again on the consuming thread
            self._put(("error", e))

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Bar:
    """A rich progress bar (samples, samples/s, ETA) on an interactive terminal's stderr."""

    def __init__(self, total: int | None, done: int, *, quiet: bool) -> None:
        self._progress: Any = None
        if quiet:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.progress import ProgressColumn
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(f"{task.speed:,.1f}/s" if task.speed else "")

        console = Console(stderr=True)
        if not console.is_terminal or console.is_jupyter or os.environ.get("CI"):
            return
        self._progress = Progress(
            TextColumn("extracting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("samples"),
            Speed(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("extract", total=total, completed=done)
        self._progress.start()

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
