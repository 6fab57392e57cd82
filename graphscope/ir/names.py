"""Raw TensorFlow names  <->  canonical names a person recognises from `model.summary()`.

The rules (each op gets exactly one canonical name, unique in its scope):

1. Keras scopes are matched to the layer calls that really created the op (recorded while
   tracing), outermost first (`graphscope.backend.mirror.canonical_op_name`: the scope
   spelling is a Keras convention, kept behind the TensorFlow fence); each matching path segment (`block4_conv3`, `block4_conv3_1`, ...:
   Keras' uniquifying suffix) becomes the layer's name, with `@n` for its n-th call inside the same
   parent (`shared_dense@2`). The traced model's own segment is dropped, nested models keep theirs:
   `vgg19_1/block4_conv3_1/BiasAdd` -> `block4_conv3/BiasAdd`. Below the layer, a later call's op
   is named as the first call's op it repeats (the k-th op whose name is the same up to
   TensorFlow's `_<n>` suffixes): tf_keras reopens a shared layer's scope, so TensorFlow's
   `shared/BiasAdd_1` of its second call is `shared@2/BiasAdd`, as Keras 3 names it
   (`graphscope.backend.mirror`).
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


__all__ = ["qualify", "split_tensor_name", "tensor_name", "uniquify"]


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
