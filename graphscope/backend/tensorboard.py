"""The mirrored graph for TensorBoard's graph view: canonical names, layers as name scopes.

TensorBoard's graph dashboard groups nodes by the `/`-separated scopes of their names. Written
from the mirrored graph, each op is a node under its canonical name (`block4_conv3/BiasAdd`, not
`vgg19_1/block4_conv3_1/BiasAdd`), so each layer is a scope; the ops of nested functions and of
loop and branch bodies are nodes under their caller's name (`ROI/map/while/...`), wired to the
call's inputs and outputs, instead of one opaque node per call. Each node's attributes carry its
layer, raw TensorFlow name, function path and output shapes, shown in TensorBoard's node panel.
"""

from __future__ import annotations

import os
from pathlib import Path

import networkx as nx
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2

__all__ = ["graph_def", "write"]


def graph_def(G: nx.DiGraph) -> graph_pb2.GraphDef:
    """The mirrored graph as a GraphDef for display (not for running: bodies are flattened)."""
    out = graph_pb2.GraphDef()
    tensors = G.graph["tensors"]
    for name, data in G.nodes(data=True):
        op = data["op"]
        node = out.node.add(name=name, op=op.type)
        node.input.extend(t.removesuffix(":0") for t in op.inputs)
        shapes = node.attr["_output_shapes"].list
        for t in op.outputs:
            shape = tensors[t].shape
            shapes.shape.add().CopyFrom(tf.TensorShape(shape).as_proto() if shape is not None else tf.TensorShape(None).as_proto())
        for key, value in (("layer", op.layer or ""), ("raw_name", op.raw_name),
                           ("function", " > ".join(op.function)),
                           ("dtypes", ", ".join(tensors[t].dtype for t in op.outputs))):
            if value:
                node.attr[key].CopyFrom(attr_value_pb2.AttrValue(s=value.encode()))
    return out


def write(G: nx.DiGraph, logdir: str | os.PathLike[str]) -> str:
    """Write the graph to an event file in `logdir` (created if needed) for `tensorboard
    --logdir`; returns the event file's path."""
    folder = Path(logdir)
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.glob("events.out.tfevents.*"))
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        tf.summary.graph(graph_def(G))
    writer.flush()
    writer.close()
    (written,) = set(folder.glob("events.out.tfevents.*")) - before  # each writer makes a file of its own
    return str(written)
