"""How graphscope's objects are shown, without the code that shows them.

`view(obj)` is a `functools.singledispatch` function: `graphscope.display` registers a rich
renderable for each record type (and installs the text and HTML exporters), so records never
import display, the way a `torch.fx.Node` knows nothing of its printers. A class inheriting
`Shown` gets `__rich__` (terminals), `str()` (plain text) and `_repr_html_`/`_repr_mimebundle_`
(Jupyter) from its registered view.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["Shown", "install", "plot", "view"]


@functools.singledispatch
def view(obj: Any) -> Any:
    """The rich renderable that shows `obj` (registered per type by `graphscope.display`)."""
    raise LookupError(f"no view is registered for {type(obj).__name__}")


_EXPORT: dict[str, Callable[[Any], str]] = {}


def install(*, text: Callable[[Any], str], html: Callable[[Any], str], plot: Callable[..., Any]) -> None:
    """Set how a renderable becomes plain text (`str()`) and HTML (notebooks), and how a value
    becomes a picture (`Results.plot`)."""
    _EXPORT.update(text=text, html=html, plot=plot)


def plot(value: Any, **options: Any) -> Any:
    """A picture of `value` (a matplotlib Figure), drawn by the registered plotter."""
    return _EXPORT["plot"](value, **options)


def _export(kind: str, renderable: Any) -> str:
    # `graphscope/__init__.py` imports `graphscope.display`, which installs both, before any
    # submodule of the package can be used
    return _EXPORT[kind](renderable)


class Shown:
    """`__rich__`, `str()`, `_repr_html_` and `_repr_mimebundle_` from the registered view."""

    __slots__ = ()

    def __rich__(self) -> Any:
        return view(self)

    def __str__(self) -> str:
        return _export("text", view(self))

    def _repr_html_(self) -> str:
        return _export("html", view(self))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": _export("html", view(self))}
