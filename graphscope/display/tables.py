"""Tables: tensors, a layer call, fetched values, a validation report, a saved run's contents.
Renderers return rich objects; they never print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from graphscope.display.format import context_text, shape_text, sparkline, value_kind
from graphscope.ir.records import Layer

__all__ = ["bundle_table", "layer_view", "results_table", "selection_table", "validation_view"]

# op summaries leave these out: constants are most ops and say little
HIDDEN_OPS = {"Const", "NoOp"}


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def selection_table(selection: Any) -> Table:
    """A table of tensors: name, layer, op type, shape, dtype. A tensor computed inside a loop
    or branch says which under its layer (`body of while`). A model's outputs (`Outputs`) show
    their keys first."""
    keys = getattr(selection, "keys", None)
    title = f"{len(selection)} {'output' if keys is not None else 'tensor'}{'s' if len(selection) != 1 else ''}"
    table = _table(title)
    if keys is not None:
        table.add_column("key", overflow="fold", ratio=2)
    table.add_column("name", overflow="fold", ratio=3)
    table.add_column("layer", overflow="fold", ratio=1)
    table.add_column("op type", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    for k, t in enumerate(selection):
        where = "\n".join(filter(None, [t.layer or "", context_text(t.context)]))
        key = [keys[k]] if keys is not None else []
        table.add_row(*key, t.name, where, t.op_type, shape_text(t.shape), t.dtype)
    return table


def layer_view(layer: Layer) -> Group:
    """One layer call: its inputs and outputs (name, shape, dtype) and what its ops are."""
    table = _table(f"{layer.name} ({layer.type}): {len(layer.ops)} ops")
    table.add_column("", no_wrap=True)
    table.add_column("tensor", overflow="fold", ratio=1)
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    for role, items in (("input", layer.inputs), ("output", layer.outputs)):
        for t in items:
            table.add_row(role, t.name, shape_text(t.shape), t.dtype)
    kinds: dict[str, int] = {}
    for op in layer.ops:
        if op.type not in HIDDEN_OPS:
            kinds[op.type] = kinds.get(op.type, 0) + 1
    top = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    summary = "ops: " + ", ".join(f"{k} ×{n}" for k, n in top[:8]) + (", …" if len(top) > 8 else "")
    return Group(table, Text(summary if kinds else "no ops of its own"))


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
            table.add_row(str(name), value_kind(value), "", "", "", "")
            continue
        if isinstance(value, list):  # one entry per iteration, shapes differing
            present = [np.asarray(v).ravel() for v in value if v is not None]
            a = np.concatenate(present) if present else np.zeros(0)
        else:
            a = np.asarray(value)
        kind = value_kind(value)
        if a.size and a.dtype.kind in "biuf":
            stats = [f"{a.min():.3g}", f"{a.max():.3g}", f"{a.astype(np.float64).mean():.3g}"]
            hist = sparkline(a)
        else:
            stats, hist = ["", "", ""], ""
        table.add_row(str(name), kind, *stats, hist)
    return table


def validation_view(report: Any) -> Group:
    """A validation report (`graphscope.check.validate.Validation`): counts, mismatches, and
    what was skipped grouped by reason."""
    summary = Table.grid(padding=(0, 2))
    summary.add_row("checked", f"{report.checked} ops replayed on their own inputs")
    summary.add_row("vs Keras", f"{report.layers} layer outputs")
    summary.add_row("mismatches", str(len(report.mismatches)), style="bold red" if report.mismatches else "")
    summary.add_row("skipped", str(len(report.skipped)))
    parts: list[Any] = [summary]
    if report.mismatches:
        table = Table(title="mismatches", title_justify="left")
        for column in ("tensor", "check", "difference"):
            table.add_column(column)
        for m in report.mismatches:
            table.add_row(m.name, m.kind, m.detail)
        parts.append(table)
    if report.skipped:
        reasons: dict[str, list[str]] = {}
        for name, reason in report.skipped.items():
            reasons.setdefault(reason, []).append(name)
        table = Table(title="skipped", title_justify="left")
        table.add_column("reason")
        table.add_column("ops", justify="right")
        table.add_column("e.g.")
        for reason, names in reasons.items():
            table.add_row(reason, str(len(names)), names[0])
        parts.append(table)
    parts.append(Text("all agree" if report.ok else "values disagree", style="green" if report.ok else "red"))
    return Group(*parts)


def bundle_table(bundle: Any) -> Table:
    """A saved run's tensors (`graphscope.scope.Bundle`): layout, dtype, entry shape, entries."""
    table = Table(title=repr(bundle).strip("<>"), title_justify="left")
    for column in ("tensor", "layout", "dtype", "entry shape", "entries"):
        table.add_column(column, justify="right" if column == "entries" else "left", overflow="fold")
    for t in bundle.stored:
        shape = "ragged" if t.ragged else shape_text(t.entry_shape)
        table.add_row(t.name, f"per {t.layout}", t.dtype.name, shape, str(len(t)))
    return table
