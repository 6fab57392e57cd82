"""graphscope: look inside a TensorFlow/Keras model and run any tensor you find there.

    import graphscope as gs
    scope = gs.trace(model)
    scope.find(r"block4_conv3/BiasAdd")
    scope.run(["block4_conv3/BiasAdd:0", "block4_conv3/Relu:0"], images)

The public names below load lazily, so `import graphscope` (and the CLI's `--help`) does not
import TensorFlow until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from graphscope.errors import (
    AmbiguousMatchError,
    ArgumentError,
    DisconnectedError,
    ExecutionError,
    GraphscopeError,
    GraphvizNotFoundError,
    InputError,
    LayerNotFoundError,
    ModelLoadError,
    OptionError,
    PatternError,
    StoreError,
    TensorNotFoundError,
    UnsupportedFetchError,
    UnsupportedModelError,
)

if TYPE_CHECKING:
    from graphscope.execute import Executor, Results
    from graphscope.graph import Layer, Op, Selection, Tensor
    from graphscope.query import ancestors, cut_points, descendants, find
    from graphscope.bundle import Bundle, open
    from graphscope.scope import Scope, trace, tree

__version__ = "0.1.0"

_LAZY = {
    "Bundle": "graphscope.bundle",
    "open": "graphscope.bundle",
    "Executor": "graphscope.execute",
    "Results": "graphscope.execute",
    "Layer": "graphscope.graph",
    "Op": "graphscope.graph",
    "Selection": "graphscope.graph",
    "Tensor": "graphscope.graph",
    "ancestors": "graphscope.query",
    "descendants": "graphscope.query",
    "find": "graphscope.query",
    "Scope": "graphscope.scope",
    "trace": "graphscope.scope",
    "tree": "graphscope.scope",
    "cut_points": "graphscope.query",
}

__all__ = [
    "AmbiguousMatchError",
    "ArgumentError",
    "Bundle",
    "DisconnectedError",
    "ExecutionError",
    "Executor",
    "GraphscopeError",
    "GraphvizNotFoundError",
    "InputError",
    "Layer",
    "LayerNotFoundError",
    "ModelLoadError",
    "Op",
    "OptionError",
    "PatternError",
    "Results",
    "Scope",
    "Selection",
    "StoreError",
    "Tensor",
    "TensorNotFoundError",
    "UnsupportedFetchError",
    "UnsupportedModelError",
    "__version__",
    "ancestors",
    "cut_points",
    "descendants",
    "find",
    "open",
    "trace",
    "tree",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'graphscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
