"""Layer trees: a model's layers (and, on demand, their ops) with type, output shape,
parameters, op counts, and where paths fork, join and can be cut."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions
from rich.table import Table
from rich.text import Text

from graphscope.display.format import count, shape_text, to_html, to_text
from graphscope.display.tables import HIDDEN_OPS
from graphscope.errors import PatternError, suggestion
from graphscope.ir.graph import ModelGraph
from graphscope.ir.query import compile_pattern
from graphscope.ir.records import Layer

__all__ = ["LayerTree", "layer_tree"]

_GROUP_ABOVE = 12  # sibling lists longer than this are grouped by name prefix (conv2_block1_...)
_GROUP_LEAST = 3  # a group of two layers costs a row when open and saves only one when folded
_TAIL = 3  # rows kept from the end of a tree cut at its `limit` (the model's outputs)


@dataclasses.dataclass(eq=False)
class _Node:
    label: str
    kind: str  # "model" | "group" | "layer" | "op" | "body"
    type: str = ""
    shape: str = ""
    params: int | None = None
    # the Keras weights `params` counts (id -> size): a parent adds each weight once, though a
    # layer shared by two models (BART's token embedding, in its backbone and in the Task) shows twice
    weights: dict[int, int] = dataclasses.field(default_factory=dict)
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

    def __init__(self, root: _Node, caption: str, limit: int | None = None) -> None:
        self._root = root
        self.caption = caption
        self._limit = limit  # rows beyond it are left out (between the head and the last rows)

    def _kept(self) -> tuple[list[_Node], int, list[_Node]]:
        """The shown nodes as (head, how many are left out after it, tail)."""
        shown = [n for n, _ in _shown(self._root)]
        if self._limit is None or len(shown) <= self._limit:
            return shown, 0, []
        tail = min(_TAIL, max(0, self._limit - 2))
        head = max(1, self._limit - tail - 1)  # one row says how many are left out
        return shown[:head], len(shown) - head - tail, shown[len(shown) - tail:] if tail else []

    @property
    def rows(self) -> list[tuple[int, str, str, str]]:
        """(depth, label, type, marks) of every shown row, for programs and tests (rows left
        out by the `limit` are not shown)."""
        head, _, tail = self._kept()
        kept = {id(n) for n in head + tail}
        return [(d, n.label, n.type, n.marks) for n, d in _shown(self._root) if id(n) in kept]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Any]:
        yield self.table(width=options.max_width)
        yield Text(self.caption, overflow="fold")

    def table(self, *, width: int = 80) -> Table:
        """The tree as a table (without its caption) for a console `width` columns wide. Names
        come first: the type column is cut (`…`), a row's shapes go one under the other and
        guides narrow before a name breaks, after a `_` or `/` where it can, under its own guide
        lines; shapes longer than 16 columns fold."""
        head, left_out, tail = self._kept()
        keep = {id(n) for n in head + tail}
        plain = [(n, g, u) for n, g, u in _guided(self._root) if id(n) in keep]
        narrow = [(n, g, u) for n, g, u in _guided(self._root, unit=2) if id(n) in keep]
        gaps = [g for n, g, _ in _guided(self._root)][len(head):len(head) + 1]  # where rows are left out
        cells = [("" if n.params is None else count(n.params), "" if n.ops is None else str(n.ops)) for n, _, _ in plain]
        fixed = (max(len("params"), *(len(c[0]) for c in cells)) + max(len("ops"), *(len(c[1]) for c in cells))
                 + max(len(n.marks) for n, _, _ in plain))
        avail = width - fixed - 12  # the box's edges (1 each) and 2 between each pair of the 6 columns
        type_w = min(14, max(len("type"), *(len(n.type) for n, _, _ in plain)))
        out_w = min(16, max(len("output"), *(len(n.shape) for n, _, _ in plain)))
        out_least = min(out_w, max(len("output"), *(len(s) for n, _, _ in plain for s in n.shape.split(", "))))

        def need(rows: list[tuple[_Node, str, str]]) -> int:
            return max(len(g) + len(_label(n)) for n, g, _ in rows)

        guided = plain
        over = need(plain) + type_w + out_w - avail
        if over > 0:  # the type column gives way first, then a row's shapes go one under the other
            cut = min(over, type_w - 8)
            type_w, over = type_w - cut, over - cut
            out_w -= max(0, min(over, out_w - out_least))  # (never cut within a shape: that takes 2 lines)
        name_w = max(12, avail - type_w - out_w)

        def wrapped(rows: list[tuple[_Node, str, str]]) -> int:
            return sum(len(g) + len(_label(n)) > name_w for n, g, _ in rows)

        if over > 0 and wrapped(narrow) < wrapped(plain):
            guided = narrow
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
        table.add_column("layer", no_wrap=True)
        table.add_column("type", overflow="ellipsis", no_wrap=True, max_width=type_w)
        table.add_column("output", no_wrap=True, min_width=out_w)
        table.add_column("params", justify="right", no_wrap=True)
        table.add_column("ops", justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
        for k, ((node, guide, under), (params, ops)) in enumerate(zip(guided, cells)):
            if left_out and k == len(head):
                gap = gaps[0][:-3] if guided is plain else gaps[0][:-3].replace("│  ", "│ ").replace("   ", "  ")
                table.add_row(f"{gap}⋮  {left_out} rows left out", "", "", "", "", "")
            names = _wrap(_label(node), max(8, name_w - len(guide)))
            shapes = _wrap(node.shape, out_w, sep=", ")
            lines = [guide + names[0]] + [under + c for c in names[1:]]
            lines += [under] * (len(shapes) - len(lines))  # the guides go on beside a row's other lines
            table.add_row("\n".join(lines), node.type, "\n".join(shapes), params, ops, node.marks)
        return table

    def __str__(self) -> str:
        return to_text(self, width=80)

    def __repr__(self) -> str:
        return f"<LayerTree {self._root.label}: {len(self.rows)} rows>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": to_html(self)}


def _label(node: _Node) -> str:
    return node.label + (" ▸" if node.children and not node.open else "")


def _wrap(text: str, width: int, sep: str = "") -> list[str]:
    """`text` in lines of at most `width`, broken after a `_` or `/` (or at `sep`, dropped at
    a break) where it can, within a word only where a word is longer than a line."""
    if len(text) <= width:
        return [text]
    if sep:  # items, as many to a line as fit
        out = [""]
        for item in text.split(sep):
            if out[-1] and len(out[-1]) + len(sep) + len(item) > width:
                out[-1] += sep.rstrip() if len(out[-1] + sep.rstrip()) <= width else ""
                out.append("")
            out[-1] += (sep if out[-1] else "") + item
        return [line for piece in out for line in _wrap(piece, width)]
    words = re.findall(r"[^_/]*[_/]+|[^_/]+$", text)
    lines = [""]
    for piece in words:
        if lines[-1] and len(lines[-1]) + len(piece.rstrip()) > width:
            lines[-1] = lines[-1].rstrip()
            lines.append("")
        while len(lines[-1]) + len(piece.rstrip()) > width:  # a word longer than a line
            room = width - len(lines[-1])
            lines[-1] += piece[:room]
            piece = piece[room:]
            lines.append("")
        lines[-1] += piece
    lines = [line.rstrip() for line in lines]
    return [line for line in lines if line] or [""]


def layer_tree(
    graph: ModelGraph,
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
    from the inputs passes through the output: see `query.cut_points`), `unused` (no output
    depends on the call: see `query.unused`).

    Args:
        depth: show this many levels below the model (None: as many as fit in `limit` rows,
            a whole level at a time, so a model of thousands of ops stays short).
        pattern: show only layers whose path matches this regex (and, with `ops`, ops whose
            name does), with everything above them.
        ops: list each layer's own ops (constants left out); loops, branches and called
            functions become subtrees (`body of while`, `then of cond`).
        limit: the row budget when neither `depth` nor `pattern` is given: levels open while
            they fit, and where the rows still do not fit, those between the first ones and the
            last three are left out, the caption saying how many and the `limit` showing all.
    """
    G = graph.graph
    layers: list[Layer] = G.graph["layers"]
    cuts = set(graph.cut_points().names)
    nested: dict[str, list[Layer]] = {}  # parent path ('' for the model) -> its layers, in order
    for lay in layers:
        nested.setdefault(lay.name.rpartition("/")[0], []).append(lay)
    root = _Node(G.name, "model", type=G.graph.get("model_type", "model"), key=G.name)
    root.children = _layer_nodes(graph, nested.get("", []), nested, cuts, ops, set())
    root.ops = G.number_of_nodes()
    root.params = _params_of(root)
    outs = G.graph["outputs"]
    root.shape = ", ".join([shape_text(G.graph["tensors"][n].shape) for n in outs[:2]] + (["…"] if len(outs) > 2 else []))
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
    n_layers = graph.n_layers
    parts = [f"{n_layers} layer{'s' if n_layers != 1 else ''}", f"{G.number_of_nodes()} ops"]
    if root.params is not None:  # unknown without Keras layers (a SavedModel's): left out, not 0
        parts.append(f"{count(root.params)} params")
    tree = LayerTree(root, "", limit if depth is None and pattern is None else None)
    shown = sum(1 for _ in _shown(root))
    if any(n.children and not n.open for n, _ in _shown(root)):
        parts.append("▸ folded: depth= or pattern= opens")
    lines = [" · ".join(parts)]
    if len(tree.rows) < shown:
        lines.append(f"⋮ {shown - len(tree.rows)} of {shown} rows left out at limit={limit}: limit={shown} shows them")
    tree.caption = "\n".join(lines + ["cut: every path from the inputs passes through this output"])
    return tree


def _layer_nodes(
    graph: ModelGraph, siblings: list[Layer], nested: dict[str, list[Layer]], cuts: set[str], ops: bool,
    seen_weights: set[int],
) -> list[_Node]:
    """Nodes for sibling layer calls (grouped when many), with their nested layers and ops.
    `seen_weights`: the Keras layers whose parameters a row already shows, anywhere in the tree
    (the layers inside a shared layer's later call show none, as that call does)."""
    producer = {t: lay.name for lay in siblings for t in lay.outputs.names}
    consumers: dict[str, set[str]] = {lay.name: set() for lay in siblings}
    producers: dict[str, set[str]] = {}
    for lay in siblings:
        producers[lay.name] = {producer[t] for t in lay.inputs.names if t in producer and producer[t] != lay.name}
        for p in producers[lay.name]:
            consumers[p].add(lay.name)
    nodes = []
    dead = graph.unused
    for lay in siblings:
        marks = [m for m, on in (
            ("cut", any(t in cuts for t in lay.outputs.names)),
            ("fork", len(consumers[lay.name]) > 1),
            ("join", len(producers[lay.name]) > 1),
            # a call no output depends on (Keras' call of an RNN's cell to learn shapes)
            ("unused", bool(lay.outputs) and all(t.op in dead for t in lay.outputs)),
        ) if on]
        params, weights = _layer_params(lay, seen_weights)
        node = _Node(
            lay.name.rpartition("/")[2],
            "layer",
            type=lay.type,
            shape=", ".join(shape_text(t.shape) for t in lay.outputs),
            params=params,
            weights=weights,
            ops=len(lay.ops),
            marks=" ".join(marks),
            key=lay.name,
        )
        inner = nested.get(lay.name, [])
        node.children = _layer_nodes(graph, inner, nested, cuts, ops, seen_weights)
        if ops:
            node.children += _op_nodes(graph, lay, {o.name for x in inner for o in x.ops})
        nodes.append(node)
    return _grouped(nodes, 0) if len(nodes) > _GROUP_ABOVE else nodes


def _layer_params(lay: Layer, seen: set[int]) -> tuple[int | None, dict[int, int]]:
    """The layer's parameter count, once per Keras layer (a shared layer's later calls: None),
    and its weights (id -> size)."""
    if lay.keras_layer is None or id(lay.keras_layer) in seen:
        return None, {}
    seen.add(id(lay.keras_layer))
    try:
        params = int(lay.keras_layer.count_params())
    except ValueError:  # never built
        return None, {}
    # tf_keras' adapted lookups list a VocabWeightHandler (no shape), which Keras counts as 0
    weights = [w for w in lay.keras_layer.weights if hasattr(w, "shape")]
    return params, {id(w): math.prod(int(d) for d in w.shape) for w in weights}


def _grouped(nodes: list[_Node], level: int) -> list[_Node]:
    """Consecutive nodes (at least `_GROUP_LEAST`) whose names share their first `level + 1`
    `_`-separated words become one group; groups still longer than `_GROUP_ABOVE` are grouped
    again one word deeper; a group that would hold a single group is that group, and one that
    would hold all its siblings (but one) is left out, its children shown in its place."""
    out: list[_Node] = []
    run: list[_Node] = []
    key = None

    def flush() -> None:
        if len(run) >= _GROUP_LEAST and key is not None:
            children = _grouped(run, level + 1) if len(run) > _GROUP_ABOVE else list(run)
            if len(children) == 1 and children[0].kind == "group":  # one group a word deeper (`convnext_tiny`)
                children = children[0].children
                if not (len(run) == len(nodes) - 1 or level == 0 and len(run) == len(nodes)):
                    out.append(group_of(run, children))  # that group, not a group of it
                    return
            if len(run) == len(nodes) - 1 or level == 0 and len(run) == len(nodes):  # would only add a level
                # (a group of all its parent's nodes, level > 0, is one its parent takes the place of)
                out.extend(children)
                return
            out.append(group_of(run, children))
        else:
            out.extend(run)

    def group_of(run: list[_Node], children: list[_Node]) -> _Node:
        name = _common_words([n.label for n in run])
        last = run[-1]
        group = _Node(name, "group", type=f"{len(run)} layers", shape=last.shape, ops=sum(n.ops or 0 for n in run),
                      marks="cut" if "cut" in last.marks.split() else "", key=name, children=children)
        group.params = _params_of(group)
        return group

    for node in nodes:
        words = node.label.split("_")
        k = "_".join(words[: level + 1]) if len(words) > level + 1 else None
        if k != key or k is None:
            flush()
            run, key = [], k
        run.append(node)
    flush()
    return out


def _common_words(labels: list[str]) -> str:
    """The `_`-separated words all `labels` begin with."""
    words = [label.split("_") for label in labels]
    common = []
    for column in zip(*words):
        if len(set(column)) > 1:
            break
        common.append(column[0])
    return "_".join(common)


def _params_of(node: _Node) -> int | None:
    """The parameters of a node's layers and groups, each Keras weight counted once (sets the
    node's `weights`)."""
    counted = [c for c in node.children if c.kind in ("layer", "group") and c.params is not None]
    if not counted:
        return None
    node.weights = {key: size for c in counted for key, size in c.weights.items()}
    return sum(node.weights.values())


def _op_nodes(graph: ModelGraph, lay: Layer, nested_ops: set[str]) -> list[_Node]:
    """The layer's own ops; ops inside a call, loop or branch go under that op (`body of while`)."""
    hidden = graph.stand_ins | graph.unused  # TF's stand-ins for unused loop values; ops no output depends on
    own = [o for o in lay.ops if o.name not in nested_ops and o.type not in HIDDEN_OPS and o.name not in hidden]
    names = {o.name for o in own}
    nodes = {}
    for o in own:
        t = graph.tensors[o.outputs[0]] if o.outputs else None
        nodes[o.name] = _Node(_relative(o.name, lay.name), "op", type=o.type,
                              shape=shape_text(t.shape) if t is not None else "", key=o.name, open=True)
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


def _guided(root: _Node, prefix: str = "", guide: str = "", unit: int = 3) -> Iterator[tuple[_Node, str, str]]:
    """Each shown node with its tree guide (`├─ `...) and the guide of its other lines; `unit`
    2 gives narrower guides (`├ `), for deep trees."""
    fork, last_fork, line, blank = ("├─ ", "└─ ", "│  ", "   ") if unit == 3 else ("├ ", "└ ", "│ ", "  ")
    shown = root.open and bool(root.children)
    yield root, guide, prefix + (line if shown else blank)
    if not root.open:
        return
    for k, c in enumerate(root.children):
        last = k == len(root.children) - 1
        yield from _guided(c, prefix + (blank if last else line), prefix + (last_fork if last else fork), unit)
