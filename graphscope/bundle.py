"""Bundle: a saved run reopened without the model or TensorFlow: its arrays (read lazily,
`graphscope.data.store`), their metadata, and the mirrored graph as a `ModelGraph`, so the same
queries a `Scope` answers work on it (`graphscope.ir.graph.Queries`).

    bundle = gs.open("run.zarr")
    bundle["ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"][7]   # image 7's indices
    np.asarray(bundle["conv1/BiasAdd:0"])                                    # every sample
    bundle.ancestors("ROI/map/TensorArrayV2Stack/TensorListStack:0", op_type="NonMaxSuppressionV3")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from graphscope.data.store import Field, StoredTensor, read_graph, read_root
from graphscope.display.tables import bundle_table
from graphscope.errors import GraphscopeError, StoreError, TensorNotFoundError, suggestion
from graphscope.ir import query
from graphscope.ir.graph import ModelGraph, Queries
from graphscope.ir.records import Tensor
from graphscope.ir.serialize import graph_from_data
from graphscope.ir.views import Shown, view

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


class Bundle(Queries, Shown):
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
            attrs = read_root(self._group)
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
            name: StoredTensor(self._group, Field.from_attrs(field), self.samples, self.batches)
            for name, field in attrs["tensors"].items()
        }
        self._model_graph: ModelGraph | None = None
        self._by_computed: dict[str, str] | None = None  # what a stored tensor computes -> its name

    # ---- what it holds

    @property
    def names(self) -> list[str]:
        """The stored tensors' canonical names, as fetched."""
        return list(self._tensors)

    @property
    def model(self) -> str:
        """The name of the model the run came from."""
        return str(self.attrs["model"])

    @property
    def stored(self) -> list[StoredTensor]:
        """The stored tensors, in the order they were fetched."""
        return list(self._tensors.values())

    def __getitem__(self, name: str | Tensor) -> StoredTensor:
        """The stored tensor `name` names, by the rules every query follows
        (`graphscope.ir.query.resolve_pairs`: a tensor, op, output key or input name), or a
        copy of it (an output's `Identity` holds the value stored for what it copies)."""
        key = name.name if isinstance(name, Tensor) else name
        if key not in self._tensors and isinstance(key, str):
            key = self._canonical(key)
        return self._tensors[key]

    def _canonical(self, name: str) -> str:
        try:
            wanted = query.computed(self.model_graph.graph, self.model_graph.tensor(name)).name
        except GraphscopeError:
            wanted = None
        if self._by_computed is None:
            G = self.model_graph.graph
            self._by_computed = {}
            for stored in self._tensors:
                if stored in self.model_graph.tensors:
                    self._by_computed.setdefault(query.computed(G, self.model_graph.tensors[stored]).name, stored)
        if wanted not in self._by_computed:
            raise TensorNotFoundError(
                f"{name!r} is not stored in {self.path!r}; it holds {', '.join(self.names)}."
                + suggestion(name, self.names)
            )
        return self._by_computed[wanted]

    def __contains__(self, name: object) -> bool:
        """Whether `bundle[name]` finds a stored tensor."""
        if not isinstance(name, (str, Tensor)):
            return False
        try:
            self[name]
        except GraphscopeError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    # ---- the graph (its queries come from `Queries`)

    @property
    def model_graph(self) -> ModelGraph:
        """The mirrored graph of the model, as it was traced (loaded on first use). Its layers
        have no Keras objects."""
        if self._model_graph is None:
            self._model_graph = ModelGraph.adopt(graph_from_data(read_graph(self._group)))
        return self._model_graph

    # ---- display

    def __repr__(self) -> str:
        state = "" if self.complete else ", incomplete"
        return (
            f"<Bundle {self.path}: {self.model}, {len(self)} tensor{'s' if len(self) != 1 else ''}, "
            f"{self.samples} samples{state}>"
        )


view.register(Bundle)(bundle_table)
