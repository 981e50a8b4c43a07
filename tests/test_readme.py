"""The README's Python snippets run as written: each ```python block in a fresh interpreter (from the
repository's root, with a timeout).  The one that talks to a server runs against a real ``netharness serve``
this test starts (its secret in ``$NETHARNESS_SECRET`` as the snippet reads it; its port in place of
7777, since another process may hold that one).  A snippet followed by a ```text block of its output must
still print that output's name table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_scenario_server import serve

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"```python\n(.*?)```(?:\s*```text\n(.*?)```)?", re.S)
SNIPPETS = [(m.group(1), m.group(2)) for m in BLOCK.finditer(README)]


def _needs_server(code: str) -> bool:
    return 'connect=("127.0.0.1", 7777)' in code


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def _name_rows(text: str) -> list[str]:
    """The per-name rows of a stats dump (names, then counters; the latency columns left out)."""
    rows = []
    for line in text.splitlines():
        cells = line.split()
        if cells and re.fullmatch(r"(Intent|Event)\.\w+\.\w+", cells[0]):
            rows.append(" ".join(cells[:8]))
    return rows


def test_the_readme_has_its_snippets() -> None:
    assert len(SNIPPETS) >= 3
    assert sum(_needs_server(code) for code, _ in SNIPPETS) == 1


@pytest.mark.parametrize(("code", "output"), [s for s in SNIPPETS if not _needs_server(s[0])],
                         ids=[f"snippet{i}" for i, s in enumerate(SNIPPETS) if not _needs_server(s[0])])
def test_snippet_runs_as_written(code: str, output: str | None) -> None:
    p = _run(code)
    assert p.returncode == 0, f"the README snippet fails:\n{code}\n{p.stderr[-2000:]}"
    if output is not None and _name_rows(output):  # the README shows what it prints: still true
        assert _name_rows(p.stdout) == _name_rows(output), p.stdout


def test_server_snippet_runs_against_a_real_server(tmp_path: Path) -> None:
    code = next(c for c, _ in SNIPPETS if _needs_server(c))
    with serve(tmp_path, "--scenario", "mixed") as (_, (host, port), secret, _stats):
        p = _run(code.replace('("127.0.0.1", 7777)', f'("{host}", {port})'), {"NETHARNESS_SECRET": secret})
    assert p.returncode == 0, f"the README snippet fails:\n{code}\n{p.stderr[-2000:]}"
    lines = p.stdout.splitlines()
    assert lines[0] == "30.0"  # the mixed scenario's entity rate, as the server told the player
    assert "'hp'" in lines[1]  # the stats of the snapshot it answered
