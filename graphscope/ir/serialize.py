"""Mirrored graph -> GraphML, DOT or JSON node-link text that other tools open.

Every attribute is a plain string or number: records become columns (`type`, `layer`, ...),
tuples become comma-separated strings, missing values become ''. Nodes are ops (keyed by
canonical op name), edges run producer -> consumer and name the tensors that flow.

`graph_data`/`graph_from_data` are the lossless form a saved run keeps (node-link JSON with
every Op, Tensor and Layer record), from which the queries work without the model.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import networkx as nx

from graphscope.errors import OptionError
from graphscope.ir.records import Layer, Op, Selection, Tensor, shape_text

__all__ = ["FORMATS", "export", "graph_data", "graph_from_data", "plain_graph"]

_TENSOR_FIELDS = tuple(f.name for f in dataclasses.fields(Tensor))

FORMATS = ("graphml", "dot", "json")


def plain_graph(G: nx.DiGraph) -> nx.DiGraph:
    """A copy of the mirrored graph whose attributes are plain strings and numbers."""
    H = nx.DiGraph(
        name=G.name,
        inputs=", ".join(G.graph["inputs"]),
        outputs=", ".join(G.graph["outputs"]),
    )
    tensors = G.graph["tensors"]
    for name, data in G.nodes(data=True):
        op = data["op"]
        outs = [tensors[t] for t in op.outputs]
        H.add_node(
            name,
            type=op.type,
            raw_name=op.raw_name,
            layer=op.layer or "",
            function=" > ".join(op.function),
            context=op.context or "",
            outputs=", ".join(op.outputs),
            dtypes=", ".join(t.dtype for t in outs),
            shapes=", ".join(shape_text(t.shape) for t in outs),
            n_outputs=len(outs),
        )
    for u, v, data in G.edges(data=True):
        names = [tensors[G.nodes[u]["op"].outputs[i]].name for i in data["outputs"]]
        H.add_edge(u, v, tensors=", ".join(names))
    return H


def export(G: nx.DiGraph, format: str) -> str:
    """The mirrored graph as `graphml`, `dot` or `json` (node-link) text.

    >>> import networkx as nx
    >>> export(nx.DiGraph(), "yaml")
    Traceback (most recent call last):
    ...
    graphscope.errors.OptionError: unknown export format 'yaml': choose graphml, dot or json (or tensorboard, to a directory)
    """
    if format not in FORMATS:
        raise OptionError(f"unknown export format {format!r}: choose graphml, dot or json (or tensorboard, to a directory)")
    H = plain_graph(G)
    if format == "graphml":
        return "\n".join(nx.generate_graphml(H)) + "\n"
    if format == "json":
        return json.dumps(nx.node_link_data(H, edges="edges"), indent=1) + "\n"
    return str(nx.nx_pydot.to_pydot(H).to_string())



def graph_data(G: nx.DiGraph) -> dict[str, Any]:
    """The mirrored graph as node-link data (JSON-ready) that `graph_from_data` turns back into
    the same graph: every op, tensor and layer record, the names index, inputs and outputs."""
    tensors: dict[str, Tensor] = G.graph["tensors"]
    layers = [
        {
            "name": lay.name,
            "type": lay.type,
            "index": lay.index,
            "inputs": lay.inputs.names,
            "outputs": lay.outputs.names,
            "ops": [op.name for op in lay.ops],
            "source": lay.source,
        }
        for lay in G.graph["layers"]
    ]
    return {
        "directed": True,
        "multigraph": False,
        "graph": {
            "name": G.name,
            "inputs": list(G.graph["inputs"]),
            "outputs": list(G.graph["outputs"]),
            "model_type": G.graph.get("model_type", ""),
            "names": dict(G.graph["names"]),
            "layers": layers,
            "input_names": list(G.graph.get("input_names", [])),
            "output_keys": list(G.graph.get("output_keys", [])),
            "stand_ins": sorted(G.graph.get("stand_ins", ())),
            "unused": sorted(G.graph.get("unused", ())),
        },
        "nodes": [
            {
                "id": name,
                **{f.name: _plain(getattr(data["op"], f.name)) for f in dataclasses.fields(Op)},
                "tensors": [
                    {f: _plain(getattr(tensors[t], f)) for f in _TENSOR_FIELDS} for t in data["op"].outputs
                ],
            }
            for name, data in G.nodes(data=True)
        ],
        "edges": [{"source": u, "target": v, "outputs": list(d["outputs"])} for u, v, d in G.edges(data=True)],
    }


def graph_from_data(data: dict[str, Any]) -> nx.DiGraph:
    """The graph `graph_data` described, with the same records (layers without Keras objects)."""
    meta = data["graph"]
    G = nx.DiGraph(name=meta["name"])
    tensors: dict[str, Tensor] = {}
    for node in data["nodes"]:
        outs = []
        for t in node["tensors"]:
            shape = None if t["shape"] is None else tuple(t["shape"])
            record = Tensor(**{**t, "shape": shape, "function": tuple(t["function"])})
            tensors[record.name] = record
            outs.append(record)
        op = Op(**{f.name: _tuple(node[f.name]) for f in dataclasses.fields(Op)})
        G.add_node(node["id"], op=op, tensors=tuple(outs))
    for edge in data["edges"]:
        G.add_edge(edge["source"], edge["target"], outputs=tuple(edge["outputs"]))
    ops = {name: attrs["op"] for name, attrs in G.nodes(data=True)}
    layers = [
        Layer(
            lay["name"],
            lay["type"],
            lay["index"],
            Selection(tensors[n] for n in lay["inputs"]),
            Selection(tensors[n] for n in lay["outputs"]),
            tuple(ops[n] for n in lay["ops"]),
            source=lay["source"],
        )
        for lay in meta["layers"]
    ]
    G.graph.update(
        tensors=tensors,
        names=dict(meta["names"]),
        inputs=list(meta["inputs"]),
        outputs=list(meta["outputs"]),
        layers=layers,
        model_type=meta["model_type"],
        input_names=list(meta.get("input_names", [])),  # stores written before they were kept
        output_keys=list(meta.get("output_keys", [])),
        stand_ins=frozenset(meta.get("stand_ins", ())),
        unused=frozenset(meta.get("unused", ())),  # stores written before it was kept: none
    )
    return G


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
