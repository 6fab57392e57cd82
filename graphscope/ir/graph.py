"""ModelGraph: a traced model as data, the object both a live `Scope` and a reopened `Bundle` query.

It owns a frozen `networkx.DiGraph` (one node per op, keyed by canonical name, attribute `"op"`
its `Op` record and `"tensors"` its output `Tensor`s; edges from producer to consumer op with
the producer's `"outputs"` that flow), the graph's typed metadata, and the graph's index, built
once. Graph-level attributes: `tensors` (canonical name -> Tensor), `names` (every accepted
spelling -> canonical tensor or op name), `inputs`, `outputs` (tensor names), `input_names`
(what executors are fed by), `layers` (Layer records), `model_type`, `stand_ins` (ops
TensorFlow made to stand for unused values, which views leave out), `unused` (ops no output
depends on, which queries leave out: see `graphscope.ir.query.unused`).

A body's argument nodes take edges from the producers of the calling op's inputs and its results
feed the calling op, so the graph stays acyclic (loop back-edges are not drawn) and a walk from a
layer's output reaches into custom layers' loops and helper functions.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import networkx as nx

from graphscope.ir import query
from graphscope.ir.records import Layer, Outputs, Selection, Tensor

__all__ = ["ModelGraph", "Queries"]


def _on_graph(fn: Callable[..., Any]) -> Any:
    """`fn(G, ...)` as a method over a ModelGraph's graph. `fn` is the one definition: the
    method shows its docstring and its signature (the graph left out)."""

    def method(self: ModelGraph, /, *args: Any, **kwargs: Any) -> Any:
        return fn(self.graph, *args, **kwargs)

    functools.update_wrapper(method, fn)
    signature = inspect.signature(fn)
    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = signature.replace(parameters=[self_, *list(signature.parameters.values())[1:]])  # type: ignore[attr-defined]
    return method


def _on_model_graph(name: str) -> Any:
    """ModelGraph's method or property `name` as a facade's, over its `model_graph`, with its
    docstring and signature."""
    target = inspect.getattr_static(ModelGraph, name)
    if isinstance(target, property):
        return property(lambda self: getattr(self.model_graph, name), doc=target.__doc__)

    def method(self: Queries, /, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model_graph, name)(*args, **kwargs)

    functools.update_wrapper(method, target)
    method.__signature__ = inspect.signature(target)  # type: ignore[attr-defined]
    return method


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

    @classmethod
    def adopt(cls, G: nx.DiGraph) -> ModelGraph:
        """A ModelGraph over `G` itself, frozen where it is: for a caller that built `G` for it
        and keeps nothing of it (the mirror, a bundle's reader), the copy `ModelGraph(G)` makes
        would be a fifth of a ResNet50's mirror spent on nothing."""
        if nx.is_frozen(G) or hasattr(G, "_graph"):
            return cls(G)  # someone else's graph, or a view of one: copied as always
        model_graph = cls.__new__(cls)
        model_graph.graph = nx.freeze(G)
        query.own(model_graph.graph)
        model_graph._cuts = None
        return model_graph

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

    output_keys = property(_on_graph(query.output_keys))

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

    unused = property(_on_graph(query.unused))

    def __repr__(self) -> str:
        return f"<ModelGraph {self.name}: {self.n_ops} ops, {self.n_layers} layers>"

    # ---- names and queries: the functions of `graphscope.ir.query`, over this graph

    resolve = _on_graph(query.resolve)
    resolve_pairs = _on_graph(query.resolve_pairs)
    tensor = _on_graph(query.tensor)
    op = _on_graph(query.op)
    layer = _on_graph(query.layer)
    output = _on_graph(query.output)
    find = _on_graph(query.find)
    ancestors = _on_graph(query.ancestors)
    descendants = _on_graph(query.descendants)

    def cut_points(self, *, every_tensor: bool = False) -> Selection:
        """`graphscope.ir.query.cut_points` over this graph; the default answer is computed once
        (the graph cannot change)."""
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
    """The queries of the facades (`Scope`, `Bundle`): `ModelGraph`'s, over their `model_graph`."""

    __slots__ = ()

    @property
    def model_graph(self) -> ModelGraph:  # pragma: no cover - every facade defines it
        raise NotImplementedError

    @property
    def graph(self) -> nx.DiGraph:
        """The mirrored graph (frozen): one node per op (attribute `op`), producer -> consumer edges."""
        return self.model_graph.graph

    outputs = _on_model_graph("outputs")
    output_keys = _on_model_graph("output_keys")
    layers = _on_model_graph("layers")
    output = _on_model_graph("output")
    tensor = _on_model_graph("tensor")
    op = _on_model_graph("op")
    layer = _on_model_graph("layer")
    find = _on_model_graph("find")
    ancestors = _on_model_graph("ancestors")
    descendants = _on_model_graph("descendants")
    cut_points = _on_model_graph("cut_points")
    unused = _on_model_graph("unused")
