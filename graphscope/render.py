"""rich renderables for graphscope objects. Renderers return objects; they never print."""

from __future__ import annotations

import dataclasses
import html
import io
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from rich import box
from rich.console import Console, ConsoleOptions, Group
from rich.table import Table
from rich.text import Text

from graphscope.errors import GraphvizNotFoundError, OptionError, PatternError, suggestion
from graphscope.graph import Layer
from graphscope.query import compile_pattern, cut_points, layer_or_name, tensors

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "LayerTree",
    "Picture",
    "draw",
    "layer_tree",
    "layer_view",
    "mimebundle",
    "results_table",
    "selection_table",
    "to_html",
    "to_text",
    "value_kind",
]

_BARS = "▁▂▃▄▅▆▇█"


def to_text(renderable: Any, *, width: int = 100) -> str:
    """Render to plain text (no colour), for `str()` and logs."""
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()).strip("\n")


def to_html(renderable: Any, *, width: int = 100) -> str:
    """Render to HTML with inline styles, the way rich shows itself in Jupyter."""
    console = Console(width=width, record=True, file=io.StringIO(), force_jupyter=False, color_system="truecolor")
    console.print(renderable)
    return console.export_html(
        inline_styles=True,
        code_format='<pre style="white-space:pre;overflow-x:auto;line-height:normal;'
        "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>",
    )


def mimebundle(obj: Any) -> dict[str, str]:
    """`_repr_mimebundle_` for a graphscope object: plain text and HTML of its `__rich__` view."""
    view = obj.__rich__() if hasattr(obj, "__rich__") else obj
    return {"text/plain": repr(obj), "text/html": to_html(view)}


def _shape(shape: Any) -> str:
    """`(None, 4)` -> `(?, 4)`; unknown rank -> `?`."""
    if shape is None:
        return "?"
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def selection_table(selection: Any) -> Table:
    """A table of tensors: name, layer, op type, shape, dtype. A tensor computed inside a loop
    or branch says which under its layer (`body of while`)."""
    table = _table(f"{len(selection)} tensor{'s' if len(selection) != 1 else ''}")
    table.add_column("name", overflow="fold", ratio=3)
    table.add_column("layer", overflow="fold", ratio=1)
    table.add_column("op type", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    for t in selection:
        where = "\n".join(filter(None, [t.layer or "", context_text(t.context)]))
        table.add_row(t.name, where, t.op_type, _shape(t.shape), t.dtype)
    return table


def layer_view(layer: Layer) -> Group:
    """One layer call: its inputs and outputs (name, shape, dtype) and what its ops are."""
    table = _table(f"{layer.name} ({layer.type}): {len(layer.ops)} ops")
    table.add_column("", no_wrap=True)
    table.add_column("tensor", overflow="fold", ratio=1)
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    for role, items in (("input", layer.inputs), ("output", layer.outputs)):
        for t in items:
            table.add_row(role, t.name, _shape(t.shape), t.dtype)
    kinds: dict[str, int] = {}
    for op in layer.ops:
        if op.type not in _HIDDEN_OPS:
            kinds[op.type] = kinds.get(op.type, 0) + 1
    top = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    summary = "ops: " + ", ".join(f"{k} ×{n}" for k, n in top[:8]) + (", …" if len(top) > 8 else "")
    return Group(table, Text(summary if kinds else "no ops of its own"))


def context_text(context: str | None) -> str:
    """`'ROI/map/while:body'` -> `'body of while'` (the tensor's name shows the rest)."""
    if not context:
        return ""
    op, _, role = context.rpartition(":")
    return f"{role} of {op.rpartition('/')[2]}"


def sparkline(values: np.ndarray, bins: int = 8) -> str:
    """A histogram of `values` as a row of block characters."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return ""
    counts, _ = np.histogram(flat, bins=bins)
    top = counts.max() or 1
    return "".join(_BARS[min(len(_BARS) - 1, int(c * (len(_BARS) - 1) / top + 0.999))] if c else " " for c in counts)


def value_kind(value: Any) -> str:
    """What a result holds, in a few characters: `float32[2,16]`, `list[3] of int32` (one entry
    per iteration, shapes differing) or `None (not run)` (a branch that did not run)."""
    if value is None:
        return "None (not run)"
    if isinstance(value, list):
        present = [np.asarray(v) for v in value if v is not None]
        return f"list[{len(value)}] of {present[0].dtype if present else np.float64().dtype}"
    a = np.asarray(value)
    return f"{a.dtype}[{','.join(map(str, a.shape))}]"


def results_table(results: Mapping[str, Any]) -> Table:
    """A table of fetched values: name, dtype[shape], min/max/mean and a histogram."""
    table = _table(f"{len(results)} value{'s' if len(results) != 1 else ''}")
    table.add_column("name", overflow="fold", ratio=1)
    table.add_column("value", no_wrap=True)
    for col in ("min", "max", "mean"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("histogram", no_wrap=True)
    for name, value in results.items():
        if value is None:  # a branch that did not run
            table.add_row(str(name), value_kind(value), "", "", "", "")
            continue
        if isinstance(value, list):  # one entry per iteration, shapes differing
            present = [np.asarray(v).ravel() for v in value if v is not None]
            a = np.concatenate(present) if present else np.zeros(0)
        else:
            a = np.asarray(value)
        kind = value_kind(value)
        if a.size and a.dtype.kind in "biuf":
            stats = [f"{a.min():.3g}", f"{a.max():.3g}", f"{a.astype(np.float64).mean():.3g}"]
            hist = sparkline(a)
        else:
            stats, hist = ["", "", ""], ""
        table.add_row(str(name), kind, *stats, hist)
    return table


# --------------------------------------------------------------------------- layer trees

_GROUP_ABOVE = 12  # sibling lists longer than this are grouped by name prefix (conv2_block1_...)
_HIDDEN_OPS = {"Const", "NoOp"}  # op lists leave out constants: they are most ops and say little


@dataclasses.dataclass(eq=False)
class _Node:
    label: str
    kind: str  # "model" | "group" | "layer" | "op" | "body"
    type: str = ""
    shape: str = ""
    params: int | None = None
    ops: int | None = None
    marks: str = ""
    key: str = ""  # what `pattern` is matched against: the layer path or op name
    children: list[_Node] = dataclasses.field(default_factory=list)
    open: bool = False

    def walk(self, depth: int = 0) -> Iterator[tuple[_Node, int]]:
        yield self, depth
        for child in self.children:
            yield from child.walk(depth + 1)


class LayerTree:
    """A model's layers as a tree: type, output shape, parameters, ops, and where paths fork,
    join and can be cut. A rich renderable; `str()` gives plain text."""

    def __init__(self, root: _Node, caption: str) -> None:
        self._root = root
        self.caption = caption

    @property
    def rows(self) -> list[tuple[int, str, str, str]]:
        """(depth, label, type, marks) of every shown row, for programs and tests."""
        return [(d, n.label, n.type, n.marks) for n, d in _shown(self._root)]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Any]:
        yield self.table(width=options.max_width)
        yield Text(self.caption, overflow="fold")

    def table(self, *, width: int = 80) -> Table:
        """The tree as a table (without its caption) for a console `width` columns wide: long
        names fold under their own guide lines."""
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
        rows = [(node, guide, under, "" if node.params is None else _count(node.params),
                 "" if node.ops is None else str(node.ops)) for node, guide, under in _guided(self._root)]
        others = [  # widest cell of each other column, as rich will lay them out
            min(14, max(len("type"), *(len(r[0].type) for r in rows))),
            min(16, max(len("output"), *(len(line) for r in rows for line in r[0].shape.split(", ")))),
            max(len("params"), *(len(r[3]) for r in rows)),
            max(len("ops"), *(len(r[4]) for r in rows)),
            max(len(r[0].marks) for r in rows),
        ]
        room = max(20, width - sum(others) - 3 * len(others) - 2)  # what the other columns leave the names
        table.add_column("layer", no_wrap=True)
        table.add_column("type", overflow="ellipsis", no_wrap=True, max_width=14)
        table.add_column("output", overflow="fold", max_width=16)
        table.add_column("params", justify="right", no_wrap=True)
        table.add_column("ops", justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
        for node, guide, under, params, ops in rows:
            label = node.label + (" ▸" if node.children and not node.open else "")
            step = max(8, room - len(guide))
            chunks = [label[k:k + step] for k in range(0, len(label), step)] or [""]
            text = "\n".join([guide + chunks[0]] + [under + c for c in chunks[1:]])
            table.add_row(text, node.type, node.shape, params, ops, node.marks)
        return table

    def __str__(self) -> str:
        return to_text(self, width=80)

    def __repr__(self) -> str:
        return f"<LayerTree {self._root.label}: {sum(1 for _ in _shown(self._root))} rows>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return mimebundle(self)


def layer_tree(
    G: nx.DiGraph,
    *,
    depth: int | None = None,
    pattern: str | None = None,
    ops: bool = False,
    limit: int = 60,
) -> LayerTree:
    """The layers of a mirrored graph as a tree.

    Nested models and layers are children of their parent; long runs of sibling layers are
    grouped by name prefix (`conv2` > `conv2_block1` > `conv2_block1_1_conv`). Marks: `fork`
    (the output feeds several layers), `join` (inputs from several layers), `cut` (every path
    from the inputs passes through the output: see `query.cut_points`).

    Args:
        depth: show this many levels below the model (None: as many as fit in `limit` rows,
            a whole level at a time, so a model of thousands of ops stays short).
        pattern: show only layers whose path matches this regex (and, with `ops`, ops whose
            name does), with everything above them.
        ops: list each layer's own ops (constants left out); loops, branches and called
            functions become subtrees (`body of while`, `then of cond`).
        limit: the row budget when `depth` is None.
    """
    layers: list[Layer] = G.graph["layers"]
    cuts = set(cut_points(G).names) if G.graph["inputs"] else set()
    nested: dict[str, list[Layer]] = {}  # parent path ('' for the model) -> its layers, in order
    for lay in layers:
        nested.setdefault(lay.name.rpartition("/")[0], []).append(lay)
    root = _Node(G.name, "model", type=G.graph.get("model_type", "model"), key=G.name)
    root.children = _layer_nodes(G, nested.get("", []), nested, cuts, ops)
    root.ops = G.number_of_nodes()
    root.params = _params_of(root)
    outs = G.graph["outputs"]
    root.shape = ", ".join(_dims(G.graph["tensors"][n].shape) for n in outs[:2]) + (" …" if len(outs) > 2 else "")
    if pattern is not None:
        _keep(root, compile_pattern(pattern, "pattern"))
        if not root.children:
            what = "layer path or op name" if ops else "layer path"
            names = [lay.name for lay in layers]
            raise PatternError(f"pattern {pattern!r} matches no {what} of {G.name!r}.{suggestion(pattern, names)}")
        for node, _ in root.walk():
            node.open = True
    elif depth is not None:
        for node, d in root.walk():
            if node.kind in ("model", "group", "layer"):
                node.open = d < depth
    else:
        _open_within(root, limit)
    n_layers = sum(1 for lay in layers if "/" not in lay.name)
    parts = [f"{n_layers} layer{'s' if n_layers != 1 else ''}", f"{G.number_of_nodes()} ops", f"{_count(root.params or 0)} params"]
    if any(n.children and not n.open for n, _ in _shown(root)):
        parts.append("▸ folded: depth= or pattern= opens")
    caption = " · ".join(parts) + "\ncut: every path from the inputs passes through this output"
    return LayerTree(root, caption)


def _layer_nodes(
    G: nx.DiGraph, siblings: list[Layer], nested: dict[str, list[Layer]], cuts: set[str], ops: bool
) -> list[_Node]:
    """Nodes for sibling layer calls (grouped when many), with their nested layers and ops."""
    producer = {t: lay.name for lay in siblings for t in lay.outputs.names}
    consumers: dict[str, set[str]] = {lay.name: set() for lay in siblings}
    producers: dict[str, set[str]] = {}
    for lay in siblings:
        producers[lay.name] = {producer[t] for t in lay.inputs.names if t in producer and producer[t] != lay.name}
        for p in producers[lay.name]:
            consumers[p].add(lay.name)
    seen_weights: set[int] = set()
    nodes = []
    for lay in siblings:
        marks = [m for m, on in (
            ("cut", any(t in cuts for t in lay.outputs.names)),
            ("fork", len(consumers[lay.name]) > 1),
            ("join", len(producers[lay.name]) > 1),
        ) if on]
        node = _Node(
            lay.name.rpartition("/")[2],
            "layer",
            type=lay.type,
            shape=", ".join(_dims(t.shape) for t in lay.outputs),
            params=_layer_params(lay, seen_weights),
            ops=len(lay.ops),
            marks=" ".join(marks),
            key=lay.name,
        )
        inner = nested.get(lay.name, [])
        node.children = _layer_nodes(G, inner, nested, cuts, ops)
        if ops:
            node.children += _op_nodes(G, lay, {o.name for x in inner for o in x.ops})
        nodes.append(node)
    return _grouped(nodes, 0) if len(nodes) > _GROUP_ABOVE else nodes


def _layer_params(lay: Layer, seen: set[int]) -> int | None:
    """The layer's parameter count, once per Keras layer (a shared layer's later calls: None)."""
    if lay.keras_layer is None or id(lay.keras_layer) in seen:
        return None
    seen.add(id(lay.keras_layer))
    try:
        return int(lay.keras_layer.count_params())
    except ValueError:  # never built
        return None


def _grouped(nodes: list[_Node], level: int) -> list[_Node]:
    """Consecutive nodes whose names share their first `level + 1` `_`-separated words become
    one group; groups still longer than `_GROUP_ABOVE` are grouped again one word deeper."""
    out: list[_Node] = []
    run: list[_Node] = []
    key = None

    def flush() -> None:
        if len(run) > 1 and key is not None:
            children = _grouped(run, level + 1) if len(run) > _GROUP_ABOVE else list(run)
            last = run[-1]
            group = _Node(key, "group", type=f"{len(run)} layers", shape=last.shape, ops=sum(n.ops or 0 for n in run),
                          marks="cut" if "cut" in last.marks.split() else "", key=key, children=children)
            group.params = _params_of(group)
            out.append(group)
        else:
            out.extend(run)

    for node in nodes:
        words = node.label.split("_")
        k = "_".join(words[: level + 1]) if len(words) > level + 1 else None
        if k != key or k is None:
            flush()
            run, key = [], k
        run.append(node)
    flush()
    return out


def _params_of(node: _Node) -> int | None:
    """Sum of the parameters of a node's layers and groups (each Keras layer counted once)."""
    values = [c.params for c in node.children if c.kind in ("layer", "group") and c.params is not None]
    return sum(values) if values else None


def _op_nodes(G: nx.DiGraph, lay: Layer, nested_ops: set[str]) -> list[_Node]:
    """The layer's own ops; ops inside a call, loop or branch go under that op (`body of while`)."""
    own = [o for o in lay.ops if o.name not in nested_ops and o.type not in _HIDDEN_OPS
           and "___redundant_placeholder" not in o.name]  # TF's stand-ins for unused loop values
    names = {o.name for o in own}
    nodes = {}
    for o in own:
        t = G.graph["tensors"][o.outputs[0]] if o.outputs else None
        nodes[o.name] = _Node(_relative(o.name, lay.name), "op", type=o.type,
                              shape=_dims(t.shape) if t is not None else "", key=o.name, open=True)
    roles: dict[str, _Node] = {}
    top = []
    for o in own:
        parent = None
        for f in reversed(o.function):
            op_name, _, role = f.partition(":")
            if op_name in names:
                label = _relative(o.name, op_name)
                nodes[o.name].label = _relative(label, role) if role else label
                if not role:
                    parent = nodes[op_name]
                else:
                    if f not in roles:
                        roles[f] = _Node(f"{role} of {op_name.rpartition('/')[2]}", "body", key=f, open=True)
                        nodes[op_name].children.append(roles[f])
                    parent = roles[f]
                break
        (parent.children if parent is not None else top).append(nodes[o.name])
    for body in roles.values():
        body.ops = sum(1 for n, _ in body.walk() if n.kind == "op")
    return top


def _relative(name: str, layer: str) -> str:
    return name[len(layer) + 1:] if name.startswith(layer + "/") else name


def _keep(node: _Node, rx: re.Pattern[str]) -> bool:
    """Prune to nodes matching `rx` and their ancestors; a matching layer keeps its subtree."""
    if node.kind in ("layer", "op") and rx.search(node.key):
        return True
    node.children = [c for c in node.children if _keep(c, rx)]
    return bool(node.children) or node.kind == "model"


def _open_within(root: _Node, limit: int) -> None:
    """Open the tree a whole level at a time while the rows fit in `limit` (op lists are open)."""
    root.open = True
    level, rows = [root], len(root.children)
    while True:
        nxt = [c for n in level for c in n.children if c.children and c.kind in ("layer", "group")]
        if not nxt:
            return
        extra = sum(len(c.children) for c in nxt)
        if rows + extra > limit:
            return
        for c in nxt:
            c.open = True
        rows += extra
        level = nxt


def _shown(root: _Node, depth: int = 0) -> Iterator[tuple[_Node, int]]:
    yield root, depth
    if root.open:
        for c in root.children:
            yield from _shown(c, depth + 1)


def _guided(root: _Node, prefix: str = "", guide: str = "") -> Iterator[tuple[_Node, str, str]]:
    """Each shown node with its tree guide (`├─ `...) and the guide of its name's folded lines."""
    shown = root.open and bool(root.children)
    yield root, guide, prefix + ("│  " if shown else "   ")
    if not root.open:
        return
    for k, c in enumerate(root.children):
        last = k == len(root.children) - 1
        yield from _guided(c, prefix + ("   " if last else "│  "), prefix + ("└─ " if last else "├─ "))


def _dims(shape: Any) -> str:
    """`(None, 16, 16, 256)` -> `?×16×16×256`, the compact shape of tree rows; `()` -> `scalar`."""
    if shape is None:
        return "?"
    return "×".join("?" if d is None else str(d) for d in shape) or "scalar"


def _count(n: int) -> str:
    """12345 -> '12.3K'; small counts exact."""
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1e3:.1f}K"
    return f"{n / 1e6:.1f}M"


# --------------------------------------------------------------------------- pictures

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


def draw(G: nx.DiGraph, of: Any, *, radius: int = 3) -> Picture:
    """The neighbourhood of `of` (a tensor or op name, a Tensor, a Selection, a Layer or a layer
    name): the ops producing it and their ancestors up to `radius` ops away, grouped by layer,
    with loops, branches and called functions as nested clusters. Constants are left out.
    """
    import pydot  # only drawing needs it

    if radius < 0:
        raise OptionError(f"radius is a number of ops (0 or more), not {radius}")
    of = layer_or_name(G, of)
    if isinstance(of, Layer):
        seeds = {o.name for o in of.ops} or {t.op for t in of.outputs}
        title = f"layer {of.name}"
    else:
        found = tensors(G, of)
        seeds = {t.op for t in found}
        title = ", ".join(t.name for t in found[:3]) + (" …" if len(found) > 3 else "")
    keep, frontier = set(seeds), set(seeds)
    for _ in range(radius):
        frontier = {p for n in frontier for p in G.pred[n] if p not in keep}
        keep |= frontier
    keep = {n for n in keep if n in seeds or G.nodes[n]["op"].type not in _HIDDEN_OPS}

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
        label = "\n".join(filter(None, [short, op.type if op.type != short else "", _dims(out.shape) if out else ""]))
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
