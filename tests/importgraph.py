"""The project's import graph, read with ``ast`` (nothing is imported): for the import tests."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def imports(path: Path, modules: set[str], *, in_functions: bool = True) -> set[str]:
    """The modules of ``modules`` that ``path`` imports (``from pkg import sub`` counts as ``pkg.sub`` when
    that is a module, else as ``pkg``).  ``if TYPE_CHECKING:`` blocks always count (a circle there is still
    two modules that need each other); imports inside functions only with ``in_functions`` (they run when
    called, after every module is loaded)."""
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()

    def add(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = pkg.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in modules else target)

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                if isinstance(node, ast.Try):
                    for handler in node.handlers:
                        visit(handler.body)
            else:
                add(node)

    tree = ast.parse(path.read_text())
    if in_functions:
        for node in ast.walk(tree):
            add(node)
    else:
        visit(tree.body)
    return {m for m in out if m in modules and m != me}


def graph(*packages: str, in_functions: bool = True) -> dict[str, set[str]]:
    paths = files(*packages)
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules, in_functions=in_functions) for p in paths}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found
