"""The exception hierarchy: every error says what was wrong and what would be right."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable

__all__ = [
    "AmbiguousMatchError",
    "ArgumentError",
    "DisconnectedError",
    "ExecutionError",
    "GraphscopeError",
    "GuessedInputsWarning",
    "GraphvizNotFoundError",
    "InputError",
    "LayerNotFoundError",
    "ModelLoadError",
    "OptionError",
    "PatternError",
    "TensorNotFoundError",
    "UnsupportedFetchError",
    "UnsupportedModelError",
    "UnusedTensorWarning",
    "closest",
    "outside_stacklevel",
]


class GraphscopeError(Exception):
    """Base class of every error graphscope raises on purpose.

    `command_line`, where given, is the message as the command line's user should read it: its
    way out in the CLI's options (`--signature NAME`, `--input NAME=FILE`), not in Python's
    arguments; the CLI prints it instead of the message.
    """

    def __init__(self, *args: object, command_line: str | None = None) -> None:
        super().__init__(*args)
        self.command_line = command_line

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ArgumentError(GraphscopeError, TypeError):
    """An argument of the wrong kind (a tensor named by a number, fetches given as an int)."""


class OptionError(GraphscopeError, ValueError):
    """An option outside what it can be (an unknown export format, a negative radius)."""


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


class UnusedTensorWarning(UserWarning):
    """A fetch of a tensor no output of the model depends on (`graphscope.ir.query.unused`): its
    value is real but is not part of what the model computes (Keras' shape-probe call of an RNN's
    cell)."""


class GuessedInputsWarning(UserWarning):
    """A Keras 3 subclassed model traced without a signature from the shapes Keras kept when it
    was built (not their dtypes, nor arguments past the first), where the trace shows that guess
    may not be how the model is called: an input cast to integers inside it, or an optional
    argument of its `call`; also a model with a sparse input (`Input(sparse=True)`), traced dense."""


class ExecutionError(GraphscopeError, RuntimeError):
    """TensorFlow failed while running an executor; the message names the op that failed."""


class StoreError(GraphscopeError, ValueError):
    """An extraction store that cannot be written, continued or opened."""


class GraphvizNotFoundError(GraphscopeError, RuntimeError):
    """Drawing needs Graphviz's `dot` program, which is not installed (the message says how)."""


class MissingDependencyError(GraphscopeError, ImportError):
    """An optional package a feature needs is not installed (the message says how to add it)."""


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to `n` candidates closest to `name`, best first.

    Compares case-insensitively on the whole name, then on its last path segment (`BiasAd`
    finds `block1_conv1/BiasAdd:0`), then offers the direct contents of the scope the name is
    in (`conv/Conv2d` finds `conv/convolution:0`).

    >>> closest("dense/BiasAd:0", ["dense/BiasAdd:0", "conv/Relu:0"])
    ['dense/BiasAdd:0']
    >>> closest("conv/Conv2d", ["conv/kernel/read:0", "conv/convolution:0", "dense/MatMul:0"])
    ['conv/convolution:0', 'conv/kernel/read:0']
    """
    pool = list(dict.fromkeys(candidates))
    lowered: dict[str, str] = {}
    for c in pool:
        lowered.setdefault(c.lower(), c)
    key = name.lower()
    found = [lowered[c] for c in difflib.get_close_matches(key, lowered, n=n, cutoff=0.6)]
    if len(found) < n:
        tail = key.rsplit("/", 1)[-1]
        found += [c for c in pool if tail and tail in c.lower() and c not in found][: n - len(found)]
    scope, _, _ = name.rpartition("/")
    if len(found) < n and scope:
        inside = [c for c in pool if c.startswith(scope + "/") and c not in found]
        inside.sort(key=lambda c: c.count("/"))  # the scope's own ops before nested ones
        found += inside[: n - len(found)]
    return found


def suggestion(name: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' sentence, or '' when nothing is close."""
    near = closest(name, candidates)
    return f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""


def key_suggestion(name: str, keys: Iterable[str]) -> str:
    """What to say where a result or statistic is looked up by a name it is not keyed by: the
    keys under that name's scope (a layer fetched by name is keyed by its outputs' canonical
    names: `d1` -> `d1/Relu:0`), or the closest keys."""
    keys = [str(k) for k in keys]
    inside = sorted((k for k in keys if k.startswith(f"{name}/")), key=lambda k: k.count("/"))
    if inside:
        return (" Values are keyed by tensor names (a layer's by its outputs'); under "
                f"{name + '/'!r}: {', '.join(repr(k) for k in inside[:5])}{', ...' if len(inside) > 5 else ''}.")
    return suggestion(name, keys)


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def outside_stacklevel() -> int:
    """The `stacklevel` that makes a warning issued by the caller point at the first frame
    outside graphscope (the user's line), however many of graphscope's calls lie between."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
