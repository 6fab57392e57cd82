"""A synthetic mirrored graph shaped like a deep CNN, for query benchmarks at any size.

Chained residual blocks: each block runs conv -> bias -> batch norm -> relu twice on its main
path, a 1x1 conv on a shortcut path every other block, and joins both at an Add, with the
variable reads a traced Keras model has. The records are the same `Op`/`Tensor` records
`graphscope.mirror.mirror` builds, so every query function runs on it unchanged.
"""

from __future__ import annotations

import networkx as nx

from graphscope.ir.records import Op, Tensor


def cnn_graph(n_ops: int = 100_000) -> nx.DiGraph:
    """A DAG of about `n_ops` ops (at least one block)."""
    G = nx.DiGraph(name=f"synthetic_{n_ops}")
    tensors: dict[str, Tensor] = {}

    def add(name: str, op_type: str, inputs: list[str], layer: str | None) -> str:
        out = f"{name}:0"
        tensors[out] = Tensor(out, f"synthetic_1/{out}", name, op_type, 0, "float32", (None, 8, 8, 16), layer)
        G.add_node(name, op=Op(name, f"synthetic_1/{name}", op_type, layer, (), tuple(inputs), (out,)),
                   tensors=(tensors[out],))
        for src in inputs:
            G.add_edge(tensors[src].op, name, outputs=(0,))
        return out

    def conv(prefix: str, x: str) -> str:
        kernel = add(f"{prefix}/convolution/ReadVariableOp", "ReadVariableOp", [], prefix)
        y = add(f"{prefix}/convolution", "Conv2D", [x, kernel], prefix)
        bias = add(f"{prefix}/Reshape/ReadVariableOp", "ReadVariableOp", [], prefix)
        return add(f"{prefix}/BiasAdd", "BiasAdd", [y, bias], prefix)

    def bn_relu(prefix: str, x: str) -> str:
        scale = add(f"{prefix}_bn/batchnorm/ReadVariableOp", "ReadVariableOp", [], f"{prefix}_bn")
        y = add(f"{prefix}_bn/batchnorm/mul_1", "Mul", [x, scale], f"{prefix}_bn")
        shift = add(f"{prefix}_bn/batchnorm/sub/ReadVariableOp", "ReadVariableOp", [], f"{prefix}_bn")
        y = add(f"{prefix}_bn/batchnorm/add_1", "AddV2", [y, shift], f"{prefix}_bn")
        return add(f"{prefix}_relu/Relu", "Relu", [y], f"{prefix}_relu")

    x = add("input_image", "Placeholder", [], None)
    block = 0
    while G.number_of_nodes() < n_ops:
        name = f"stage{block // 64 + 1}_block{block % 64 + 1}"
        main = bn_relu(f"{name}_1", conv(f"{name}_1_conv", x))
        main = bn_relu(f"{name}_2", conv(f"{name}_2_conv", main))
        shortcut = conv(f"{name}_0_conv", x) if block % 2 == 0 else x
        x = add(f"{name}_add/Add", "AddV2", [main, shortcut], f"{name}_add")
        block += 1
    G.graph.update(tensors=tensors, names={t.raw_name: n for n, t in tensors.items()},
                   inputs=["input_image:0"], outputs=[x], layers=[])
    return G
