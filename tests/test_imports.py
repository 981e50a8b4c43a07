"""The import graph: no circles among the dispatcher's modules (type-checking imports included, since a
circle there is still two modules that need each other), nothing outside ``dispatcher`` imported by it, no
module over ~400 lines, and the harness imports nothing private from the dispatcher."""

from __future__ import annotations

import ast

from .importgraph import ROOT, cycles, graph

PKG = ROOT / "dispatcher"
MAX_LINES = 420  # "about 400"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_dispatcher() -> None:
    g = graph("dispatcher", in_functions=False)  # a lazy import in a function runs after every module loaded
    assert g["dispatcher.transport"], "the graph is empty: the test reads nothing"
    assert "dispatcher.transport" not in g["dispatcher.helpers"]
    assert cycles(g) == []


def test_dispatcher_modules_are_small() -> None:
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_dispatcher_imports_no_harness_locust_or_matplotlib() -> None:
    banned = ("harness", "locust", "matplotlib", "reports", "scenarios")
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not [n for n in names if n.split(".")[0] in banned], f"{p.name} imports {names}"
