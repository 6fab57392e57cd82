"""Pictures of part of a graph: a tensor's, op's or layer's neighbourhood, grouped by layer, with
loops, branches and called functions as clusters (DOT via pydot, SVG via Graphviz's `dot`)."""

from __future__ import annotations

import html
from typing import Any

from graphscope.display.format import context_text, shape_text
from graphscope.display.tables import HIDDEN_OPS
from graphscope.errors import GraphvizNotFoundError, OptionError
from graphscope.ir.graph import ModelGraph
from graphscope.ir.query import as_layer

__all__ = ["GRAPHVIZ_HINT", "Picture", "draw"]

GRAPHVIZ_HINT = (
    "drawing needs Graphviz's `dot` program, which is not on PATH: install Graphviz "
    "(`apt install graphviz`, `brew install graphviz`, `conda install graphviz`, or "
    "https://graphviz.org/download/); `Picture.source` gives the DOT text without it"
)


class Picture:
    """A drawing of part of a graph: DOT via pydot, SVG via Graphviz's `dot` when installed."""

    def __init__(self, dot: Any, title: str, n_ops: int) -> None:
        self.dot = dot  # a pydot.Dot
        self.title = title
        self.n_ops = n_ops

    @property
    def source(self) -> str:
        """The DOT text (needs no Graphviz)."""
        return str(self.dot.to_string())

    def svg(self) -> str:
        """The SVG text, laid out by Graphviz's `dot`.

        Raises:
            GraphvizNotFoundError: `dot` is not installed (the message says how to install it).
        """
        try:
            return bytes(self.dot.create(prog="dot", format="svg")).decode("utf-8")
        except OSError as e:
            if "not found" in str(e) or isinstance(e, FileNotFoundError):
                raise GraphvizNotFoundError(GRAPHVIZ_HINT) from None
            raise

    def save(self, path: str) -> None:
        """Write the picture: SVG for `.svg`, DOT text for `.dot`/`.gv`."""
        text = self.source if str(path).endswith((".dot", ".gv")) else self.svg()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def __repr__(self) -> str:
        return f"<Picture {self.title}: {self.n_ops} ops>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        try:
            return {"image/svg+xml": self.svg(), "text/plain": repr(self)}
        except GraphvizNotFoundError as e:
            note = f"{self!r}: {e}"
            return {"text/plain": note, "text/html": f"<p>{html.escape(note)}</p><pre>{html.escape(self.source)}</pre>"}


def draw(graph: ModelGraph, of: Any, *, radius: int = 3) -> Picture:
    """The neighbourhood of `of` (a tensor or op name, a Tensor, a Selection, a Layer or a layer
    name): the ops producing it and their ancestors up to `radius` ops away, grouped by layer,
    with loops, branches and called functions as nested clusters. Constants are left out.
    """
    import pydot  # only drawing needs it

    if radius < 0:
        raise OptionError(f"radius is a number of ops (0 or more), not {radius}")
    G = graph.graph
    layer = as_layer(G, of)
    if layer is not None:
        seeds = {o.name for o in layer.ops} or {t.op for t in layer.outputs}
        title = f"layer {layer.name}"
    else:
        found = graph.resolve(of)
        seeds = {t.op for t in found}
        title = ", ".join(t.name for t in found[:3]) + (" …" if len(found) > 3 else "")
    keep, frontier = set(seeds), set(seeds)
    for _ in range(radius):
        frontier = {p for n in frontier for p in G.pred[n] if p not in keep}
        keep |= frontier
    keep = {n for n in keep if n in seeds or G.nodes[n]["op"].type not in HIDDEN_OPS}

    dot = pydot.Dot(graph_type="digraph", rankdir="TB", fontname="Helvetica", fontsize="10",
                    label=f"ancestors of {title}, {radius} ops deep", labelloc="t")
    dot.set_node_defaults(shape="box", style="rounded,filled", fillcolor="white", fontname="Helvetica", fontsize="9")
    clusters: dict[tuple[str, ...], Any] = {(): dot}

    def cluster(path: tuple[str, ...]) -> Any:
        if path not in clusters:
            parent = cluster(path[:-1])
            label = path[-1]
            if ":" in label:  # a loop or branch body, named like the tensor tables do
                label = context_text(label)
            sub = pydot.Cluster(f"c{len(clusters)}", label=label, style="rounded,dashed" if ":" in path[-1] else "rounded",
                                color="gray50", fontname="Helvetica", fontsize="9")
            parent.add_subgraph(sub)
            clusters[path] = sub
        return clusters[path]

    order = [n for n in G if n in keep]  # topological
    tensors_ = G.graph["tensors"]
    for n in order:
        op = G.nodes[n]["op"]
        layer_path = tuple(op.layer.split("/")) if op.layer else ()
        bodies = tuple(f for f in op.function if ":" in f)
        out = tensors_[op.outputs[0]] if op.outputs else None
        short = n.rpartition("/")[2]
        label = "\n".join(filter(None, [short, op.type if op.type != short else "", shape_text(out.shape) if out else ""]))
        node = pydot.Node(_dot_id(n), label=label, tooltip=n, fillcolor="#ffe08a" if n in seeds else "white")
        cluster(layer_path + bodies).add_node(node)
    for n in order:
        for succ in G.succ[n]:
            if succ in keep:
                dot.add_edge(pydot.Edge(_dot_id(n), _dot_id(succ)))
    return Picture(dot, title, len(keep))


def _dot_id(name: str) -> str:
    """A DOT node id for an op name (quoted: names hold `/`, `.` and `@`)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
