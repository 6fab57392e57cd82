"""Scope: the facade that ties trace, mirror, query and execute together for a user."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import networkx as nx

from graphscope import query
from graphscope._display import RichDisplay
from graphscope._progress import StageProgress
from graphscope.errors import ArgumentError, TensorNotFoundError
from graphscope.execute import LRU, Executor, Results, Runtime
from graphscope.graph import Layer, Op, Selection, Tensor
from graphscope.mirror import mirror
from graphscope.tracing import Traced, trace_function

if TYPE_CHECKING:
    from graphscope.bundle import Bundle
    from graphscope.render import LayerTree, Picture
    from graphscope.validate import Validation

__all__ = ["Scope", "trace", "tree"]


def trace(
    model: Any,
    input_signature: Any = None,
    *,
    training: bool = False,
    quiet: bool = False,
    safe_mode: bool = True,
) -> Scope:
    """Trace `model` and mirror every op it runs, nested functions included.

    Args:
        model: a Keras 3 model (functional, sequential, subclassed, nested), a `tf.Module` with
            `__call__`, a `tf.function`, a ConcreteFunction, or a path to a `.keras`/`.h5` file
            or a SavedModel directory.
        input_signature: `tf.TensorSpec`s (or shapes), one per positional input; optional when
            the model knows its inputs.
        training: trace the training-mode graph (dropout active, batch norm in training mode).
            Executors never update weights, whichever mode is traced.
        quiet: never show a progress bar (one appears on a terminal's stderr when tracing and
            mirroring take over a second; never in notebooks, pipes or CI logs).
        safe_mode: load `.keras` files in Keras' safe mode (the default), which refuses to run
            Python code stored in the file (a Lambda layer's function); pass False only for
            files you trust.

    Returns:
        A `Scope` to search, walk and run.

    >>> import graphscope as gs, keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    >>> gs.trace(model).find("dense/BiasAdd:0").names
    ['dense/BiasAdd:0']
    """
    with StageProgress(quiet=quiet) as progress:
        with progress.stage(f"tracing {_describe(model)}"):
            traced = trace_function(model, input_signature, training=training, safe_mode=safe_mode)
        with progress.stage(f"mirroring {traced.name}") as tick:
            graph = mirror(traced, tick=tick)
    return Scope(traced, graph)


def _describe(model: Any) -> str:
    """What is being traced, in a few words, for the progress display."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return str(getattr(model, "name", None) or type(model).__name__)


def tree(
    model: Any,
    *,
    depth: int | None = None,
    pattern: str | None = None,
    ops: bool = False,
    quiet: bool = False,
) -> LayerTree:
    """`trace(model).layer_tree(...)`: a model's layers as a tree, to print or show in a notebook.

    >>> import graphscope as gs, keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")], name="tiny")
    >>> print(gs.tree(model))  # doctest: +NORMALIZE_WHITESPACE
     layer       type        output  params  ops
     ──────────────────────────────────────────────
     tiny      Sequential  ?×2          8    9
     └─ dense  Dense       ?×2          8    6  cut
    <BLANKLINE>
    1 layer · 9 ops · 8 params
    cut: every path from the inputs passes through this output
    """
    return trace(model, quiet=quiet).layer_tree(depth=depth, pattern=pattern, ops=ops)


class Scope(RichDisplay):
    """A traced model: its mirrored graph, queries over it and executors for any of its tensors."""

    def __init__(self, traced: Traced, graph: nx.DiGraph) -> None:
        self._traced = traced
        self._graph = graph
        self._runtime: Runtime | None = None
        self._executors = LRU()
        self._lock = threading.Lock()

    # ---- what it is

    @property
    def name(self) -> str:
        """The traced model's name."""
        return self._traced.name

    @property
    def graph(self) -> nx.DiGraph:
        """The mirrored graph: one node per op (attribute `op`), producer -> consumer edges."""
        return self._graph

    @property
    def function(self) -> Any:
        """The traced `ConcreteFunction`."""
        return self._traced.function

    @property
    def model(self) -> Any:
        """The traced Keras model, when there is one."""
        return self._traced.model

    @property
    def inputs(self) -> list[str]:
        """The model's input names (what executors are fed by default)."""
        return list(self._traced.input_names)

    @property
    def outputs(self) -> Selection:
        """The traced function's output tensors."""
        return Selection(self._graph.graph["tensors"][n] for n in self._graph.graph["outputs"])

    @property
    def layers(self) -> list[Layer]:
        """Every layer call, in the model's `.layers` order, nested layers after their parent."""
        return list(self._graph.graph["layers"])

    def __repr__(self) -> str:
        n_layers = len({lay.index for lay in self._graph.graph["layers"] if "/" not in lay.name})
        return f"<Scope {self.name}: {self._graph.number_of_nodes()} ops, {n_layers} layers>"

    # ---- display

    def layer_tree(
        self,
        *,
        depth: int | None = None,
        pattern: str | None = None,
        ops: bool = False,
        limit: int = 60,
    ) -> LayerTree:
        """The layers as a tree (type, output shape, params, ops; fork/join/cut marks); see
        `graphscope.render.layer_tree`. Print it, or show it in a notebook."""
        from graphscope import render

        return render.layer_tree(self._graph, depth=depth, pattern=pattern, ops=ops, limit=limit)

    def draw(self, of: Any, *, radius: int = 3) -> Picture:
        """The neighbourhood of a tensor, op or layer: its ancestors up to `radius` ops away,
        grouped by layer, with loops and branches as clusters; see `graphscope.render.draw`."""
        from graphscope import render

        return render.draw(self._graph, of, radius=radius)

    def export(self, format: str, path: str | os.PathLike[str] | None = None) -> str:
        """The mirrored graph as `graphml`, `dot` or `json` (node-link) text with plain string and
        number attributes; written to `path` too when given. See `graphscope.export`."""
        from graphscope.export import export

        text = export(self._graph, format)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    def __rich__(self) -> Any:
        return self.layer_tree()

    # ---- queries

    def tensor(self, name: str | Tensor) -> Tensor:
        """The tensor called `name` (canonical or raw name, or an op name meaning its only output)."""
        return query.tensor(self._graph, name)

    def op(self, name: str) -> Op:
        """The op record called `name`."""
        return query.op(self._graph, name)

    def find(self, pattern: str | None = None, *, op_type: str | None = None, layer: str | None = None) -> Selection:
        """Tensors whose canonical name matches `re.search(pattern)`; see `graphscope.query.find`."""
        return query.find(self._graph, pattern, op_type=op_type, layer=layer)

    def ancestors(self, of: Any, pattern: str | None = None, *, op_type: str | None = None) -> Selection:
        """Every tensor upstream of `of` (a name, Tensor, Selection or Layer), filtered like `find`."""
        return query.ancestors(self._graph, query.resolve_all(self._graph, of), pattern, op_type=op_type)

    def descendants(self, of: Any, pattern: str | None = None, *, op_type: str | None = None) -> Selection:
        """Every tensor downstream of `of`, filtered like `find`."""
        return query.descendants(self._graph, query.resolve_all(self._graph, of), pattern, op_type=op_type)

    def cut_points(self, *, every_tensor: bool = False) -> Selection:
        """Tensors every path from the inputs passes through: where the model splits into a head
        and a tail fed by that tensor alone. See `graphscope.query.cut_points`."""
        return query.cut_points(self._graph, every_tensor=every_tensor)

    def layer(self, key: str | int) -> Layer:
        """A layer call by name/path (`"backbone/conv1"`, `"shared@2"`) or index in `model.layers`."""
        return query.layer(self._graph, key)

    # ---- execution

    def executor(self, fetches: Any, *, feeds: Any = None) -> Executor:
        """A pruned executor for `fetches` (names, Tensors, a Selection or a Layer).

        By default it is fed the model's inputs; `feeds`, when given, is the complete list of
        tensors it is fed (intermediate tensors, and model inputs by name if still needed).
        Executors are cached: the same fetches and feeds return the same executor, and the same
        fetch *set* (in any order or spelling) reuses the compiled function. The most recently
        used 64 of each are kept per scope.
        """
        fetch_pairs = self._pairs(fetches)
        if feeds is None:
            tensors = self._graph.graph["tensors"]
            feed_pairs = [(n, tensors[t]) for n, t in zip(self.inputs, self._graph.graph["inputs"])]
        else:
            feed_pairs = self._pairs(feeds)
        key = (tuple((k, t.name) for k, t in fetch_pairs), tuple((k, t.name) for k, t in feed_pairs))
        executor = self._executors.get(key)
        if executor is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = Runtime(self._traced, self._graph)
            executor = Executor(self._graph, self._runtime, fetch_pairs, feed_pairs, explicit_feeds=feeds is not None)
            self._executors.put(key, executor)
        return executor

    def run(self, fetches: Any, inputs: Any, *, feeds: Any = None) -> Results:
        """One-shot `executor(fetches, feeds=feeds)(inputs)`."""
        ex = self.executor(fetches, feeds=feeds)
        return ex(*inputs) if isinstance(inputs, tuple) else ex(inputs)

    # ---- datasets

    def extract(
        self,
        fetches: Any,
        data: Any,
        *,
        out: str | os.PathLike[str],
        batch_size: int | None = None,
        quiet: bool = False,
    ) -> Bundle:
        """Run `fetches` over a whole dataset and store the values in a zarr store at `out`.

        Args:
            fetches: tensor names, Tensors, a Selection or a Layer.
            data: numpy arrays (a dict or list of them for several inputs), a `tf.data.Dataset`
                (of batches, or of samples when `batch_size` is given; `(x, y)` elements give x),
                or an iterable of batches.
            out: the store's directory (zarr v3). Re-running the same call after an
                interruption continues where it stopped; a finished store is left as it is.
            batch_size: samples per batch (and per chunk) for arrays (default 32) and datasets
                of samples.
            quiet: no progress bar (one shows samples/s and the time left on a terminal).

        Returns:
            The store reopened as a `Bundle` (`gs.open(out)`): `bundle[name][i]` is sample i's
            value. See `graphscope.extract` for the layout.
        """
        from graphscope import extract
        from graphscope.bundle import open as open_bundle
        from graphscope.export import graph_data

        tensors = [t for _, t in self._pairs(fetches)]
        tensors = list({t.name: t for t in tensors}.values())
        executor = self.executor([t.name for t in tensors])
        extract.extract(
            executor,
            data,
            out=out,
            batch_size=batch_size,
            about=self.describe(tensors),
            graph=lambda: graph_data(self._graph),
            quiet=quiet,
        )
        return open_bundle(out)

    def describe(self, tensors: list[Tensor]) -> dict[str, Any]:
        """What an extraction store records: the model, its weights fingerprint, the input
        signature, the graphscope version, and each tensor's raw name, layer, op type and dtype."""
        from graphscope import __version__
        from graphscope.extract import weights_fingerprint

        variables = self.function.graph.variables
        tensor_records = self._graph.graph["tensors"]
        inputs = [tensor_records[n] for n in self._graph.graph["inputs"]]
        return {
            "model": self.name,
            "fingerprint": weights_fingerprint((v.name, v.value()) for v in variables),  # no copy
            "input_signature": [
                {"name": name, "dtype": t.dtype, "shape": None if t.shape is None else list(t.shape)}
                for name, t in zip(self.inputs, inputs)
            ],
            "graphscope_version": __version__,
            "tensors": {
                t.name: {"raw_name": t.raw_name, "layer": t.layer, "op_type": t.op_type, "dtype": t.dtype}
                for t in tensors
            },
        }

    def validate(self, inputs: Any, *, fetches: Any = None) -> Validation:
        """Replay each fetched op (every op by default) on its own fetched inputs, and compare
        fetched layer outputs with Keras' own; see `graphscope.validate`."""
        from graphscope.validate import validate

        return validate(self, inputs, fetches=fetches)

    def _pairs(self, items: Any) -> list[tuple[str, Tensor]]:
        """(key as given, Tensor) for each fetch or feed."""
        if isinstance(items, Layer):
            items = items.outputs
        if isinstance(items, (str, Tensor)):
            items = [items]
        if not isinstance(items, Iterable):
            raise ArgumentError(
                f"expected tensor names, Tensors, a Selection or a Layer, got {type(items).__name__}"
            )
        pairs = []
        for item in items:
            if isinstance(item, str) and item in self.inputs:
                t = self._graph.graph["tensors"][self._graph.graph["inputs"][self.inputs.index(item)]]
            else:
                t = query.tensor(self._graph, item)
            pairs.append((item if isinstance(item, str) else t.name, t))
        if not pairs:
            raise TensorNotFoundError("nothing to fetch: give at least one tensor name")
        return pairs
