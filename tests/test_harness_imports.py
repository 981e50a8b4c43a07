"""The harness's import graph and its use of the dispatcher (issue 13): no import circles through harness/ or
reports/ (imports under ``if TYPE_CHECKING:`` and inside functions included: each is still one module
needing another), the results contract knows nothing of Locust, the harness and the reports use only the
dispatcher's public API, and no module is over ~400 lines.  (The dispatcher's own graph: tests/test_imports.py.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from .importgraph import ROOT, cycles, files, graph, module_name

PACKAGES = ("dispatcher", "harness", "reports")
OURS = ("harness", "reports")
MAX_LINES = 420  # "about 400"
#: Modules still over MAX_LINES, each with its reason; keep this empty if at all possible.
TOO_BIG_ALLOWED: dict[str, str] = {}


#: Modules that may hold a transport's ``core``: the benchmark measures the sans-I/O core itself
#: (``dispatcher.Dispatcher``, public) against bare msgpack, with no runtime in between.
CORE_ALLOWED = {"harness/bench/rows.py"}


@pytest.mark.parametrize(("g", "want"), [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
    ({"a": {"a"}}, []),
])
def test_the_cycle_finder(g: dict[str, set[str]], want: list[list[str]]) -> None:
    assert cycles(g) == want


def test_the_graph_reads_the_imports_it_must() -> None:
    g = graph(*PACKAGES)
    assert "harness.runner.state" in g["harness.runner.plugin"] and "harness.results" in g["harness.runner.runresults"]
    assert "harness.runner.state" in g["harness.runner.webui"]  # a TYPE_CHECKING import counts
    assert "reports.render" in g["harness.gate.gatecmd"]  # so does one inside a function


def test_no_import_circle_goes_through_the_harness_or_the_reports() -> None:
    circles = [c for c in cycles(graph(*PACKAGES)) if any(m.split(".")[0] in OURS for m in c)]
    assert circles == []


@pytest.mark.parametrize("module", ["harness/results.py", "harness/gate/thresholds.py", "harness/gate/gatecmd.py",
                                    "harness/resultcheck.py", "harness/gate/abort.py"])
def test_the_results_contract_and_the_gate_know_nothing_of_locust(module: str) -> None:
    """Locust-free modules, as far as any import reaches (the gate and the reports read results.json only)."""
    g = graph(*PACKAGES)
    seen, todo = set(), [module_name(ROOT / module)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += g[m]
    assert "harness.runner.plugin" not in seen and "harness.runner.state" not in seen
    for m in seen:
        src = (ROOT / (m.replace(".", "/") + ".py")).read_text() if (ROOT / (m.replace(".", "/") + ".py")).exists() \
            else (ROOT / m.replace(".", "/") / "__init__.py").read_text()
        assert not re.search(r"^\s*(from|import)\s+locust\b", src, re.M), f"{module} reaches {m}, which imports locust"


def _dispatcher_names(tree: ast.AST) -> set[str]:
    """Local names bound to the dispatcher's modules and objects by the imports of ``tree``."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "dispatcher"}
    return out


@pytest.mark.parametrize("path", files(*OURS), ids=lambda p: str(p.relative_to(ROOT)))
def test_harness_and_reports_use_only_the_dispatchers_public_api(path: Path) -> None:
    """Nothing private (``_name``) imported from ``dispatcher``; no ``.core``/``._x`` reached through a
    dispatcher object (grep-style: the names a ``Transport`` is usually held by)."""
    rel = str(path.relative_to(ROOT))
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dispatcher" and not node.level:
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{path.name}:{node.lineno} imports {private} from {node.module}"
            assert not any(part.startswith("_") for part in (node.module or "").split(".")), node.module
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in _dispatcher_names(tree) and node.attr.startswith("_"):
            pytest.fail(f"{path.name}:{node.lineno} uses dispatcher.{node.attr}")
    transports = r"(client|server|transport|c|self\.client|self\.server)"
    bad = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
           if re.search(rf"\b{transports}\.(core\b|_[a-z])", line) and not line.lstrip().startswith("#")]
    assert bad == [] or rel in CORE_ALLOWED


def test_no_harness_or_reports_module_is_over_about_400_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in files(*OURS)
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert {k: n for k, n in big.items() if k not in TOO_BIG_ALLOWED} == {}
    assert set(TOO_BIG_ALLOWED) <= set(big), "an allowed module is small now: drop it from TOO_BIG_ALLOWED"
