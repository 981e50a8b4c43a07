"""Issue 11's before/after figures, from real Locust runs (about 70 s in all):

    python tests/locustfiles/measure.py [REPO]      # REPO: a checkout to measure (default: this one)

probe: event p50 reported vs the probe's truth (shared clock), negative one-way estimates, samples <= 0 in
--sample-log; calm / freeze: ``behind`` of a calm run and of a run whose Locust process is SIGSTOPped for
2 s; kill / restart: a ``netharness serve`` killed (-9) mid-run and left down, or restarted 3 s later.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]).resolve()
LOCUST = [sys.executable, "-m", "locust", "--headless", "--only-summary"]


def run(args: list[str], env: dict[str, str] | None = None, during=None) -> tuple[int, dict]:
    d = Path(tempfile.mkdtemp(prefix="nh-measure-"))
    p = subprocess.Popen([*LOCUST, *args, "--results", str(d / "results.json"), "--sample-log", str(d / "samples")],
                         cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        for line in p.stderr:  # mid-run means after every player joined
            if "All users spawned" in line:
                break
        threading.Thread(target=p.stderr.read, daemon=True).start()
        if during is not None:
            during(p)
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    res = json.loads((d / "results.json").read_text()) if (d / "results.json").exists() else {}
    res["_dir"] = str(d)
    return p.returncode, res


def entry(res: dict, kind: str, name: str) -> dict:
    return next((e for e in res.get("entries", []) if e["kind"] == kind and e["name"] == name), {})


def probe() -> None:
    d = tempfile.mkdtemp(prefix="nh-probe-")
    _, res = run(["-f", "tests/locustfiles/probe.py", "-u", "10", "-r", "10", "-t", "8s"], {"PROBE_LOG": d})
    rows = [tuple(map(float, r)) for f in Path(d).glob("probe-*.csv") for r in csv.reader(f.open())]
    truth, est = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    ev = entry(res, "event", "Event.Skills.Execution")
    samples = [float(r[3]) for f in Path(res["_dir"], "samples").glob("samples-*.csv") for r in csv.reader(f.open())
               if r[0] == "event"]
    print(f"probe: events={len(truth)} truth p50={np.median(truth) * 1e6:.0f}us "
          f"reported p50={ev.get('latency_us', {}).get('p50')}us "
          f"({(ev.get('latency_us', {}).get('p50', 0) / (np.median(truth) * 1e6) - 1) * 100:+.1f}%) "
          f"negative estimates={np.mean(est < 0) * 100:.2f}% sample-log events <= 0: "
          f"{sum(s <= 0 for s in samples)}/{len(samples)} clock={res.get('meta', {}).get('clock')}")


def behind(freeze: bool) -> None:
    marks: list[float] = []

    def stop(p: subprocess.Popen) -> None:
        time.sleep(2)
        marks.append(time.monotonic())
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(2)
        marks.append(time.monotonic())
        os.kill(p.pid, signal.SIGCONT)

    _, res = run(["-f", "scenarios/skills.py", "-u", "10", "-r", "10", "-t", "10s"], during=stop if freeze else None)
    n_behind = sum(e.get("behind", 0) for e in res.get("entries", []))
    sends = [tuple(r) for f in Path(res["_dir"], "samples").glob("sends-*.csv") for r in csv.reader(f.open())]
    if freeze and sends:
        due = sum(1 for r in sends if marks[0] <= float(r[3]) <= marks[1])
        how = "from the send log"
    else:
        due = 10 * 5 * 2 if freeze else 0
        how = "estimated: 10 players x 5 sends/s x 2 s"
    late = [float(r[4]) - float(r[3]) for r in sends]
    print(f"{'freeze' if freeze else 'calm'}: behind={n_behind} sends due during the freeze={due} ({how}); "
          f"max send lateness={max(late, default=float('nan')) * 1e3:.1f}ms "
          f"schedule={ {k: v for k, v in res.get('schedule', {}).items() if k != 'lateness_us'} }")


def kill(restart: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "NETHARNESS_SECRET": "measure"}
    cmd = [sys.executable, "-m", "harness", "serve", "--port", str(port), "--quiet"]
    srv = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)]
    srv[0].stdout.readline()

    def killer(p: subprocess.Popen) -> None:
        time.sleep(3)
        srv[0].kill()
        srv[0].wait()
        if restart:
            time.sleep(3)
            srv.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True))
            srv[-1].stdout.readline()

    try:
        code, res = run(["-f", "scenarios/skills.py", "-u", "10", "-r", "10", "-t", "10s", "--host",
                         f"tcp://127.0.0.1:{port}", "--netharness-secret", "measure"], during=killer)
    finally:
        for p in srv:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=20)
    figs = []
    for kind in ("intent", "request"):
        e = entry(res, kind, "Intent.Skills.Use")
        figs.append(f"{kind}: sent={e.get('sent', '-')} count={e.get('count')} failures={e.get('failures')} "
                    f"lost={e.get('lost', '-')}")
    print(f"{'restart' if restart else 'kill'}: exit={code} {'; '.join(figs)}; connections={res.get('connections')}")


if __name__ == "__main__":
    print(f"measuring {REPO}")
    probe()
    behind(False)
    behind(True)
    kill(False)
    kill(True)
