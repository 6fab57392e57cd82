"""Tables: tensors, a layer call, fetched values, a validation report, a saved run's contents.
Renderers return rich objects; they never print."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from rich import box
from rich.console import Console, ConsoleOptions, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from graphscope.display.format import bars, context_text, count, shape_text, sparkline, value_kind
from graphscope.ir.records import Layer

__all__ = ["Column", "WholeNames", "bundle_table", "comparison_table", "layer_view", "numerics_view", "results_table",
           "selection_table", "statistics_view", "tensor_stats_view", "validation_view"]

# op summaries leave these out: constants are most ops and say little
HIDDEN_OPS = {"Const", "NoOp"}


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of a `WholeNames` table. `name`: its cells are names a user copies (tensor
    names): never folded, never cut. `fold`: its cells may fold over lines (layer paths,
    reasons). `drop`: when the table is too narrow, columns give way in increasing `drop`
    order (0: never)."""

    header: str
    name: bool = False
    fold: bool = False
    drop: int = 0
    justify: str = "left"
    width: int = 24  # a folding column's widest


class WholeNames:
    """A table that never splits a name across lines, at any width.

    At render time it takes the console's width: when the longest name fits on one line beside
    the other columns, it is an ordinary table; when not, the droppable columns give way (lowest
    `drop` first: histograms, then statistics, ...); when even then it does not fit, each row
    becomes its name on a line of its own (longer than the terminal, if it must: never cut),
    with the other values on the line below, indented."""

    def __init__(self, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                 *, table: Any = _table) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self._make = table

    def table(self, keep: Sequence[int]) -> Table:
        """The ordinary table of the columns at `keep`."""
        t = self._make(self.title)
        for k in keep:
            c = self.columns[k]
            if c.name:
                t.add_column(c.header, no_wrap=True, overflow="ignore", justify=c.justify)
            elif c.fold:
                t.add_column(c.header, overflow="fold", justify=c.justify, max_width=c.width)
            else:
                t.add_column(c.header, no_wrap=True, justify=c.justify)
        for row in self.rows:
            t.add_row(*(row[k] for k in keep))
        return t

    def layout(self, console: Console, options: ConsoleOptions) -> list[int] | None:
        """The columns shown at this width, or None for the name-per-line layout."""
        keep = list(range(len(self.columns)))
        levels = sorted({c.drop for c in self.columns if c.drop})
        natural = options.update(width=10_000, max_width=10_000)
        for level in [0, *levels]:
            keep = [k for k in keep if not (level and self.columns[k].drop == level)]
            # the table's natural width: when it fits, rich draws every column at its full width
            if Measurement.get(console, natural, self.table(keep)).maximum <= options.max_width:
                return keep
        return None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Any]:
        keep = self.layout(console, options)
        if keep is not None:
            yield self.table(keep)
            return
        if self.title:
            yield Text(self.title)
        names = [k for k, c in enumerate(self.columns) if c.name]
        others = [k for k, c in enumerate(self.columns) if not c.name]
        for row in self.rows:
            for k in names:
                if row[k]:
                    yield Text(row[k], no_wrap=True, overflow="ignore")
            rest = "  ".join(row[k] for k in others if row[k])
            if rest:
                yield Text("    " + rest.replace("\n", ", "))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        natural = Measurement.get(console, options.update(width=10_000, max_width=10_000), self.table(range(len(self.columns))))
        return natural.clamp(max_width=options.max_width)


def selection_table(selection: Any) -> WholeNames:
    """A table of tensors: name, layer, op type, shape, dtype. A tensor computed inside a loop
    or branch says which under its layer (`body of while`). A model's outputs (`Outputs`) show
    their keys first. Names are never split: narrow, dtype, op type, then layer give way."""
    keys = getattr(selection, "keys", None)
    title = f"{len(selection)} {'output' if keys is not None else 'tensor'}{'s' if len(selection) != 1 else ''}"
    columns = [Column("key", name=True)] if keys is not None else []
    columns += [Column("name", name=True), Column("layer", fold=True, drop=3), Column("op type", drop=2),
                Column("shape"), Column("dtype", drop=1)]
    rows = []
    for k, t in enumerate(selection):
        where = "\n".join(filter(None, [t.layer or "", context_text(t.context)]))
        key = [keys[k]] if keys is not None else []
        rows.append([*key, t.name, where, t.op_type, shape_text(t.shape), t.dtype])
    return WholeNames(title, columns, rows)


def layer_view(layer: Layer) -> Group:
    """One layer call: its inputs and outputs (name, shape, dtype) and what its ops are."""
    rows = [[role, t.name, shape_text(t.shape), t.dtype]
            for role, items in (("input", layer.inputs), ("output", layer.outputs)) for t in items]
    table = WholeNames(f"{layer.name} ({layer.type}): {len(layer.ops)} ops",
                       [Column(""), Column("tensor", name=True), Column("shape"), Column("dtype", drop=1)], rows)
    kinds: dict[str, int] = {}
    for op in layer.ops:
        if op.type not in HIDDEN_OPS:
            kinds[op.type] = kinds.get(op.type, 0) + 1
    top = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    summary = "ops: " + ", ".join(f"{k} ×{n}" for k, n in top[:8]) + (", …" if len(top) > 8 else "")
    return Group(table, Text(summary if kinds else "no ops of its own"))


def results_table(results: Mapping[str, Any]) -> WholeNames:
    """A table of fetched values: name, dtype[shape], min/max/mean and a histogram. Names are
    never split: narrow, the histogram, then the statistics give way."""
    rows = []
    for name, value in results.items():
        if value is None:  # a branch that did not run
            rows.append([str(name), value_kind(value), "", "", "", ""])
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
        rows.append([str(name), kind, *stats, hist])
    columns = [Column("name", name=True), Column("value"),
               *(Column(c, drop=2, justify="right") for c in ("min", "max", "mean")), Column("histogram", drop=1)]
    return WholeNames(f"{len(results)} value{'s' if len(results) != 1 else ''}", columns, rows)


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
        parts.append(WholeNames("mismatches", [Column("tensor", name=True), Column("check"),
                                               Column("difference", fold=True, width=40)],
                                [[m.name, m.kind, m.detail] for m in report.mismatches], table=_boxed))
    if report.skipped:
        reasons: dict[str, list[str]] = {}
        for name, reason in report.skipped.items():
            reasons.setdefault(reason, []).append(name)
        parts.append(WholeNames("skipped", [Column("reason", fold=True, width=40), Column("ops", justify="right"),
                                            Column("e.g.", name=True)],
                                [[reason, str(len(names)), names[0]] for reason, names in reasons.items()],
                                table=_boxed))
    parts.append(Text("all agree" if report.ok else "values disagree", style="green" if report.ok else "red"))
    return Group(*parts)


def numerics_view(report: Any) -> Group:
    """A numerics check (`graphscope.ir.numerics.Numerics`): a summary line, then one row per
    origin (name, layer, op type, NaN/+Inf/-Inf counts, its inputs' finite min and max), first
    origin first, and each origin's chain of ancestors from the nearest layer boundary."""
    backward = report.direction == "backward"
    what = f"gradients of sum({report.of.name})" if backward and report.of is not None else "tensors"
    if report.ok:
        return Group(Text(f"ok: {report.checked} {what} checked, all finite", style="green"))
    head = f"{len(report.bad)} of {report.checked} {what} hold NaN or Inf; {len(report.origins)} origin(s)"
    parts: list[Any] = [Text(head, style="bold red")]
    if not report.examined:
        parts.append(Text("the forward pass is already non-finite: the backward pass was not examined",
                          style="yellow"))
    if report.first is not None:
        at = f" at iteration {', '.join(map(str, report.iteration))}" if report.iteration else ""
        parts.append(Text(f"first: {report.first.name}{at}"))
    rows = []
    for o in report.details:
        c = o.counts
        ranges = "\n".join(f"{name} {_range(counts)}" for name, counts in o.inputs) or "(none)"
        rows.append([o.tensor.name + (f" @{','.join(map(str, o.iteration))}" if o.iteration else ""),
                     o.tensor.layer or "", o.tensor.op_type, f"{c.nan}/{c.posinf}/{c.neginf}", ranges])
    columns = [Column("origin", name=True), Column("layer", fold=True, width=20), Column("op", drop=2),
               Column("nan/+inf/-inf", justify="right"), Column("inputs: min..max", fold=True, width=40, drop=1)]
    parts.append(WholeNames("gradient origins" if backward else "origins", columns, rows, table=_boxed))
    chains = Table.grid(padding=(0, 1))  # each from the nearest layer boundary, names never split
    for o in report.details:
        chains.add_row(Text(f"{o.tensor.name}:", no_wrap=True), Text(" → ".join(o.chain), overflow="fold"))
    parts.append(Text("chains from the nearest layer boundary", style="bold"))
    parts.append(chains)
    return Group(*parts)


def _range(counts: Any) -> str:
    if counts is None:
        return "(not a float)"
    if counts.min is None:
        return "no finite values" if counts.size else "empty"
    bad = "" if counts.finite else f" ({counts.nan + counts.posinf + counts.neginf} non-finite)"
    return f"{counts.min:.4g}..{counts.max:.4g}{bad}"


def bundle_table(bundle: Any) -> WholeNames:
    """A saved run's tensors (`graphscope.scope.Bundle`): layout, dtype, entry shape, entries.
    Names are never split: narrow, the layout, then the dtype give way."""
    rows = [[t.name, f"per {t.layout}", t.dtype.name, "ragged" if t.ragged else shape_text(t.entry_shape), str(len(t))]
            for t in bundle.stored]
    columns = [Column("tensor", name=True), Column("layout", drop=2), Column("dtype", drop=1), Column("entry shape"),
               Column("entries", justify="right")]
    return WholeNames(repr(bundle).strip("<>"), columns, rows, table=_boxed)


def _boxed(title: str) -> Table:
    return Table(title=title, title_justify="left")


def _number(x: float) -> str:
    return "" if x != x else f"{x:.3g}"  # NaN: nothing to show (the note says why)


def comparison_table(comparison: Any) -> Group:
    """Two runs compared (`graphscope.comparison.Comparison`): per row, in a's topological
    order, its name, shape, max |a-b|, max relative error, cosine and whether it is within
    tolerance, the first row outside tolerance marked; then what was found on one side only.
    Names are never split: narrow, the layer, then the cosine give way."""
    first = comparison.first
    rows = []
    for r in comparison.rows:
        state = "ok" if r.ok else ("DIFFERS ◀ first" if r is first else "DIFFERS")
        note = r.note.removesuffix(", compared in float64").removesuffix(", compared exactly")  # the rule says so
        if r.iteration is not None:
            note = f"iteration {r.iteration}" if note in ("", "per iteration") else f"{note}; iteration {r.iteration}"
        rows.append([r.name, shape_text(r.shape), _number(r.max_abs), _number(r.max_rel), _number(r.cosine),
                     state, note])
    columns = [Column("name", name=True), Column("shape", drop=2), Column("max |a-b|", justify="right"),
               Column("max rel", justify="right", drop=3), Column("cosine", justify="right", drop=1),
               Column(""), Column("note", fold=True, width=24)]
    what = "tensor" if comparison.match == "tensors" else "layer output"
    title = (f"{len(comparison.rows)} {what}{'s' if len(comparison.rows) != 1 else ''} compared "
             f"(rtol={comparison.rtol:g}, atol={comparison.atol:g})")
    parts: list[Any] = [WholeNames(title, columns, rows)]
    rule = ("within tolerance: |a-b| <= atol + rtol*|b| everywhere (numpy.allclose, b the reference); "
            "values of two dtypes are compared in float64, integers exactly")
    parts.append(Text(rule, style="dim"))
    unmatched = comparison.unmatched
    for side, names in (("a", unmatched.a), ("b", unmatched.b)):
        if names:
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
            parts.append(Text(f"only in {side}: {shown}"))
    if comparison.skipped:
        parts.append(Text(f"not fetchable, left out: {', '.join(list(comparison.skipped)[:6])}"))
    if first is None:
        parts.append(Text("all within tolerance", style="green"))
    else:
        parts.append(Text(f"first outside tolerance: {first.name}", style="bold red"))
    return Group(*parts)


# --------------------------------------------------------------------------- statistics over a dataset

CHANNELS_SHOWN = 32  # a TensorStats shown alone: its first channels, then how many more


def _counts(counts: Any) -> str:
    """Values per entry: one number when every entry had as many, else the smallest..largest."""
    c = np.atleast_1d(np.asarray(counts))
    if c.size == 0:
        return "0"
    lo, hi = int(c.min()), int(c.max())
    return count(lo) if lo == hi else f"{count(lo)}..{count(hi)}"


def _figures(s: Any) -> list[str]:
    """mean, std, min, max and zero fraction of one entry (or of a whole tensor): blank where
    there was no finite value."""
    return [_number(float(v)) for v in (s.mean, s.std, s.min, s.max, s.zero_fraction)]


def statistics_view(stats: Any) -> Group:
    """Statistics over a dataset (`graphscope.ir.statistics.Statistics`): one row per tensor,
    its figures over every channel's finite values together (entries, values per entry, mean,
    std, min, max, zero fraction, non-finite count), how many channels are dead (never above
    0) and a histogram of the channels' means (of the values, with `bins` and `axis=None`).
    Names are never split: narrow, the histogram, the counts (the non-finite counts too, when
    all are 0), the zero fractions, then the entries give way."""
    per_tensor = all(s.axis is None for s in stats.values())
    rows = []
    nonfinite = False
    for key, s in stats.items():
        whole = s.whole()
        nonfinite = nonfinite or bool(whole.nonfinite)
        shape = [] if per_tensor else ["" if s.axis is None else str(s.entries)]
        if s.axis is None:
            picture = "" if s.histogram is None else bars(s.histogram[0])
        else:
            picture = sparkline(s.mean)
        rows.append([str(key), *shape, _counts(s.count), *_figures(whole), str(int(whole.nonfinite)),
                     str(len(s.dead())), picture])
    columns = [Column("name", name=True), *([] if per_tensor else [Column("entries", justify="right", drop=4)]),
               Column("count", justify="right", drop=2),
               *(Column(c, justify="right") for c in ("mean", "std", "min", "max")),
               Column("zeros", justify="right", drop=3), Column("nan/inf", justify="right", drop=0 if nonfinite else 2),
               Column("dead", justify="right"),
               Column("histogram" if per_tensor else "channel means", drop=1)]
    n = len(stats)
    title = (f"statistics of {n} tensor{'s' if n != 1 else ''} over {stats.samples} sample"
             f"{'s' if stats.samples != 1 else ''} ({stats.batches} batch{'es' if stats.batches != 1 else ''})")
    note = "over all entries' finite values; zeros: fraction of 0s; dead: entries never > 0"
    return Group(WholeNames(title, columns, rows), Text(note, style="dim"))


def tensor_stats_view(s: Any) -> Group:
    """One tensor's statistics (`graphscope.ir.statistics.TensorStats`): one row per channel
    (the first CHANNELS_SHOWN, then how many more), dead channels marked, each one's histogram
    when taken; one row for `axis=None`."""
    hist = s.histogram
    if s.axis is None:
        title = f"{s.name} ({s.dtype}): one figure for the tensor"
        rows = [["all", _counts(s.count), *_figures(s), str(int(s.nonfinite)),
                 "dead" if len(s.dead()) else "", "" if hist is None else bars(hist[0])]]
        more = 0
    else:
        title = f"{s.name} ({s.dtype}): {s.entries} channel{'s' if s.entries != 1 else ''} of axis {s.axis}"
        dead = set(s.dead().tolist())
        rows = []
        for c in range(min(s.entries, CHANNELS_SHOWN)):
            figures = [_number(float(a[c])) for a in (s.mean, s.std, s.min, s.max, s.zero_fraction)]
            rows.append([str(c), count(int(s.count[c])), *figures, str(int(s.nonfinite[c])),
                         "dead" if c in dead else "", "" if hist is None else bars(hist[0][c])])
        more = s.entries - len(rows)
    columns = [Column("channel", justify="right"), Column("count", justify="right", drop=2),
               *(Column(c, justify="right") for c in ("mean", "std", "min", "max")),
               Column("zeros", justify="right", drop=3), Column("nan/inf", justify="right", drop=2),
               Column(""), Column("histogram", drop=1)]
    if hist is None:
        columns, rows = columns[:-1], [r[:-1] for r in rows]
    parts: list[Any] = [WholeNames(title, columns, rows)]
    if more:
        parts.append(Text(f"... {more} more channel{'s' if more != 1 else ''}"))
    if s.axis is not None:
        w = s.whole()
        parts.append(Text(f"all channels: mean {_number(w.mean)}, std {_number(w.std)}, min {_number(w.min)}, "
                          f"max {_number(w.max)}; {len(dead)} dead"))
    return Group(*parts)
