"""``netharness bench``: figures measured side by side in one run, reported as ratios with targets.

These machines are shared and noisy: each row runs its contenders interleaved (A B A B ...) many times, on
process CPU time, and compares the best run of each (as ``timeit`` does), so a burst of load elsewhere hits
both sides alike and cannot make a figure look better than it is.  Rows print as they finish;
the summary table and ``bench.json`` come last.
"""

from __future__ import annotations

import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack

import dispatcher
from dispatcher import LoopbackHub, VirtualClock

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
    extra: dict[str, Any] = field(default_factory=dict)

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


ROWS: dict[str, Callable[[bool], Row]] = {
    "core": row_core,
    "instrumentation": row_instrumentation,
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
        row = ROWS[name](quick)
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
    import argparse

    ap = argparse.ArgumentParser(prog="netharness bench", description=__doc__)
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
