"""Binding inputs: what a caller passes to an executor (one array, positional inputs, a dict by
name) turned into the fed tensors, converted and checked against their dtypes and static shapes;
and the one-shot call rule (`call_once`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from graphscope.errors import InputError, suggestion
from graphscope.ir.records import Results, Tensor, shape_text
from graphscope.runtime.convert import to_dtype

__all__ = ["InputSignature", "call_once"]


def call_once(executor: Any, inputs: Any) -> Results:
    """Call an executor with `inputs` (a list or tuple holds positional inputs, or is the one
    input's value: see `InputSignature.bind`)."""
    return executor(inputs)


class InputSignature:
    """What an executor is fed: names (every spelling of each input accepted by name), dtypes and
    static shapes; `bind` turns what a caller passes into the arrays, in order."""

    def __init__(self, feeds: Sequence[tuple[str, Tensor]]) -> None:
        self.names: list[str] = [k for k, _ in feeds]
        self.tensors: list[Tensor] = [t for _, t in feeds]
        self._aliases: dict[str, int] = {}
        for k, (name, t) in enumerate(feeds):
            for alias in (name, t.name, t.raw_name, t.op, t.raw_name.rpartition(":")[0]):
                self._aliases.setdefault(alias, k)

    def __len__(self) -> int:
        return len(self.names)

    def position(self, name: str) -> int | None:
        """Which input `name` (any spelling) is, or None."""
        return self._aliases.get(name)

    def bind(self, *inputs: Any) -> list[Any]:
        """The inputs in order, from one value (one input), a list/tuple (positional inputs) or
        a dict by name; values are not converted.

        For a one-input executor a list or tuple is that input's value, an array written as
        nested lists (`[[1., 2., 3.], [4., 5., 6.]]` is a 2x3 array), except a list or tuple of
        one array or tensor of the input's rank (any rank when that is unknown): `[x]` holds
        `x`, as it would for an executor of several inputs.

        Raises:
            InputError: the wrong number of inputs, or a name the executor does not take.
        """
        n = len(self.names)
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            return self._by_name(inputs[0])
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            if n == 1 and not self._holds_one(inputs[0]):
                return [inputs[0]]  # one input's value, written as (nested) lists
            inputs = tuple(inputs[0])  # a list/tuple holds the positional inputs
        if len(inputs) != n:
            raise InputError(
                f"this executor takes {n} input{'s' if n != 1 else ''} ({', '.join(self.names)}), "
                f"got {len(inputs)}: pass "
                + ("one array" if n == 1 else "a list of arrays in that order, or a dict by name")
            )
        return list(inputs)

    def _holds_one(self, given: list[Any] | tuple[Any, ...]) -> bool:
        """Whether a list/tuple passed for the one input is `[x]`: one array or tensor of the
        input's rank, rather than the input's value written as lists."""
        if len(given) != 1 or not isinstance(given[0], (np.ndarray, np.generic, tf.Tensor, tf.Variable)):
            return False
        shape = self.tensors[0].shape
        return shape is None or len(given[0].shape) == len(shape)

    def _by_name(self, given: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = [None] * len(self.names)
        for key, value in self._flat(given, "").items():
            k = self._aliases.get(key)
            if k is None:
                raise InputError(
                    f"unknown input {key!r}: this executor takes {', '.join(self.names)}."
                    + suggestion(str(key), self.names)
                )
            out[k] = value
        missing = [self.names[k] for k, v in enumerate(out) if v is None]
        if missing:
            raise InputError(f"missing input{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        return out

    def _flat(self, given: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        """A dict by name with the nests of a nested input signature opened: inputs named by
        their path (`images/0`, `encoder/token_ids`) may be given as `{"images": [a, b]}` or
        `{"encoder": {"token_ids": ...}}`, the structure the function takes."""
        flat: dict[str, Any] = {}
        for key, value in given.items():
            name = f"{prefix}{key}"
            if name not in self.names and isinstance(value, Mapping):
                flat.update(self._flat(value, f"{name}/"))
            elif name not in self.names and isinstance(value, (list, tuple)) and f"{name}/0" in self._aliases:
                flat.update(self._flat({str(j): v for j, v in enumerate(value)}, f"{name}/"))
            else:
                flat[name] = value
        return flat

    def convert(self, k: int, value: Any) -> tf.Tensor:
        """Input k as a tensor of its dtype, checked against its static shape."""
        name, spec = self.names[k], self.tensors[k]
        array = to_dtype(value, spec.dtype, f"input {name!r}")
        if spec.shape is not None:
            ok = array.ndim == len(spec.shape) and all(
                d is None or d == a for d, a in zip(spec.shape, array.shape)
            )
            if not ok:
                raise InputError(
                    f"input {name!r} expects shape {shape_text(spec.shape)} (? for any size), "
                    f"got {shape_text(array.shape)}"
                )
        return tf.constant(array)
