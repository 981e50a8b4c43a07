"""The Locust process's C heap: given back to the OS every few seconds, so resident memory stays flat.

What a Locust process holds after its warm-up stays about the same, but glibc keeps freed blocks in its heap,
and pages inside the heap go back to the OS only on ``malloc_trim``.  Blocks freed for good — a histogram's
counts when a larger value grows them (72-188 kB each, a few hundred histograms), the per-second copies of
Locust's response times — left the heap's free space growing by 3-10 MB over a 3-minute run (issue 13).
``Trimmer`` calls ``malloc_trim`` every ``TRIM_EVERY_S`` seconds: a pause of about a millisecond for this
heap (``last_s``/``most_s`` say; ``NETHARNESS_LOCUST_MEMTRACE`` logs them).

Linux with glibc only; elsewhere a trim does nothing.  Nothing happens at import: the plugin starts the
trimmer from Locust's ``init`` event.
"""

from __future__ import annotations

import time

from dispatcher.runtime.libc import malloc_trim

__all__ = ["TRIM_EVERY_S", "Trimmer", "trim"]

TRIM_EVERY_S = 10.0


def trim() -> float:
    """Return the heap's free pages to the OS; how long it took (seconds; 0 where there is no glibc)."""
    t0 = time.perf_counter()
    if not malloc_trim():
        return 0.0
    return time.perf_counter() - t0


class Trimmer:
    """``run()`` (a greenlet) trims every ``every`` seconds; ``count``, ``last_s`` and ``most_s`` say what it
    cost."""

    def __init__(self, every: float = TRIM_EVERY_S) -> None:
        if not every > 0:
            raise ValueError(f"trim interval must be > 0 seconds, got {every}")
        self.every = every
        self.count = 0
        self.last_s = 0.0
        self.most_s = 0.0

    def once(self) -> None:
        self.last_s = trim()
        self.most_s = max(self.most_s, self.last_s)
        self.count += 1

    def run(self) -> None:
        import gevent

        while True:
            gevent.sleep(self.every)
            self.once()
