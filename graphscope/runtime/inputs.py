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


_UNSET: Any = object()  # an input not given (None may be a value, if a wrong one)


def _shown(value: Any) -> str:
    """What was given instead of a nest, briefly: a dict's keys, a list's length, a type."""
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    shape = getattr(value, "shape", None)
    return f"a {type(value).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")


def call_once(executor: Any, inputs: Any) -> Results:
    """Call an executor with `inputs` (a list or tuple holds positional inputs, or is the one
    input's value: see `InputSignature.bind`)."""
    return executor(inputs)


class _Misfit(Exception):
    """A value that does not have the structure of the argument it is given for."""


class InputSignature:
    """What an executor is fed: names (every spelling of each input accepted by name), dtypes and
    static shapes; `bind` turns what a caller passes into the arrays, in order.

    `arguments` (the model's own inputs only: `Traced.arguments`) are the arguments the traced
    function takes, each a name and a nest of input positions; where one of them is a nest
    (a dict, list or tuple of tensors), the inputs may also be given as the function takes
    them: a dict by argument name whose values are nests, or a list with one nest per argument.
    """

    def __init__(self, feeds: Sequence[tuple[str, Tensor]], arguments: Sequence[tuple[str, Any]] | None = None) -> None:
        self.names: list[str] = [k for k, _ in feeds]
        self.tensors: list[Tensor] = [t for _, t in feeds]
        self._aliases: dict[str, int] = {}
        for k, (name, t) in enumerate(feeds):
            for alias in (name, t.name, t.raw_name, t.op, t.raw_name.rpartition(":")[0]):
                self._aliases.setdefault(alias, k)
        # kept only where some argument is a nest: otherwise one argument is one input, and
        # the arguments are the inputs
        nested = arguments is not None and any(not isinstance(nest, int) for _, nest in arguments)
        self.arguments: list[tuple[str, Any]] | None = list(arguments) if nested else None

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
            nests = self.by_argument(inputs[0])
            if nests is not None:
                return nests
            if n == 1 and not self._holds_one(inputs[0]):
                return [inputs[0]]  # one input's value, written as (nested) lists
            inputs = tuple(inputs[0])  # a list/tuple holds the positional inputs
        else:
            nests = self.by_argument(inputs)
            if nests is not None:
                return nests
        if len(inputs) != n:
            takes = f"takes {n} input{'s' if n != 1 else ''} ({', '.join(self.names)}), got {len(inputs)}"
            raise InputError(
                f"this executor {takes}: pass "
                + ("one array" if n == 1 else "a list of arrays in that order, or a dict by name")
                + self._nest_advice(),
                command_line=f"the model {takes}: give "
                + ("one --input FILE" if n == 1 else f"--input NAME=FILE for each ({self.names[0]}=FILE, ...), "
                   "or one --input FILE per input in that order"),
            )
        return list(inputs)

    def by_argument(self, given: Sequence[Any], *, refuse: bool = True) -> list[Any] | None:
        """The inputs in order from `given`, one nest per argument (see `bind`), or None where
        `given` is not that: no argument is a nest, its length is not the number of arguments,
        or (its length being also the number of inputs) an item lacks its argument's structure.

        Raises:
            InputError: as many items as arguments, but not as many as inputs, and an item
                without its argument's structure (the message shows the structure expected);
                with `refuse=False`, None instead.
        """
        if self.arguments is None or len(given) != len(self.arguments):
            return None
        out: list[Any] = [_UNSET] * len(self.names)
        try:
            for (name, nest), value in zip(self.arguments, given):
                self._fit(nest, value, name, out)
        except _Misfit as e:
            if len(given) == len(self.names) or not refuse:
                return None  # as many items as inputs: one value per input, in order
            raise InputError(f"{e}; give one nest per argument in that order, or a dict by name") from None
        return out

    def _fit(self, nest: Any, value: Any, where: str, out: list[Any]) -> None:
        """Put the leaves of `value`, which must have the structure of `nest`, at the positions
        `nest` holds (a dict's keys, a list's or tuple's length; a leaf takes any value)."""
        if isinstance(nest, int):
            out[nest] = value
            return
        expected = self._structure(nest)
        if isinstance(nest, Mapping):
            if not isinstance(value, Mapping) or set(value) != set(nest):
                raise _Misfit(f"argument {where!r} takes {expected}, got {_shown(value)}")
            for key in nest:
                self._fit(nest[key], value[key], f"{where}/{key}", out)
            return
        if hasattr(nest, "_fields") and isinstance(value, Mapping) and set(value) == set(nest._fields):
            value = [value[f] for f in nest._fields]
        if not isinstance(value, (list, tuple)) or len(value) != len(nest):
            raise _Misfit(f"argument {where!r} takes {expected}, got {_shown(value)}")
        for k, (item, v) in enumerate(zip(nest, value)):
            self._fit(item, v, f"{where}/{k}", out)

    def _structure(self, nest: Any) -> str:
        """A nest written with its inputs' names: `{'img': img, 'pair': [pair/0, pair/1]}`."""
        if isinstance(nest, int):
            return self.names[nest]
        if isinstance(nest, Mapping):
            return "{" + ", ".join(f"{key!r}: {self._structure(v)}" for key, v in nest.items()) + "}"
        if hasattr(nest, "_fields"):
            return f"{type(nest).__name__}(" + ", ".join(
                f"{f}={self._structure(v)}" for f, v in zip(nest._fields, nest)) + ")"
        items = ", ".join(self._structure(v) for v in nest)
        return f"[{items}]" if isinstance(nest, list) else f"({items}{',' if len(nest) == 1 else ''})"

    def _nest_advice(self) -> str:
        if self.arguments is None:
            return ""
        shown = ", ".join(f"{name}={self._structure(nest)}" for name, nest in self.arguments)
        return f"; or one nest per argument, as the function takes them ({shown})"

    def _holds_one(self, given: list[Any] | tuple[Any, ...]) -> bool:
        """Whether a list/tuple passed for the one input is `[x]`: one array or tensor of the
        input's rank, rather than the input's value written as lists."""
        if len(given) != 1 or not isinstance(given[0], (np.ndarray, np.generic, tf.Tensor, tf.Variable)):
            return False
        shape = self.tensors[0].shape
        return shape is None or len(given[0].shape) == len(shape)

    def _by_name(self, given: Mapping[str, Any]) -> list[Any]:
        """By input name, or (an argument being a nest) by argument name with the nest as its
        value: a key that names an input is that input, else one that names an argument that
        argument, else one whose nest opens into inputs' paths (`_flat`)."""
        out: list[Any] = [_UNSET] * len(self.names)
        arguments = dict(self.arguments or [])
        for key, value in given.items():
            # an argument's name that is also the raw name of one of its inputs (TensorFlow names
            # the placeholders of `f(batch)`'s dict `batch`, `batch_1`): a nest given for it is
            # the argument's; an array, that input
            nest = arguments.get(key)
            a_nest = nest is not None and not isinstance(nest, int) and isinstance(value, (Mapping, list, tuple))
            if key in arguments and (key not in self._aliases or key not in self.names and a_nest):
                by_argument: list[Any] = [_UNSET] * len(self.names)
                try:
                    self._fit(arguments[key], value, str(key), by_argument)
                    flat = {self.names[k]: v for k, v in enumerate(by_argument) if v is not _UNSET}
                except _Misfit as e:
                    flat = self._flat({key: value}, "")  # part of a nest, the rest by name
                    if any(name not in self._aliases for name in flat):
                        raise InputError(f"{e}; give it in that structure, or its inputs by name") from None
            else:
                flat = self._flat({key: value}, "")
            for name, v in flat.items():
                k = self._aliases.get(name)
                if k is None:
                    raise InputError(
                        f"unknown input {name!r}: this executor takes {', '.join(self.names)}"
                        + (f" (or, by argument, {', '.join(repr(a) for a in arguments)})" if arguments else "")
                        + "." + suggestion(str(name), [*self.names, *arguments])
                    )
                if out[k] is not _UNSET:
                    raise InputError(f"input {self.names[k]!r} is given twice; give each input once")
                out[k] = v
        missing = [self.names[k] for k, v in enumerate(out) if v is _UNSET]
        if missing:
            inputs = f"missing input{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
            raise InputError(
                f"{inputs}; give {'each' if len(missing) > 1 else 'it'} by name too",
                command_line=f"{inputs}; give {' '.join(f'--input {m}=FILE' for m in missing)} too",
            )
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
