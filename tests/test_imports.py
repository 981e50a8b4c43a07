"""The import graph: no circles among the dispatcher's modules (type-checking imports included, since a
circle there is still two modules that need each other), nothing outside ``dispatcher`` imported by it, no
module over ~400 lines, and the harness imports nothing private from the dispatcher."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dispatcher"
MAX_LINES = 420  # "about 400"


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that ``path`` imports at module level (``if TYPE_CHECKING:`` blocks included,
    imports inside functions not: those run when called, after every module is loaded)."""
    me = _name(path)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                if isinstance(node, ast.Try):
                    for h in node.handlers:
                        visit(h.body)
            elif isinstance(node, ast.ImportFrom):
                parts = pkg.split(".")
                base = parts[: len(parts) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    return {m for m in out if m in modules and m != me}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_dispatcher() -> None:
    files = sorted(PKG.rglob("*.py"))
    modules = {_name(p) for p in files}
    graph = {_name(p): _module_imports(p, modules) for p in files}
    assert graph["dispatcher.transport"], "the graph is empty: the test reads nothing"
    assert "dispatcher.transport" not in graph["dispatcher.helpers"]
    assert _cycles(graph) == []


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
