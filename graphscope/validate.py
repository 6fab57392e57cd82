"""Self-validation: replay each op on its own fetched inputs, and compare layer outputs with
Keras' own.

For a batch of inputs, every op's inputs and outputs are fetched in one run. Each op is then run
again alone, by an executor fed those inputs (intermediate tensors), and its outputs compared
with the fetched ones. Ops are replayed in rounds: a round's executor is fed every input of its
ops and fetches their outputs, so no op of a round may consume another's output. Ops that cannot
be replayed meaningfully are skipped with the reason: random-number ops, ops inside loops and
branches (their inputs differ per iteration), ops whose inputs are handles or lists, constants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from graphscope._display import RichDisplay
from graphscope.errors import GraphscopeError
from graphscope.graph import Op, Tensor

__all__ = ["Mismatch", "Validation", "validate"]

# ops that draw new random numbers each run (stateless random ops, fed their seed, replay fine)
_RANDOM = re.compile(r"(?!Stateless)\w*(Random|Multinomial|Shuffle)\w*|RngReadAndSkip|RngSkip")
_HANDLES = ("resource", "variant")
RTOL, ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class Mismatch:
    """A value that does not agree: `kind` is "replay" (an op run alone gave another output) or
    "keras" (a layer output differs from Keras' own)."""

    name: str
    kind: str
    detail: str


@dataclass
class Validation(RichDisplay):
    """The report: how many ops were replayed, what disagreed, what was skipped and why."""

    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # op name -> reason
    layers: int = 0  # layer outputs compared with Keras

    @property
    def ok(self) -> bool:
        """Whether everything checked agreed."""
        return not self.mismatches

    def __repr__(self) -> str:
        return (
            f"<Validation {'ok' if self.ok else f'{len(self.mismatches)} mismatches'}: "
            f"{self.checked} ops replayed, {self.layers} layer outputs vs Keras, {len(self.skipped)} skipped>"
        )

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        summary = Table.grid(padding=(0, 2))
        summary.add_row("checked", f"{self.checked} ops replayed on their own inputs")
        summary.add_row("vs Keras", f"{self.layers} layer outputs")
        summary.add_row("mismatches", str(len(self.mismatches)), style="bold red" if self.mismatches else "")
        summary.add_row("skipped", str(len(self.skipped)))
        parts: list[Any] = [summary]
        if self.mismatches:
            table = Table(title="mismatches", title_justify="left")
            for column in ("tensor", "check", "difference"):
                table.add_column(column)
            for m in self.mismatches:
                table.add_row(m.name, m.kind, m.detail)
            parts.append(table)
        if self.skipped:
            reasons: dict[str, list[str]] = {}
            for name, reason in self.skipped.items():
                reasons.setdefault(reason, []).append(name)
            table = Table(title="skipped", title_justify="left")
            table.add_column("reason")
            table.add_column("ops", justify="right")
            table.add_column("e.g.")
            for reason, names in reasons.items():
                table.add_row(reason, str(len(names)), names[0])
            parts.append(table)
        parts.append(Text("all agree" if self.ok else "values disagree", style="green" if self.ok else "red"))
        return Group(*parts)


def validate(scope: Any, inputs: Any, *, fetches: Any = None) -> Validation:
    """Replay the ops producing `fetches` (every op when None) on `inputs`; see the module doc."""
    G = scope.graph
    tensors: dict[str, Tensor] = G.graph["tensors"]
    if fetches is None:
        ops = [G.nodes[n]["op"] for n in G]
    else:
        ops = list({t.op: G.nodes[t.op]["op"] for _, t in scope._pairs(fetches)}.values())
    report = Validation()
    candidates: list[Op] = []
    for op in ops:
        reason = _unreplayable(op, tensors, scope)
        if reason:
            report.skipped[op.name] = reason
        else:
            candidates.append(op)
    wanted = sorted({n for op in candidates for n in (*_data_inputs(op, tensors), *_values(op, tensors))})
    fetched = dict(scope.run(wanted, inputs)) if wanted else {}
    for group in _rounds(candidates, tensors):
        _replay(scope, group, fetched, tensors, report)
    _compare_keras(scope, inputs, fetches, fetched, report)
    return report


def _values(op: Op, tensors: dict[str, Tensor]) -> list[str]:
    return [n for n in op.outputs if tensors[n].dtype not in _HANDLES]


def _data_inputs(op: Op, tensors: dict[str, Tensor]) -> list[str]:
    return list(dict.fromkeys(n for n in op.inputs if tensors[n].dtype not in _HANDLES))


def _unreplayable(op: Op, tensors: dict[str, Tensor], scope: Any) -> str | None:
    if op.type == "Placeholder":
        return "a model input or captured variable"
    if not _values(op, tensors):
        return "no value outputs (a handle, a list, or none)"
    if _RANDOM.fullmatch(op.type):
        return "random: draws new numbers each run"
    if op.context is not None or any(":" in f for f in op.function):
        return "inside a loop or branch: its inputs change per iteration"
    if any(tensors[n].dtype == "variant" for n in op.inputs):
        return "takes a list or optional (variant) input"
    if not _data_inputs(op, tensors):
        return "no value inputs (a constant or a variable read)"
    if any(tensors[n].context for n in op.inputs):
        return "fed from inside a loop or branch"
    if any(tensors[n].dtype == "string" for n in (*op.inputs, *op.outputs)):
        return "string values"
    return None


def _rounds(ops: list[Op], tensors: dict[str, Tensor]) -> list[list[Op]]:
    """Ops grouped so that no op consumes an output of another op in its group."""
    rounds: list[list[Op]] = []
    where: dict[str, int] = {}
    for op in ops:  # in topological order
        producers = {where[tensors[n].op] for n in op.inputs if tensors[n].op in where}
        k = next(i for i in range(len(rounds) + 1) if i not in producers)
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(op)
        where[op.name] = k
    return rounds


def _replay(scope: Any, ops: list[Op], fetched: dict[str, Any], tensors: dict[str, Tensor], report: Validation) -> None:
    feeds = sorted({n for op in ops for n in _data_inputs(op, tensors)})
    outs = sorted({n for op in ops for n in _values(op, tensors)} - set(feeds))
    if not outs:
        return
    try:
        replayed = scope.run(outs, {n: fetched[n] for n in feeds}, feeds=feeds)
    except GraphscopeError:
        if len(ops) == 1:
            report.skipped[ops[0].name] = "cannot be run alone from its inputs"
            return
        for op in ops:  # find the ops that cannot run alone
            _replay(scope, [op], fetched, tensors, report)
        return
    for op in ops:
        report.checked += 1
        for n in _values(op, tensors):
            if n in replayed:
                detail = _difference(fetched[n], replayed[n])
                if detail:
                    report.mismatches.append(Mismatch(n, "replay", detail))


def _compare_keras(scope: Any, inputs: Any, fetches: Any, fetched: dict[str, Any], report: Validation) -> None:
    """Fetched layer outputs (every top-level layer's when fetches is None) against a Keras
    sub-model's; only where Keras can answer (a functional or sequential model)."""
    import keras

    model = scope.model
    try:
        model_inputs = model.inputs if isinstance(model, keras.Model) else None
    except (AttributeError, ValueError):
        model_inputs = None
    if not model_inputs:
        return
    wanted = None if fetches is None else {t.name for _, t in scope._pairs(fetches)}
    random_ops = {n for n in scope.graph if _RANDOM.fullmatch(scope.graph.nodes[n]["op"].type)}
    pairs = []
    for lay in scope.layers:
        if "/" in lay.name or lay.keras_layer is None or len(lay.outputs) != 1:
            continue
        if (wanted is not None and lay.output.name not in wanted) or lay.output.dtype in _HANDLES:
            continue
        if isinstance(lay.keras_layer, keras.layers.InputLayer):
            continue
        if random_ops and random_ops & nx.ancestors(scope.graph, lay.output.op):
            report.skipped[lay.output.name] = "random: depends on numbers drawn anew each run (vs Keras)"
            continue
        try:
            pairs.append((lay.output.name, lay.keras_layer.output))
        except (AttributeError, ValueError):  # a layer called more than once, or never
            continue
    if not pairs:
        return
    try:
        sub_model = keras.Model(model_inputs, [s for _, s in pairs])
    except ValueError:  # Keras cannot cut the model there
        return
    ours = scope.run([n for n, _ in pairs], inputs)
    given = inputs if isinstance(inputs, dict) else list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    theirs = sub_model(given, training=False)
    theirs = theirs if isinstance(theirs, (list, tuple)) else [theirs]
    for (name, _), value in zip(pairs, theirs):
        report.layers += 1
        detail = _difference(np.asarray(value), ours[name])
        if detail:
            report.mismatches.append(Mismatch(name, "keras", detail))


def _difference(expected: Any, got: Any) -> str | None:
    """None when the two agree (floats within RTOL/ATOL), else what differs."""
    if expected is None or got is None or isinstance(expected, list) or isinstance(got, list):
        return None if (expected is None) == (got is None) else "one of them has no value"
    a, b = np.asarray(expected), np.asarray(got)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    if a.dtype.kind in "fc":
        if np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True):
            return None
        return f"max |difference| {float(np.nanmax(np.abs(a.astype(np.float64) - b))):.3g}"
    if np.array_equal(a, b):
        return None
    return f"{int(np.sum(a != b))} of {a.size} elements differ"
