"""graphscope: look inside a TensorFlow/Keras model and run any tensor you find there.

    import graphscope as gs
    scope = gs.trace(model)
    scope.find(r"block4_conv3/BiasAdd")
    scope.run(["block4_conv3/BiasAdd:0", "block4_conv3/Relu:0"], images)

The public names below load lazily, so `import graphscope` (and the CLI's `--help`) does not
import TensorFlow until something needs it. Where TensorFlow and Keras are already imported,
tracing is what comes next: its modules are imported with the package (networkx most of their
0.1 s), not inside the first `gs.trace`. The package is layered the way the data flows
(`ir` <- `backend`, `display` <- `runtime` <- `data`, `check` <- `scope`, `bundle`, `cli`): see
the README's architecture section.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

# registers the views of graphscope's records (`graphscope.ir.views`) before anything shows one
from graphscope import display  # noqa: F401  (rich, no TensorFlow)
from graphscope.errors import (
    AmbiguousMatchError,
    ArgumentError,
    DisconnectedError,
    ExecutionError,
    GraphscopeError,
    GraphvizNotFoundError,
    InputError,
    LayerNotFoundError,
    MissingDependencyError,
    ModelLoadError,
    OptionError,
    PatternError,
    StoreError,
    TensorNotFoundError,
    UnsupportedFetchError,
    UnsupportedModelError,
    UnusedTensorWarning,
    GuessedInputsWarning,
)

from graphscope.version import __version__

if TYPE_CHECKING:
    from graphscope.bundle import Bundle, open
    from graphscope.comparison import Comparison, compare
    from graphscope.ir import presets
    from graphscope.ir.graph import ModelGraph
    from graphscope.ir.numerics import Numerics
    from graphscope.ir.statistics import Statistics, TensorStats
    from graphscope.ir.query import ancestors, cut_points, descendants, find
    from graphscope.display.plot import overlay
    from graphscope.ir.records import Layer, Op, Results, Selection, Tensor
    from graphscope.runtime.executor import Executor
    from graphscope.scope import Scope, trace, tree

_LAZY = {
    "Bundle": "graphscope.bundle",
    "open": "graphscope.bundle",
    "Comparison": "graphscope.comparison",
    "compare": "graphscope.comparison",
    "Executor": "graphscope.runtime.executor",
    "Results": "graphscope.ir.records",
    "Layer": "graphscope.ir.records",
    "Op": "graphscope.ir.records",
    "Selection": "graphscope.ir.records",
    "Tensor": "graphscope.ir.records",
    "ModelGraph": "graphscope.ir.graph",
    "Numerics": "graphscope.ir.numerics",
    "Statistics": "graphscope.ir.statistics",
    "TensorStats": "graphscope.ir.statistics",
    "ancestors": "graphscope.ir.query",
    "descendants": "graphscope.ir.query",
    "find": "graphscope.ir.query",
    "cut_points": "graphscope.ir.query",
    "overlay": "graphscope.display.plot",
    "Scope": "graphscope.scope",
    "trace": "graphscope.scope",
    "tree": "graphscope.scope",
}

__all__ = [
    "AmbiguousMatchError",
    "ArgumentError",
    "Bundle",
    "Comparison",
    "DisconnectedError",
    "ExecutionError",
    "Executor",
    "GraphscopeError",
    "GraphvizNotFoundError",
    "InputError",
    "Layer",
    "LayerNotFoundError",
    "MissingDependencyError",
    "ModelGraph",
    "ModelLoadError",
    "Numerics",
    "Op",
    "OptionError",
    "PatternError",
    "Results",
    "Scope",
    "Selection",
    "Statistics",
    "StoreError",
    "Tensor",
    "TensorStats",
    "TensorNotFoundError",
    "UnsupportedFetchError",
    "UnsupportedModelError",
    "UnusedTensorWarning",
    "GuessedInputsWarning",
    "__version__",
    "ancestors",
    "compare",
    "cut_points",
    "descendants",
    "find",
    "open",
    "overlay",
    "presets",
    "trace",
    "tree",
]


_LAZY_MODULES = {"presets": "graphscope.ir.presets"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:  # `gs.presets.logits(scope)`
        value = importlib.import_module(_LAZY_MODULES[name])
        globals()[name] = value
        return value
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'graphscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if "tensorflow" in sys.modules and "keras" in sys.modules:
    importlib.import_module("graphscope.scope")
