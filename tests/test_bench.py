"""The benchmark command works and reports honestly (its speed targets live in its output, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_rows_with_ratio_target_and_verdict(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "-m", "harness", "bench", "--quick", "--only", "recording,core",
                        "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [line for line in p.stdout.splitlines() if line.startswith(("recorder", "report render", "core"))]
    assert len(lines) == 3
    for line in lines:
        assert "(target " in line and line.rstrip().endswith(("met", "MISSED"))
    doc = json.loads(out.read_text())
    rows = {r["name"]: r for r in doc["rows"]}
    assert set(rows) == {"recorder", "report render", "core"}
    assert rows["recorder"]["ratio"] > 0 and rows["report render"]["figures"]["samples"] == 10_000_000
    assert "| row | figures |" in p.stdout  # the summary table


def test_bench_rejects_an_unknown_row() -> None:
    p = subprocess.run([sys.executable, "-m", "harness", "bench", "--only", "warp"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "unknown bench row(s) warp; rows: core, instrumentation" in p.stderr
