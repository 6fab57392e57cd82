"""rich renderables for graphscope objects. Renderers return objects; they never print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

__all__ = ["results_table", "selection_table", "to_text"]

_BARS = "▁▂▃▄▅▆▇█"


def to_text(renderable: Any, *, width: int = 100) -> str:
    """Render to plain text (no colour), for `str()` and logs."""
    console = Console(width=width, color_system=None, record=True, file=_Null())
    console.print(renderable)
    return console.export_text().rstrip("\n")


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _shape(shape: Any) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def selection_table(selection: Any) -> Table:
    """A table of tensors: name, layer, op type, shape, dtype."""
    table = Table(title=f"{len(selection)} tensor{'s' if len(selection) != 1 else ''}", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("layer", overflow="fold")
    table.add_column("op type")
    table.add_column("shape")
    table.add_column("dtype")
    for t in selection:
        table.add_row(t.name, t.layer or "", t.op_type, _shape(t.shape), t.dtype)
    return table


def sparkline(values: np.ndarray, bins: int = 8) -> str:
    """A histogram of `values` as a row of block characters."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return ""
    counts, _ = np.histogram(flat, bins=bins)
    top = counts.max() or 1
    return "".join(_BARS[min(len(_BARS) - 1, int(c * (len(_BARS) - 1) / top + 0.999))] if c else " " for c in counts)


def results_table(results: Mapping[str, Any]) -> Table:
    """A table of fetched values: name, shape, dtype, min/max/mean and a histogram."""
    table = Table(title=f"{len(results)} value{'s' if len(results) != 1 else ''}", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    for col in ("min", "max", "mean"):
        table.add_column(col, justify="right")
    table.add_column("histogram")
    for name, value in results.items():
        a = np.asarray(value)
        if a.size and a.dtype.kind in "biuf":
            stats = [f"{a.min():.4g}", f"{a.max():.4g}", f"{a.astype(np.float64).mean():.4g}"]
            hist = sparkline(a)
        else:
            stats, hist = ["", "", ""], ""
        table.add_row(str(name), _shape(a.shape), str(a.dtype), *stats, hist)
    return table
