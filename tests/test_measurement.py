"""Issue 11: measurement you can trust, checked with real ``locust`` processes (headless, short, bounded).

Every process a test starts is tracked by its PID and ended by it; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.gate.gatecmd import main as gate_main
from harness.runner.users import LOCUST_TYPES, locust_name

ROOT = Path(__file__).resolve().parents[1]
LOCUST = [sys.executable, "-m", "locust", "--headless", "--only-summary"]
SECRET = "issue-11"


class Run:
    """A Locust process; ``spawned()`` waits until every player joined (mid-run starts there)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([*LOCUST, *args], cwd=ROOT, env={**os.environ, **(env or {})},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.out = ""
        self._spawned = threading.Event()
        # Each pipe has exactly one reader (under gevent's monkey patching, which importing locust in another
        # test module applies, two readers of one pipe raise "reentrant call").
        self._readers = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._readers:
            t.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.read()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            if "All users spawned" in line:
                self._spawned.set()
        self._spawned.set()

    def spawned(self, timeout: float = 60) -> None:
        assert self._spawned.wait(timeout), "the players never all joined"

    def finish(self, timeout: float = 120) -> int:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        for t in self._readers:
            t.join(timeout=10)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=30)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def _stop(proc: subprocess.Popen[str], timeout: float = 20) -> None:
    """SIGTERM (the process writes its results), SIGKILL if it does not exit in ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rows(directory: Path, stem: str) -> list[list[str]]:
    return [row for f in sorted(directory.glob(f"{stem}-*.csv")) for row in csv.reader(f.open())]


def _entry(results: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    return next(e for e in results["entries"] if e["kind"] == kind and e["name"] == name)


def test_one_host_event_latency_is_exact_and_raw(tmp_path: Path) -> None:
    """The probe logs arrival - ts_sent on the shared monotonic clock; the harness must agree with it."""
    res, samples, probe = tmp_path / "results.json", tmp_path / "samples", tmp_path / "probe"
    run = Run(["-f", "tests/locustfiles/probe.py", "-u", "10", "-r", "10", "-t", "6s", "--results", str(res),
               "--sample-log", str(samples)], env={"PROBE_LOG": str(probe)})
    assert run.finish() == 0, run.stderr[-3000:]
    results = json.loads(res.read_text())
    clock = results["meta"]["clock"]
    assert clock["domain"] == "shared" and clock["offset_s"] == 0.0 and clock["error_bound_s"] == 0.0
    assert "clock: shared domain, offset +0us" in run.out

    events = [float(r[3]) for r in _rows(samples, "samples") if r[0] == "event"]
    assert len(events) > 100
    assert min(events) > 0, f"{sum(v <= 0 for v in events)} one-way samples <= 0"
    truth = np.array([float(r[0]) for r in _rows(probe, "probe")]) * 1e6
    ev = _entry(results, "event", "Event.Skills.Execution")
    assert ev["clock_skew"] == 0 and ev["count"] == len(truth)
    reported, exact = ev["latency_us"]["p50"], float(np.median(truth))
    assert abs(reported - exact) <= 0.05 * exact, (reported, exact)


@pytest.mark.alone  # the calm run: no send more than 50 ms late, so not beside the other worker's tests
def test_a_frozen_locust_counts_every_late_send_and_a_calm_one_none(tmp_path: Path) -> None:
    frozen, calm = tmp_path / "frozen", tmp_path / "calm"
    run = Run(["-f", "scenarios/skills.py", "-u", "10", "-r", "10", "-t", "8s", "--results",
               str(frozen / "results.json"), "--sample-log", str(frozen / "samples")])
    try:
        run.spawned()
        time.sleep(1.5)
        t_stop = time.monotonic()
        os.kill(run.proc.pid, signal.SIGSTOP)
        time.sleep(2.0)
        t_cont = time.monotonic()
        os.kill(run.proc.pid, signal.SIGCONT)
    finally:
        code = run.finish()
    assert code == 0, run.stderr[-3000:]
    results = json.loads((frozen / "results.json").read_text())
    sends = _rows(frozen / "samples", "sends")  # kind, qos, name, intended, actual (monotonic, shared clock)
    due = [s for s in sends if t_stop <= float(s[3]) <= t_cont]
    assert len(due) >= 80  # 10 players x 5 sends/s x 2 s
    behind = sum(e["behind"] for e in results["entries"])
    assert behind >= 0.95 * len(due), (behind, len(due))
    schedule = results["schedule"]
    assert schedule["behind"] == behind and schedule["lateness_us"]["max"] >= 1_500_000
    assert schedule["tolerance_s"] == 0.05

    run = Run(["-f", "scenarios/skills.py", "-u", "10", "-r", "10", "-t", "5s", "--results",
               str(calm / "results.json")])
    assert run.finish() == 0, run.stderr[-3000:]
    results = json.loads((calm / "results.json").read_text())
    assert results["schedule"]["scheduled"] > 100
    assert sum(e["behind"] for e in results["entries"]) == 0, results["schedule"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _servers(port: int) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    """Start ``netharness serve`` on ``port`` (as often as asked); every one is ended by its PID."""
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--host", "127.0.0.1", "--port", str(port),
                              "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "NETHARNESS_SECRET": SECRET})
        started.append(p)
        assert p.stdout is not None and p.stdout.readline().startswith("listening on tcp://")
        return p

    try:
        yield start
    finally:
        for p in started:
            _stop(p)


def _killed_server_run(tmp_path: Path, restart_after: float | None, run_s: int) -> tuple[Run, int, dict[str, Any]]:
    port = _free_port()
    res = tmp_path / "results.json"
    with _servers(port) as start:
        server = start()
        run = Run(["-f", "scenarios/skills.py", "-u", "10", "-r", "10", "-t", f"{run_s}s", "--host",
                   f"tcp://127.0.0.1:{port}", "--netharness-secret", SECRET, "--results", str(res)])
        try:
            run.spawned()
            time.sleep(2.0)
            server.kill()  # kill -9: no CLOSE, no drain
            server.wait(timeout=10)
            if restart_after is not None:
                time.sleep(restart_after)
                start()
        finally:
            code = run.finish()
    return run, code, json.loads(res.read_text())


def test_a_dead_server_loses_work_and_fails_the_run(tmp_path: Path) -> None:
    run, code, results = _killed_server_run(tmp_path, None, 8)  # killed 2 s in: 6 s of sends into the void
    assert code == 1, run.stderr[-3000:]
    intent, request = _entry(results, "intent", "Intent.Skills.Use"), _entry(results, "request", "Intent.Skills.Use")
    for e in (intent, request):
        assert e["lost"] > 0 and e["failures"] >= e["lost"]
        assert e["sent"] == e["count"]  # every send ended as a sample, a failure or lost: nothing unaccounted
    assert "lost: never acknowledged by the end of the run" in run.stderr  # Locust's own error report
    assert f"{intent['lost'] + request['lost']} lost" in run.out
    th = tmp_path / "lost.toml"
    th.write_text('[thresholds]\n"lost{name:Intent.Skills.Use}" = ["count == 0"]\n'
                  '"lost{kind:intent,qos:CRITICAL}" = ["rate == 0"]\n')
    assert gate_main([str(tmp_path / "results.json"), "--thresholds", str(th), "--no-record"]) == 1


def test_a_restarted_server_loses_no_reliable_intent(tmp_path: Path) -> None:
    run, _, results = _killed_server_run(tmp_path, 3.0, 12)  # back 5 s in: 7 s to reconnect and resend
    intent = _entry(results, "intent", "Intent.Skills.Use")
    assert intent["lost"] == 0 and intent["failures"] == 0 and intent["sent"] == intent["count"], intent
    conn = results["connections"]
    assert conn["reconnects"] >= 10 and conn["disconnects"] >= 10, conn
    assert f"connections: reconnects={conn['reconnects']}, resumes={conn['resumes']}" in run.out


def _http(url: str, form: dict[str, Any] | None = None) -> Any:
    import urllib.parse
    import urllib.request

    data = urllib.parse.urlencode(form).encode() if form is not None else None
    with urllib.request.urlopen(url, data=data, timeout=30) as r:
        body = r.read().decode()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def test_two_web_ui_swarms_give_two_results_matching_locust(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", "scenarios/skills.py", "--web-host", "127.0.0.1",
                             "--web-port", str(port), "--results", str(tmp_path / "results.json")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _http(f"{base}/netharness/runs")
                break
            except OSError:
                assert time.monotonic() < deadline, "the web UI never came up"
                time.sleep(0.3)
        assert "no swarm has finished yet" in _report_or_404(f"{base}/netharness/report")
        for n, users in ((1, 4), (2, 6)):
            assert _http(f"{base}/swarm", {"user_count": users, "spawn_rate": users})["success"]
            deadline = time.monotonic() + 30
            while not _playing(base, users, 40):  # every player joined, sent and heard a few
                assert time.monotonic() < deadline, f"swarm {n} sent nothing"
                time.sleep(0.3)
            _http(f"{base}/stop", {})
            out = tmp_path / f"swarm-{n}" / "results.json"
            deadline = time.monotonic() + 30
            while not (out.exists() and (out.parent / "report.html").exists()):
                assert time.monotonic() < deadline, f"swarm {n} wrote no results"
                time.sleep(0.2)
            time.sleep(2.5)  # past the web UI's stats cache
            stats = {(s["method"], s["name"]): s for s in _http(f"{base}/stats/requests")["stats"]
                     if s["name"] != "Aggregated"}
            results = json.loads(out.read_text())
            ours: dict[tuple[str, str], list[int]] = {}
            for e in results["entries"]:
                c = ours.setdefault((LOCUST_TYPES[e["qos"]], locust_name(e["kind"], e["name"])), [0, 0])
                c[0] += e["count"]
                c[1] += e["failures"]
            assert ours and ours == {k: [s["num_requests"], s["num_failures"]] for k, s in stats.items()}
            assert results["meta"]["users"] == users
            assert (out.parent / "latency.csv").exists()
        runs = _http(f"{base}/netharness/runs")
        assert [r["swarm"] for r in runs] == [1, 2]
        assert runs[1]["report"] == str(tmp_path / "swarm-2" / "report.html")
        assert "netharness report: skills" in _http(f"{base}/netharness/report")
    finally:
        _stop(proc, timeout=30)


def _playing(base: str, users: int, requests: int) -> bool:
    """Whether Locust's web UI shows this swarm running with ``users`` players and ``requests`` requests so far
    (not the last swarm's figures: those are of a stopped runner)."""
    doc = _http(f"{base}/stats/requests")
    done = sum(s["num_requests"] for s in doc["stats"] if s["name"] == "Aggregated")
    return bool(doc["state"] == "running" and doc["user_count"] == users and done >= requests)


def _report_or_404(url: str) -> str:
    import urllib.error

    try:
        return str(_http(url))
    except urllib.error.HTTPError as e:
        return e.read().decode()
