"""Real ``locust`` processes (headless, short, bounded) against the embedded game server on loopback."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import dispatcher
from dispatcher.histogram import Histogram
from dispatcher.replay import read_entries

from .conftest import exact_percentile
from .sharedruns import SkillsCapture

ROOT = Path(__file__).resolve().parents[1]
LOCUST = [sys.executable, "-m", "locust"]


def _run(args: list[str], timeout: float = 90, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOCUST, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie awaiting its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_skills_headless_run(tmp_path: Path) -> None:
    res = tmp_path / "results.json"
    p = _run(["-f", "scenarios/skills.py", "--headless", "-u", "20", "-r", "20", "-t", "6s", "--results", str(res)])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "netharness latency (microsecond resolution)" in p.stdout
    results = json.loads(res.read_text())
    kinds = {(e["kind"], e["name"]) for e in results["entries"]}
    assert {("request", "Intent.Skills.Use"), ("intent", "Intent.Skills.Use"),
            ("event", "Event.Skills.Execution")} <= kinds
    assert all(e["failures"] == 0 for e in results["entries"])
    p50s = [e["latency_us"]["p50"] for e in results["entries"]]
    assert all(v > 0 for v in p50s) and min(p50s) < 100_000  # microsecond figures, not rounded to 0
    assert results["meta"]["embedded_server"] is True and results["meta"]["users"] == 20
    assert results["dispatcher"]["server"]["peer"]["connections"] >= 20  # the server's own stats came back
    assert results["dispatcher"]["client"]["names"]["Intent.Skills.Use"]["sent"] > 0
    # The embedded server this run started (its PID is logged) is gone: tracked by PID, never by name.
    pids = re.findall(r"embedded game server on tcp://\S+ \(pid (\d+)\)", p.stderr)
    assert len(pids) == 1, p.stderr[-2000:]
    assert not _alive(int(pids[0]))
    # latency.csv beside results.json: the same figures, in microseconds, per entry (and per phase).
    rows = list(csv.DictReader((tmp_path / "latency.csv").open()))
    by_key = {(r["kind"], r["qos"], r["name"]): r for r in rows if r["scope"] == "entry"}
    for e in results["entries"]:
        row = by_key[(e["kind"], e["qos"], e["name"])]
        assert int(row["p50_us"]) == e["latency_us"]["p50"] and int(row["lost"]) == e["lost"] == 0
        assert int(row["clock_skew"]) == e["clock_skew"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_master_with_two_workers_merges_exactly(tmp_path: Path) -> None:
    res, samples = tmp_path / "results.json", tmp_path / "samples"
    common = ["-f", "scenarios/skills.py", "--sample-log", str(samples)]
    port = _free_port()
    master = subprocess.Popen([*LOCUST, *common, "--master", "--headless", "--expect-workers", "2", "-u", "10",
                               "-r", "10", "-t", "6s", "--results", str(res), "--master-bind-host", "127.0.0.1",
                               "--master-bind-port", str(port)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen([*LOCUST, *common, "--worker", "--master-host", "127.0.0.1", "--master-port",
                                 str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        _, err = master.communicate(timeout=120)
        for w in workers:
            w.wait(timeout=30)
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
    assert master.returncode == 0, err[-3000:]
    results = json.loads(res.read_text())
    assert results["meta"]["workers"] == 2

    # Ground truth: every raw sample each worker recorded (one file per process).
    files = sorted(samples.glob("samples-*.csv"))
    assert len(files) == 2
    raw: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    per_worker = []
    for f in files:
        rows = list(csv.reader(f.open()))
        per_worker.append(len(rows))
        for kind, qos, name, lat in rows:
            raw[(kind, qos, name)].append(float(lat) * 1e6)
    assert all(n > 0 for n in per_worker)  # both workers played
    for e in results["entries"]:
        got = raw[(e["kind"], e["qos"], e["name"])]
        assert e["count"] - e["failures"] == len(got), e["name"]  # merged counts = the sum of the workers'
        h = Histogram.decode(e["latency_us"]["hdr"])
        want = exact_percentile(got, 99)
        assert abs(h.percentile(99) - want) <= max(1.0, want / 1000), (e["name"], h.percentile(99), want)
    assert sum(e["count"] for e in results["entries"]) == sum(per_worker)


def test_capture_and_replay_send_the_same_intents(skills_capture: SkillsCapture, tmp_path: Path) -> None:
    capture, seen1, seen2 = skills_capture.capture, skills_capture.server_capture, tmp_path / "server2.capture"
    assert skills_capture.returncode == 0, skills_capture.stderr[-3000:]
    p = _run(["-f", "scenarios/replay.py", "--headless", "-u", "3", "-r", "3", "-t", "7s",
              "--replay-file", str(capture), "--server-capture", str(seen2), "--results", str(tmp_path / "r2.json")])
    assert p.returncode == 0, p.stderr[-3000:]
    reg = dispatcher.ChannelRegistry.load(ROOT / "harness/game/registry.toml")

    def per_player(path: Path) -> dict[int, list[tuple[str, Any]]]:
        out: dict[int, list[tuple[str, Any]]] = defaultdict(list)
        for e in read_entries(path, reg.hash):
            out[e.envelope.meta.player_id or 0].append((e.envelope.name, e.envelope.payload))
        return out

    sent, original, replayed = per_player(capture), per_player(seen1), per_player(seen2)
    assert len(sent) == 3 and sum(map(len, sent.values())) > 20
    assert replayed == sent  # the replay delivered every captured envelope, in order, per player
    for pid, seq in original.items():  # and what the server saw the first time is where it starts
        assert replayed[pid][: len(seq)] == seq


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "http://127.0.0.1:1"], "--host must be tcp://HOST:PORT"),
        (["--host", "tcp://127.0.0.1:1", "--netharness-secret", "x"], "tcp://127.0.0.1:1: cannot connect"),
        (["--param", "skill_speed=3"], "scenario 'skills' has no parameter skill_speed; its parameters: skill_rate"),
        (["--param", "skill_rate=fast"], "parameter skill_rate='fast': expected float"),
    ],
)
def test_bad_input_fails_fast_with_one_line(args: list[str], message: str) -> None:
    p = _run(["-f", "scenarios/skills.py", "--headless", "-u", "2", "-r", "2", "-t", "3s", *args], timeout=60)
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("netharness: error:")]
    assert len(errors) == 1 and message in errors[0], p.stderr[-2000:]


def test_wrong_secret_and_other_registry_fail_fast(tmp_path: Path) -> None:
    srv = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--port", "0", "--quiet"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "NETHARNESS_SECRET": "right"})
    try:
        assert srv.stdout is not None
        url = srv.stdout.readline().split()[2]
        p = _run(["-f", "scenarios/skills.py", "--headless", "-u", "2", "-t", "3s", "--host", url,
                  "--netharness-secret", "wrong"], timeout=60)
        assert p.returncode != 0
        assert "bad_token" in p.stderr and "wrong --netharness-secret?" in p.stderr
        other = tmp_path / "other.capture"
        buf = dispatcher.replay.ReplayBuffer("0123456789abcdef")
        buf.dump(other)
        p = _run(["-f", "scenarios/replay.py", "--headless", "-u", "1", "-t", "3s", "--host", url,
                  "--netharness-secret", "right", "--replay-file", str(other)], timeout=60)
        assert p.returncode != 0
        assert "captured with channel registry 0123456789abcdef" in p.stderr
    finally:
        srv.terminate()
        srv.wait(timeout=20)
