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
"""

from __future__ import annotations

import inspect
import sys
from types import FrameType
from typing import Any

import locust.runners
import locust.stats

__all__ = ["bucket_response_time", "install"]

_original_bucket = locust.stats.bucket_response_time


def bucket_response_time(response_time: int | float) -> int | float:
    """Locust's response-time bucketing, to 2 significant digits below 100 ms instead of whole ms, so that
    its own percentiles stay meaningful for sub-millisecond loopback latencies."""
    if response_time >= 100:
        return _original_bucket(response_time)
    if response_time <= 0:
        return 0
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
