"""Recording Keras layer calls while a model is traced.

While tracing, each Keras layer of the model gets a temporary per-instance `call` wrapper that
records which ops its call created (by op creation id), its arguments (positional and keyword: the
tensors among them are its inputs), its outputs, and who called it. The wrappers are removed when
tracing ends, even on error: the model is left exactly as it was (no weights, layers or attributes
changed). A layer no wrapper reaches (one the model's code makes inside its `call`) is given one
when it is called: for the duration, Keras' own `Layer.__call__` first hands it to the recording.
A functional model's calls are then numbered in its node order (`Recorder.finish`), the order the
user's code made them; layers of one parent call that share a name are told apart (`d`, `d_1`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
import types
import weakref
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from graphscope.backend import tf_internals as _tf

__all__ = ["TRACE_LOCK", "LayerCall", "Recorder", "fresh_helpers", "keras_attributes", "keras_roots",
           "label_namesakes", "number_last", "recording"]

# Tracing mutates per-instance attributes for its duration; two traces of the same model at
# once would see each other's wrappers.
TRACE_LOCK = threading.RLock()


@dataclasses.dataclass(eq=False)
class LayerCall:
    """One call of a Keras layer recorded while tracing."""

    layer: Any
    parent: LayerCall | None
    graph: tf.Graph
    first_id: int  # ops of `graph` with first_id < id <= last_id were created by this call
    last_id: int = -1
    args: Any = None  # the positional arguments, tf tensors in a nested structure
    # the keyword arguments, in the order of the call's signature (`Dense(2)(inputs=h)`, keras-hub's
    # `attention(query=..., value=...)`, and the `mask=` Keras passes a layer whose input has one)
    keywords: dict[str, Any] = dataclasses.field(default_factory=dict)
    outputs: Any = None
    # 1-based: the n-th call of this layer inside its parent call, in the order the user's code
    # made the calls (a functional model's node order, see `_tf.node_numbers`), else call order;
    # set by `Recorder.finish`; a call no output needs comes after the others (`number_last`)
    number: int = 0
    # 0 for a recorded call; k for its copy made for the (k+1)-th walk of its graph, a function
    # called from several places (a helper tf.function called twice): each place is a call
    walk: int = 0
    # the layer's name here where another layer of its parent call has its name (Keras 3 lets a
    # subclassed model's layers share one): `d_1` for the second, as TensorFlow's scopes count;
    # set by `Recorder.finish`
    label: str = ""

    @property
    def token(self) -> str:
        """`name` for a first call, `name@n` for the n-th."""
        name = self.label or self.layer.name
        return name if self.number == 1 else f"{name}@{self.number}"


class Recorder:
    """The layer calls seen while tracing, with their parents, op-id ranges, inputs and outputs."""

    def __init__(self) -> None:
        self.calls: list[LayerCall] = []
        self.stack: list[LayerCall] = []
        self.root: LayerCall | None = None  # the first call made outside every other, once finished

    def wrap(self, layer: Any, call: Any) -> Any:
        recorder = self
        order = _parameter_order(call)

        def recording_call(*args: Any, **kwargs: Any) -> Any:
            graph = tf.compat.v1.get_default_graph()
            parent = recorder.stack[-1] if recorder.stack else None
            keywords = _keywords(kwargs, order)
            rec = LayerCall(layer, parent, graph, _tf.last_op_id(graph), args=args, keywords=keywords)
            recorder.calls.append(rec)
            recorder.stack.append(rec)
            try:
                out = call(*args, **kwargs)
            finally:
                recorder.stack.pop()
                rec.last_id = _tf.last_op_id(graph)
            rec.outputs = out
            return out

        return recording_call

    def finish(self, graph: tf.Graph) -> None:
        """After tracing `graph`: keep only the calls made in it and in the functions and bodies
        it runs, since a tf.function traces twice when its first trace creates variables (a
        model built by its first call, or a helper tf.function's layer) and throws that graph
        away, also inside `graph`; then number them, in call order, and a functional model's
        calls in its node order (`_renumber`)."""
        ran = {id(g) for g in _tf.graphs_called(graph)}
        kept = [c for c in self.calls if id(c.graph) in ran]
        counts: dict[tuple[int, int], int] = {}
        for call in kept:
            key = (id(call.parent), id(call.layer))
            counts[key] = counts.get(key, 0) + 1
            call.number = counts[key]
        self.calls = kept
        self.root = next((c for c in kept if c.parent is None), None)
        self._renumber()
        label_namesakes(kept)

    def _renumber(self) -> None:
        """Number the calls a functional model makes the way Keras does (its node order), not
        in the order its graph ran them. Calls that do not match the model's nodes one to one
        (a model whose `call` is its own code) keep their call order."""
        by_parent: dict[int, list[LayerCall]] = {}
        for call in self.calls:
            by_parent.setdefault(id(call.parent), []).append(call)
        for calls in by_parent.values():
            parent = calls[0].parent
            numbers = _tf.node_numbers(parent.layer) if parent is not None else {}
            if not numbers:
                continue
            by_layer: dict[int, list[LayerCall]] = {}
            for call in calls:
                by_layer.setdefault(id(call.layer), []).append(call)
            for key, same in by_layer.items():
                order = numbers.get(key)
                if order is not None and len(order) == len(same) and len(set(order)) == len(order):
                    for call, number in zip(same, order):
                        call.number = number


def label_namesakes(calls: Sequence[LayerCall]) -> None:
    """Tell apart layers that share a name inside one parent call (two `Dense(name="d")` of a
    subclassed model, or layers its `call` makes with a fixed name in a loop): the first keeps
    the name, the next get `d_1`, `d_2`, ... in the order of their first calls, skipping a name
    another layer there has. Each layer keeps its label in all its calls there."""
    distinct: dict[tuple[int, str], list[int]] = {}  # (parent call, name) -> the layers, by id
    for call in calls:
        layers = distinct.setdefault((id(call.parent), call.layer.name), [])
        if id(call.layer) not in layers:
            layers.append(id(call.layer))
    labels: dict[tuple[int, int], str] = {}  # (parent call, layer) -> its label
    for (parent, name), layers in distinct.items():
        suffix = 0
        for layer in layers[1:]:
            suffix += 1
            while (parent, f"{name}_{suffix}") in distinct:
                suffix += 1
            labels[(parent, layer)] = f"{name}_{suffix}"
    for call in calls:
        call.label = labels.get((id(call.parent), id(call.layer)), "")


def number_last(calls: Sequence[LayerCall], last: set[int]) -> None:
    """Renumber each layer's calls inside one parent call so that the calls in `last` (by id:
    those no output needs, the call Keras makes of an RNN's cell outside its loop only to learn
    shapes) come after the others, which keep their order and numbers otherwise: the call the
    model runs is `lstm/lstm_cell`, the probe `lstm/lstm_cell@2`. Applied twice, the same."""
    if not last:
        return
    by_layer: dict[tuple[int, int], list[LayerCall]] = {}
    for call in calls:
        by_layer.setdefault((id(call.parent), id(call.layer)), []).append(call)
    for same in by_layer.values():
        if len(same) > 1 and any(id(c) in last for c in same):
            numbers = sorted(c.number for c in same)
            for call, number in zip(sorted(same, key=lambda c: (id(c) in last, c.number)), numbers):
                call.number = number


def _parameter_order(call: Any) -> dict[str, int]:
    """Each parameter of `call` by name, with its position in the signature ({} if unknown).
    A bound method's signature is its function's (`self` left out), so it is read once per
    function: a model's layers share a few classes, and `inspect.signature` is most of the cost
    of wrapping a layer. The dict may be shared: callers only read it."""
    function = getattr(call, "__func__", None) if inspect.ismethod(call) else None
    if function is not None:
        try:
            order = _METHOD_ORDERS.get(function)
            if order is None:
                order = _METHOD_ORDERS[function] = _signature_order(call)
            return order
        except TypeError:  # a function object that cannot be weakly referenced
            pass
    return _signature_order(call)


def _signature_order(call: Any) -> dict[str, int]:
    try:
        return {name: k for k, name in enumerate(inspect.signature(call).parameters)}
    except (TypeError, ValueError):
        return {}


# the parameter order of each method's function, while the function exists
_METHOD_ORDERS: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()


def _keywords(kwargs: dict[str, Any], order: dict[str, int]) -> dict[str, Any]:
    """The keyword arguments in the order of the call's signature; those it does not name (for
    `**kwargs`) after them, as given."""
    return {key: kwargs[key] for key in sorted(kwargs, key=lambda k: order.get(k, len(order)))}


_MISSING = object()


class recording:
    """Install per-instance `call` wrappers on every layer reachable from `roots`; remove them on
    exit. A layer whose class computes in a `__call__` of its own (not Keras') is recorded there:
    for the duration it is an instance of a subclass whose `__call__` records, then its class again."""

    def __init__(self, roots: Sequence[Any]) -> None:
        self.roots = roots
        self.saved: list[tuple[Any, str, Any]] = []  # (layer, attribute, what its __dict__ held), as set
        self.classes: list[tuple[Any, type]] = []
        self.flags: list[tuple[Any, Any]] = []  # (a built layer, its `_called` before)
        self.hooks: list[tuple[type, Any]] = []  # (a Keras base class, its own `__call__`)
        self.seen: set[int] = set()  # the layers recorded, by id (each alive while recorded)

    def __enter__(self) -> Recorder:
        recorder = Recorder()
        try:
            self._adopt(self.roots, recorder)
            self._hook_calls(recorder)
        except BaseException:
            self._restore()
            raise
        return recorder

    def _adopt(self, roots: Sequence[Any], recorder: Recorder, calling: bool = False) -> None:
        """Record the calls of each layer reachable from `roots` not recorded yet. `calling`: the
        first root is being called already (through Keras' `__call__`), too late to give it a
        class whose own `__call__` records; its `call` is recorded instead."""
        called = roots[0] if calling else None
        todo = list(roots)
        while todo:
            layer = todo.pop()
            if id(layer) in self.seen:
                continue
            self.seen.add(id(layer))
            if getattr(layer, "built", False):  # one the trace builds was called, as a first call would
                self.flags.append((layer, _tf.called_flag(layer)))
            self._fresh_functions(layer)
            if _tf.has_own_dunder_call(layer) and layer is not called:
                self._record_dunder_call(layer, recorder)
            else:
                self._set(layer, "call", recorder.wrap(layer, layer.call))
            todo.extend(_tf.tracked_layers(layer))

    def _hook_calls(self, recorder: Recorder) -> None:
        """For the duration, Keras' `Layer.__call__` (Keras 3's, and tf_keras' where it is
        imported) first records the calls of a layer no root reaches: one the model's code
        creates while it runs (`keras.layers.ReLU()(x)` inside a `call`, keras-hub's per-call
        `Resizing`) or keeps where no tracking looks. Only in the tracing thread."""
        thread = threading.get_ident()

        def adopt(layer: Any) -> None:
            if id(layer) not in self.seen and threading.get_ident() == thread:
                self._adopt([layer], recorder, calling=True)

        for base in _tf.keras_layer_bases():
            original = vars(base)["__call__"]
            self.hooks.append((base, original))
            type.__setattr__(base, "__call__", _adopting(original, adopt))

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _fresh_functions(self, layer: Any) -> None:
        """For the duration, each tf.function the layer holds (a method of its class, its `call`
        among them, or one in its attributes) is one that traces anew: its cached traces (made
        when Keras built the model by calling the layer) would hand back a graph made while
        nothing recorded, so the layers it calls would go unrecorded."""
        for name, fn, of_class in _tf.tf_function_attributes(layer):
            self._set(layer, name, _tf.fresh_tf_function(fn, layer if of_class else None))

    def _set(self, layer: Any, name: str, value: Any) -> None:
        """Set a per-instance attribute for the duration; `_restore` puts back what was there."""
        self.saved.append((layer, name, layer.__dict__.get(name, _MISSING)))
        object.__setattr__(layer, name, value)

    def _record_dunder_call(self, layer: Any, recorder: Recorder) -> None:
        cls = type(layer)
        recorded = recorder.wrap(layer, functools.partial(cls.__call__, layer))  # keeps its signature
        namespace = {"__call__": lambda self, *args, **kwargs: recorded(*args, **kwargs),
                     "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        object.__setattr__(layer, "__class__", type(cls.__name__, (cls,), namespace))
        self.classes.append((layer, cls))

    def _restore(self) -> None:
        for base, original in reversed(self.hooks):
            type.__setattr__(base, "__call__", original)
        self.hooks.clear()
        for layer, cls in reversed(self.classes):
            object.__setattr__(layer, "__class__", cls)
        self.classes.clear()
        for layer, name, original in reversed(self.saved):  # a `call` set twice: its first value last
            if original is _MISSING:
                object.__delattr__(layer, name)
            else:
                object.__setattr__(layer, name, original)
        self.saved.clear()
        for layer, flag in self.flags:  # the trace's call counts as none
            _tf.restore_called_flag(layer, flag)
        self.flags.clear()


def _adopting(original: Any, adopt: Any) -> Any:
    """Keras' `Layer.__call__` (`original`) that first hands the layer to `adopt`."""

    @functools.wraps(original)
    def adopting_call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        adopt(layer)
        return original(layer, *args, **kwargs)

    return adopting_call


def keras_attributes(module: Any) -> list[Any]:
    """The Keras layers a tf.Module holds in its attributes (directly or in lists)."""
    found = []
    for value in vars(module).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if _tf.is_keras_layer(item):
                found.append(item)
    return found


def keras_roots(fn: Any, helpers: list[tuple[Any, str | None]] | None = None) -> list[Any]:
    """The Keras layers and models a Python callable can reach without calling anything: its
    bound object (`model.predict_step`'s model; a tf.Module's layers for a tf.Module's method),
    the values its closure, defaults and the globals its code names hold (layers, or lists,
    tuples and dicts of them), a `functools.partial`'s function and arguments; and, through the
    functions and tf.functions among those values (a helper `tf.function` that calls a layer, a
    tf.Module's method), what they reach in turn. Functions of TensorFlow, Keras and numpy
    themselves are not looked into. `helpers`, when given, gets where each helper tf.function
    of those sits: (closure cell, None) or (globals, name), for `fresh_helpers`."""
    found: dict[int, Any] = {}
    todo = [fn]

    def add(value: Any) -> None:
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, weakref.ref):  # how a tf.function bound to a tf.Module holds it
                item = item()
            if _tf.is_keras_layer(item):
                found.setdefault(id(item), item)
            elif isinstance(item, tf.Module):
                add(keras_attributes(item))
            elif _user_function(item):
                todo.append(item)

    seen: set[int] = set()
    while todo:
        f = todo.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        f = getattr(f, "python_function", f)  # a tf.function: the Python function it traces
        if isinstance(f, functools.partial):
            todo.append(f.func)
            add(list(f.args) + list(f.keywords.values()))
            continue
        add(getattr(f, "__self__", None))
        code = getattr(f, "__code__", None)
        if code is None:
            continue
        for cell in getattr(f, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            add(value)
            if helpers is not None and _helper(value):
                helpers.append((cell, None))
        add(list(getattr(f, "__defaults__", None) or ()))
        names = getattr(f, "__globals__", {})
        used = [n for n in _global_names(code) if n in names]
        add([names[n] for n in used])
        if helpers is not None:
            helpers.extend((names, n) for n in used if _helper(names[n]))
    return list(found.values())


def _global_names(code: Any) -> list[str]:
    """The global names `code` and the functions defined in it (a lambda passed to
    `tf.while_loop` or `Dataset.map`) use, each once."""
    names: dict[str, None] = {}
    todo = [code]
    while todo:
        c = todo.pop()
        names.update(dict.fromkeys(c.co_names))
        todo.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    return list(names)


def _helper(value: Any) -> bool:
    return isinstance(value, tf.types.experimental.PolymorphicFunction) and _user_function(value)


class fresh_helpers:
    """For the duration, each helper tf.function in `helpers` (`keras_roots`'s: a closure cell's
    or a global's) is a copy that traces anew: its own cache would hand back a trace an earlier
    trace made (one `gs.trace` of a function calling it, then another), in which nothing
    recorded the layers it calls. The cells and globals hold the originals again afterwards."""

    def __init__(self, helpers: Sequence[tuple[Any, str | None]]) -> None:
        self.helpers = helpers
        self.swapped: list[tuple[Any, str | None, Any]] = []

    def __enter__(self) -> None:
        fresh: dict[int, Any] = {}  # one copy of a helper, wherever it sits
        try:
            for holder, name in self.helpers:
                original = holder.cell_contents if name is None else holder[name]
                copy = fresh.setdefault(id(original), _tf.fresh_tf_function(original))
                self.swapped.append((holder, name, original))
                if name is None:
                    holder.cell_contents = copy
                else:
                    holder[name] = copy
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: Any) -> None:
        for holder, name, original in reversed(self.swapped):
            if name is None:
                holder.cell_contents = original
            else:
                holder[name] = original
        self.swapped.clear()


_LIBRARIES = frozenset({"tensorflow", "keras", "tf_keras", "numpy", "graphscope"})


def _user_function(value: Any) -> bool:
    """A function, method, tf.function or partial of the user's own (not of a library whose
    code calls no layer of the model), which `keras_roots` looks into."""
    if isinstance(value, functools.partial):
        return True
    python = getattr(value, "python_function", value)
    if not isinstance(python, (types.FunctionType, types.MethodType)):
        return False
    return (getattr(python, "__module__", None) or "").partition(".")[0] not in _LIBRARIES
