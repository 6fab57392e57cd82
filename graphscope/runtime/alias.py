"""Which values may share a buffer with the model's state: a result that may be a view of a
variable's or a constant's buffer is copied before it is handed out (never a live variable)."""

from __future__ import annotations

from typing import Any

from graphscope.ir.records import Tensor

__all__ = ["may_alias_state"]


# ops whose output may share its input's buffer (TensorFlow forwards instead of copying)
_FORWARDING = {"Identity", "IdentityN", "Reshape", "Squeeze", "ExpandDims", "StopGradient",
               "PreventGradient", "EnsureShape", "Bitcast", "Snapshot", "CheckNumerics"}


def may_alias_state(G: Any, t: Tensor) -> bool:
    """Whether `t` may be a view of a variable's or a constant's buffer."""
    tensors: dict[str, Tensor] = G.graph["tensors"]
    seen = set()
    while t.name not in seen:
        seen.add(t.name)
        if t.op_type in ("ReadVariableOp", "Const", "ResourceGather") or t.dtype == "resource":
            return True
        op = G.nodes[t.op]["op"]
        if t.op_type not in _FORWARDING and not (t.op_type == "Placeholder" and op.inputs):
            return False
        if not op.inputs:
            return False
        t = tensors[op.inputs[t.index if t.op_type == "IdentityN" else 0]]
    return False
