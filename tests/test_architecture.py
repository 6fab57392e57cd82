"""The package's layers: the import-linter contracts in pyproject.toml hold, and no two modules
import each other, directly or through others."""

import json
import pathlib
import shutil
import subprocess
import sys

import networkx as nx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under `root`, with the contracts of pyproject.toml."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
         "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True, text=True, timeout=300,
    )


_EDGES = """
import json, grimp
graph = grimp.build_graph("graphscope", exclude_type_checking_imports=True, cache_dir=None)
print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}))
"""


def _import_graph(root: pathlib.Path) -> nx.DiGraph:
    """Every module of the package under `root` and the modules it imports (also inside
    functions), read by grimp in a fresh process (it finds the package through sys.modules)."""
    run = subprocess.run([sys.executable, "-c", _EDGES], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                         capture_output=True, text=True, timeout=300, check=True)
    G = nx.DiGraph()
    for module, imported in json.loads(run.stdout).items():
        G.add_node(module)
        G.add_edges_from((module, other) for other in imported)
    return G


def test_the_import_contracts_hold():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "4 kept, 0 broken" in run.stdout


def test_no_two_modules_import_each_other():
    G = _import_graph(ROOT)
    assert G.has_edge("graphscope.scope", "graphscope.runtime.runtime")  # the graph is the real one
    assert G.number_of_edges() > 100
    cycles = list(nx.simple_cycles(G))
    assert not cycles, cycles


def test_the_records_never_import_display():
    G = _import_graph(ROOT)
    below = nx.descendants(G, "graphscope.ir.records")
    assert not {m for m in below if m.startswith(("graphscope.display", "graphscope.runtime", "graphscope.backend"))}


@pytest.fixture
def planted(tmp_path):
    """A copy of the package in which the IR imports the runtime (a violation) and two
    modules import each other (a cycle)."""
    shutil.copytree(ROOT / "graphscope", tmp_path / "graphscope", ignore=shutil.ignore_patterns("__pycache__"))
    records = tmp_path / "graphscope" / "ir" / "records.py"
    records.write_text(records.read_text() + "\n\ndef _planted():\n    from graphscope.runtime import cache  # noqa\n")
    names = tmp_path / "graphscope" / "ir" / "names.py"
    names.write_text(names.read_text() + "\n\nfrom graphscope.ir import serialize  # noqa: E402\n")
    serialize = tmp_path / "graphscope" / "ir" / "serialize.py"
    serialize.write_text(serialize.read_text() + "\n\nfrom graphscope.ir import names  # noqa: E402\n")
    return tmp_path


def test_the_checks_catch_a_planted_violation_and_cycle(planted):
    run = _lint(planted)
    assert run.returncode != 0 and "BROKEN" in run.stdout
    assert "graphscope.ir.records -> graphscope.runtime.cache" in run.stdout
    cycles = list(nx.simple_cycles(_import_graph(planted)))
    assert sorted(["graphscope.ir.names", "graphscope.ir.serialize"]) in [sorted(c) for c in cycles]


def _sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "graphscope").rglob("*.py")}


@pytest.mark.parametrize("convention", [
    "seed_generator_state", "___redundant_placeholder", "_XlaMustCompile", "Detected at node", "Op:__inference",
    "_inbound_nodes", "_nodes_by_depth", "_get_function", "_inference_function",
])
def test_tensorflow_and_keras_conventions_live_behind_one_fence(convention):
    """Private TF/Keras names and naming conventions are spelled in tf_internals.py alone."""
    spelled = [path for path, text in _sources().items() if convention in text]
    assert spelled == ["graphscope/backend/tf_internals.py"], spelled


def test_the_handle_dtypes_are_spelled_once():
    spelled = [path for path, text in _sources().items() if '("resource", "variant")' in text]
    assert spelled == ["graphscope/ir/records.py"], spelled
