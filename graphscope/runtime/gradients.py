"""Gradients: `GradientExecutor`, what `wrt` names (inputs, tensors, variables by path) and the
step a compiled gradient function builds on the values it imports (`Gradient.step`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.errors import AmbiguousMatchError, ArgumentError, DisconnectedError, TensorNotFoundError, UnsupportedFetchError, suggestion
from graphscope.ir.records import Results, Tensor
from graphscope.runtime import edit as editing
from graphscope.runtime.executor import Runner
from graphscope.runtime.expose import read_only

if TYPE_CHECKING:
    from graphscope.backend.trace import Traced
    from graphscope.runtime.compile import Program, Pruned
    from graphscope.runtime.runtime import Runtime

__all__ = ["BoundVariables", "Gradient", "GradientExecutor", "bound_variables", "resolve_wrt"]


class GradientExecutor(Runner):
    """The gradient of `sum(target(value of of))` (`target` defaults to the value itself) with
    respect to each entry of `wrt`, as a function of the inputs.

    `wrt` entries are model inputs, tensors outside loop bodies and branches (pre-activations
    inside layers included; gradients flow through loops, branches and nested functions to
    them) and variables (by path, `conv1/kernel`). Called like an `Executor`, it returns
    `{entry: gradient}` keyed as given, each gradient shaped like its entry. Built once (one
    backward pass for all entries); no weight moves.
    """

    def __init__(
        self,
        runtime: Runtime,
        of: Tensor,
        wrt: Sequence[tuple[str, Tensor | str]],
        feeds: Sequence[tuple[str, Tensor]],
        *,
        target: Any = None,
        edits: Sequence[editing.Edit] = (),
        arguments: Any = None,
    ) -> None:
        self.of = of
        self.wrt: list[str] = [k for k, _ in wrt]
        self.target = target
        self._setup(feeds, arguments)
        if of.context:
            raise UnsupportedFetchError(
                f"cannot take the gradient of {of.name!r}: it is computed inside {of.context}, where it has a value "
                "per iteration (or none when the branch does not run); take it of a tensor outside loops and "
                "branches (the loop's or branch's output)"
            )
        if not (tf.as_dtype(of.dtype).is_floating or tf.as_dtype(of.dtype).is_complex) and target is None:
            raise ArgumentError(
                f"cannot differentiate {of.name!r}: it is {of.dtype}; take the gradient of a floating-point tensor"
            )
        editing.check_relevant(runtime.graph, edits, [of])
        gradient = Gradient(of, [w for _, w in wrt], target, self.wrt)
        compiled = runtime.program.gradient(self.signature.tensors, gradient, edits)
        self._adopt(runtime, compiled)

    def __repr__(self) -> str:
        return f"<GradientExecutor d {self.of.name} / d {', '.join(self.wrt)} from {', '.join(self.inputs) or 'nothing'}>"

    def __call__(self, *inputs: Any) -> Results:
        # zero-copy read-only views, as executors' results (a copy of every layer output's
        # gradient would cost a third of the backward pass); a gradient that Grappler reduces to
        # a variable's value stays as it was when the variable is assigned (TensorFlow copies a
        # variable's buffer on write while another tensor shares it; tested)
        outs = self._outputs(inputs)
        return Results((key, read_only(np.asarray(value))) for key, value in zip(self.wrt, outs))


# --------------------------------------------------------------------------- what wrt names


@dataclasses.dataclass(frozen=True)
class BoundVariables:
    """The variables the traced function reads, each under one key, with the names of the
    executable graph's placeholders its handle is bound to.

    A variable's key is its Keras path (`net/encoder/dense/kernel`) where the traced model
    holds it, else its TensorFlow name (`dense/kernel`). The two differ where Keras 3 builds a
    subclassed model's layers during its first call: TensorFlow then names every one of their
    variables after the model alone (`net/kernel` for each Dense's kernel), so a TensorFlow
    name may be shared by several variables, and is then ambiguous: where none of them has a
    Keras path (a SavedModel's), they are keyed `net/kernel#0`, `net/kernel#1`, ... in the order
    the function holds them. A variable object (Keras or `tf.Variable`) is found by its handle,
    never by its name.
    """

    placeholders: dict[str, list[str]]  # key -> the placeholders bound to that variable's handle
    by_handle: dict[int, str]  # id of a handle the traced function holds -> its key
    aliases: dict[str, list[str]]  # a TensorFlow name that is not a key -> the keys of the variables it names

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.placeholders or name in self.aliases)

    def __iter__(self) -> Any:
        return iter([*self.placeholders, *self.aliases])

    def __getitem__(self, name: str) -> list[str]:
        """The placeholders of every variable `name` names (a key names one)."""
        keys = [name] if name in self.placeholders else self.aliases.get(name, [])
        if not keys:
            raise TensorNotFoundError(f"the traced function does not read variable {name!r}." + suggestion(name, self))
        return [p for k in keys for p in self.placeholders[k]]

    def key(self, name: str) -> str:
        """The key of the variable `name` means (a key, or a TensorFlow name that only one
        variable has); AmbiguousMatchError for a name several variables share."""
        if name in self.placeholders:
            return name
        keys = self.aliases.get(name)
        if not keys:
            raise TensorNotFoundError(f"the traced function does not read variable {name!r}." + suggestion(name, self))
        if len(keys) > 1:
            raise AmbiguousMatchError(
                f"{name!r} is the TensorFlow name of {len(keys)} variables ({', '.join(keys[:6])}"
                f"{', ...' if len(keys) > 6 else ''}); give the variable itself (the model's weight, or one of "
                "scope.function.graph.variables) or its key"
            )
        return keys[0]

    def key_of(self, variable: Any) -> str | None:
        """The key of a Keras 3 variable or a `tf.Variable` the traced function reads, else None."""
        value = getattr(variable, "value", None)
        if not isinstance(variable, tf.Variable) and isinstance(value, tf.Variable):  # a Keras 3 Variable
            variable = value
        handle = getattr(variable, "handle", None) if isinstance(variable, tf.Variable) else None
        return None if handle is None else self.by_handle.get(id(handle))


def bound_variables(traced: Traced, program: Program) -> BoundVariables:
    """Each variable the traced function reads, keyed by its Keras path where the traced model
    holds it, else by its TensorFlow name (`conv1/kernel`), with the names of the executable
    graph's placeholders its handle is bound to."""
    bound: dict[int, list[str]] = {}
    for placeholder, handle in program.captures.items():
        bound.setdefault(id(handle), []).append(placeholder)
    keras_paths = {}
    for w in getattr(traced.model, "weights", None) or ():
        value = getattr(w, "value", None)
        if isinstance(getattr(w, "path", None), str) and isinstance(value, tf.Variable):
            keras_paths[id(value.handle)] = w.path
    variables = [v for v in traced.function.graph.variables
                 if getattr(v, "handle", None) is not None and id(v.handle) in bound]
    names: dict[str, list[int]] = {}
    for v in variables:
        names.setdefault(v.name.removesuffix(":0"), []).append(id(v.handle))
    placeholders: dict[str, list[str]] = {}
    by_handle: dict[int, str] = {}
    for v in variables:
        name = v.name.removesuffix(":0")
        handle = id(v.handle)
        if handle in by_handle:
            continue
        key = keras_paths.get(handle, name)
        if key in placeholders or (key == name and len(set(names[name])) > 1):
            key = f"{name}#{len([k for k in placeholders if k == name or k.startswith(name + '#')])}"
        by_handle[handle] = key
        placeholders[key] = bound[handle]
    aliases = {name: list(dict.fromkeys(by_handle[h] for h in handles))
               for name, handles in names.items() if name not in placeholders}
    return BoundVariables(placeholders, by_handle, aliases)


def resolve_wrt(runtime: Runtime, wrt: Any) -> list[tuple[str, Tensor | str]]:
    """`wrt` as (key as given, Tensor or the variable's bound placeholders joined by spaces)."""
    items = list(wrt) if isinstance(wrt, (list, tuple)) else [wrt]
    if not items:
        raise ArgumentError("wrt is empty: give the tensors, inputs or variables to differentiate with respect to")
    variables = runtime.variables
    out: list[tuple[str, Tensor | str]] = []
    for item in items:
        if _is_variable(item):
            key = variables.key_of(item)
            if key is None:
                raise TensorNotFoundError(
                    f"the traced function does not read variable {_variable_label(item)!r}."
                    + suggestion(_variable_label(item), variables)
                )
            out.append((key, " ".join(variables.placeholders[key])))
            continue
        if isinstance(item, str) and item.removesuffix(":0") in variables:
            key = variables.key(item.removesuffix(":0"))
            out.append((item.removesuffix(":0"), " ".join(variables.placeholders[key])))
            continue
        try:
            # what a gradient is taken with respect to is varied, like a feed: a name that is both
            # an input's and an output key's (keras-hub's `token_ids`) means the input
            pairs = runtime.graph.resolve_pairs(item, feeding=True)
        except TensorNotFoundError:
            if not isinstance(item, str):
                raise
            names = [*variables, *runtime.graph.input_names, *runtime.graph.tensors]
            raise TensorNotFoundError(
                f"no tensor, input or variable named {item!r}." + suggestion(item, names)
            ) from None
        if len(pairs) != 1:
            raise ArgumentError(
                f"{item!r} names {len(pairs)} tensors ({', '.join(t.name for _, t in pairs[:5])}); a gradient "
                "is taken with respect to one tensor per entry of wrt: list them"
            )
        (key, tensor), = pairs
        if not (tf.as_dtype(tensor.dtype).is_floating or tf.as_dtype(tensor.dtype).is_complex):
            raise ArgumentError(
                f"cannot differentiate with respect to {tensor.name!r}: it is {tensor.dtype}, and gradients "
                "are defined for floating-point tensors only"
            )
        out.append((item if isinstance(item, str) else key, tensor))
    return out


def _is_variable(item: Any) -> bool:
    """Whether `item` is a `tf.Variable` or a Keras 3 Variable (which holds one)."""
    return isinstance(item, tf.Variable) or (
        isinstance(getattr(item, "path", None), str) and isinstance(getattr(item, "value", None), tf.Variable))


def _variable_label(item: Any) -> str:
    """A variable's Keras path, or its TensorFlow name."""
    path = getattr(item, "path", None)
    return path if isinstance(path, str) else getattr(item, "name", repr(item)).removesuffix(":0")


# --------------------------------------------------------------------------- the backward step


@dataclasses.dataclass(frozen=True)
class Gradient:
    """What a compiled gradient function returns: the gradient of `sum(target(value of of))`
    with respect to each entry of `wrt`: a tensor outside loops and branches (fed or computed),
    or the name of a placeholder bound to a variable (`Program.captures`; several for one
    variable are given as one entry joined by spaces, and their gradients are added); `labels`
    name the entries in errors. With `reduce` (`fn(gradients, values) -> tensors`: a gradient is
    None for an entry no gradient reaches, instead of an error; `values` are the entries' own
    values, None for variables), the gradients are reduced inside the function and what it
    returns comes back instead of them (`numerics`)."""

    of: Tensor
    wrt: list[Tensor | str]
    target: Any
    labels: list[str]
    reduce: Any = None

    @property
    def tensors(self) -> list[Tensor]:
        """The entries of `wrt` that are tensors (located like fetches)."""
        return [w for w in self.wrt if isinstance(w, Tensor)]

    def step(self, program: Program, fetch_names: list[str], pruned: Pruned) -> tuple[list[str], Any]:
        """The tensors a gradient function imports (`of`, then every computed `wrt` tensor) and
        the step that builds the gradient from them (`then` of `compile._function`).

        Raises:
            DisconnectedError: no gradient flows from `of` to some entry of `wrt`.
        """
        of, target, labels = self.of, self.target, self.labels
        captures, kept = pruned.captures, pruned.kept
        args = {where: j for j, (where, _, _) in enumerate(pruned.fed)}  # fed tensor -> function argument
        outputs = [fetch_names[0]]
        sources: list[tuple[str, Any]] = []  # per wrt: ("arg", j) | ("out", k) | ("captures", (names, copies' k))
        names = iter(fetch_names[1:])

        def unreachable(label: str) -> DisconnectedError:
            return DisconnectedError(
                f"no gradient flows from {of.name!r} to {label!r}: it is not upstream of {of.name!r} (or a feed "
                f"cuts it off); take the gradient with respect to something {of.name!r} is computed from"
            )

        for w, label in zip(self.wrt, labels):
            if isinstance(w, str):
                bound = [f"{n}:0" for n in w.split(" ") if f"{n}:0" in captures]
                if not bound:
                    raise unreachable(label)
                # a variable the call writes and reads back is read through its private copy
                copies = dict.fromkeys(f"{program.private[n]}:0" for n in w.split(" ") if program.private.get(n) in kept)
                sources.append(("captures", (bound, list(range(len(outputs), len(outputs) + len(copies))))))
                outputs.extend(copies)
                continue
            where = next(names)
            fed_but_unused = where in pruned.placeholders and where not in args
            pruned_away = where not in pruned.placeholders and where.partition(":")[0] not in kept
            if (fed_but_unused or pruned_away) and self.reduce is not None:
                sources.append(("none", None))
                continue
            if fed_but_unused or pruned_away:
                raise unreachable(label)
            if where in args:
                sources.append(("arg", args[where]))
            else:
                sources.append(("out", len(outputs)))
                outputs.append(where)

        def then(values: list[tf.Tensor], arguments: list[tf.Tensor], bound: dict[str, tf.Tensor]) -> list[tf.Tensor]:
            value = values[0]
            if target is not None:
                value = tf.convert_to_tensor(target(value))
            if not (value.dtype.is_floating or value.dtype.is_complex):
                raise ArgumentError(
                    f"cannot differentiate {of.name!r}{' (after target)' if target is not None else ''}: it is "
                    f"{value.dtype.name}; take the gradient of a floating-point tensor"
                )
            total = tf.reduce_sum(value)
            xs, spans = [], []
            for kind, where in sources:
                if kind == "none":
                    spans.append((len(xs), 0))
                elif kind == "captures":
                    placeholders, copies = where
                    spans.append((len(xs), len(placeholders) + len(copies)))
                    xs.extend(bound[n] for n in placeholders)
                    xs.extend(values[k] for k in copies)
                else:
                    spans.append((len(xs), 1))
                    xs.append(arguments[where] if kind == "arg" else values[where])
            try:
                # the calls TensorFlow does not inline (XLA helpers) are differentiated by a replay;
                # the bodies rebuilt to differentiate loops and branches know their variables' shapes
                with program.custom_gradients.active(), _tf.calls_replayed(), _tf.bodies_typed():
                    grads = tf.gradients(total, xs) if xs else []
            except LookupError as e:
                raise UnsupportedFetchError(
                    f"cannot differentiate {of.name!r}: {e}; take the gradient of a tensor before that op, "
                    "or with respect to one after it (and please report this)"
                ) from None
            out = []
            for label, (start, count) in zip(labels, spans):
                parts = [tf.convert_to_tensor(g) for g in grads[start:start + count] if g is not None]
                if self.reduce is not None:
                    out.append(tf.add_n(parts) if len(parts) > 1 else parts[0] if parts else None)
                    continue
                if not parts:
                    raise DisconnectedError(
                        f"no gradient flows from {of.name!r} to {label!r}: it is not upstream of it, or every path "
                        "between them goes through ops without a gradient (argmax, NMS indices, casts to integers)"
                    )
                out.append(tf.add_n(parts) if len(parts) > 1 else parts[0])
            if self.reduce is not None:  # with the entries' own values (None for variables, entries not computed)
                forward = [xs[start] if kind in ("arg", "out") else None for (kind, _), (start, _) in zip(sources, spans)]
                return list(self.reduce(out, forward))
            return out

        return outputs, then
