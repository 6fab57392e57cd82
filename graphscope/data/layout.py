"""How each fetched tensor is laid out in a store (per sample, per batch, dense or ragged),
decided from the executor's values on the first batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from graphscope.data.store import Field, entries_of, store_key
from graphscope.errors import UnsupportedFetchError
from graphscope.ir.records import Tensor
from graphscope.runtime.convert import exact_numpy
from graphscope.runtime.executor import Executor

__all__ = ["fixed_batch", "plan"]


def fixed_batch(executor: Executor) -> int | None:
    """The batch size a model's inputs fix, or None when it is free."""
    return next((t.shape[0] for t in executor.signature.tensors if t.shape and t.shape[0] is not None), None)


def plan(executor: Executor, first: list[np.ndarray]) -> tuple[list[Field], Mapping[str, Any]]:
    """Decide the layout of each of `executor`'s fetches from its values on the first batch
    (see the module doc). Returns the fields and the first batch's values."""
    b = len(first[0])
    fixed = fixed_batch(executor)
    full = executor(first)
    small = executor([a[:1] for a in first]) if b > 1 and fixed is None else None
    keys: set[str] = set()
    fields = []
    for t in executor.fetches:
        if t.context is not None and not t.context.endswith(":body"):
            raise UnsupportedFetchError(
                f"cannot store {t.name!r}: it is computed inside {t.context}, a branch that may "
                "not run for every sample; fetch the branch op's output instead"
            )
        value = full[t.name]
        lead = _leading(value)
        if fixed is not None or small is None:
            per_sample = lead == b and (fixed is not None or _batch_axis(t, b))
        else:
            per_sample = lead == b and _leading(small[t.name]) == 1
        entries = entries_of(value) if per_sample else [value]
        if any(e is None or isinstance(e, list) for e in entries):
            raise UnsupportedFetchError(
                f"cannot store {t.name!r}: its values differ in shape from one loop iteration to "
                "the next inside a loop that runs per batch; fetch the loop's outputs instead"
            )
        dtype = exact_numpy(entries[0].dtype)  # bfloat16 as float32: zarr has no bfloat16
        if dtype.kind not in "biufc":
            raise UnsupportedFetchError(
                f"cannot store {t.name!r}: {dtype} values are not numbers; fetch a numeric tensor"
            )
        static = _entry_shape(t, per_sample)
        ragged = static is None or any(d is None for d in static)
        key = store_key(t.name)
        while key in keys:
            key += "_"
        keys.add(key)
        fields.append(
            Field(
                name=t.name,
                key=key,
                layout="sample" if per_sample else "batch",
                ragged=ragged,
                dtype=dtype.name,
                shape=None if ragged else tuple(entries[0].shape),
                ndim=entries[0].ndim,
            )
        )
    return fields, full


def _leading(value: Any) -> int | None:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, np.ndarray) and value.ndim:
        return value.shape[0]
    return None


def _batch_axis(t: Tensor, b: int) -> bool:
    """With one sample per batch, whether `t`'s first axis is the batch (from its static shape)."""
    if t.context is not None:
        return True  # a loop over a one-sample batch: one iteration
    return bool(t.shape) and t.shape[0] in (None, b)


def _entry_shape(t: Tensor, per_sample: bool) -> tuple[int | None, ...] | None:
    """Each entry's static shape; None where unknown."""
    if t.shape is None:
        return None
    if t.context is not None:  # a loop's values: one per iteration
        return t.shape if per_sample else None
    return t.shape[1:] if per_sample else t.shape
