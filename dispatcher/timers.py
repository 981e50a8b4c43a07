"""A heap of timers in the core's time (``now`` is always an argument; nothing here reads a clock)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Final

__all__ = ["Timer", "Timers"]

#: Cancelled timers are dropped from the heap once there are more than this many of them and they are
#: more than half of it: a timer cancelled long before its time (a request's timeout, answered in
#: microseconds) otherwise stays until its time comes, and a client sending hundreds of requests a second
#: with a 10 s timeout kept a heap of thousands of dead entries that every push and pop walked (issue 13).
_COMPACT_AT: Final = 64

#: ``[when, order, fn, arg, dead]``; a cancelled timer has ``fn`` None; ``dead`` is the heap's count of
#: cancelled entries (a one-item list shared by its live entries), None once the entry left the heap.
Timer = list[Any]


class Timers:
    __slots__ = ("_dead", "_heap", "_n")

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._n = 0
        self._dead: list[int] = [0]  # cancelled entries still in the heap

    def schedule(self, when: float, fn: Callable[[Any, float], None], arg: Any) -> Timer:
        self._n += 1
        dead = self._dead
        if dead[0] > _COMPACT_AT and dead[0] * 2 > len(self._heap):
            self.compact()
        entry = [when, self._n, fn, arg, dead]
        heapq.heappush(self._heap, entry)
        return entry

    @staticmethod
    def cancel(entry: Timer | None) -> None:
        if entry is not None and entry[2] is not None:
            entry[2] = entry[3] = None  # the argument too: a pending request and its timer point at each other
            dead = entry[4]
            if dead is not None:
                dead[0] += 1

    def compact(self) -> None:
        """Drop cancelled timers now (they otherwise stay until there are many of them, or their time comes):
        after many connections closed, their watchdogs would keep small objects alive all over the allocator's
        arenas."""
        h = self._heap
        h[:] = [e for e in h if e[2] is not None]  # in place: a ``fire`` under way holds this list
        heapq.heapify(h)
        self._dead[0] = 0

    def next(self) -> float | None:
        h = self._heap
        while h and h[0][2] is None:
            heapq.heappop(h)[4] = None
            self._dead[0] -= 1
        return h[0][0] if h else None

    def fire(self, now: float, limit: int | None = None) -> bool:
        """Run the timers due at ``now`` (at most ``limit`` of them); True if some due ones are left."""
        h = self._heap
        n = 0
        while h and h[0][0] <= now:
            if limit is not None and n >= limit:
                return True
            entry = heapq.heappop(h)
            entry[4] = None  # out of the heap: cancelling it now changes no count
            fn = entry[2]
            if fn is None:
                self._dead[0] -= 1
            else:
                n += 1
                fn(entry[3], now)
        return False

    def clear(self) -> None:
        for e in self._heap:
            e[4] = None
        self._heap.clear()
        self._dead[0] = 0

    def __len__(self) -> int:
        """Timers in the heap, cancelled ones not yet dropped included (a bound, for tests and diagnostics)."""
        return len(self._heap)
