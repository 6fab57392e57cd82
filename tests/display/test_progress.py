"""display.progress: a progress bar on terminals only, after a delay, never when quiet."""

import io
import time

from rich.console import Console

import graphscope as gs
import graphscope.scope
from graphscope.backend import mirror
from graphscope.backend import trace as tracing
from graphscope.display.progress import StageProgress
from tests import models


def _console(terminal):
    return Console(file=io.StringIO(), force_terminal=terminal, width=80)


def _run_stages(progress, ticks=500):
    with progress:
        with progress.stage("tracing model"):
            time.sleep(0.2)
        with progress.stage("mirroring model") as tick:
            for _ in range(ticks):
                tick(1)
            time.sleep(0.3)


def test_a_terminal_shows_stages_after_the_delay(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    console = _console(terminal=True)
    progress = StageProgress(delay=0.05, console=console)
    assert progress.active
    _run_stages(progress)
    out = console.file.getvalue()
    assert "mirroring model" in out and "500 ops" in out


def test_nothing_shows_when_quick_quiet_piped_or_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    quick = _console(terminal=True)
    _run_stages(StageProgress(delay=30, console=quick))  # done before the delay
    assert quick.file.getvalue() == ""
    quiet = _console(terminal=True)
    progress = StageProgress(quiet=True, console=quiet)
    assert not progress.active
    _run_stages(progress)
    assert quiet.file.getvalue() == ""
    piped = _console(terminal=False)
    assert not StageProgress(delay=0, console=piped).active
    monkeypatch.setenv("CI", "true")
    assert not StageProgress(delay=0, console=_console(terminal=True)).active


def test_mirror_counts_every_op():
    traced = tracing.trace_function(models.control_flow())
    counted = []
    G = mirror.mirror(traced, tick=counted.append).graph.graph
    assert sum(counted) == G.number_of_nodes()


def test_trace_shows_its_stages_on_a_terminal_unless_quiet(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    consoles = []

    def on_a_terminal(*, quiet=False):  # what gs.trace makes, on a terminal, shown at once
        consoles.append(_console(terminal=True))
        return StageProgress(quiet=quiet, delay=0, console=consoles[-1])

    monkeypatch.setattr(graphscope.scope, "StageProgress", on_a_terminal)
    gs.trace(models.functional(), quiet=True)
    gs.trace(models.functional())
    quiet, shown = consoles
    assert quiet.file.getvalue() == ""
    assert "functional_cnn" in shown.file.getvalue()  # "tracing functional_cnn" / "mirroring ..."
