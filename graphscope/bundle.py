"""Reopening a saved run without the model: its arrays (read lazily), their metadata, and the
mirrored graph, so the same `find`/`ancestors` queries work on it.

    bundle = gs.open("run.zarr")
    bundle["ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"][7]   # image 7's indices
    np.asarray(bundle["conv1/BiasAdd:0"])                                    # every sample
    bundle.ancestors("ROI/map/TensorArrayV2Stack/TensorListStack:0", op_type="NonMaxSuppressionV3")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import networkx as nx
import numpy as np

from graphscope import query
from graphscope._display import RichDisplay
from graphscope.errors import StoreError, TensorNotFoundError, suggestion
from graphscope.graph import Layer, Selection, Tensor

__all__ = ["Bundle", "StoredTensor", "open"]


def open(path: str | os.PathLike[str]) -> Bundle:
    """Reopen the store `Scope.extract` wrote at `path` (no model or TensorFlow needed).

    >>> import graphscope as gs
    >>> gs.open("no/such/run.zarr")
    Traceback (most recent call last):
    ...
    graphscope.errors.StoreError: no store at 'no/such/run.zarr': give the directory Scope.extract (or graphscope extract) wrote
    """
    return Bundle(path)


class Bundle(RichDisplay):
    """A saved run: `bundle[name]` is the stored tensor fetched as `name` (a `StoredTensor`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import zarr

        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise StoreError(
                f"no store at {self.path!r}: give the directory Scope.extract (or graphscope extract) wrote"
            )
        try:
            self._group = zarr.open_group(self.path, mode="r")
            attrs = dict(self._group.attrs["graphscope"])
        except Exception:  # zarr's errors for foreign or damaged metadata vary by version
            raise StoreError(
                f"{self.path!r} is not a store graphscope wrote (no graphscope metadata); give the "
                "directory Scope.extract (or graphscope extract) wrote"
            ) from None
        self.attrs: dict[str, Any] = attrs
        progress = attrs.get("progress") or {"batches": 0, "samples": 0, "complete": False}
        self.samples: int = progress["samples"]
        self.batches: int = progress["batches"]
        self.complete: bool = progress["complete"]
        self._tensors = {
            name: StoredTensor(self._group, name, field, self.samples, self.batches)
            for name, field in attrs["tensors"].items()
        }
        self._graph: nx.DiGraph | None = None

    # ---- what it holds

    @property
    def names(self) -> list[str]:
        """The stored tensors' canonical names, as fetched."""
        return list(self._tensors)

    @property
    def model(self) -> str:
        """The name of the model the run came from."""
        return str(self.attrs["model"])

    def __getitem__(self, name: str | Tensor) -> StoredTensor:
        key = name.name if isinstance(name, Tensor) else name
        if key not in self._tensors and isinstance(key, str):
            key = self._canonical(key)
        return self._tensors[key]

    def _canonical(self, name: str) -> str:
        try:
            canonical = query.tensor(self.graph, name).name
        except TensorNotFoundError:
            canonical = None
        if canonical not in self._tensors:
            raise TensorNotFoundError(
                f"{name!r} is not stored in {self.path!r}; it holds {', '.join(self.names)}."
                + suggestion(name, self.names)
            )
        return canonical

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    # ---- the graph and its queries

    @property
    def graph(self) -> nx.DiGraph:
        """The mirrored graph of the model, as it was traced (loaded on first use)."""
        if self._graph is None:
            from graphscope.export import graph_from_data

            text = self._group["graphscope"]["graph.json"][:].tobytes().decode()
            self._graph = graph_from_data(json.loads(text))
        return self._graph

    def tensor(self, name: str) -> Tensor:
        """The graph's record of the tensor called `name`."""
        return query.tensor(self.graph, name)

    def find(self, pattern: str | None = None, *, op_type: str | None = None, layer: str | None = None) -> Selection:
        """Tensors of the model whose name matches `pattern`; see `graphscope.query.find`."""
        return query.find(self.graph, pattern, op_type=op_type, layer=layer)

    def ancestors(self, of: Any, pattern: str | None = None, *, op_type: str | None = None) -> Selection:
        """Every tensor upstream of `of`, filtered like `find`."""
        G = self.graph
        return query.ancestors(G, query.resolve_all(G, query.layer_or_name(G, of)), pattern, op_type=op_type)

    def descendants(self, of: Any, pattern: str | None = None, *, op_type: str | None = None) -> Selection:
        """Every tensor downstream of `of`, filtered like `find`."""
        G = self.graph
        return query.descendants(G, query.resolve_all(G, query.layer_or_name(G, of)), pattern, op_type=op_type)

    def layer(self, key: str | int) -> Layer:
        """A layer call by name/path or index (without its Keras object)."""
        return query.layer(self.graph, key)

    # ---- display

    def __repr__(self) -> str:
        state = "" if self.complete else ", incomplete"
        return (
            f"<Bundle {self.path}: {self.model}, {len(self)} tensor{'s' if len(self) != 1 else ''}, "
            f"{self.samples} samples{state}>"
        )

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=repr(self).strip("<>"), title_justify="left")
        for column in ("tensor", "layout", "dtype", "entry shape", "entries"):
            table.add_column(column, justify="right" if column == "entries" else "left", overflow="fold")
        for t in self._tensors.values():
            shape = "ragged" if t.ragged else "×".join(map(str, t.entry_shape)) or "scalar"
            table.add_row(t.name, f"per {t.layout}", t.dtype.name, shape, str(len(t)))
        return table


class StoredTensor:
    """One stored tensor: `len` entries (samples, or batches for per-batch values); `[i]` reads
    entry i (for ragged tensors that entry's own array), `np.asarray` reads them all."""

    def __init__(self, group: Any, name: str, field: dict[str, Any], samples: int, batches: int) -> None:
        self.name = name
        self.layout: str = field["layout"]
        self.ragged: bool = field["ragged"]
        self.dtype = np.dtype(field["dtype"])
        self._ndim: int = field["ndim"]
        self._n = samples if self.layout == "sample" else batches
        self.zarr = group[field["key"]]
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
        shape = "×".join("?" if d is None else str(d) for d in self.shape)
        return f"<StoredTensor {self.name} {self.dtype.name}[{shape}] per {self.layout}{' ragged' if self.ragged else ''}>"


