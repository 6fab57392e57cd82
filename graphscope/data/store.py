"""The on-disk store of a dataset job: one schema, shared by its writer (`Store`) and its reader
(`StoredTensor`, `read_root`).

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
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from graphscope.errors import StoreError
from graphscope.ir.records import shape_text

__all__ = [
    "FORMAT", "Field", "Store", "StoredTensor", "entries_of", "fingerprint", "is_store", "read_graph", "read_root",
    "store_key",
    "weights_fingerprint",
]

# chunks are one batch along the samples; trailing axes are split when a chunk would pass this
CHUNK_BYTES = 64 * 2**20
# elements per chunk of a ragged tensor's `values`
VALUES_CHUNK = 2**20
FORMAT = 1  # the store layout's version, in the attributes
ROOT = "graphscope"  # the root group's attribute holding the store's metadata, and its subgroup
GRAPH = "graph.json"  # the mirrored graph's node-link JSON, as a uint8 array in that subgroup


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

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Field:
        """The field a store's attributes describe (what `asdict` wrote)."""
        return cls(**{**attrs, "shape": None if attrs["shape"] is None else tuple(attrs["shape"])})


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


def entries_of(value: Any) -> list[Any]:
    """A per-sample value's entries (an array's rows, or a list's items)."""
    return list(value) if isinstance(value, (list, np.ndarray)) else [value]


def read_root(group: Any) -> dict[str, Any]:
    """A store's metadata: model, fingerprint, input signature, version, the call that wrote
    it, its fields (`tensors`, name -> `Field` attributes) and its progress."""
    return dict(group.attrs[ROOT])


def is_store(path: Any) -> bool:
    """Whether `path` is a directory holding a store (a zarr v3 group with graphscope's
    metadata), read from its `zarr.json` alone (no zarr needed)."""
    meta = os.path.join(os.fspath(path), "zarr.json")
    try:
        with open(meta, encoding="utf-8") as f:
            return ROOT in (json.load(f).get("attributes") or {})
    except (OSError, ValueError, AttributeError):
        return False


def read_graph(group: Any) -> dict[str, Any]:
    """The mirrored graph's node-link data, as `graphscope.ir.serialize.graph_data` wrote it."""
    return json.loads(group[ROOT][GRAPH][:].tobytes().decode())


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
        group.create_group(ROOT).create_array(
            GRAPH, data=text, chunks=(max(len(text), 1),), compressors=compressors
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
        group.attrs[ROOT] = {
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
            entries = entries_of(value) if f.layout == "sample" else [value]
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
        attrs = read_root(self.group)
        attrs["progress"] = progress
        self.group.attrs[ROOT] = attrs

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


class StoredTensor:
    """One stored tensor: `len` entries (samples, or batches for per-batch values); `[i]` reads
    entry i (for ragged tensors that entry's own array), `np.asarray` reads them all."""

    def __init__(self, group: Any, field: Field, samples: int, batches: int) -> None:
        self.name = field.name
        self.layout: str = field.layout
        self.ragged: bool = field.ragged
        self.dtype = np.dtype(field.dtype)
        self._ndim: int = field.ndim
        self._n = samples if self.layout == "sample" else batches
        self.zarr = group[field.key]
        self.attrs: dict[str, Any] = dict(self.zarr.attrs)
        self.entry_shape: tuple[int, ...] | None = None if self.ragged else tuple(self.zarr.shape[1:])

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int | None, ...]:
        """(entries, *entry shape); None for the axes of ragged entries."""
        if self.entry_shape is None:
            return (self._n, *([None] * self._ndim))
        return (self._n, *self.entry_shape)

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            indices = range(*key.indices(self._n))
            if not self.ragged and indices.step == 1:
                return self.zarr[indices.start : indices.stop]
            return [self[i] for i in indices] if self.ragged else np.stack([self[i] for i in indices])
        if not isinstance(key, (int, np.integer)):
            raise TypeError(f"index a stored tensor by entry number or slice, got {type(key).__name__}")
        i = int(key) + self._n if key < 0 else int(key)
        if not 0 <= i < self._n:
            raise IndexError(f"entry {key} is out of range: {self.name!r} has {self._n} entries")
        if not self.ragged:
            return self.zarr[i]
        begin, end = (int(v) for v in self.zarr["offsets"][i : i + 2])
        shape = tuple(int(d) for d in self.zarr["shapes"][i]) if self._ndim else ()
        return self.zarr["values"][begin:end].reshape(shape)

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._n):
            yield self[i]

    @property
    def values(self) -> np.ndarray:
        """A ragged tensor's entries, flattened and concatenated."""
        self._need_ragged("values")
        return self.zarr["values"][: int(self.offsets[-1])]

    @property
    def offsets(self) -> np.ndarray:
        """A ragged tensor's entry boundaries: entry i is `values[offsets[i]:offsets[i+1]]`."""
        self._need_ragged("offsets")
        return self.zarr["offsets"][: self._n + 1]

    @property
    def shapes(self) -> np.ndarray:
        """A ragged tensor's entry shapes, one row per entry."""
        self._need_ragged("shapes")
        return self.zarr["shapes"][: self._n]

    def _need_ragged(self, what: str) -> None:
        if not self.ragged:
            raise AttributeError(f"{self.name!r} is dense: it has no {what} (index it, or use np.asarray)")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.ragged:
            entries = list(self)
            if len({e.shape for e in entries}) > 1:
                raise StoreError(
                    f"{self.name!r} is ragged (its entries differ in shape): index it per entry, or "
                    "read .values with .offsets"
                )
            array = np.stack(entries) if entries else np.zeros((0,), self.dtype)
        else:
            array = self.zarr[: self._n]
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"<StoredTensor {self.name} {self.dtype.name}{shape_text(self.shape)} per {self.layout}{' ragged' if self.ragged else ''}>"


