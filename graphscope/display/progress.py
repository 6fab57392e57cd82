"""Progress displays: stages of a slow job (tracing, mirroring), shown only after about a
second, and a dataset's samples (count, samples/s, time left). Both are rich, on stderr, only on
an interactive terminal (never in CI logs, pipes or notebooks: `interactive`), never when quiet."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["DELAY_S", "SampleProgress", "StageProgress", "interactive"]

DELAY_S = 1.0


def interactive(console: Any = None) -> Any:
    """A console on stderr when it is an interactive terminal (not a pipe, a notebook or CI),
    else None."""
    from rich.console import Console

    console = console or Console(stderr=True)
    if not console.is_terminal or console.is_jupyter or os.environ.get("CI"):
        return None
    return console


class StageProgress:
    """Stages of one slow job; the display appears `delay` seconds after the first starts."""

    def __init__(self, *, quiet: bool = False, delay: float = DELAY_S, console: Any = None) -> None:
        self._bar: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._closed = False
        if quiet:
            return
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = interactive(console)
        if console is None:
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


class SampleProgress:
    """A dataset job's bar: samples done of `total` (None: unknown), samples/s, time left."""

    def __init__(self, total: int | None, done: int, *, quiet: bool, console: Any = None,
                 label: str = "extracting") -> None:
        self._progress: Any = None
        console = None if quiet else interactive(console)
        if console is None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(f"{task.speed:,.1f}/s" if task.speed else "")

        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("samples"),
            Speed(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("extract", total=total, completed=done)
        self._progress.start()

    @property
    def active(self) -> bool:
        """Whether it is shown."""
        return self._progress is not None

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
