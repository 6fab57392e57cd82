"""The mirrored graph: frozen Op/Tensor/Layer records and the networkx.DiGraph that holds them.

`graphscope.mirror` builds it from a traced function. Every op of the traced function and of
every function nested in it (`PartitionedCall` / `StatefulPartitionedCall` bodies, `While`
cond/body, `If`/`Case` branches) becomes one node, keyed by its canonical name and carrying its `Op` record under the attribute `"op"` and its
output `Tensor` records (dtype, static shape, ...) under `"tensors"`. Edges run
from producer op to consumer op (attribute `"outputs"`: which of the producer's outputs flow).
A body's argument nodes take edges from the producers of the calling op's inputs and its results
feed the calling op, so the graph stays acyclic (loop back-edges are not drawn) and a walk from a
layer's output reaches into custom layers' loops and helper functions.

Graph-level attributes: `tensors` (canonical name -> Tensor), `names` (every accepted spelling
-> canonical tensor or op name), `inputs`, `outputs` (tensor names), `layers` (Layer records),
`model_type` (the traced object's class name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from graphscope._display import RichDisplay

__all__ = ["Layer", "Op", "Selection", "Shape", "Tensor", "shape_text"]

Shape = tuple[int | None, ...] | None


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
    # where the value lives at run time (see execute.Runtime.locate): the enclosing calls and
    # control-flow bodies as (op name in its own graph, role), the op's own name in the innermost
    # graph, its position among that graph's arguments (when it is one), and a tensor that
    # always holds the same value (a call's argument: the call's input; a call's output: the
    # body's result)
    site: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False, compare=False)
    local: str = dataclasses.field(default="", repr=False, compare=False)
    arg: int | None = dataclasses.field(default=None, repr=False, compare=False)
    alias: str | None = dataclasses.field(default=None, repr=False, compare=False)

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


class Selection(RichDisplay, Sequence[Tensor]):
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

    def __rich__(self) -> Any:
        from graphscope import render

        return render.selection_table(self)


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Layer(RichDisplay):
    """One call of a Keras layer (`shared_dense@2` is the second call of `shared_dense`)."""

    name: str
    type: str
    index: int | None  # position in the parent model's `.layers`
    inputs: Selection
    outputs: Selection
    ops: tuple[Op, ...]
    input_structure: Any = dataclasses.field(default=None, repr=False, compare=False)
    keras_layer: Any = dataclasses.field(default=None, repr=False, compare=False)
    # "call": recorded Keras layer calls; "name scope": guessed from op names (a SavedModel
    # traced without its Python classes, where no Keras object exists)
    source: str = "call"

    @property
    def output(self) -> Tensor:
        """The layer's single output tensor."""
        from graphscope.errors import AmbiguousMatchError, TensorNotFoundError

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

    def __rich__(self) -> Any:
        from graphscope import render

        return render.layer_view(self)


def _context(function: tuple[str, ...]) -> str | None:
    return next((f for f in reversed(function) if ":" in f), None)


def shape_text(shape: Shape) -> str:
    """`(None, 4)` -> `[?,4]`; unknown rank -> `[?...]`."""
    if shape is None:
        return "[?...]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
