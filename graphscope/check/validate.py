"""Self-validation: replay each op on its own fetched inputs, and compare layer outputs with
Keras' own.

For a batch of inputs, every op's inputs and outputs are fetched in one run. Each op is then run
again alone, by an executor fed those inputs (intermediate tensors), and its outputs compared
with the fetched ones. Ops are replayed in rounds: a round's executor is fed every input of its
ops and fetches their outputs, so no op of a round may consume another's output. Ops that cannot
be replayed meaningfully are skipped with the reason: random-number ops, ops inside loops and
branches (their inputs differ per iteration), ops whose inputs are handles or lists, constants,
and, unless named, ops no output depends on (`graphscope.ir.query.unused`). A batch norm's
reserve-space outputs (`FusedBatchNormV3:3` to `:5`) are the kernel's scratch, whatever the CPU
library leaves there: replayed with the op, never compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from graphscope.backend.tf_internals import functional_model, is_input_layer, is_keras_model, node_outputs
from graphscope.display.tables import validation_view
from graphscope.errors import GraphscopeError
from graphscope.ir.query import drawn
from graphscope.ir.records import Op, Tensor
from graphscope.ir.views import Shown, view
from graphscope.runtime.runtime import Runtime

__all__ = ["Mismatch", "Validation", "validate"]

# ops that draw new random numbers each run (stateless random ops, fed their seed, replay fine)
_RANDOM = re.compile(r"(?!Stateless)\w*(Random|Multinomial|Shuffle)\w*|RngReadAndSkip|RngSkip")
RTOL, ATOL = 1e-4, 1e-5
# outputs that are a kernel's scratch space, not values: a fused batch norm's reserve spaces
_SCRATCH = {"FusedBatchNorm": 3, "FusedBatchNormV2": 3, "FusedBatchNormV3": 3}  # op type -> first such output


@dataclass(frozen=True)
class Mismatch:
    """A value that does not agree: `kind` is "replay" (an op run alone gave another output) or
    "keras" (a layer output differs from Keras' own)."""

    name: str
    kind: str
    detail: str


@dataclass
class Validation(Shown):
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


view.register(Validation)(validation_view)


def validate(runtime: Runtime, inputs: Any, *, fetches: Any = None) -> Validation:
    """Replay the ops producing `fetches` (every op when None) on `inputs`; see the module doc."""
    G = runtime.graph.graph
    tensors: dict[str, Tensor] = G.graph["tensors"]
    if fetches is None:
        ops = [G.nodes[n]["op"] for n in G]
    else:
        ops = list({t.op: G.nodes[t.op]["op"] for t in runtime.graph.resolve(fetches)}.values())
    report = Validation()
    candidates: list[Op] = []
    unused = runtime.graph.unused if fetches is None else frozenset()  # named ones are replayed
    for op in ops:
        reason = "unused: no output of the model depends on it" if op.name in unused else _unreplayable(op, tensors)
        if reason:
            report.skipped[op.name] = reason
        else:
            candidates.append(op)
    wanted = sorted({n for op in candidates for n in (*_data_inputs(op, tensors), *_values(op, tensors))})
    fetched = dict(runtime.run(wanted, inputs)) if wanted else {}
    for group in _rounds(candidates, tensors):
        _replay(runtime, group, fetched, tensors, report)
    _compare_keras(runtime, inputs, fetches, report)
    return report


def _values(op: Op, tensors: dict[str, Tensor]) -> list[str]:
    return [n for n in op.outputs if not tensors[n].is_handle]


def _data_inputs(op: Op, tensors: dict[str, Tensor]) -> list[str]:
    return list(dict.fromkeys(n for n in op.inputs if not tensors[n].is_handle))


def _unreplayable(op: Op, tensors: dict[str, Tensor]) -> str | None:
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


def _replay(runtime: Runtime, ops: list[Op], fetched: dict[str, Any], tensors: dict[str, Tensor], report: Validation) -> None:
    feeds = sorted({n for op in ops for n in _data_inputs(op, tensors)})
    outs = sorted({n for op in ops for n in _values(op, tensors)} - set(feeds))
    if not outs:
        return
    try:
        replayed = runtime.run(outs, {n: fetched[n] for n in feeds}, feeds=feeds)
    except GraphscopeError:
        if len(ops) == 1:
            report.skipped[ops[0].name] = "cannot be run alone from its inputs"
            return
        for op in ops:  # find the ops that cannot run alone
            _replay(runtime, [op], fetched, tensors, report)
        return
    for op in ops:
        report.checked += 1
        scratch = _SCRATCH.get(op.type)
        for n in _values(op, tensors):
            if scratch is not None and tensors[n].index >= scratch:
                continue
            if n in replayed:
                detail = _difference(fetched[n], replayed[n])
                if detail:
                    report.mismatches.append(Mismatch(n, "replay", detail))


def _compare_keras(runtime: Runtime, inputs: Any, fetches: Any, report: Validation) -> None:
    """Fetched layer outputs (every top-level layer's when fetches is None) against a Keras
    sub-model's, called in the mode the scope was traced in (batch norm on the batch's
    statistics in training mode; the model's moving statistics do not move); only where Keras can
    answer (a functional or sequential model). Outputs that depend on random numbers (dropout in
    training mode) are skipped: Keras draws other numbers."""

    model = runtime.traced.model
    G = runtime.graph.graph
    try:
        model_inputs = model.inputs if is_keras_model(model) else None
    except (AttributeError, ValueError):
        model_inputs = None
    if not model_inputs:
        return
    wanted = None if fetches is None else {t.name for t in runtime.graph.resolve(fetches)}
    random = drawn(G)  # a second run of Keras draws these anew
    pairs = []
    for lay in runtime.graph.layers:
        if "/" in lay.name or lay.keras_layer is None or len(lay.outputs) != 1:
            continue
        if (wanted is not None and lay.output.name not in wanted) or lay.output.is_handle:
            continue
        if is_input_layer(lay.keras_layer):
            continue
        if lay.output.op in random:
            report.skipped[lay.output.name] = "random: depends on numbers drawn anew each run (vs Keras)"
            continue
        _, _, number = lay.name.partition("@")
        outputs = node_outputs(model, lay.keras_layer)  # call k's is its node k (issue 20)
        if len(outputs) < int(number or 1):  # not a node of this model (called by other code)
            continue
        node = outputs[int(number or 1) - 1]
        if len({id(s) for s in node}) != 1:  # one output (returned once, or the same one again)
            continue
        pairs.append((lay.output.name, node[0]))
    if not pairs:
        return
    try:
        sub_model = functional_model(model, model_inputs, [s for _, s in pairs])
    except ValueError:  # Keras cannot cut the model there
        return
    executor = runtime.executor([n for n, _ in pairs])
    ours = executor(inputs)
    # Keras gets what the executor was fed: one tensor per input, however they were spelled
    signature = executor.signature
    if not isinstance(inputs, dict):
        inputs = [signature.convert(k, v) for k, v in enumerate(signature.bind(inputs))]
    theirs = _keras_outputs(sub_model, inputs, training=runtime.traced.training,
                            captured=runtime.traced.function.graph.variables)
    theirs = theirs if isinstance(theirs, (list, tuple)) else [theirs]
    for (name, _), value in zip(pairs, theirs):
        report.layers += 1
        detail = _difference(np.asarray(value), ours[name])
        if detail:
            report.mismatches.append(Mismatch(name, "keras", detail))


def _keras_outputs(sub_model: Any, given: Any, *, training: bool, captured: Any = ()) -> Any:
    """`sub_model(given, training=training)`, with every variable as it was before (batch norm
    updates its moving statistics in training mode, a layer may assign a variable in any mode).
    `captured`: the traced function's variables, put back too: tf_keras leaves some out of
    `model.variables` (a stateful RNN's state, assigned on every call), and Keras 3 tracks no
    plain `tf.Variable` a layer holds, which its `stateless_call` assigns as any call does."""
    keras3 = hasattr(sub_model, "stateless_call")  # Keras 3: its own variables' new values come back, not assigned
    own = {id(v.value) for v in sub_model.variables} if keras3 else set()  # the tf.Variable behind each
    # tf_keras: every variable put back after (its adapted lookups list a VocabWeightHandler among
    # them: no value to put back)
    held = captured if keras3 else [*sub_model.variables, *captured]
    variables = {id(v): v for v in held if isinstance(v, tf.Variable) and id(v) not in own}
    saved = [(v, v.numpy()) for v in variables.values()]
    try:
        if keras3:
            outputs, _ = sub_model.stateless_call([v.value for v in sub_model.trainable_variables],
                                                  [v.value for v in sub_model.non_trainable_variables],
                                                  given, training=training)
            return outputs
        return sub_model(given, training=training)
    finally:
        for v, value in saved:
            v.assign(value)


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
