"""rich renderables for graphscope objects. Renderers return objects; they never print."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

__all__ = ["results_table", "selection_table", "to_text"]

_BARS = "▁▂▃▄▅▆▇█"


def to_text(renderable: Any, *, width: int = 100) -> str:
    """Render to plain text (no colour), for `str()` and logs."""
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()).strip("\n")


def _shape(shape: Any) -> str:
    """`(None, 4)` -> `(?, 4)`; unknown rank -> `?`."""
    if shape is None:
        return "?"
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def selection_table(selection: Any) -> Table:
    """A table of tensors: name, layer, op type, shape, dtype. A tensor computed inside a loop
    or branch says which under its layer (`body of while`)."""
    table = _table(f"{len(selection)} tensor{'s' if len(selection) != 1 else ''}")
    table.add_column("name", overflow="fold", ratio=3)
    table.add_column("layer", overflow="fold", ratio=1)
    table.add_column("op type", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    for t in selection:
        where = "\n".join(filter(None, [t.layer or "", context_text(t.context)]))
        table.add_row(t.name, where, t.op_type, _shape(t.shape), t.dtype)
    return table


def context_text(context: str | None) -> str:
    """`'ROI/map/while:body'` -> `'body of while'` (the tensor's name shows the rest)."""
    if not context:
        return ""
    op, _, role = context.rpartition(":")
    return f"{role} of {op.rpartition('/')[2]}"


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
    """A table of fetched values: name, dtype[shape], min/max/mean and a histogram."""
    table = _table(f"{len(results)} value{'s' if len(results) != 1 else ''}")
    table.add_column("name", overflow="fold", ratio=1)
    table.add_column("value", no_wrap=True)
    for col in ("min", "max", "mean"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("histogram", no_wrap=True)
    for name, value in results.items():
        if value is None:  # a branch that did not run
            table.add_row(str(name), "None (not run)", "", "", "", "")
            continue
        if isinstance(value, list):  # one entry per iteration, shapes differing
            present = [np.asarray(v) for v in value if v is not None]
            a = np.concatenate([v.ravel() for v in present]) if present else np.zeros(0)
            dtype = present[0].dtype if present else a.dtype
            kind = f"list[{len(value)}] of {dtype}"
        else:
            a = np.asarray(value)
            kind = f"{a.dtype}[{','.join(map(str, a.shape))}]"
        if a.size and a.dtype.kind in "biuf":
            stats = [f"{a.min():.3g}", f"{a.max():.3g}", f"{a.astype(np.float64).mean():.3g}"]
            hist = sparkline(a)
        else:
            stats, hist = ["", "", ""], ""
        table.add_row(str(name), kind, *stats, hist)
    return table
