"""Pruning the executable GraphDef to what a set of fetches needs, in one reachability pass.

`select` walks up from the fetches once: the nodes to keep, the feeds the fetches reach, and,
when some fetch cannot run from the feeds, which unfed inputs each such fetch needs. The
executor's checks (`DisconnectedError` for inputs that are needed but not fed, and for feeds
that reach nothing) and the GraphDef the compiled function imports both come from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import graph_pb2

__all__ = ["Selected", "graph_def", "normal", "resource_source", "select"]

@dataclasses.dataclass(frozen=True)
class Selected:
    """What `select` found: nodes to keep, fed tensors reached, and (only when some fetch cannot
    run) for each unfed input placeholder the fetches that need it."""

    kept: set[str]
    reached: set[str]
    missing: dict[str, list[str]]


def normal(tensor: str) -> str:
    """`name` -> `name:0` (GraphDef inputs leave out output 0)."""
    return tensor if ":" in tensor else f"{tensor}:0"


def _node(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def select(nodes: Mapping[str, Any], feeds: Mapping[str, str], fetches: Sequence[str], *, captures: set[str]) -> Selected:
    """The nodes needed for `fetches` (executable tensor names) when `feeds` (executable tensor
    name -> placeholder) are given: data inputs up to the feeds, and control inputs that can
    themselves run from the feeds. `captures` are the placeholders variables are bound to."""

    def inputs_of(name: str) -> list[str]:
        return [i for i in nodes[name].input if i.startswith("^") or normal(i) not in feeds]

    # post-order without recursion: can each node run with what is fed?
    runnable: dict[str, bool] = {}
    for root in {_node(f) for f in fetches if f not in feeds}:
        stack = [(root, False)]
        while stack:
            name, expanded = stack.pop()
            if name in runnable:
                continue
            if not expanded:
                stack.append((name, True))
                stack.extend((_node(i), False) for i in inputs_of(name) if _node(i) not in runnable)
                continue
            node = nodes[name]
            is_input = node.op == "Placeholder" and name not in captures
            runnable[name] = not is_input and all(
                runnable.get(_node(i), False) for i in inputs_of(name) if not i.startswith("^")
            )
    kept: set[str] = set()
    reached = {f for f in fetches if f in feeds}
    blocked = False
    todo = [_node(f) for f in fetches if f not in feeds]
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        if not runnable.get(name, False):
            blocked = True
            continue
        kept.add(name)
        for i in nodes[name].input:
            if i.startswith("^"):
                if runnable.get(i[1:], False):  # else an ordering-only edge to something upstream of the feeds
                    todo.append(i[1:])
            elif normal(i) in feeds:
                reached.add(normal(i))
            else:
                todo.append(_node(i))
    missing: dict[str, list[str]] = {}
    if blocked:  # the error path: which unfed inputs does each fetch need?
        for fetch in fetches:
            seen: set[str] = set()
            stack = [_node(fetch)] if fetch not in feeds else []
            while stack:
                name = stack.pop()
                if name in seen:
                    continue
                seen.add(name)
                if nodes[name].op == "Placeholder" and name not in captures:
                    missing.setdefault(name, []).append(fetch)
                stack.extend(_node(i) for i in inputs_of(name) if not i.startswith("^"))
    return Selected(kept, reached, missing)


def graph_def(
    base: graph_pb2.GraphDef,
    nodes: Mapping[str, Any],
    functions: list[Any],
    feeds: Sequence[tuple[str, str, Any]],
    kept: set[str],
) -> graph_pb2.GraphDef:
    """The `kept` nodes of `base` (as replaced in `nodes`), with each fed tensor replaced by a
    placeholder of its own. `feeds`: (executable tensor name, placeholder name, anything with
    the tensor's `dtype` and `shape`), in the order the function takes them."""
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(base.versions)
    out.library.CopyFrom(base.library)
    out.library.function.extend(functions)
    fed: dict[str, str] = {}
    for where, placeholder, spec in feeds:
        node = out.node.add(name=placeholder, op="Placeholder")
        node.attr["dtype"].type = tf.as_dtype(spec.dtype).as_datatype_enum
        node.attr["shape"].shape.CopyFrom(tf.TensorShape(spec.shape).as_proto())
        fed[where] = placeholder
    for node in nodes.values():
        if node.name not in kept:
            continue
        copy = out.node.add()
        copy.CopyFrom(node)
        if "_class" in copy.attr:  # colocation hints naming nodes left out (fed, pruned)
            hints = [h for h in copy.attr["_class"].list.s if h.decode().removeprefix("loc:@") in kept]
            del copy.attr["_class"].list.s[:]
            copy.attr["_class"].list.s.extend(hints)
            if not hints:
                del copy.attr["_class"]
        del copy.input[:]
        for i in node.input:
            if i.startswith("^"):
                if i[1:] in kept:
                    copy.input.append(i)
            elif normal(i) in fed:
                copy.input.append(f"{fed[normal(i)]}:0")
            else:
                copy.input.append(i)
    return out


def resource_source(nodes: Mapping[str, Any], name: str) -> str:
    """The node a resource input comes from, looking through Identity ops."""
    node = nodes.get(_node(name))
    while node is not None and node.op == "Identity" and node.input:
        node = nodes.get(_node(node.input[0]))
    return node.name if node is not None else name
