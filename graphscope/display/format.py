"""How graphscope spells things when it shows them: one spelling of a shape (`[?,16,16,256]`,
`graphscope.ir.records.shape_text`, also in reprs, errors and exports), counts, loop and branch
contexts, histograms, and rich renderables exported to plain text or HTML."""

from __future__ import annotations

import io
import shutil
from typing import Any

import numpy as np
from rich.console import Console

from graphscope.ir.records import shape_text, value_kind

__all__ = ["bars", "context_text", "count", "shape_text", "sparkline", "to_html", "to_text", "value_kind"]

_BARS = "▁▂▃▄▅▆▇█"


def to_text(renderable: Any, *, width: int | None = None) -> str:
    """Render to plain text (no colour), for `str()` and logs: as wide as the terminal (`COLUMNS`
    where set), 100 columns where there is none (a pipe, a log file)."""
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(renderable, crop=False)  # a name longer than the width stays whole (see tables)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()).strip("\n")


def to_html(renderable: Any, *, width: int = 100) -> str:
    """Render to HTML with inline styles, the way rich shows itself in Jupyter."""
    console = Console(width=width, record=True, file=io.StringIO(), force_jupyter=False, color_system="truecolor")
    console.print(renderable, crop=False)
    return console.export_html(
        inline_styles=True,
        code_format='<pre style="white-space:pre;overflow-x:auto;line-height:normal;'
        "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>",
    )


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
    return bars(counts)


def bars(counts: np.ndarray, width: int = 8) -> str:
    """Counts (a histogram already taken) as a row of block characters, at most `width` of them
    (neighbouring bins added together where there are more)."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    if counts.size == 0:
        return ""
    if counts.size > width:
        counts = np.array([part.sum() for part in np.array_split(counts, width)])
    top = counts.max() or 1
    return "".join(_BARS[min(len(_BARS) - 1, int(c * (len(_BARS) - 1) / top + 0.999))] if c else " " for c in counts)


def count(n: int) -> str:
    """12345 -> '12.3K'; small counts exact.

    >>> count(42), count(12345), count(23_500_000)
    ('42', '12.3K', '23.5M')
    """
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1e3:.1f}K"
    return f"{n / 1e6:.1f}M"
