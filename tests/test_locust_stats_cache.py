"""Locust's response-time cache: per-name copies off (they only feed ``--csv-full-history``), the total's kept
(the web UI's and the HTML report's charts read it).  Issue 13: the per-name copies grew a Locust process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from locust.stats import RequestStats, StatsEntry

from harness.runner.locust_patches import per_name_cache_off

ROOT = Path(__file__).resolve().parents[1]


def _logged(stats: RequestStats) -> None:
    stats.log_request("CRITICAL", "request Intent.Skills.Use", 1.5, 0)


def _merged_from_a_worker(stats: RequestStats) -> None:  # what Locust's master does with a worker's report
    stats.entries[("request Intent.Skills.Use", "CRITICAL")] = StatsEntry(
        stats, "request Intent.Skills.Use", "CRITICAL", use_response_times_cache=True)


def _logged_after_clear_all(stats: RequestStats) -> None:  # Locust clears its stats when a test starts
    stats.clear_all()
    stats.clear_all()
    _logged(stats)


@pytest.mark.parametrize("make", [_logged, _merged_from_a_worker, _logged_after_clear_all],
                         ids=["logged", "merged from a worker", "after clear_all"])
def test_per_name_entries_keep_no_cache_and_the_total_keeps_its(make: Callable[[RequestStats], None]) -> None:
    stats = RequestStats()
    per_name_cache_off(stats)
    per_name_cache_off(stats)  # idempotent
    make(stats)
    entry = stats.entries[("request Intent.Skills.Use", "CRITICAL")]
    assert entry.use_response_times_cache is False and entry.response_times_cache is None
    assert stats.total.use_response_times_cache is True and stats.total.response_times_cache is not None
    stats.log_request("CRITICAL", "request Intent.Skills.Use", 2.5, 0)
    assert entry.response_times_cache is None and entry.num_requests >= 1


def test_entries_that_existed_before_are_uncached_too() -> None:
    stats = RequestStats()
    _logged(stats)
    assert stats.entries[("request Intent.Skills.Use", "CRITICAL")].response_times_cache is not None
    per_name_cache_off(stats)
    entry = stats.entries[("request Intent.Skills.Use", "CRITICAL")]
    assert entry.response_times_cache is None and entry.num_requests == 1


def _templated(html: str) -> dict[str, Any]:
    m = re.search(r"window\.templateArgs = (\{.*?\})\s*\n", html)
    assert m is not None, "no templateArgs in Locust's HTML report"
    args: dict[str, Any] = json.loads(m.group(1))
    return args


def test_a_headless_run_keeps_locusts_charts(tmp_path: Path) -> None:
    """A real run: Locust's HTML report still charts the current response-time percentiles (the total's
    cache) with the per-name caches off; the Locust process's memory diagnostic shows only the total's
    copies (at most 20 s of them) among its figures."""
    report, trace = tmp_path / "locust.html", tmp_path / "locust-mem.jsonl"  # report.html: the harness's
    cmd = [sys.executable, "-m", "locust", "-f", "scenarios/skills.py", "--headless", "-u", "4", "-r", "4", "-t", "14s",
           "--only-summary", "--results", str(tmp_path / "results.json"), "--html", str(report)]
    env = {**os.environ, "NETHARNESS_LOCUST_MEMTRACE": str(trace), "NETHARNESS_MEMTRACE_EVERY": "3",
           "NETHARNESS_MEMTRACE_AFTER": "3", "NETHARNESS_MEMTRACE_FRAMES": "0", "NETHARNESS_MEMTRACE_GROWERS": "1"}
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    history = _templated(report.read_text())["history"]
    p95 = [row["response_time_percentile_0.95"][1] for row in history]
    assert len(history) >= 2 and any(v > 0 for v in p95), history
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    last = lines[-1]
    assert len(lines) >= 3 and "growers" in last and last["rss"] > 0
    assert last["locust_entries"] >= 3 and last["histograms_counted"] > 0
    assert last["recorder_pending"] > 0  # samples waiting for a fold (at most 4,096 per entry)
    assert 0 < last["locust_cached_dicts"] <= 21  # the total's copies only: no per-name ones
