"""graphscope: look inside a TensorFlow/Keras model and run any tensor you find there.

>>> import graphscope as gs                                        # doctest: +SKIP
>>> scope = gs.trace(model)                                        # doctest: +SKIP
>>> scope.find(r"block4_conv3/BiasAdd")                            # doctest: +SKIP
>>> scope.run(["block4_conv3/BiasAdd:0", "block4_conv3/Relu:0"], images)  # doctest: +SKIP
"""

from __future__ import annotations

from graphscope.errors import (
    AmbiguousMatchError,
    DisconnectedError,
    ExecutionError,
    GraphscopeError,
    InputError,
    LayerNotFoundError,
    ModelLoadError,
    PatternError,
    TensorNotFoundError,
    UnsupportedFetchError,
    UnsupportedModelError,
)
from graphscope.execute import Executor, Results
from graphscope.graph import Layer, Op, Selection, Tensor
from graphscope.query import ancestors, descendants, find
from graphscope.scope import Scope, trace

__version__ = "0.1.0"

__all__ = [
    "AmbiguousMatchError",
    "DisconnectedError",
    "ExecutionError",
    "Executor",
    "GraphscopeError",
    "InputError",
    "Layer",
    "LayerNotFoundError",
    "ModelLoadError",
    "Op",
    "PatternError",
    "Results",
    "Scope",
    "Selection",
    "Tensor",
    "TensorNotFoundError",
    "UnsupportedFetchError",
    "UnsupportedModelError",
    "__version__",
    "ancestors",
    "descendants",
    "find",
    "trace",
]
