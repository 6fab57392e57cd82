"""What a model is, as data: frozen Op and Tensor records, Layer calls, Selections of tensors
and the Results of running some. Pure data: no TensorFlow, and no display code (views are
registered by `graphscope.display`, see `graphscope.ir.views`).

`graphscope.backend.mirror` builds them from a traced function, in topological order, and a
`networkx.DiGraph` from them (see `graphscope.ir.graph`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from graphscope.errors import AmbiguousMatchError, TensorNotFoundError, key_suggestion
from graphscope.ir import views
from graphscope.ir.views import Shown

__all__ = ["HANDLE_DTYPES", "Layer", "Op", "Outputs", "Results", "Selection", "Shape", "Tensor", "shape_text", "value_kind"]

Shape = tuple[int | None, ...] | None
# dtypes of tensors that are handles to state (variables, lists, optionals), not values
HANDLE_DTYPES = ("resource", "variant")


@dataclasses.dataclass(frozen=True, slots=True)
class Tensor:
    """One output of one op: `block4_conv3/BiasAdd:0`."""

    name: str
    raw_name: str
    op: str
    op_type: str
    index: int
    dtype: str
    shape: Shape
    layer: str | None
    function: tuple[str, ...] = ()

    @property
    def is_handle(self) -> bool:
        """A handle to state (a variable, a TensorList, an Optional): it has no value to fetch."""
        return self.dtype in HANDLE_DTYPES

    @property
    def context(self) -> str | None:
        """The innermost loop or branch computing this tensor (`'ROI/map/while:body'`), or None."""
        return _context(self.function)

    def __repr__(self) -> str:
        where = f" layer={self.layer}" if self.layer else ""
        return f"<Tensor {self.name} {self.op_type} {self.dtype}{shape_text(self.shape)}{where}>"



@dataclasses.dataclass(frozen=True, slots=True)
class Op:
    """One op of the mirrored graph."""

    name: str
    raw_name: str
    type: str
    layer: str | None
    function: tuple[str, ...]
    inputs: tuple[str, ...]  # tensor names this op depends on (body args: the call's input)
    outputs: tuple[str, ...]

    @property
    def context(self) -> str | None:
        """The innermost loop or branch running this op (`'ROI/map/while:body'`), or None."""
        return _context(self.function)

    def __repr__(self) -> str:
        return f"<Op {self.name} {self.type}>"


class Selection(Shown, Sequence[Tensor]):
    """A read-only, ordered sequence of Tensors (topological order, then name)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Tensor] = ()) -> None:
        self._items = tuple(items)

    @overload
    def __getitem__(self, key: int) -> Tensor: ...
    @overload
    def __getitem__(self, key: slice) -> Selection: ...
    def __getitem__(self, key: int | slice) -> Tensor | Selection:
        if isinstance(key, slice):
            return Selection(self._items[key])
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selection) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    @property
    def names(self) -> list[str]:
        """Canonical tensor names, in order."""
        return [t.name for t in self._items]

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:3]) + (", ..." if len(self) > 3 else "")
        return f"<Selection {len(self)} tensor{'s' if len(self) != 1 else ''}: {shown}>"


class Outputs(Selection):
    """A model's output tensors with their keys in the structure it returns (`detection_boxes`,
    `features/p3`, `0`; `""` for a single tensor): a Selection whose table shows the keys."""

    __slots__ = ("keys",)

    def __init__(self, items: Iterable[Tensor] = (), keys: Iterable[str] = ()) -> None:
        super().__init__(items)
        self.keys: tuple[str, ...] = tuple(keys)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={t.name}" if k else t.name for k, t in list(zip(self.keys, self))[:3])
        return f"<Outputs {len(self)}: {shown}{', ...' if len(self) > 3 else ''}>"


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Layer(Shown):
    """One call of a Keras layer (`shared_dense@2` is the second call of `shared_dense`)."""

    name: str
    type: str
    index: int | None  # position in the parent model's `.layers`
    inputs: Selection
    outputs: Selection
    ops: tuple[Op, ...]
    # the call's arguments, tensors as their names: positional (a tuple) and keyword (a dict)
    input_structure: Any = dataclasses.field(default=None, repr=False, compare=False)
    input_keywords: Any = dataclasses.field(default=None, repr=False, compare=False)
    keras_layer: Any = dataclasses.field(default=None, repr=False, compare=False)
    # "call": recorded Keras layer calls; "name scope": guessed from op names (a SavedModel
    # traced without its Python classes, where no Keras object exists)
    source: str = "call"

    @property
    def output(self) -> Tensor:
        """The layer's single output tensor."""
        if len(self.outputs) == 1:
            return self.outputs[0]
        if not self.outputs:
            raise TensorNotFoundError(
                f"layer {self.name!r} has no output tensor in the traced graph "
                "(it was not called while tracing)"
            )
        raise AmbiguousMatchError(
            f"layer {self.name!r} has {len(self.outputs)} outputs: use .outputs "
            f"({', '.join(self.outputs.names)})"
        )

    def __repr__(self) -> str:
        return f"<Layer {self.name} {self.type}: {len(self.ops)} ops, {len(self.outputs)} output(s)>"


class Results(Shown, dict):  # type: ignore[type-arg]
    """`{name: numpy.ndarray}` from one execution; printing it shows a table of shapes and value
    statistics. A value is None for a branch that did not run, and a list for a loop whose
    iterations' values differ in shape. `per_iteration` names the values computed inside loops
    (their first axis, or their list, is the iteration)."""

    def __init__(self, *args: Any, per_iteration: Any = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.per_iteration: frozenset[str] = frozenset(per_iteration)

    def plot(self, name: str, *, sample: int = 0, max_channels: int = 64, kind: str | None = None) -> Any:
        """A matplotlib `Figure` of the value at `name`: a grid of feature maps for image-like
        values (`[batch, h, w, channels]`: axis k shows channel k of `sample`, up to
        `max_channels`), one heatmap per head for attention-shaped values (`[batch, heads,
        queries, keys]`, rows summing to one), a heatmap for 2-D values, a line (or bars, for
        a few entries) for 1-D, one row per iteration for values computed inside loops. `kind`
        forces one: "feature_maps", "attention", "heatmap", "line", "iterations". Needs
        matplotlib (`pip install "tf-graphscope[plot]"`)."""
        return views.plot(self[name], name=str(name), sample=sample, max_channels=max_channels, kind=kind,
                          per_iteration=name in self.per_iteration)

    def __missing__(self, name: Any) -> Any:
        if isinstance(name, Tensor) and dict.__contains__(self, name.name):  # the Tensor a value was fetched by
            return dict.__getitem__(self, name.name)
        label = name.name if isinstance(name, Tensor) else str(name)
        raise TensorNotFoundError(f"no value named {label!r} in these results." + key_suggestion(label, self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k} {value_kind(v)}" for k, v in list(self.items())[:2])
        return f"<Results {len(self)} value{'s' if len(self) != 1 else ''}: {shown}{', ...' if len(self) > 2 else ''}>"


def _context(function: tuple[str, ...]) -> str | None:
    return next((f for f in reversed(function) if ":" in f), None)


def shape_text(shape: Shape) -> str:
    """The one spelling of a shape, everywhere graphscope shows one: `(None, 4)` -> `[?,4]`;
    a scalar -> `[]`; unknown rank -> `[?...]`.

    >>> shape_text((None, 16, 16, 256)), shape_text(()), shape_text(None)
    ('[?,16,16,256]', '[]', '[?...]')
    """
    if shape is None:
        return "[?...]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def value_kind(value: Any) -> str:
    """What a result holds, in a few characters: `float32[2,16]`, `list[3] of int32` (one entry
    per iteration, shapes differing) or `None (not run)` (a branch that did not run)."""
    if value is None:
        return "None (not run)"
    if isinstance(value, list):
        present = [np.asarray(v) for v in value if v is not None]
        return f"list[{len(value)}] of {present[0].dtype if present else np.float64().dtype}"
    a = np.asarray(value)
    return f"{a.dtype}{shape_text(a.shape)}"
