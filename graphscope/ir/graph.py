"""ModelGraph: a traced model as data, the object both a live `Scope` and a reopened `Bundle` query.

It owns a frozen `networkx.DiGraph` (one node per op, keyed by canonical name, attribute `"op"`
its `Op` record and `"tensors"` its output `Tensor`s; edges from producer to consumer op with
the producer's `"outputs"` that flow), the graph's typed metadata, and the graph's index, built
once. Graph-level attributes: `tensors` (canonical name -> Tensor), `names` (every accepted
spelling -> canonical tensor or op name), `inputs`, `outputs` (tensor names), `input_names`
(what executors are fed by), `layers` (Layer records), `model_type`, `stand_ins` (ops
TensorFlow made to stand for unused values, which views leave out).

A body's argument nodes take edges from the producers of the calling op's inputs and its results
feed the calling op, so the graph stays acyclic (loop back-edges are not drawn) and a walk from a
layer's output reaches into custom layers' loops and helper functions.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from graphscope.ir import query
from graphscope.ir.records import Layer, Op, Outputs, Selection, Tensor

__all__ = ["ModelGraph", "Queries"]


class ModelGraph:
    """A mirrored graph with its metadata and index; every query graphscope answers, written once.

    It keeps a frozen copy of the graph it is given (networkx raises on any change; the caller's
    graph stays as it was); to edit one, copy it (`model_graph.graph.copy()`) and use the
    functions of `graphscope.ir.query` on the copy.
    """

    __slots__ = ("_cuts", "graph")

    def __init__(self, G: nx.DiGraph) -> None:
        self.graph: nx.DiGraph = nx.freeze(_own_copy(G))
        query.own(self.graph)  # its index is built by the first query, then kept
        self._cuts: Selection | None = None

    # ---- what it is

    @property
    def name(self) -> str:
        return str(self.graph.name)

    @property
    def tensors(self) -> dict[str, Tensor]:
        """Canonical tensor name -> Tensor, in topological order."""
        return self.graph.graph["tensors"]

    @property
    def inputs(self) -> Selection:
        """The model's input tensors."""
        return Selection(self.tensors[n] for n in self.graph.graph["inputs"])

    @property
    def input_names(self) -> list[str]:
        """The names executors are fed by, one per input (`input_image`)."""
        return list(self.graph.graph.get("input_names") or [t.op for t in self.inputs])

    @property
    def outputs(self) -> Outputs:
        """The traced function's output tensors, with their keys (`Outputs.keys`): each the
        tensor the model computes (see `graphscope.ir.query.output`)."""
        return Outputs(query.outputs(self.graph), self.output_keys)

    @property
    def output_keys(self) -> list[str]:
        """The key or path of each output in the structure the model returns (`detection_boxes`,
        `0`, `features/p3`; `""` for a single tensor), in the order of `outputs`."""
        return query.output_keys(self.graph)

    def output(self, key: str | int = 0) -> Tensor:
        """The output tensor at `key`: a key or path of the returned structure, or a position.

        Raises:
            TensorNotFoundError: no output has that key (the message lists the keys).
            AmbiguousMatchError: a path to several outputs (`"features"` holding p3...p7).
        """
        return query.output(self.graph, key)

    @property
    def layers(self) -> list[Layer]:
        """Every layer call, in the model's `.layers` order, nested layers after their parent."""
        return list(self.graph.graph["layers"])

    @property
    def model_type(self) -> str:
        return str(self.graph.graph.get("model_type", "model"))

    @property
    def n_ops(self) -> int:
        return self.graph.number_of_nodes()

    @property
    def n_layers(self) -> int:
        """How many layers the model has at its top level: its `.layers`, a shared layer once.

        >>> import networkx as nx
        >>> G = nx.DiGraph(tensors={}, names={}, inputs=[], outputs=[], layers=[])
        >>> ModelGraph(G).n_layers
        0
        """
        top = {lay.index if lay.index is not None else lay.name.partition("@")[0]
               for lay in self.graph.graph["layers"] if "/" not in lay.name}
        return len(top)

    @property
    def stand_ins(self) -> frozenset[str]:
        """Ops TensorFlow created to stand for values a body does not use."""
        return frozenset(self.graph.graph.get("stand_ins", ()))

    def __repr__(self) -> str:
        return f"<ModelGraph {self.name}: {self.n_ops} ops, {self.n_layers} layers>"

    # ---- names

    def resolve(self, of: Any, *, feeding: bool = False) -> list[Tensor]:
        """The tensors `of` names: a name (tensor, output key, op, model input or layer), a
        Tensor, a Layer, a Selection, or an iterable of them; see
        `graphscope.ir.query.resolve_pairs`."""
        return query.resolve(self.graph, of, feeding=feeding)

    def resolve_pairs(self, of: Any, *, feeding: bool = False) -> list[tuple[str, Tensor]]:
        """`(key as given, Tensor)` for everything `of` names."""
        return query.resolve_pairs(self.graph, of, feeding=feeding)

    def tensor(self, name: str | Tensor) -> Tensor:
        """The tensor called `name` (canonical or raw name, or an op name meaning its only output)."""
        return query.tensor(self.graph, name)

    def op(self, name: str) -> Op:
        """The op record called `name` (or the op of the tensor called `name`)."""
        return query.op(self.graph, name)

    def layer(self, key: str | int) -> Layer:
        """A layer call by name/path (`"backbone/conv1"`, `"shared@2"`) or index in `model.layers`."""
        return query.layer(self.graph, key)

    # ---- queries

    def find(self, pattern: str | None = None, *, op_type: str | None = None, layer: str | None = None) -> Selection:
        """Tensors whose canonical name matches `re.search(pattern)`; see `graphscope.ir.query.find`."""
        return query.find(self.graph, pattern, op_type=op_type, layer=layer)

    def ancestors(self, of: Any, pattern: str | None = None, *, op_type: str | None = None) -> Selection:
        """Every tensor upstream of `of` (a name, Tensor, Selection or Layer), filtered like `find`."""
        return query.ancestors(self.graph, of, pattern, op_type=op_type)

    def descendants(self, of: Any, pattern: str | None = None, *, op_type: str | None = None) -> Selection:
        """Every tensor downstream of `of`, filtered like `find`."""
        return query.descendants(self.graph, of, pattern, op_type=op_type)

    def cut_points(self, *, every_tensor: bool = False) -> Selection:
        """Tensors every path from the inputs passes through; see `graphscope.ir.query.cut_points`.
        The default answer is computed once (the graph cannot change)."""
        if every_tensor:
            return query.cut_points(self.graph, every_tensor=True)
        if self._cuts is None:
            self._cuts = query.cut_points(self.graph) if self.graph.graph["inputs"] else Selection()
        return self._cuts


def _own_copy(G: nx.DiGraph) -> nx.DiGraph:
    """A copy of `G` sharing nothing that can change: its own nodes, edges and attribute dicts,
    and its own graph-level tables (the records in them are frozen)."""
    H = G.copy()
    H.graph.update({k: v.copy() if isinstance(v, (dict, list, set)) else v for k, v in G.graph.items()})
    return H


class Queries:
    """The query methods of the facades (`Scope`, `Bundle`), written once over `model_graph`."""

    __slots__ = ()

    @property
    def model_graph(self) -> ModelGraph:  # pragma: no cover - every facade defines it
        raise NotImplementedError

    @property
    def graph(self) -> nx.DiGraph:
        """The mirrored graph (frozen): one node per op (attribute `op`), producer -> consumer edges."""
        return self.model_graph.graph

    @property
    def outputs(self) -> Outputs:
        """The traced function's output tensors, with their keys in the returned structure."""
        return self.model_graph.outputs

    @property
    def layers(self) -> list[Layer]:
        """Every layer call, in the model's `.layers` order, nested layers after their parent."""
        return self.model_graph.layers

    @property
    def output_keys(self) -> list[str]:
        """The key or path of each output in the structure the model returns, as `outputs`."""
        return self.model_graph.output_keys

    def output(self, key: str | int = 0) -> Tensor:
        """The output tensor at a key, path or position of the returned structure
        (`"detection_boxes"`, `"features/p3"`, `0`)."""
        return self.model_graph.output(key)

    def tensor(self, name: str | Tensor) -> Tensor:
        """The tensor called `name` (canonical or raw name, or an op name meaning its only output)."""
        return self.model_graph.tensor(name)

    def op(self, name: str) -> Op:
        """The op record called `name`."""
        return self.model_graph.op(name)

    def find(self, pattern: str | None = None, *, op_type: str | None = None, layer: str | None = None) -> Selection:
        """Tensors whose canonical name matches `re.search(pattern)`; see `graphscope.ir.query.find`."""
        return self.model_graph.find(pattern, op_type=op_type, layer=layer)

    def ancestors(self, of: Any, pattern: str | None = None, *, op_type: str | None = None) -> Selection:
        """Every tensor upstream of `of` (a tensor, op, input or layer name, a Tensor, a Selection
        or a Layer), filtered like `find`."""
        return self.model_graph.ancestors(of, pattern, op_type=op_type)

    def descendants(self, of: Any, pattern: str | None = None, *, op_type: str | None = None) -> Selection:
        """Every tensor downstream of `of`, filtered like `find`."""
        return self.model_graph.descendants(of, pattern, op_type=op_type)

    def cut_points(self, *, every_tensor: bool = False) -> Selection:
        """Tensors every path from the inputs passes through: where the model splits into a head
        and a tail fed by that tensor alone. See `graphscope.ir.query.cut_points`."""
        return self.model_graph.cut_points(every_tensor=every_tensor)

    def layer(self, key: str | int) -> Layer:
        """A layer call by name/path (`"backbone/conv1"`, `"shared@2"`) or index in `model.layers`."""
        return self.model_graph.layer(key)
