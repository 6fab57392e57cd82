"""Arrays converted to a tensor's dtype, refused when the dtype cannot hold their values.

One rule for everything graphscope puts into a graph from numpy: the arrays an executor is fed
and the arrays an edit patches in. A conversion may round (float32 0.1 into float16, a large
int64 into float32) but never change what a value is: no finite value becomes inf, no
fraction is truncated, no integer wraps around, nothing complex loses its imaginary part.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.errors import InputError

__all__ = ["exact_numpy", "to_dtype"]

# source kinds a target kind may take, before its values are checked
_KINDS = {"b": "biuf", "i": "biuf", "u": "biuf", "f": "biuf", "c": "biufc"}


def to_dtype(value: Any, dtype: Any, what: str) -> np.ndarray:
    """`value` (an array, a list, a number, an eager tensor) as an array of `dtype` (a
    TensorFlow dtype or its name), checked value by value when the conversion could lose
    them; `what` names it in errors (`"input 'image'"`, `"the edit of 'conv1/Relu:0'"`).
    bfloat16, float8 and int4 arrays (`ml_dtypes`) are floats and integers like any other;
    numbers into bool must all be 0 or 1, and bool into numbers gives 0 and 1. Text (str, bytes
    or object arrays) is taken as it is for a string dtype, and numbers are refused there. A
    `tf.SparseTensor` is its dense value (its indices in any order; one repeated or out of bounds
    is refused); a `tf.RaggedTensor` is refused.

    Raises:
        InputError: the values are not numeric, their dtype cannot become `dtype` whatever they
            are (complex into float, int or bool), or some value does not fit: out of range
            (would become inf, or wrap around), not a whole number for an integer dtype, nan or
            inf for an integer dtype, other than 0 and 1 for bool.

    >>> to_dtype([0.5, 2.0], "float16", "x").dtype
    dtype('float16')
    >>> to_dtype(np.float32(1e6), "float16", "the edit of 'h:0'")
    Traceback (most recent call last):
    ...
    graphscope.errors.InputError: the edit of 'h:0' expects float16, whose range is -65504 to 65504, \
but it holds values from 1e+06 to 1e+06 (1 of 1) beyond it, which would become inf; scale or clip them first
    """
    if isinstance(value, tf.SparseTensor):  # its dense value: the zeros it leaves out are zeros
        try:  # in any order, as Keras takes it
            value = tf.sparse.to_dense(tf.sparse.reorder(value))
        except tf.errors.InvalidArgumentError as e:  # a repeated index, one out of bounds
            raise InputError(f"{what} is a tf.SparseTensor with no dense value: {_tf.failure_reason(e)}; give each "
                             "index once, inside its dense_shape") from None
    if isinstance(value, tf.RaggedTensor):
        raise InputError(
            f"{what} takes a dense array, got a tf.RaggedTensor; pad it (x.to_tensor()), or trace a function "
            "that builds it from dense parts (tf.RaggedTensor.from_row_lengths(values, row_lengths))"
        )
    array = np.asarray(value.numpy() if isinstance(value, tf.Tensor) else value)
    target = tf.as_dtype(dtype)
    numpy_target = np.dtype(target.as_numpy_dtype)
    if target == tf.string:  # text: TensorFlow encodes str as UTF-8 and takes bytes as they are
        if array.dtype == object:  # text element by element
            other = next((v for v in array.flat if not isinstance(v, (str, bytes))), array)  # array: none
            if other is not array:
                raise InputError(
                    f"{what} expects string: text, as str, bytes or object arrays, but its object array holds "
                    f"{type(other).__name__} ({other!r}); make every element a str or bytes"
                )
        if array.dtype.kind in "USO":
            return array
        raise InputError(
            f"{what} expects string: text, as str, bytes or object arrays, got an array of dtype "
            f"{array.dtype}; format the numbers first (x.astype(str))"
        )
    if array.dtype == numpy_target:
        return array
    kind = _kind(numpy_target)
    if _kind(array.dtype) != array.dtype.kind:  # an ml_dtypes array: checked as the numpy dtype
        array = array.astype(exact_numpy(array.dtype))  # that holds each of its values exactly
        if array.dtype == numpy_target:
            return array
    if array.dtype.kind not in "biufc":
        raise InputError(f"{what} must be a numeric array ({target.name}), got an array of dtype {array.dtype}")
    if array.dtype.kind not in _KINDS.get(kind, ""):
        raise InputError(
            f"{what} expects {target.name}, got an array of dtype {array.dtype}, which would lose information "
            f"as {target.name}; convert it first"
        )
    if kind == "b":
        _check_truth(array, what)
    with np.errstate(all="ignore"):  # what overflows is found below
        converted = array.astype(numpy_target)
    if kind == "b" or _holds_every(target, array.dtype):
        return converted
    if kind in "fc":
        _check_finite(array, converted, target, what)
    elif kind in "iu":
        _check_integral(array, target, what)
    return converted


def exact_numpy(dtype: np.dtype) -> np.dtype:
    """The numpy dtype holding every value of an `ml_dtypes` dtype exactly (float32 for bfloat16
    and the float8s, int8 for int4, uint8 for uint4), for readers that know only numpy's;
    `dtype` itself otherwise."""
    dtype = np.dtype(dtype)
    kind = _kind(dtype)
    return dtype if kind == dtype.kind else np.dtype({"f": np.float32, "i": np.int8, "u": np.uint8}[kind])


def _kind(dtype: np.dtype) -> str:
    """numpy's kind of `dtype`, with `ml_dtypes`' (whose kind is "V") by what TensorFlow makes
    of them: "f" for bfloat16 and float8, "i" or "u" for int4 and uint4."""
    if dtype.kind != "V":
        return dtype.kind
    try:
        of = tf.as_dtype(dtype)
    except TypeError:  # a structured or raw dtype: not numeric
        return dtype.kind
    if of.is_floating:
        return "f"
    if of.is_integer:
        return "u" if of.is_unsigned else "i"
    return dtype.kind


def _check_truth(array: np.ndarray, what: str) -> None:
    """Every value is 0 or 1 (the values bool holds)."""
    bad = (array != 0) & (array != 1)
    if bad.any():
        raise InputError(
            f"{what} expects bool, which holds 0 and 1, but it holds other values ({int(bad.sum())} of "
            f"{array.size}, such as {array[bad].flat[0]:g}); compare them first (x != 0)"
        )


def _holds_every(target: tf.DType, source: np.dtype) -> bool:
    """Whether `target` holds every value of `source` (to within rounding): nothing to check."""
    if source.kind == "b":
        return True
    bound = target.real_dtype if target.is_complex else target
    of = tf.as_dtype(source)
    of = of.real_dtype if of.is_complex else of  # a complex source: its parts' dtype
    if bound.is_integer and not of.is_integer:
        return False  # a float may be a fraction, whatever its range
    number = int if bound.is_integer else float
    return number(bound.min) <= number(of.min) and number(of.max) <= number(bound.max)


def _check_finite(array: np.ndarray, converted: np.ndarray, target: tf.DType, what: str) -> None:
    """No finite value became inf (the target's range is smaller than the values)."""
    bad = np.isfinite(array) & ~np.isfinite(converted)
    if not bad.any():
        return
    complex_ = array.dtype.kind == "c"
    values = np.abs(array[bad]) if complex_ else array[bad]
    bound = target.real_dtype if target.is_complex else target
    parts = " (each part)" if complex_ else ""
    raise InputError(
        f"{what} expects {target.name}, whose range is {bound.min:g} to {bound.max:g}{parts}, "
        f"but it holds {'magnitudes' if complex_ else 'values'} from {values.min():g} to {values.max():g} "
        f"({int(bad.sum())} of {array.size}) beyond it, which would become inf; scale or clip them first"
    )


def _check_integral(array: np.ndarray, target: tf.DType, what: str) -> None:
    """Every value is a whole number within the target's range."""
    if array.size == 0 or array.dtype.kind == "b":
        return
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(
                f"{what} expects {target.name}, which cannot hold nan or inf, but {int((~finite).sum())} of its "
                f"{array.size} values are; replace them first"
            )
        fractional = array != np.trunc(array)
        if fractional.any():
            raise InputError(
                f"{what} expects {target.name}, but it holds values that are not whole numbers "
                f"({int(fractional.sum())} of {array.size}, such as {array[fractional].flat[0]:g}), which would be "
                "truncated; round them first"
            )
    low, high = int(array.min()), int(array.max())  # exact: integers, or whole floats
    if low < target.min or high > target.max:
        raise InputError(
            f"{what} expects {target.name}, whose range is {target.min} to {target.max}, but it holds values from "
            f"{low} to {high}, which would wrap around; clip them first"
        )
