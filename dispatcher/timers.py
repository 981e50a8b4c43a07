"""A heap of timers in the core's time (``now`` is always an argument; nothing here reads a clock)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

__all__ = ["Timer", "Timers"]

_COMPACT_EVERY = 4096

#: ``[when, order, fn, arg]``; a cancelled timer has ``fn`` None.
Timer = list[Any]


class Timers:
    __slots__ = ("_heap", "_n")

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._n = 0

    def schedule(self, when: float, fn: Callable[[Any, float], None], arg: Any) -> Timer:
        self._n += 1
        entry = [when, self._n, fn, arg]
        heapq.heappush(self._heap, entry)
        if not self._n % _COMPACT_EVERY and len(self._heap) > _COMPACT_EVERY:
            self._heap = [e for e in self._heap if e[2] is not None]  # cancelled timers go (bounded memory)
            heapq.heapify(self._heap)
        return entry

    @staticmethod
    def cancel(entry: Timer | None) -> None:
        if entry is not None:
            entry[2] = entry[3] = None  # the argument too: a pending request and its timer point at each other

    def compact(self) -> None:
        """Drop cancelled timers now (they otherwise stay until their time comes): after many connections
        closed, their watchdogs would keep small objects alive all over the allocator's arenas."""
        self._heap = [e for e in self._heap if e[2] is not None]
        heapq.heapify(self._heap)

    def next(self) -> float | None:
        h = self._heap
        while h and h[0][2] is None:
            heapq.heappop(h)
        return h[0][0] if h else None

    def fire(self, now: float, limit: int | None = None) -> bool:
        """Run the timers due at ``now`` (at most ``limit`` of them); True if some due ones are left."""
        h = self._heap
        n = 0
        while h and h[0][0] <= now:
            if limit is not None and n >= limit:
                return True
            entry = heapq.heappop(h)
            fn = entry[2]
            if fn is not None:
                n += 1
                fn(entry[3], now)
        return False

    def clear(self) -> None:
        self._heap.clear()
