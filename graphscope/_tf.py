"""Every internal TensorFlow and Keras API graphscope touches, and nothing else.

Each function here is guarded by a test in tests/test_tf.py that fails loudly when a release
changes the behaviour we rely on. Nothing outside this module imports a private TF/Keras name.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import convert_to_constants

__all__ = [
    "build_shapes",
    "function_graph",
    "inline_calls",
    "last_op_id",
    "op_id",
]


def last_op_id(graph: tf.Graph) -> int:
    """The creation id of the newest op in `graph` (ids grow by one per op created).

    `Graph.version` is public and counts ops; `Operation._id` is the op's own creation id;
    the test pins their relation (`op._id == graph.version + 1` right after creating `op`).
    """
    return graph.version + 1


def op_id(op: tf.Operation) -> int:
    """The creation id of `op` in its graph (increasing in creation order)."""
    return op._id  # pylint: disable=protected-access


def function_graph(graph: tf.Graph, name: str) -> tf.Graph:
    """The FuncGraph of the function `name` called from an op of `graph`.

    Function libraries are inherited from outer graphs, so the lookup climbs
    `outer_graph` until one knows the name.
    """
    g: Any = graph
    while g is not None:
        fn = g._get_function(name)  # pylint: disable=protected-access
        if fn is not None:
            return fn.graph
        g = getattr(g, "outer_graph", None)
    raise LookupError(f"function {name!r} is not in the library of graph {graph.name!r}")


def inline_calls(concrete_function: Any) -> graph_pb2.GraphDef:
    """GraphDef of `concrete_function` with every (Stateful)PartitionedCall inlined.

    Inlined ops are named `<call op name>/<body op name>`; `While`/`If` stay functional.
    """
    return convert_to_constants._run_inline_graph_optimization(  # pylint: disable=protected-access
        concrete_function, lower_control_flow=False, aggressive_inlining=True
    )


def build_shapes(model: Any) -> dict[str, Any] | None:
    """The input shapes a built Keras 3 layer recorded when it was built, by argument name."""
    return getattr(model, "_build_shapes_dict", None)


def sublayers(layer: Any) -> list[Any]:
    """The Keras layers directly tracked by `layer`, in creation order.

    Models list theirs in `.layers` (that order is what users index); other layers only through
    Keras' private `_flatten_layers`.
    """
    if isinstance(getattr(layer, "layers", None), list):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))  # pylint: disable=protected-access


def input_layers(model: Any) -> list[Any]:
    """The `InputLayer` behind each of a functional model's flat inputs, in order."""
    return [t._keras_history[0] for t in tf.nest.flatten(model.inputs)]  # pylint: disable=protected-access
