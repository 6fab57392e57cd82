"""find / ancestors / descendants / layers: a mirrored graph in, records out.

Plain functions over the `networkx.DiGraph` that `graph.mirror` builds, usable without a
`Scope`, the way `networkx.ancestors(G, n)` is. Results come in the graph's topological order
(the order ops were mirrored in), so the same query prints the same thing every time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import networkx as nx

from graphscope.errors import (
    AmbiguousMatchError,
    LayerNotFoundError,
    PatternError,
    TensorNotFoundError,
    suggestion,
)
from graphscope.graph import Layer, Op, Selection, Tensor
from graphscope.names import split_tensor_name

__all__ = ["ancestors", "descendants", "find", "layer", "op", "tensor", "tensors"]

TensorLike = str | Tensor
Fetchable = TensorLike | Selection | Iterable[TensorLike]


def tensor(G: nx.DiGraph, name: str | Tensor) -> Tensor:
    """The tensor called `name`: a canonical or raw tensor name, or an op name meaning the op's
    only output.

    Raises:
        TensorNotFoundError: nothing has that name (the message lists the closest names).
        AmbiguousMatchError: an op name whose op has several outputs.
    """
    if isinstance(name, Tensor):
        return G.graph["tensors"][name.name]
    if not isinstance(name, str):
        raise TypeError(f"a tensor is named by a str or a Tensor, not {type(name).__name__}")
    tensors: dict[str, Tensor] = G.graph["tensors"]
    if name in tensors:
        return tensors[name]
    resolved = G.graph["names"].get(name)
    if resolved in tensors:
        return tensors[resolved]
    if resolved is None and name in G:
        resolved = name
    if resolved is not None and resolved in G:
        outputs = G.nodes[resolved]["op"].outputs
        if len(outputs) == 1:
            return tensors[outputs[0]]
        if not outputs:
            raise TensorNotFoundError(
                f"op {resolved!r} has no outputs (it only orders other ops); "
                "name one of the tensors it depends on instead"
            )
        raise AmbiguousMatchError(
            f"op {resolved!r} has {len(outputs)} outputs; name one: {', '.join(outputs)}"
        )
    op_name, _ = split_tensor_name(name)
    hint = suggestion(name, tensors) or suggestion(op_name, tensors)
    raise TensorNotFoundError(f"no tensor named {name!r} in graph {G.name!r}.{hint}")


def op(G: nx.DiGraph, name: str) -> Op:
    """The op record called `name` (canonical or raw op name, or the name of one of its tensors)."""
    if name in G:
        return G.nodes[name]["op"]
    return G.nodes[tensor(G, name).op]["op"]


def tensors(G: nx.DiGraph, items: Fetchable) -> list[Tensor]:
    """Resolve a name, Tensor, Selection or iterable of them into Tensor records, in the given order."""
    if isinstance(items, (str, Tensor)):
        return [tensor(G, items)]
    return [tensor(G, item) for item in items]


def find(
    G: nx.DiGraph,
    pattern: str | None = None,
    *,
    op_type: str | None = None,
    layer: str | None = None,
) -> Selection:
    """Tensors whose canonical name matches `re.search(pattern)`.

    Args:
        pattern: a regular expression searched in canonical tensor names (None: every tensor).
        op_type: keep only tensors of ops whose type fully matches this regex (`Conv2D|MatMul`).
        layer: keep only tensors created inside this layer (or a layer nested in it).
    """
    return _filter(G, _tensors_in_order(G, None), pattern, op_type=op_type, layer=layer)


def ancestors(
    G: nx.DiGraph,
    of: Fetchable,
    pattern: str | None = None,
    *,
    op_type: str | None = None,
) -> Selection:
    """Every tensor upstream of `of` (unbounded depth, into nested functions), filtered like `find`."""
    seeds = tensors(G, of)
    ops: set[str] = set()
    for t in seeds:
        ops |= nx.ancestors(G, t.op)
    own = {t.name for t in seeds}
    found = [t for t in _tensors_in_order(G, ops) if t.name not in own]
    return _filter(G, found, pattern, op_type=op_type, layer=None)


def descendants(
    G: nx.DiGraph,
    of: Fetchable,
    pattern: str | None = None,
    *,
    op_type: str | None = None,
) -> Selection:
    """Every tensor downstream of `of`: produced by ops that consume it, directly or not."""
    ops: set[str] = set()
    for t in tensors(G, of):
        for consumer, edge in G.succ[t.op].items():
            if t.index in edge["outputs"] and consumer not in ops:
                ops.add(consumer)
                ops |= nx.descendants(G, consumer)
    return _filter(G, _tensors_in_order(G, ops), pattern, op_type=op_type, layer=None)


def layer(G: nx.DiGraph, key: str | int) -> Layer:
    """A layer call by name or path (`"backbone/conv1"`, `"shared_dense@2"`) or by its index in
    the traced model's `.layers`."""
    layers: list[Layer] = G.graph["layers"]
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"a layer is named by its name/path (str) or index (int), not {type(key).__name__}")
    if isinstance(key, int):
        top = {lay.index: lay for lay in reversed(layers) if lay.index is not None and "/" not in lay.name}
        n = 1 + max(top, default=-1)
        k = key + n if key < 0 else key
        if k in top:
            return top[k]
        raise LayerNotFoundError(f"no layer at index {key}: the model has {n} layers (0..{n - 1})")
    for lay in layers:
        if lay.name == key:
            return lay
    names = [lay.name for lay in layers]
    raise LayerNotFoundError(f"no layer named {key!r} in {G.name!r}.{suggestion(key, names)}")


def _tensors_in_order(G: nx.DiGraph, ops: set[str] | None) -> list[Tensor]:
    tensors_ = G.graph["tensors"]
    out = []
    for name, data in G.nodes(data=True):  # insertion order is topological
        if ops is None or name in ops:
            out.extend(tensors_[t] for t in data["op"].outputs)
    return out


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise PatternError(f"{what} {pattern!r} is not a valid regular expression: {e}") from None


def _filter(
    G: nx.DiGraph,
    items: list[Tensor],
    pattern: str | None,
    *,
    op_type: str | None,
    layer: str | None,
) -> Selection:
    del G
    if pattern is not None:
        rx = _compile(pattern, "pattern")
        items = [t for t in items if rx.search(t.name)]
    if op_type is not None:
        rt = _compile(op_type, "op_type")
        items = [t for t in items if rt.fullmatch(t.op_type)]
    if layer is not None:
        prefix = layer + "/"
        items = [t for t in items if t.layer is not None and (t.layer == layer or t.layer.startswith(prefix))]
    return Selection(items)


def resolve_all(G: nx.DiGraph, items: Any) -> list[Tensor]:
    """Like `tensors`, accepting a Layer (its outputs) too."""
    if isinstance(items, Layer):
        return list(items.outputs)
    return tensors(G, items)
