"""Fixes to Locust for measuring sub-millisecond latencies, installed from Locust's ``init`` event by
``harness.runner.plugin`` (never at import: importing this module changes nothing).

* ``bucket_response_time``: Locust keeps response times in whole-millisecond buckets below 100 ms, so its
  percentiles of loopback latencies read 0 or 1; 2 significant digits instead.
* ``StatsCSV._percentile_fields``: Locust's CSV writes each percentile through ``int()``, so a 0.87 ms
  percentile reads 0; the fraction is kept below 100 ms (``latency.csv`` has microseconds).
* ``Runner.stop`` logs its caller at debug level through ``inspect.stack()``, which reads the source of every
  frame: 50-100 ms with the event loop blocked, just as the run ends, so every answer then in flight got that
  much latency (a mixed.py CRITICAL p99 of 65-112 ms instead of 13 ms).  The caller is found without reading
  any source.
* ``per_name_cache_off``: every Locust stats entry keeps a copy of its response-time dict per second for 20 s
  (the "current" percentiles).  Only the total's copies are read (the web UI's and the HTML report's charts),
  unless ``--csv-full-history`` writes each name's current percentiles; the per-name copies were about 2 MB in
  a 20-player mixed run (our 2-digit buckets give each dict hundreds of keys), filling for minutes as new
  buckets appeared, and a dict copy per name per second.  For one environment, not Locust's classes.
"""

from __future__ import annotations

import inspect
import sys
from types import FrameType
from typing import Any

import locust.runners
import locust.stats

__all__ = ["bucket_response_time", "install", "per_name_cache_off"]

_original_bucket = locust.stats.bucket_response_time


def bucket_response_time(response_time: int | float) -> int | float:
    """Locust's response-time bucketing, to 2 significant digits below 100 ms instead of whole ms, so that
    its own percentiles stay meaningful for sub-millisecond loopback latencies."""
    if response_time >= 100:
        return _original_bucket(response_time)
    if response_time <= 0:
        return 0
    # ``float(f"{response_time:.2g}")`` without the string where that is exact: every sample passes here
    # twice (its name's entry and the total), and the string round trip was about a twentieth of a load
    # generator's event path.  ``round`` of the value (10-100 ms) or of it scaled to an integer (0.1-10 ms)
    # is what formatting gives, except next to a tie, where the scaling's own rounding could tip it.
    if response_time >= 10:
        return float(round(response_time))
    if response_time >= 0.1:
        scale = 10.0 if response_time >= 1 else 100.0
        y = response_time * scale
        r = round(y)
        if abs(abs(y - r) - 0.5) > 1e-6:
            return r / scale
    return float(f"{response_time:.2g}")


def _percentile_fields(self: Any, stats_entry: Any, use_current: bool = False) -> list[str] | list[float]:
    """Locust's CSV writes each percentile through ``int()``: a 0.87 ms percentile would read 0.  Keep the
    fraction below 100 ms (milliseconds, as Locust's columns are); ``latency.csv`` has microseconds."""
    if not stats_entry.num_requests:
        return list(self.percentiles_na)
    get = stats_entry.get_current_response_time_percentile if use_current and stats_entry.use_response_times_cache \
        else stats_entry.get_response_time_percentile
    out: list[float] = []
    for x in self.percentiles_to_report:
        v = float(get(x) or 0)
        out.append(int(v) if v >= 100 else round(v, 3))
    return out


class _CallerOnly:
    """What ``locust.runners`` uses of ``inspect``: ``getframeinfo(stack()[1][0])``, the caller of ``stop``."""

    @staticmethod
    def stack() -> list[tuple[FrameType | None]]:
        here = sys._getframe(1)  # the function that asked: Runner.stop
        return [(here,), (here.f_back,)]

    @staticmethod
    def getframeinfo(frame: FrameType) -> inspect.Traceback:
        return inspect.getframeinfo(frame, context=0)


def install() -> None:
    """Apply the three fixes (idempotent)."""
    locust.runners.inspect = _CallerOnly  # type: ignore[assignment]
    locust.stats.bucket_response_time = bucket_response_time
    locust.stats.StatsCSV._percentile_fields = _percentile_fields  # type: ignore[method-assign]


class _UncachedEntries(locust.stats.EntriesDict):
    """Locust's per-name entries dict; each entry put in it (created on a name's first request, or by the
    master from a worker's report) keeps no response-time cache."""

    def __setitem__(self, key: Any, entry: Any) -> None:
        entry.use_response_times_cache = False
        entry.response_times_cache = None
        super().__setitem__(key, entry)


def per_name_cache_off(stats: Any) -> None:
    """Locust's per-name response-time caches off for this ``RequestStats`` (the total keeps its cache: the
    charts read it), now and after every ``clear_all`` (Locust calls it when a test starts)."""
    if isinstance(stats.entries, _UncachedEntries):
        return
    entries = _UncachedEntries(stats)
    for key, entry in stats.entries.items():
        entries[key] = entry
    stats.entries = entries
    clear_all = stats.clear_all

    def clear_all_then_uncache() -> None:
        clear_all()
        per_name_cache_off(stats)

    stats.clear_all = clear_all_then_uncache
