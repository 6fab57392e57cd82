"""A progress display for slow stages (tracing, mirroring): rich, on stderr, shown only after
about a second, only on an interactive terminal (not in CI logs, pipes or notebooks), and never
when quiet."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DELAY_S = 1.0


class StageProgress:
    """Stages of one slow job; the display appears `delay` seconds after the first starts."""

    def __init__(self, *, quiet: bool = False, delay: float = DELAY_S, console: Any = None) -> None:
        self._bar: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._closed = False
        if quiet:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = console or Console(stderr=True)
        if not console.is_terminal or console.is_jupyter or os.environ.get("CI"):
            return
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} ops"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._timer = threading.Timer(delay, self._show)
        self._timer.daemon = True
        self._timer.start()

    @property
    def active(self) -> bool:
        """Whether anything may be displayed (a terminal, not quiet)."""
        return self._bar is not None

    def _show(self) -> None:
        with self._lock:
            if not self._closed:
                self._bar.start()

    @contextmanager
    def stage(self, description: str) -> Iterator[Callable[[int], None]]:
        """A stage; the yielded function counts the ops it has done."""
        if self._bar is None:
            yield _ignore
            return
        task = self._bar.add_task(description, total=None)
        try:
            yield lambda n=1: self._bar.advance(task, n)
        finally:
            self._bar.remove_task(task)

    def close(self) -> None:
        """Stop the display (and the timer that would start it)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self._bar is not None and self._bar.live.is_started:
                self._bar.stop()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _ignore(n: int = 1) -> None:
    """The op counter of a progress that shows nothing."""
