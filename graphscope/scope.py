"""Scope: a traced model for a user, its `ModelGraph` and the runtime that runs it (trace ->
mirror -> query -> execute), with its views, pictures, exports, dataset jobs and checks."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from graphscope.backend.mirror import Mirrored, mirror
from graphscope.backend.trace import Traced, trace_function
from graphscope.display.progress import StageProgress
from graphscope.errors import OptionError
from graphscope.display.tree import LayerTree, layer_tree
from graphscope.ir.graph import ModelGraph, Queries
from graphscope.ir.records import Results
from graphscope.ir.views import Shown, view

if TYPE_CHECKING:
    from graphscope.bundle import Bundle
    from graphscope.check.validate import Validation
    from graphscope.ir.numerics import Numerics
    from graphscope.ir.statistics import Statistics
    from graphscope.display.picture import Picture
    from graphscope.runtime.executor import Executor
    from graphscope.runtime.gradients import GradientExecutor
    from graphscope.runtime.runtime import Runtime

__all__ = ["Scope", "trace", "tree"]


def trace(
    model: Any,
    input_signature: Any = None,
    *,
    training: bool = False,
    quiet: bool = False,
    safe_mode: bool = True,
    signature: str | None = None,
) -> Scope:
    """Trace `model` and mirror every op it runs, nested functions included.

    Args:
        model: a Keras 3 or tf_keras model (functional, sequential, subclassed, nested), a
            `tf.Module` with `__call__`, a `tf.function` or any callable that calls Keras layers
            (a lambda, a bound method such as `model.predict_step`), a ConcreteFunction, or a
            path to a `.keras`/`.h5` file or a SavedModel directory.
        input_signature: `tf.TensorSpec`s (or shapes), one per positional input, or dicts,
            lists and tuples of them (`[{"token_ids": spec, "padding_mask": spec}]`, whose
            inputs are named `padding_mask`, `token_ids`); optional when the model knows its
            inputs.
        training: trace the training-mode graph (dropout active, batch norm in training mode).
            A callable's or tf.Module's Keras layers called without `training=` take the mode;
            OptionError where nothing can (a ConcreteFunction, a SavedModel's functions).
            Executors never update weights, whichever mode is traced.
        quiet: never show a progress bar (one appears on a terminal's stderr when tracing and
            mirroring take over a second; never in notebooks, pipes or CI logs).
        safe_mode: load `.keras` files in Keras' safe mode (the default), which refuses to run
            Python code stored in the file (a Lambda layer's function); pass False only for
            files you trust.
        signature: which of a SavedModel's signatures to trace, by name (a SavedModel
            directory, or what `tf.saved_model.load` returns); default `serving_default`.
            OptionError, listing the signatures there are, when it has none of that name.

    Returns:
        A `Scope` to search, walk and run.

    >>> import graphscope as gs, keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    >>> gs.trace(model).find("dense/BiasAdd:0").names
    ['dense/BiasAdd:0']
    """
    with StageProgress(quiet=quiet) as progress:
        with progress.stage(f"tracing {_describe(model)}"):
            traced = trace_function(model, input_signature, training=training, safe_mode=safe_mode,
                                    signature=signature)
        with progress.stage(f"mirroring {traced.name}") as tick:
            mirrored = mirror(traced, tick=tick)
    return Scope(traced, mirrored)


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
     tiny      Sequential  [?,2]        8    9
     └─ dense  Dense       [?,2]        8    6  cut
    <BLANKLINE>
    1 layer · 9 ops · 8 params
    cut: every path from the inputs passes through this output
    """
    return trace(model, quiet=quiet).layer_tree(depth=depth, pattern=pattern, ops=ops)


class Scope(Queries, Shown):
    """A traced model: its mirrored graph, queries over it and executors for any of its tensors."""

    def __init__(self, traced: Traced, mirrored: Mirrored) -> None:
        self._traced = traced
        self._mirrored = mirrored
        self._runtime_lock = threading.Lock()
        self._lazy_runtime: Runtime | None = None

    @property
    def _runtime(self) -> Runtime:
        """The runtime, made (and its modules imported) on first use: tracing and queries need
        neither, and a first trace in a fresh process is that much quicker."""
        with self._runtime_lock:
            if self._lazy_runtime is None:
                from graphscope.runtime.runtime import Runtime

                self._lazy_runtime = Runtime(self._traced, self._mirrored)
            return self._lazy_runtime

    # ---- what it is

    @property
    def name(self) -> str:
        """The traced model's name."""
        return self._traced.name

    @property
    def model_graph(self) -> ModelGraph:
        """The mirrored graph with its metadata and queries (no TensorFlow needed to use it)."""
        return self._mirrored.graph

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
        return self.model_graph.input_names

    def __repr__(self) -> str:
        return f"<Scope {self.name}: {self.model_graph.n_ops} ops, {self.model_graph.n_layers} layers>"

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
        `graphscope.display.tree.layer_tree`. Print it, or show it in a notebook."""
        return layer_tree(self.model_graph, depth=depth, pattern=pattern, ops=ops, limit=limit)

    def draw(self, of: Any, *, radius: int = 3) -> Picture:
        """The neighbourhood of a tensor, op or layer: its ancestors up to `radius` ops away,
        grouped by layer, with loops and branches as clusters; see `graphscope.display.picture`."""
        from graphscope.display.picture import draw  # pydot, only when drawing

        return draw(self.model_graph, of, radius=radius)

    def export(self, format: str, path: str | os.PathLike[str] | None = None) -> str:
        """The mirrored graph as `graphml`, `dot` or `json` (node-link) text with plain string and
        number attributes, written to `path` too when given (see `graphscope.ir.serialize`); or,
        with `"tensorboard"`, an event file written to the directory `path` for `tensorboard
        --logdir path`, whose graph has canonical names, layers as name scopes and nested
        functions' and loop bodies' ops inside their caller's scope (returns the file's path)."""
        if format == "tensorboard":
            from graphscope.backend import tensorboard

            if path is None:
                raise OptionError('export("tensorboard", logdir) writes an event file: give the directory to write it in')
            return tensorboard.write(self.graph, path)
        from graphscope.ir.serialize import export

        text = export(self.graph, format)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    # ---- execution

    def executor(self, fetches: Any, *, feeds: Any = None, edits: Any = None) -> Executor:
        """A pruned executor for `fetches` (tensor, op or layer names, Tensors, a Selection or a
        Layer).

        By default it is fed the model's inputs; `feeds`, when given, is the complete list of
        tensors it is fed (intermediate tensors, and model inputs by name if still needed).

        `edits` maps tensors (names or Tensors) to replacements: an array, patched in on every
        call and broadcast to the tensor's shape (a value saved from another run: activation
        patching), or a callable `fn(value) -> value` written with TF ops or `keras.ops` (zero a
        channel, scale, steer, clamp), traced once into the executor (tensors and variables it
        reads are taken at their values then). Everything downstream of
        an edit is computed from it, a fetch of the edited tensor returns the edited value, and
        the model is never changed. Inside loop bodies and branches a callable applies at every
        iteration (or whenever the branch runs); an array is refused there.

        Executors are cached: the same fetches, feeds and edits return the same executor, and
        the same fetch *set* (in any order or spelling) reuses the compiled function. The most
        recently used 64 of each are kept per scope.

        >>> import graphscope as gs, keras, numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
        >>> run = gs.trace(model).executor("dense/BiasAdd:0", edits={"dense/MatMul:0": lambda v: v * 0})
        >>> run(np.ones((1, 3), "float32"))["dense/BiasAdd:0"].tolist() == [model.layers[0].bias.numpy().tolist()]
        True
        """
        return self._runtime.executor(fetches, feeds=feeds, edits=edits)

    def run(self, fetches: Any, inputs: Any, *, feeds: Any = None, edits: Any = None) -> Results:
        """One-shot `executor(fetches, feeds=feeds, edits=edits)(inputs)`."""
        return self._runtime.run(fetches, inputs, feeds=feeds, edits=edits)

    def gradients(self, of: Any, wrt: Any, inputs: Any, *, target: Any = None, feeds: Any = None,
                  edits: Any = None) -> Results:
        """The gradient of `target(value of of)` (default: the value itself), summed to a
        scalar, with respect to each entry of `wrt`, on `inputs`.

        Args:
            of: one tensor (a name, an output key such as `"detection_boxes"`, a Tensor).
            wrt: one entry or a list: model inputs (by input name), any tensor outside loop
                bodies and branches (a pre-activation inside a layer included), variables (by
                path, `"conv1/kernel"`, or the variable itself).
            inputs: what the model (or `feeds`) is fed, as for an executor.
            target: `fn(value) -> tensor` written with TF ops, e.g. `lambda v: v[:, 3]` for one
                class's logit; its result is summed.
            feeds, edits: as for `executor`; gradients flow through edits.

        Returns:
            `Results` keyed as `wrt` was given (a variable object by its path), each gradient
            shaped like its entry. Gradients flow through loops (`map_fn`, `while_loop`),
            branches and nested functions. Compiled once and cached by `of`, `wrt`, feeds, edits
            and `target` (by identity: keep one function, not a new lambda per call, to reuse
            the compiled gradient); no weight moves.
        """
        return self._runtime.gradients(of, wrt, inputs, target=target, feeds=feeds, edits=edits)

    def gradient_executor(self, of: Any, wrt: Any, *, target: Any = None, feeds: Any = None,
                          edits: Any = None) -> GradientExecutor:
        """The cached function behind `gradients`, to call on many inputs."""
        return self._runtime.gradient_executor(of, wrt, target=target, feeds=feeds, edits=edits)

    def numerics(self, inputs: Any, *, feeds: Any = None, edits: Any = None, backward: Any = None) -> Numerics:
        """Where NaN and Inf values start, on `inputs`.

        Every float (or complex) tensor the feeds compute (inside loops and branches too, per iteration) is
        reduced to its NaN, +Inf and -Inf counts inside the graph, about the cost of one forward
        pass; values are never copied out. `first` is the first tensor, in execution order, that
        holds NaN or Inf while its own inputs are all finite (`iteration`: its iteration in each
        enclosing loop), `origins` every such tensor, `bad` every non-finite tensor with its
        counts. Tensors that only pass a value along (loop and branch arguments, While/If/call
        outputs, Identity) are never origins.

        Args:
            inputs: what the model (or `feeds`) is fed, as for an executor.
            feeds, edits: as for `executor` (an edit can inject a NaN to see where it goes).
            backward: a tensor outside loops and branches: check the gradient of `sum(backward)`
                with respect to every float (or complex) tensor it is computed from (outside loops and
                branches); `first` is the tensor whose gradient first goes non-finite walking
                from it toward the inputs. When the forward pass is already non-finite, the
                report is the forward one (`examined` is False).

        Returns:
            A `Numerics`; print it (or show it in a notebook) for the table of origins.

        >>> import graphscope as gs, keras, numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
        >>> gs.trace(model).numerics(np.ones((1, 3), "float32")).ok
        True
        """
        from graphscope.runtime.numerics import numerics

        return numerics(self._runtime, inputs, feeds=feeds, edits=edits, backward=backward)

    # ---- datasets and checks

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
            fetches: tensor or layer names, Tensors, a Selection or a Layer.
            data: numpy arrays (a dict or list of them for several inputs; tensors are read as
                arrays), a `.npy` file's path (memory-mapped) or an `.npz`'s (arrays by input
                name), a dict or list of `.npy` paths (one per input), a `tf.data.Dataset` (of batches, or of samples when `batch_size` is given;
                `(x, y)` elements give x), or an iterable of batches.
            out: the store's directory (zarr v3). Re-running the same call after an
                interruption continues where it stopped; a finished store is left as it is.
            batch_size: samples per batch (and per chunk) for arrays (default 32, or the
                batch size a model fixes) and datasets of samples.
            quiet: no progress bar (one shows samples/s and the time left on a terminal).

        Returns:
            The store reopened as a `Bundle` (`gs.open(out)`): `bundle[name][i]` is sample i's
            value. See `graphscope.data.store` for the layout.
        """
        from graphscope.bundle import Bundle
        from graphscope.data.job import extract

        extract(self._runtime, fetches, data, out=out, batch_size=batch_size, quiet=quiet)
        return Bundle(out)

    def statistics(
        self,
        fetches: Any,
        data: Any,
        *,
        batch_size: int | None = None,
        axis: int | None = -1,
        bins: int | None = None,
        feeds: Any = None,
        edits: Any = None,
        quiet: bool = False,
    ) -> Statistics:
        """Statistics of `fetches` over a whole dataset, without storing their values.

        Each batch's values are reduced inside the graph to a few numbers per channel (values
        inside loops: every iteration's), and the batches merged in float64 with Chan et al.'s
        update: the figures are those of the concatenated values (numpy's in float64, up to
        rounding). Memory stays flat whatever the dataset's size.

        Args:
            fetches: tensor or layer names, Tensors, a Selection or a Layer (what `extract` takes).
            data: what `extract` takes (arrays, a dict or list of them, a `.npy`/`.npz` file's
                path, a `tf.data.Dataset`, an iterable of batches).
            batch_size: samples per batch for arrays (default 32, or the batch size a model
                fixes) and datasets of samples.
            axis: the channel axis: one entry per index of it, reduced over every other axis,
                samples included (default -1, the last); None for one figure per tensor.
            bins: also count each entry's values in `bins` equal bins between its min and max
                over the data (a second pass over the data; `numpy.histogram(values, bins)`; a
                warning where the second pass computes other values, as dropout traced with
                `training=True` does, and some fall outside the first pass's range).
            feeds, edits: as for `executor`.
            quiet: no progress bar.

        Returns:
            A `Statistics`: `stats[name]` is a `TensorStats` (`count`, `mean`, `std`
            (population), `min`, `max`, `zero_fraction`, `nonfinite`, `histogram`); NaN and
            Inf values are counted in `nonfinite` and left out of the rest. `stats.dead()`
            lists the channels that never exceed 0; print it for a table.

        Integer and boolean tensors are summarised as float64 (booleans as 0 and 1); tensors
        inside branches are refused, as by `extract` (and those of a loop inside a branch).

        >>> import graphscope as gs, keras, numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
        >>> x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
        >>> s = gs.trace(model).statistics("dense/BiasAdd:0", x, quiet=True)["dense/BiasAdd:0"]
        >>> bool(np.allclose(s.mean, model(x).numpy().mean(0)))
        True
        """
        from graphscope.data.statistics import statistics

        return statistics(self._runtime, fetches, data, batch_size=batch_size, axis=axis, bins=bins, feeds=feeds,
                          edits=edits, quiet=quiet)

    def describe(self, tensors: Any) -> dict[str, Any]:
        """What an extraction store records: the model, its weights fingerprint, the input
        signature, the graphscope version, and each tensor's raw name, layer, op type and dtype."""
        from graphscope.data.job import describe

        return describe(self._runtime, self.model_graph.resolve(tensors))

    def validate(self, inputs: Any, *, fetches: Any = None) -> Validation:
        """Replay each fetched op (every op by default) on its own fetched inputs, and compare
        fetched layer outputs with Keras' own; see `graphscope.check.validate`."""
        from graphscope.check.validate import validate

        return validate(self._runtime, inputs, fetches=fetches)


view.register(Scope)(lambda scope: scope.layer_tree())
