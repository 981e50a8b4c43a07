"""The benchmark command works and reports honestly (its speed targets live in its output, not in tests)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.bench.files.cpumeter import PIN_ENV
from harness.bench.procrows import _metered, _Server, _two_cpus
from harness.bench.rows import _interleaved, _pair_ratios, _paired_ratio

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


@pytest.mark.skipif(_two_cpus() is None, reason="needs two CPUs to pin to one")
def test_a_metered_run_splits_its_cpu_and_runs_pinned(tmp_path: Path) -> None:
    """The loadgen row's meter: a real bare-user Locust run against the bench's bare server, pinned to one CPU
    (so its CPU time cannot exceed its wall time); its window's CPU time is split into user and kernel time,
    and it counted the requests it made."""
    cpus = _two_cpus()
    assert cpus is not None
    server = _Server("bare")
    try:
        m, failures = _metered(ROOT / "harness" / "bench" / "files" / "bare_user.py", 1, 2,
                               f"tcp://{server.address}", {PIN_ENV: str(cpus[1])}, (), tmp_path)
    finally:
        server.stop()
    assert failures == 0 and m["requests"] > 0 and m["cpus"] == [cpus[1]]
    assert m["user_s"] > 0 and m["sys_s"] > 0 and m["cpu_s"] <= 1.05 * m["wall_s"]  # one CPU at most
    assert 0.5 < m["wall_s"] < 5


@pytest.mark.parametrize(("a", "b", "pairs", "median"), [
    ([2.0, 2.0], [4.0, 4.0], [0.5], 0.5),
    # a host twice as fast for the second round of a pair hits both sides: the pair still reads 0.5
    ([1.0, 2.0, 3.0, 3.0], [2.0, 4.0, 3.0, 3.0], [0.5, 1.0], 0.75),
    ([1.0, 1.0, 1.0, 1.0, 9.0], [1.0, 1.0, 2.0, 2.0, 1.0], [1.0, 0.5], 0.75),  # an odd last round pairs with none
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0, 4.0, 4.0], [1.0, 0.5, 0.25], 0.5),
    ([1.0], [1.0], [], 0.0),  # no full pair: no ratio
    ([1.0, 1.0], [0.0, 0.0], [0.0], 0.0),  # a contender that measured nothing
])
def test_the_loadgen_ratio_is_the_median_of_a_b_b_a_pairs(a: list[float], b: list[float], pairs: list[float],
                                                          median: float) -> None:
    assert _pair_ratios(a, b) == pairs
    assert _paired_ratio(a, b) == median


class _FakeHost:
    """A process clock that the steps advance: each step of a contender costs its base time times the host's
    current slowness (``drift``, from call to call), plus ``cold_extra`` when it is a side's every fourth call
    and the other side ran just before it (a periodic task that finds the caches cold)."""

    def __init__(self, drift: Callable[[int], float], cold_extra: float = 0.0) -> None:
        self.t = 0.0
        self.calls: list[str] = []
        self.drift = drift
        self.cold_extra = cold_extra

    def step(self, who: str, cost: float) -> Callable[[], None]:
        own = 0

        def run() -> None:
            nonlocal own
            own += 1
            cold = own % 4 == 0 and self.calls and self.calls[-1] != who
            self.t += cost * self.drift(len(self.calls)) + (self.cold_extra if cold else 0.0)
            self.calls.append(who)
        return run


@pytest.mark.parametrize(("drift", "b_cost", "cold_extra", "expect"), [
    (lambda i: 1.0, 1.5, 0.0, 1.5),
    (lambda i: 1.0, 1.0, 0.0, 1.0),  # a control: the same cost reads 1
    (lambda i: 1.0 + i / 100, 1.02, 0.0, 1.02),  # a host slowing down step after step
    (lambda i: 2.0 if (i // 37) % 2 else 1.0, 1.02, 0.0, 1.02),  # a host that halves its speed in bursts
    # twins whose every fourth step costs more after the other ran: in a fixed b-a, a-b order it always hit the
    # same side (+12%)
    (lambda i: 1.0, 1.0, 0.5, 1.0),
])
def test_the_instrumentation_ratio_interleaves_the_two_sides_step_by_step(
        drift: Callable[[int], float], b_cost: float, cold_extra: float, expect: float) -> None:
    host = _FakeHost(drift, cold_extra)
    ratios = _interleaved(host.step("a", 1.0), host.step("b", b_cost), 2000, 50, clock=lambda: host.t)
    assert len(ratios) == 40
    assert statistics.median(ratios) == pytest.approx(expect, rel=0.02)
    timed = host.calls[2 * (2000 // 20):]  # after the warm-up, each step's two calls
    assert timed.count("a") == timed.count("b") == 2000
    b_first = sum(timed[i] == "b" for i in range(0, len(timed), 2))
    assert 900 < b_first < 1100  # either side first about half the time
