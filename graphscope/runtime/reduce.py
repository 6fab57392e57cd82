"""Reducing fetched values inside the compiled function (`Program.compiled(reduce=)`), so that
a few numbers per tensor leave TensorFlow instead of the values: what `numerics` (NaN/Inf
counts) and `statistics` (moments, ranges, histograms) share. Values inside loops and branches
come in the wrappers `expose` puts them in (a loop's list, a branch's optional); each item is
reduced where it is, in the graph."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

__all__ = ["Reduction"]


class Reduction:
    """`fn(values, kinds, dtypes)` for `Program.compiled(reduce=)`: `leaf(value, k)` applied inside
    the graph to the k-th value, or to each item of the loop lists and branch optionals it comes
    in (`expose.Exposed.kinds`); it returns one float64 tensor.

    - With `total`, one float64 scalar comes back: every leaf's result added up.
    - Otherwise `top([(k, value) of the top-level values])` (default: each one's leaf, in order)
      comes first, then
      each wrapped value's items, in the same wrappers (a list per loop, an optional per branch).
    """

    def __init__(self, leaf: Callable[[tf.Tensor, int], tf.Tensor], *, total: bool = False,
                 top: Callable[[list[tuple[int, tf.Tensor]]], Sequence[tf.Tensor]] | None = None) -> None:
        self.leaf = leaf
        self.total = total
        self.top = top

    def __call__(self, values: list[tf.Tensor], kinds: list[tuple[str, ...]], dtypes: list[tf.DType]) -> list[tf.Tensor]:
        wrapped = [self._wrapped(v, k, d, i) for i, (v, k, d) in enumerate(zip(values, kinds, dtypes)) if k]
        plain = [(i, v) for i, (v, k) in enumerate(zip(values, kinds)) if not k]
        if self.total:
            parts = [self.leaf(v, i) for i, v in plain] + wrapped
            return [tf.add_n(parts) if parts else tf.constant(0.0, tf.float64)]
        top = self.top(plain) if self.top is not None else [self.leaf(v, i) for i, v in plain]
        return [*top, *wrapped]

    def _wrapped(self, value: tf.Tensor, kinds: tuple[str, ...], dtype: tf.DType, k: int) -> tf.Tensor:
        if not kinds:
            return self.leaf(value, k)
        rest = kinds[1:]
        inner = tf.variant if rest else dtype
        if kinds[0] == "optional":
            def present() -> tf.Tensor:
                (got,) = tf.raw_ops.OptionalGetValue(optional=value, output_types=[inner], output_shapes=[None])
                reduced = self._wrapped(got, rest, dtype, k)
                return reduced if self.total else tf.raw_ops.OptionalFromValue(components=[reduced])

            absent = (lambda: tf.constant(0.0, tf.float64)) if self.total else tf.raw_ops.OptionalNone
            return tf.cond(tf.raw_ops.OptionalHasValue(optional=value), present, absent)
        n = tf.raw_ops.TensorListLength(input_handle=value)

        def item(i: tf.Tensor) -> tf.Tensor:
            got = tf.raw_ops.TensorListGetItem(input_handle=value, index=i, element_shape=tf.constant(-1),
                                               element_dtype=inner)
            return self._wrapped(got, rest, dtype, k)

        if self.total:
            return tf.while_loop(lambda i, _: i < n, lambda i, acc: (i + 1, acc + item(i)),
                                 (tf.constant(0), tf.constant(0.0, tf.float64)))[1]
        empty = tf.raw_ops.EmptyTensorList(element_shape=tf.constant(-1), max_num_elements=tf.constant(-1),
                                           element_dtype=tf.variant if rest else tf.float64)
        return tf.while_loop(
            lambda i, _: i < n,
            lambda i, acc: (i + 1, tf.raw_ops.TensorListPushBack(input_handle=acc, tensor=item(i))),
            (tf.constant(0), empty),
        )[1]
