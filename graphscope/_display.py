"""One mixin for the display protocol of graphscope objects: a class with `__rich__` gets a
plain-text `str()` and Jupyter's `_repr_mimebundle_`/`_repr_html_` from it. `render` is imported
only when something is shown."""

from __future__ import annotations

from typing import Any


class RichDisplay:
    """`str()`, `_repr_html_` and `_repr_mimebundle_` from the subclass's `__rich__`."""

    __slots__ = ()

    def __rich__(self) -> Any:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __str__(self) -> str:
        from graphscope import render

        return render.to_text(self.__rich__())

    def _repr_html_(self) -> str:
        from graphscope import render

        return render.to_html(self.__rich__())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from graphscope import render

        return render.mimebundle(self)
