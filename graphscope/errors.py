"""The exception hierarchy: every error says what was wrong and what would be right."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AmbiguousMatchError",
    "DisconnectedError",
    "ExecutionError",
    "GraphscopeError",
    "GraphvizNotFoundError",
    "InputError",
    "LayerNotFoundError",
    "ModelLoadError",
    "PatternError",
    "TensorNotFoundError",
    "UnsupportedFetchError",
    "UnsupportedModelError",
    "closest",
]


class GraphscopeError(Exception):
    """Base class of every error graphscope raises on purpose."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class TensorNotFoundError(GraphscopeError, KeyError):
    """A tensor or op name that is not in the traced graph (message lists the closest names)."""


class LayerNotFoundError(GraphscopeError, KeyError):
    """A layer name, path or index that the traced model does not have."""


class AmbiguousMatchError(GraphscopeError, ValueError):
    """A name or pattern that matches several things where one was required."""


class DisconnectedError(GraphscopeError, ValueError):
    """A fetch needs inputs that the feeds do not give, or a feed does not reach any fetch."""


class InputError(GraphscopeError, ValueError):
    """Arrays fed to an executor have the wrong count, shape or dtype."""


class PatternError(GraphscopeError, ValueError):
    """A regular expression that does not compile, or matches nothing where a match was required."""


class UnsupportedFetchError(GraphscopeError, ValueError):
    """A tensor that exists in the graph but cannot be fetched (resource handles, loop bodies)."""


class UnsupportedModelError(GraphscopeError, TypeError):
    """An object `trace` cannot turn into a graph (or an unbuilt model)."""


class ModelLoadError(GraphscopeError, FileNotFoundError):
    """A model path that is missing, unreadable or not a model."""


class ExecutionError(GraphscopeError, RuntimeError):
    """TensorFlow failed while running an executor; the message names the op that failed."""


class GraphvizNotFoundError(GraphscopeError, RuntimeError):
    """Drawing needs Graphviz's `dot` program, which is not installed (the message says how)."""


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to `n` candidates closest to `name`, best first.

    Matches on the whole name and on its last path segment, so `BiasAd` finds
    `block1_conv1/BiasAdd:0`.

    >>> closest("dense/BiasAd:0", ["dense/BiasAdd:0", "conv/Relu:0"])
    ['dense/BiasAdd:0']
    """
    pool = list(dict.fromkeys(candidates))
    found = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if len(found) < n:
        tail = name.rsplit("/", 1)[-1].lower()
        found += [c for c in pool if tail and tail in c.lower() and c not in found][: n - len(found)]
    return found


def suggestion(name: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' sentence, or '' when nothing is close."""
    near = closest(name, candidates)
    return f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""
