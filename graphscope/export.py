"""Mirrored graph -> GraphML, DOT or JSON node-link text that other tools open.

Every attribute is a plain string or number: records become columns (`type`, `layer`, ...),
tuples become comma-separated strings, missing values become ''. Nodes are ops (keyed by
canonical op name), edges run producer -> consumer and name the tensors that flow.
"""

from __future__ import annotations

import json

import networkx as nx

from graphscope.errors import OptionError
from graphscope.graph import shape_text

__all__ = ["FORMATS", "export", "plain_graph"]

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
    graphscope.errors.OptionError: unknown export format 'yaml': choose graphml, dot or json
    """
    if format not in FORMATS:
        raise OptionError(f"unknown export format {format!r}: choose graphml, dot or json")
    H = plain_graph(G)
    if format == "graphml":
        return "\n".join(nx.generate_graphml(H)) + "\n"
    if format == "json":
        return json.dumps(nx.node_link_data(H, edges="edges"), indent=1) + "\n"
    return str(nx.nx_pydot.to_pydot(H).to_string())

