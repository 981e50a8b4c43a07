"""The bench's rows measured in this process (the core, instrumentation, the recorder), and ``Row``."""

from __future__ import annotations

import gc
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

import dispatcher
from dispatcher import LoopbackHub, VirtualClock
from dispatcher.histogram import Histogram
from harness.game import load_registry

__all__ = ["Row", "row_core", "row_instrumentation", "rows_recording"]


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


def _paired(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[float, float, float]:
    """``a``'s rate over ``b``'s, measured in pairs: each round runs a, b, b, a back to back (a few tenths of
    a second) and gives one ratio; the result is the median ratio, with each side's median rate.  These
    machines' speed drifts by up to 2x over seconds (another tenant on the host), so two rates taken apart,
    even each the best of many runs, compare two different machines; a pair taken within a moment does not."""
    ra: list[float] = []
    rb: list[float] = []
    for _ in range(rounds):
        gc.collect()
        a1, b1, b2, a2 = a(), b(), b(), a()
        ra += (a1, a2)
        rb += (b1, b2)
    return _paired_ratio(ra, rb), statistics.median(ra), statistics.median(rb)


def _pair_ratios(a: list[float], b: list[float]) -> list[float]:
    """(a1 + a2) / (b1 + b2) over consecutive pairs of rates (an odd last one pairs with nothing; a pair whose
    b side measured nothing reads 0)."""
    return [(a[i] + a[i + 1]) / (b[i] + b[i + 1]) if b[i] + b[i + 1] else 0.0
            for i in range(0, min(len(a), len(b)) - 1, 2)]


def _paired_ratio(a: list[float], b: list[float]) -> float:
    """The median of ``_pair_ratios``, 0.0 without a full pair."""
    ratios = _pair_ratios(a, b)
    return statistics.median(ratios) if ratios else 0.0


PAYLOAD = {"skillId": "TripleStrike", "target": 7}


def _loopback_stepper(stats: bool, *, batch: int = 1, events: bool = False) -> tuple[Callable[[], None], list[int]]:
    """A loopback pair and one step through it: ``batch`` envelopes sent, then one pump (encode, schedule,
    decode, dispatch); and the count of envelopes the handler saw.

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

    send: Callable[[str, Any, float], object]
    if events:
        client.on("Event.Skills.Execution", handler)
        name, core, send = "Event.Skills.Execution", hub.server_core, hub.server_core.emit
    else:
        hub.server.on("Intent.Skills.Use", handler)
        name, core, send = "Intent.Skills.Use", client.core, client.core.intent
    assert core.stats.enabled is stats
    now = hub.clock.now()
    pump = hub.pump

    def step() -> None:
        for _ in range(batch):
            send(name, PAYLOAD, now)
        pump()

    return step, got


def _loopback_rate(n: int, *, stats: bool, batch: int = 1, events: bool = False) -> float:
    """Envelopes per second of process time through a new loopback pair (``_loopback_stepper``)."""
    step, got = _loopback_stepper(stats, batch=batch, events=events)
    t0 = time.process_time()
    for _ in range(n // batch):
        step()
    dt = time.process_time() - t0
    assert got[0] == n // batch * batch, (got[0], n)
    return got[0] / dt


def _interleaved(a: Callable[[], None], b: Callable[[], None], steps: int, block: int,
                 clock: Callable[[], float] = time.process_time, seed: int = 13) -> list[float]:
    """``b``'s cost over ``a``'s, step by step: each step runs both, in an order drawn at random (seeded), each
    timed on the process clock, and each ``block`` of steps gives one ratio of b's time to a's.

    Rounds of a tenth of a second, even in a-b-b-a pairs, read the host's drift: the same on-off pair read
    +1.0% then +2.7% a minute apart, and stats on against on -0.03% to -1.56%.  Steps of half a millisecond
    side by side do not; but in a fixed b-a, a-b, ... order, a side's work that comes every few steps (the
    scheduler's report every 4 steps of 64 frames) fell in the same place of the pair every time: one loopback
    pair timed against itself read +1.4 to +2.1%, and controls against a twin -0.8% to +0.0%.  In a random
    order the pair against itself reads -0.1% and 0.0%, and controls (this row's figures) -0.1% to +0.2%."""
    rng = random.Random(seed)
    for _ in range(max(1, steps // 20)):  # warm both: caches, free lists, the tallies' first growth
        a()
        b()
    ratios: list[float] = []
    spent = [0.0, 0.0]  # a's and b's time in this block
    sides = ((1, b), (0, a))
    for i in range(steps):
        (j, first), (k, second) = sides if rng.random() < 0.5 else sides[::-1]
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        spent[j] += t1 - t0
        spent[k] += t2 - t1
        if (i + 1) % block == 0:
            ratios.append(spent[1] / spent[0] if spent[0] > 0 else 0.0)
            spent = [0.0, 0.0]
    return ratios


def _msgpack_rate(n: int) -> float:
    """The floor: msgpack pack + unpack of the same envelopes' wire arrays, nothing else."""
    packb, unpackb = msgpack.packb, msgpack.unpackb
    t0 = time.process_time()
    for i in range(n):
        data = packb((0, 5, i, 0, 0, 1234.5, PAYLOAD))
        unpackb(data)
    return n / (time.process_time() - t0)


_PURE_RATE = "import sys; from harness.bench.rows import _loopback_rate; print(max(_loopback_rate(int(sys.argv[1]), " \
             "stats=True, batch=64) for _ in range(3)))"


def _pure_batched_rate(n: int) -> float:
    """The batched figure of the pure-Python core (``NETHARNESS_PURE_PYTHON=1``), in a child process."""
    env = {**os.environ, "NETHARNESS_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", _PURE_RATE, str(n)], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout.split()[-1])


def row_core(quick: bool) -> Row:
    n, rounds = (10_000, 11) if quick else (10_000, 41)
    ratio, floor, batched = _paired(lambda: _msgpack_rate(n), lambda: _loopback_rate(n, stats=True, batch=64), rounds)
    per_call = statistics.median(_loopback_rate(n, stats=True) for _ in range(3))  # one flush per envelope
    figures = {"dispatcher env/s": per_call, "batched env/s": batched, "msgpack env/s": floor}
    compiled = dispatcher.compiled_modules()
    build = "pure Python"
    if compiled:  # the pure-Python build side by side, paired the same way (child processes)
        vs_pure, _, pure = _paired(lambda: _loopback_rate(n, stats=True, batch=64), lambda: _pure_batched_rate(n),
                                   3 if quick else 7)
        figures["pure-Python batched env/s"] = pure
        build = (f"compiled (mypyc, {len(compiled)} modules), {vs_pure:.2f}x the pure-Python core (batched; pure "
                 f"about {ratio * vs_pure:.1f}x msgpack)")
    return Row("core", figures, ratio, "cost vs msgpack (batched)", "<= 3x", ratio <= 3.0,
               notes=f"build: {build}; median of {rounds} paired rounds; per-call flush costs "
                     f"{floor / per_call:.1f}x msgpack")


def row_instrumentation(quick: bool) -> Row:
    """Stats on against off, for intents and for events (with their one-way latency histograms): the loopback
    pairs' steps interleaved (``_interleaved``), and the median over blocks; a control (events, on against
    on) in the notes says how far from 0 this measurement reads when nothing differs."""
    steps, block = (3_000, 50) if quick else (12_000, 50)

    def slowdown(off: bool, on: bool, events: bool) -> float:
        a, _ = _loopback_stepper(off, batch=64, events=events)
        b, _ = _loopback_stepper(on, batch=64, events=events)
        return statistics.median(_interleaved(a, b, steps, block)) - 1

    intents, events = slowdown(False, True, False), slowdown(False, True, True)
    control = slowdown(True, True, True)
    worst = max(intents, events)
    return Row("instrumentation", {"intents slowdown %": 100 * intents, "events slowdown %": 100 * events,
                                   "control %": 100 * control},
               100 * worst, "worst slowdown %", "<= 2%", worst <= 0.02,
               notes=f"intents {100 * intents:+.2f}%, events (with latency histograms) {100 * events:+.2f}%, "
                     f"control (events, on vs on) {100 * control:+.2f}%; median of {steps // block} blocks of "
                     f"{block} interleaved steps of 64 envelopes")


def rows_recording(quick: bool) -> list[Row]:
    """Recorder cost per sample, and the report's render time for 10 million samples."""
    from harness.runner.recorder import Recorder
    from reports.render import write_report

    n, rounds = (50_000, 7) if quick else (100_000, 21)

    latencies = [0.001 + (i & 1023) * 1e-6 for i in range(n)]

    def per_sample() -> float:
        """Microseconds per ``Entry.record`` call (the folds into the histograms included)."""
        rec = Recorder()
        record = rec.entry("request", "CRITICAL", "Intent.Skills.Use").record
        now = time.time()
        t0 = time.process_time()
        for seconds in latencies:
            record(seconds, 0, now)
        rec.fold()
        return (time.process_time() - t0) / n * 1e6

    gc.collect()
    per = min(per_sample() for _ in range(rounds))  # as timeit: noise only ever slows a round down
    samples = 10_000_000
    results = _synthetic_results(samples)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        write_report(results, d)
        render = time.perf_counter() - t0
    return [Row("recorder", {"us per sample": per}, per, "us per sample", "<= 0.3", per <= 0.3,
                f"best of {rounds} rounds of {n:,} samples, each with its folds"),
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
