"""Where non-finite values start: the records of a numerics check (`Scope.numerics`), pure data.

`graphscope.runtime.numerics` fills them from counts reduced inside the graph; `graphscope.display`
registers their table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from graphscope.ir.records import Selection, Tensor
from graphscope.ir.views import Shown

__all__ = ["Counts", "Numerics", "Origin"]


@dataclasses.dataclass(frozen=True, slots=True)
class Counts:
    """How many of a tensor's values are NaN, +Inf and -Inf (over every iteration of the loops
    computing it), out of `size`; `min` and `max` of its finite values (None when it has none, or
    when they were not measured)."""

    nan: int
    posinf: int
    neginf: int
    size: int
    min: float | None = None
    max: float | None = None

    @property
    def finite(self) -> bool:
        """Whether every value is finite."""
        return not (self.nan or self.posinf or self.neginf)

    def __repr__(self) -> str:
        return f"<Counts nan={self.nan} +inf={self.posinf} -inf={self.neginf} of {self.size}>"


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """One origin: a tensor holding non-finite values while its own inputs are all finite (for a
    backward check: its gradient non-finite while the gradients reaching it are finite).

    `iteration` is its first such iteration in each enclosing loop, outermost first (`()` outside
    loops); `counts` its counts (of the gradient, backward) at that iteration; `inputs` its op's
    inputs with their finite `Counts` (min and max) at that iteration; `chain` the tensors from
    the nearest layer boundary (a tensor of another layer, or an input) down to it."""

    tensor: Tensor
    iteration: tuple[int, ...]
    counts: Counts
    inputs: tuple[tuple[str, Counts | None], ...]
    chain: tuple[str, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Numerics(Shown):
    """What `Scope.numerics` found.

    - `ok`: no NaN or Inf anywhere it looked;
    - `first`: the Tensor where non-finite values start (the first origin in execution order;
      for `backward`, the first met walking from `of` toward the inputs), None when ok;
    - `iteration`: `first`'s iteration index in each enclosing loop, outermost first;
    - `origins`: every origin (their consequences downstream are not origins), in order;
    - `bad`: every tensor holding non-finite values (backward: whose gradient does), with its
      `Counts`;
    - `details`: one `Origin` per origin, in `origins`' order (the table shows them);
    - `direction`: "forward" or "backward" (what was examined); `of`: the tensor `backward`
      named; `examined`: False when `backward` was asked but the forward pass was already
      non-finite (the report is then the forward one);
    - `checked`: how many tensors were checked.
    """

    direction: str
    origins: Selection
    details: tuple[Origin, ...]
    bad: Mapping[str, Counts]
    checked: int
    of: Tensor | None = None
    examined: bool = True

    @property
    def ok(self) -> bool:
        """No NaN or Inf in any tensor checked."""
        return not self.bad

    @property
    def first(self) -> Tensor | None:
        """Where non-finite values start (the first origin), or None."""
        return self.details[0].tensor if self.details else None

    @property
    def iteration(self) -> tuple[int, ...]:
        """`first`'s iteration in each enclosing loop, outermost first (`()` outside loops)."""
        return self.details[0].iteration if self.details else ()

    def __repr__(self) -> str:
        what = "gradients" if self.direction == "backward" else "tensors"
        if self.ok:
            return f"<Numerics ok: {self.checked} {what} finite>"
        where = f", first {self.first.name}" if self.first is not None else ""
        note = " (backward not examined)" if not self.examined else ""
        return f"<Numerics {len(self.bad)} of {self.checked} {what} non-finite{where}{note}>"
