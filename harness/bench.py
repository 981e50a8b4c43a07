"""``netharness bench``: figures measured side by side in one run, reported as ratios with targets.

These machines are shared and noisy: each row runs its contenders interleaved (A B A B ...) many times, on
process CPU time, and compares the best run of each (as ``timeit`` does), so a burst of load elsewhere hits
both sides alike and cannot make a figure look better than it is.  Rows print as they finish;
the summary table and ``bench.json`` come last.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgpack

import dispatcher
from dispatcher import LoopbackHub, VirtualClock
from dispatcher.histogram import Histogram, merged

from .embedded import EmbeddedServer
from .game import load_registry

__all__ = ["Row", "main", "run"]


@dataclass
class Row:
    """One benchmark row: what was measured, the figures, the ratio and its target."""

    name: str
    figures: dict[str, float]
    ratio: float
    ratio_label: str
    target: str
    met: bool
    notes: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        mark = "met" if self.met else "MISSED"
        figs = ", ".join(f"{k} {_fmt(v)}" for k, v in self.figures.items())
        return f"{self.name:<16} {figs} | {self.ratio_label} {self.ratio:.3f} (target {self.target}) {mark}"


def _fmt(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _interleaved(contenders: dict[str, Callable[[], float]], rounds: int, *, best: bool = False) -> dict[str, float]:
    """Each contender's figure over ``rounds`` interleaved runs: the median, or with ``best`` the highest
    (as ``timeit`` takes the minimum time: noise on a shared machine only ever slows a run down)."""
    got: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for k, fn in contenders.items():
            gc.collect()
            got[k].append(fn())
    return {k: (max(v) if best else statistics.median(v)) for k, v in got.items()}


PAYLOAD = {"skillId": "TripleStrike", "target": 7}


def _loopback_rate(n: int, *, stats: bool, batch: int = 1, events: bool = False) -> float:
    """Envelopes per second through the loopback pair: encode, schedule, decode, dispatch.

    Intents go client -> server handler; with ``events`` the server emits to the client, whose dispatcher
    also records each event's one-way latency (the instrumentation's histogram path).
    """
    reg = load_registry()
    hub = LoopbackHub(reg, clock=VirtualClock(0.0), stats=stats, scheduler={"budget": None},
                      rate_limits={"default": 1e12})  # time stands still here: no bucket would refill
    client = hub.connect(stats=stats, scheduler={"budget": None})
    got = [0]

    def handler(env: dispatcher.Envelope) -> None:
        got[0] += 1

    if events:
        client.on("Event.Skills.Execution", handler)
        name, core, send = "Event.Skills.Execution", hub.server_core, hub.server_core.emit
    else:
        hub.server.on("Intent.Skills.Use", handler)
        name, core, send = "Intent.Skills.Use", client.core, client.core.intent
    now = hub.clock.now()
    t0 = time.process_time()
    for _ in range(n // batch):
        for _ in range(batch):
            send(name, PAYLOAD, now)
        hub.pump()
    dt = time.process_time() - t0
    assert got[0] == n // batch * batch, (got[0], n)
    assert core.stats.enabled is stats
    return got[0] / dt


def _msgpack_rate(n: int) -> float:
    """The floor: msgpack pack + unpack of the same envelopes' wire arrays, nothing else."""
    packb, unpackb = msgpack.packb, msgpack.unpackb
    t0 = time.process_time()
    for i in range(n):
        data = packb((0, 5, i, 0, 0, 1234.5, PAYLOAD))
        unpackb(data)
    return n / (time.process_time() - t0)


def row_core(quick: bool) -> Row:
    n, rounds = (10_000, 7) if quick else (10_000, 25)
    med = _interleaved({
        "dispatcher": lambda: _loopback_rate(n, stats=True),
        "dispatcher_batched": lambda: _loopback_rate(n, stats=True, batch=64),
        "msgpack": lambda: _msgpack_rate(n),
    }, rounds, best=True)
    ratio = med["msgpack"] / med["dispatcher_batched"]
    return Row("core", {"dispatcher env/s": med["dispatcher"], "batched env/s": med["dispatcher_batched"],
                        "msgpack env/s": med["msgpack"]},
               ratio, "cost vs msgpack (batched)", "<= 3x", ratio <= 3.0,
               notes=f"per-call flush costs {med['msgpack'] / med['dispatcher']:.1f}x msgpack")


def row_instrumentation(quick: bool) -> Row:
    n, rounds = (10_000, 11) if quick else (10_000, 41)
    med = _interleaved({
        "on": lambda: _loopback_rate(n, stats=True, batch=64),
        "off": lambda: _loopback_rate(n, stats=False, batch=64),
        "events_on": lambda: _loopback_rate(n, stats=True, batch=64, events=True),
        "events_off": lambda: _loopback_rate(n, stats=False, batch=64, events=True),
    }, rounds, best=True)
    slowdown = med["off"] / med["on"] - 1
    ev_slowdown = med["events_off"] / med["events_on"] - 1
    worst = max(slowdown, ev_slowdown)
    return Row("instrumentation", {"intents on env/s": med["on"], "intents off env/s": med["off"],
                                   "events on env/s": med["events_on"], "events off env/s": med["events_off"]},
               100 * worst, "worst slowdown %", "<= 2%", worst <= 0.02,
               notes=f"intents {100 * slowdown:+.1f}%, events (with latency histograms) {100 * ev_slowdown:+.1f}%")


# -- rows that run real Locust processes against real servers on loopback ---------------------------

ROOT = Path(__file__).resolve().parents[1]
BENCHFILES = Path(__file__).with_name("benchfiles")


def _locust(locustfile: Path | str, seconds: int, users: int, *args: str, host: str | None = None,
            env: dict[str, str] | None = None, tmp: Path) -> dict[str, Any]:
    """Run one headless Locust process; its stats (``--json-file``) and exit code."""
    stats = tmp / f"stats-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users), "-r", str(users),
           "-t", f"{seconds}s", "--only-summary", "--json-file", str(stats), *args]
    if host:
        cmd += ["--host", host]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 90,
                       env={**os.environ, **(env or {})})
    path = stats.with_suffix(".json")
    entries = json.loads(path.read_text()) if path.exists() else []
    return {"rc": p.returncode, "requests": sum(e["num_requests"] for e in entries),
            "failures": sum(e["num_failures"] for e in entries), "stderr": p.stderr[-2000:]}


class _Server:
    """A benchmark server process (``harness.benchservers``) printing ``listening on HOST:PORT``."""

    def __init__(self, kind: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.benchservers", kind], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().split()[-1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def rows_loadgen(quick: bool) -> list[Row]:
    """Requests/s from one Locust process: DispatcherUser vs a bare msgpack socket user vs FastHttpUser."""
    seconds, users = (6, 20) if quick else (20, 50)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        game = EmbeddedServer({"rate_limits": {"default": 1e9}, "scheduler": {"budget": None}})
        bare, http = _Server("bare"), _Server("http")
        try:
            disp = _locust(BENCHFILES / "dispatcher_user.py", seconds, users, "--results", str(tmp / "r.json"),
                           host=game.url, env={"NETHARNESS_SECRET": game.secret}, tmp=tmp)
            raw = _locust(BENCHFILES / "bare_user.py", seconds, users, host=f"tcp://{bare.address}", tmp=tmp)
            fast = _locust(BENCHFILES / "http_user.py", seconds, users, host=f"http://{http.address}", tmp=tmp)
        finally:
            game.stop()
            bare.stop()
            http.stop()
    rps = {k: v["requests"] / seconds for k, v in (("dispatcher", disp), ("bare", raw), ("http", fast))}
    figs = {"DispatcherUser req/s": rps["dispatcher"], "bare msgpack req/s": rps["bare"],
            "FastHttpUser req/s": rps["http"]}
    vs_bare = rps["dispatcher"] / rps["bare"] if rps["bare"] else 0.0
    vs_http = rps["dispatcher"] / rps["http"] if rps["http"] else 0.0
    note = f"{users} users, {seconds}s each, one Locust process; failures {disp['failures']}/{raw['failures']}/" \
           f"{fast['failures']}"
    return [Row("loadgen vs bare", figs, vs_bare, "DispatcherUser / bare", ">= 0.8", vs_bare >= 0.8, note),
            Row("loadgen vs http", figs, vs_http, "DispatcherUser / FastHttpUser", ">= 3x", vs_http >= 3.0, note)]


def _mixed(mode: str, calm: float, flood: float, tmp: Path) -> dict[str, Any]:
    res = tmp / f"{mode}.json"
    out = _locust(ROOT / "scenarios" / "mixed.py", int(calm + flood) + 1, 20, "--param", f"calm_s={calm}",
                  "--param", f"flood_s={flood}", "--param", f"scheduler_mode={mode}", "--results", str(res),
                  "--report-dir", str(tmp / f"report-{mode}"), tmp=tmp)
    if not res.exists():
        raise RuntimeError(f"the {mode} mixed run wrote no results: {out['stderr']}")
    return dict(json.loads(res.read_text()))


def rows_qos(quick: bool) -> list[Row]:
    """The mixed flood through the priority scheduler vs the legacy fifo."""
    calm, flood = (4.0, 8.0) if quick else (10.0, 20.0)
    with tempfile.TemporaryDirectory() as d:
        prio, fifo = _mixed("priority", calm, flood, Path(d)), _mixed("fifo", calm, flood, Path(d))

    def crit(r: dict[str, Any], phase: str) -> tuple[float, float]:
        rows = [p for p in r["phases"] if p["phase"] == phase and p["qos"] == "CRITICAL" and p["kind"] == "request"]
        h = merged(Histogram.decode(p["hdr"]) for p in rows)
        return float(h.percentile(50)), float(h.percentile(99))

    def sat(r: dict[str, Any]) -> float:
        t = r["dispatcher"]["server"]["tiers"]["CRITICAL"]
        return t["saturated_ticks"] / t["ticks"] if t["ticks"] else 0.0

    tick_us = 1e6 / 60
    p_calm, p_flood, f_flood = crit(prio, "calm"), crit(prio, "flood"), crit(fifo, "flood")
    s_prio, s_fifo = sat(prio), sat(fifo)
    less = 1 - s_prio / s_fifo if s_fifo else 0.0
    figs = {"priority CRITICAL p50 us": p_flood[0], "p99 us": p_flood[1], "fifo CRITICAL p50 us": f_flood[0],
            "fifo p99 us": f_flood[1], "CRITICAL saturation priority %": 100 * s_prio, "fifo %": 100 * s_fifo}
    extra_ticks = (p_flood[1] - p_calm[1]) / tick_us
    return [
        Row("qos saturation", figs, 100 * less, "% less CRITICAL saturation than fifo", ">= 99%", less >= 0.99),
        Row("qos critical p99", {"calm p99 us": p_calm[1], "flood p99 us": p_flood[1]}, extra_ticks,
            "flood - calm p99 (ticks)", "<= 1 tick", extra_ticks <= 1.0),
    ]


def rows_capacity(quick: bool) -> list[Row]:
    """Players on one server process vs CRITICAL request p99: the largest count whose p99 holds 50 ms."""
    steps, seconds = ([25, 50, 100], 6) if quick else ([25, 50, 100, 200, 400], 15)
    held, figs = 0, {}
    with tempfile.TemporaryDirectory() as d:
        for users in steps:
            res = Path(d) / f"{users}.json"
            _locust(ROOT / "scenarios" / "skills.py", seconds, users, "--results", str(res), "--param",
                    "skill_request_rate=2", tmp=Path(d))
            if not res.exists():
                break
            r = json.loads(res.read_text())
            rows = [e for e in r["entries"] if e["kind"] == "request" and e["qos"] == "CRITICAL"]
            p99 = merged(Histogram.decode(e["latency_us"]["hdr"]) for e in rows).percentile(99)
            figs[f"{users} players p99 us"] = float(p99)
            if p99 > 50_000:
                break
            held = users
    return [Row("capacity", figs, float(held), "players holding p99 < 50ms", "report", held > 0,
                "players and the load generator share this machine's cores")]


def rows_recording(quick: bool) -> list[Row]:
    """Recorder cost per sample, and the report's render time for 10 million samples."""
    from reports.render import write_report

    from .recorder import Recorder

    n = 300_000 if quick else 2_000_000
    rec = Recorder()
    e = rec.entry("request", "CRITICAL", "Intent.Skills.Use")
    record = e.record
    now = time.time()
    t0 = time.process_time()
    for i in range(n):
        record(0.001 + (i & 1023) * 1e-6, 0, now)
    per = (time.process_time() - t0) / n * 1e6
    rec.fold()
    samples = 10_000_000
    results = _synthetic_results(samples)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        write_report(results, d)
        render = time.perf_counter() - t0
    return [Row("recorder", {"us per sample": per}, per, "us per sample", "<= 0.3", per <= 0.3),
            Row("report render", {"samples": samples, "seconds": render}, render, "seconds for 10M samples",
                "< 10 s", render < 10.0)]


def _synthetic_results(samples: int) -> dict[str, Any]:
    """A results.json whose histograms hold ``samples`` values (four tiers, lognormal latencies)."""
    import numpy as np

    rng = np.random.default_rng(1)
    entries, series = [], []
    per = samples // 4
    for i, tier in enumerate(("CRITICAL", "HIGH", "NORMAL", "BACKGROUND")):
        h = Histogram()
        for _ in range(per // 1_000_000 or 1):
            h.record_many(rng.lognormal(6 + i, 1.0, min(per, 1_000_000)).astype(np.int64))
        entries.append({"kind": "request", "qos": tier, "name": f"Intent.Bench.{tier.title()}", "count": h.count,
                        "failures": 0, "bytes": 0, "behind": 0, "latency_us": h.to_dict()})
        for t in range(60):
            series.append({"t": t, "kind": "request", "qos": tier, "count": h.count // 60, "failures": 0,
                           "hdr": h.encode()})
    return {"format": "netharness-results", "version": 1, "meta": {"scenario": "synthetic", "duration_s": 60},
            "entries": entries, "series": series, "phases": [], "dispatcher": {"client": None, "server": None}}


CYCLE_S = 15.0  # mixed.py's default calm (5 s) + flood (10 s)


def rows_memory(quick: bool) -> list[Row]:
    """Resident memory of the Locust process and of the server over a mixed run: flat after warm-up (the
    first calm + flood cycle; then the same cycle repeats, so what still grows is a leak)."""
    seconds = 45 if quick else 180
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / "mixed.py"), "--headless", "-u", "20",
               "-r", "20", "-t", f"{seconds}s", "--only-summary", "--results", str(Path(d) / "r.json")]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples: dict[str, list[int]] = {"locust": [], "server": []}
        t_end = time.monotonic() + seconds
        while proc.poll() is None and time.monotonic() < t_end:
            time.sleep(1.0)
            samples["locust"].append(_rss(proc.pid))
            kids = _children(proc.pid)
            samples["server"].append(sum(_rss(k) for k in kids))
        proc.wait(timeout=120)
    rows = []
    for who, rss in samples.items():
        rss = [r for r in rss if r]
        if len(rss) < 6:
            rows.append(Row(f"memory {who}", {}, float("nan"), "growth %", "< 10%", False, "too few samples"))
            continue
        warm = rss[min(len(rss) - 1, int(CYCLE_S))]  # the end of the first calm + flood cycle
        growth = (rss[-1] - warm) / warm
        rows.append(Row(f"memory {who}", {"RSS after warm-up MB": warm / 1e6, "RSS at end MB": rss[-1] / 1e6},
                        100 * growth, "growth after warm-up %", "< 10%", growth < 0.10, f"{seconds}s mixed run"))
    return rows


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


ROWS: dict[str, Callable[[bool], Row | list[Row]]] = {
    "core": row_core,
    "instrumentation": row_instrumentation,
    "loadgen": rows_loadgen,
    "qos": rows_qos,
    "capacity": rows_capacity,
    "recording": rows_recording,
    "memory": rows_memory,
}


def run(names: list[str] | None = None, *, quick: bool = False, out: str | Path | None = "bench.json",
        echo: Callable[[str], None] = print) -> list[Row]:
    unknown = sorted(set(names or []) - set(ROWS))
    if unknown:
        raise ValueError(f"unknown bench row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    rows = []
    echo(f"netharness bench ({'quick' if quick else 'full'}) on {platform.node()}: {platform.processor() or ''} "
         f"python {platform.python_version()}")
    for name in names or list(ROWS):
        t0 = time.perf_counter()
        got = ROWS[name](quick)
        for row in got if isinstance(got, list) else [got]:
            row.seconds = time.perf_counter() - t0
            rows.append(row)
            echo(row.line())
    echo("")
    echo(summary_table(rows))
    if out is not None:
        doc = {"quick": quick, "python": sys.version.split()[0], "machine": platform.machine(),
               "rows": [asdict(r) for r in rows]}
        Path(out).write_text(json.dumps(doc, indent=2))
    return rows


def summary_table(rows: list[Row]) -> str:
    lines = [f"| row | figures | {'ratio':<8} | target | met |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        figs = "; ".join(f"{k} {_fmt(v)}" for k, v in r.figures.items())
        lines.append(f"| {r.name} | {figs} | {r.ratio_label} {r.ratio:.3f} | {r.target} | "
                     f"{'yes' if r.met else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .args import Parser

    ap = Parser(prog="netharness bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter runs (a few minutes in all)")
    ap.add_argument("--only", default="", help=f"comma-separated rows: {', '.join(ROWS)}")
    ap.add_argument("-o", "--output", default="bench.json", help="where to write the figures (JSON)")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or None
    try:
        run(names, quick=args.quick, out=args.output)
    except ValueError as e:
        ap.error(str(e))
    return 0
