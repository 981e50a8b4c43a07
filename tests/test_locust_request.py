"""``DispatcherUser.request()`` (the closed-loop request) in a real headless Locust process: answers are
recorded and reported to Locust like every request, a rejected one as a failure, nothing unaccounted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dispatcher.replay import read_entries

ROOT = Path(__file__).resolve().parents[1]


def test_closed_loop_requests_are_recorded_and_reported(tmp_path: Path) -> None:
    res, stats, cap = tmp_path / "results.json", tmp_path / "stats", tmp_path / "capture.nhr"
    p = subprocess.run([sys.executable, "-m", "locust", "-f", "tests/locustfiles/asker.py", "--headless", "-u", "5",
                        "-r", "5", "-t", "4s", "--results", str(res), "--json-file", str(stats),
                        "--capture", str(cap)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-3000:]  # the rejected requests fail the run
    entries = {e["name"]: e for e in json.loads(res.read_text())["entries"] if e["kind"] == "request"}
    ok, bad = entries["Intent.Attributes.RequestSnapshot"], entries["Intent.Attributes.SpendPoints"]
    assert ok["count"] == ok["sent"] > 10 and ok["failures"] == ok["lost"] == 0
    assert ok["latency_us"]["p50"] > 0
    assert bad["failures"] == bad["count"] == bad["sent"] > 0 and bad["lost"] == 0
    assert ok["sent"] - bad["sent"] in range(0, 6)  # one each per turn; a user may stop between the two
    rows = {(r["method"], r["name"]): r for r in json.loads(stats.with_suffix(".json").read_text())}
    assert rows[("CRIT", "Intent.Attributes.RequestSnapshot")]["num_requests"] == ok["count"]
    assert rows[("CRIT", "Intent.Attributes.SpendPoints")]["num_failures"] == bad["failures"]
    captured = [e.envelope.name for e in read_entries(cap) if e.direction == "out" and e.kind == "request"]
    assert captured.count("Intent.Attributes.RequestSnapshot") == ok["sent"]  # --capture sees closed-loop requests
