"""Raw TensorFlow names  <->  canonical names a person recognises from `model.summary()`.

The rules (each op gets exactly one canonical name, unique in its scope):

1. Keras scopes are matched to the layer calls that really created the op (recorded while
   tracing), outermost first; each matching path segment (`block4_conv3`, `block4_conv3_1`, ...:
   Keras' uniquifying suffix) becomes the layer's name, with `@n` for its n-th call inside the same
   parent (`shared_dense@2`). The traced model's own segment is dropped, nested models keep theirs:
   `vgg19_1/block4_conv3_1/BiasAdd` -> `block4_conv3/BiasAdd`.
2. Ops inside a function called through `(Stateful)PartitionedCall` are named under the call:
   `soft/PartitionedCall/Softplus` (their own names are unscoped inside the function).
3. Ops inside `While`/`If`/`Case` bodies keep their own (already scoped) names
   (`ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3`); when such a name is already
   taken (a loop's cond and body reuse names; bodies are mirrored first), the later op is
   qualified by its function:
   `<loop>/<cond|body|then|else|branchK>/<rest>`.
4. Any remaining clash gets `_1`, `_2`, ... appended, in mirroring (topological) order.

Raw names of ops inside functions are qualified the way TensorFlow's inliner names them:
`<call op raw name>/<op name>` (with the role, `<while op>/body/<op name>`, for control flow).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

__all__ = ["canonical_op_name", "qualify", "split_tensor_name", "tensor_name", "uniquify"]


def canonical_op_name(raw: str, scopes: Sequence[tuple[str, str | None]]) -> str:
    """Rewrite the Keras scope segments of `raw` for the layer calls in `scopes`.

    Args:
        raw: the op's own name in its graph.
        scopes: `(layer name, token)` for each layer call enclosing the op, outermost first;
            token None drops the segment (the traced model itself).

    >>> canonical_op_name("vgg19_1/block4_conv3_1/BiasAdd", [("vgg19", None), ("block4_conv3", "block4_conv3")])
    'block4_conv3/BiasAdd'
    >>> canonical_op_name("siam_1/shared_dense_3/MatMul", [("siam", None), ("shared_dense", "shared_dense@2")])
    'shared_dense@2/MatMul'
    """
    segments = raw.split("/")
    out: list[str | None] = list(segments)
    pos = 0
    for layer_name, token in scopes:
        pattern = _scope_pattern(layer_name)
        for k in range(pos, len(segments) - 1):  # the last segment is the op's own name
            if pattern.fullmatch(segments[k]):
                out[k] = token
                pos = k + 1
                break
    return "/".join(s for s in out if s is not None)


@functools.lru_cache(maxsize=4096)
def _scope_pattern(layer_name: str) -> re.Pattern[str]:
    """A layer's TF scope: its name, or its name with Keras' uniquifying `_<n>` suffix."""
    return re.compile(re.escape(layer_name) + r"(?:_\d+)?")


def qualify(name: str, call: str, role: str) -> str:
    """Qualify a control-flow body op's `name` by its loop/branch op `call` and `role`.

    >>> qualify("ROI/map/while/Less", "ROI/map/while", "cond")
    'ROI/map/while/cond/Less'
    """
    rest = name[len(call) + 1 :] if name.startswith(call + "/") else name
    return f"{call}/{role}/{rest}"


def uniquify(name: str, used: set[str] | dict[str, object]) -> str:
    """`name`, or `name_1`, `name_2`, ... whichever is not in `used` first."""
    if name not in used:
        return name
    n = 1
    while f"{name}_{n}" in used:
        n += 1
    return f"{name}_{n}"


def tensor_name(op_name: str, index: int) -> str:
    """`op:index`."""
    return f"{op_name}:{index}"


def split_tensor_name(name: str) -> tuple[str, int | None]:
    """`'a/b:1'` -> `('a/b', 1)`; an op name -> `(name, None)`.

    >>> split_tensor_name("block1_conv1/BiasAdd:0")
    ('block1_conv1/BiasAdd', 0)
    >>> split_tensor_name("block1_conv1/BiasAdd")
    ('block1_conv1/BiasAdd', None)
    """
    head, sep, tail = name.rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return name, None
