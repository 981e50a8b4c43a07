"""``NETHARNESS_LOCUST_MEMTRACE=FILE``: the memory diagnostic of ``harness.game.memtrace`` for the Locust
process itself (the embedded server reads ``NETHARNESS_MEMTRACE``), with the sizes of what a Locust process
holds: Locust's statistics (entries, response-time keys, cached copies, per-second counts), the recorder's
pending samples and seconds, the dispatcher's histograms and their counts, and the heap trimmer's cost.
Off by default; ``NETHARNESS_MEMTRACE_EVERY``/``_AFTER``/``_FRAMES`` apply (set ``_FRAMES=0`` for figures
taken at full speed: tracemalloc slows a loaded Locust process until its players fall behind), and
``NETHARNESS_MEMTRACE_GROWERS=1`` adds the containers that grew most (``Growers``)."""

from __future__ import annotations

import gc
import os
from typing import Any

from locust.env import Environment

from dispatcher.histogram import Histogram
from harness.game import memtrace
from harness.runner.heap import Trimmer
from harness.runner.state import State, fail_fast

__all__ = ["GROWERS_ENV", "Growers", "install", "sizes"]

GROWERS_ENV = "NETHARNESS_MEMTRACE_GROWERS"  # =1: also the containers that grew most (a slow walk)


def install(environment: Environment, st: State, trimmer: Trimmer | None = None) -> None:
    """Start the diagnostic's greenlet when ``NETHARNESS_LOCUST_MEMTRACE`` names a file (one line every
    ``NETHARNESS_MEMTRACE_EVERY`` seconds); a bad setting is one line and exit 2."""
    path = os.environ.get(memtrace.LOCUST_ENV)
    if not path:
        return
    try:
        growers = Growers() if os.environ.get(GROWERS_ENV) else None
        trace = memtrace.from_env(path, extra=lambda: sizes(environment, st, trimmer, growers))
    except ValueError as e:
        fail_fast(str(e))
    assert trace is not None
    import gevent

    def loop() -> None:
        while True:
            trace.sample()
            gevent.sleep(1.0)

    gevent.spawn(loop)


class Growers:
    """Containers (lists, dicts, sets, even those the gc does not track) that grew by the most entries since
    the first ``grown()``, named by the type of an object holding them: what a leak looks like when the gc's
    object counts stay flat (issue 13 found the dispatcher's held sojourns this way).  A walk over every
    object's referents: a pause of a good fraction of a second in a loaded process."""

    def __init__(self) -> None:
        self._first: dict[int, int] | None = None  # the first walk: entries per container

    def grown(self) -> dict[str, int]:
        now: dict[int, tuple[int, str]] = {}
        for o in gc.get_objects():
            for r in gc.get_referents(o):
                if type(r) in (dict, set, list, bytearray) and len(r) > 64:
                    now[id(r)] = (len(r), f"{type(o).__qualname__}.{type(r).__name__}")
        if self._first is None:
            self._first = {k: n for k, (n, _) in now.items()}
            return {}
        first = self._first
        out: dict[str, int] = {}
        for k, (n, name) in now.items():
            d = n - first.get(k, 0) if k in first or n > 500 else 0
            if d > 0:
                out[name] = out.get(name, 0) + d
        return dict(sorted(out.items(), key=lambda kv: -kv[1])[:12])


def sizes(environment: Environment, st: State, trimmer: Trimmer | None = None,
          growers: Growers | None = None) -> dict[str, Any]:
    """What this process's statistics hold, counted (one walk over the gc's objects for the histograms)."""
    hists = [o for o in gc.get_objects() if isinstance(o, Histogram)]
    counted = [h for h in hists if h._counts is not None]
    stats = environment.stats
    entries = [*stats.entries.values(), stats.total] if stats is not None else []
    caches = [c for e in entries for c in (e.response_times_cache or {}).values()]
    return {"locust_entries": len(entries), "locust_rt_keys": sum(len(e.response_times) for e in entries),
            "locust_cached_dicts": len(caches), "locust_cached_keys": sum(len(c.response_times) for c in caches),
            "locust_per_sec_keys": sum(len(e.num_reqs_per_sec) for e in entries),
            "locust_history": len(stats.history) if stats is not None else 0,
            "recorder_pending": sum(e.log.run.n for e in st.recorder.entries.values()),
            "recorder_seconds": len(st.recorder.series),
            "histograms": len(hists), "histograms_counted": len(counted),
            "histogram_bytes": sum(h._counts.nbytes + (h._buffer.nbytes if h._buffer is not None else 0)
                                   for h in counted if h._counts is not None),
            "trims": trimmer.count if trimmer else 0,
            "trim_most_ms": round(trimmer.most_s * 1e3, 3) if trimmer else 0,
            **({"growers": growers.grown()} if growers is not None else {})}
