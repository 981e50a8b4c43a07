"""The source side of netharness lint: envelope names used by Python files, found with ``ast`` (the files are
parsed, never imported or run)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LintError", "Use", "scan_sources"]


class LintError(Exception):
    """Input lint cannot check (a missing file, a module that does not import, Python that does not parse)."""


@dataclass(frozen=True)
class Use:
    """One envelope name (or stats=False) used by a source file."""

    file: str
    line: int
    call: str  # "on" | "emit" | "intent" | "request" | "Action" | "stats_off"
    name: str
    kind: str = ""  # Action's kind: "intent" | "request"


def _shown(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# -- sources ----------------------------------------------------------------------------------------


def _python_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(x for x in p.rglob("*.py") if ".venv" not in x.parts)
        elif p.is_file():
            out.append(p)
        else:
            raise LintError(f"{p}: no such source file or folder")
    return out


def _str_arg(node: ast.Call, index: int, keyword: str) -> str | None:
    if len(node.args) > index and isinstance(node.args[index], ast.Constant):
        v = node.args[index].value  # type: ignore[attr-defined]
        return v if isinstance(v, str) else None
    for k in node.keywords:
        if k.arg == keyword and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str):
            return k.value.value
    return None


def scan_sources(paths: Iterable[str | Path]) -> list[Use]:
    """Envelope names used by ``.on/.emit/.intent/.request("...")`` and ``Action("...")`` calls, and calls
    with ``stats=False``, found with ``ast`` (the files are parsed, never imported)."""
    uses: list[Use] = []
    for f in _python_files(Path(p) for p in paths):
        try:
            tree = ast.parse(f.read_text(), filename=str(f))
        except (SyntaxError, UnicodeDecodeError, OSError) as e:
            raise LintError(f"{f}: cannot parse it as Python: {e}") from None
        shown = _shown(f)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            callee = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if any(k.arg == "stats" and isinstance(k.value, ast.Constant) and k.value.value is False
                   for k in node.keywords):
                uses.append(Use(shown, node.lineno, "stats_off", callee))
            if callee == "Action" and isinstance(func, ast.Name | ast.Attribute):
                name = _str_arg(node, 0, "name")
                if name is not None:
                    uses.append(Use(shown, node.lineno, "Action", name, _str_arg(node, 2, "kind") or "intent"))
            elif isinstance(func, ast.Attribute) and callee in ("on", "emit", "intent", "request"):
                name = _str_arg(node, 0, "name")
                if name is None:
                    continue  # a computed name cannot be checked statically
                if callee in ("on", "request") and not name.startswith(("Intent.", "Event.")):
                    continue  # .on("click") / session.request("GET") are not envelope names
                uses.append(Use(shown, node.lineno, callee, name))
    return uses
