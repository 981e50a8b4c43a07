"""A heap of timers in the core's time (``now`` is always an argument; nothing here reads a clock)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = ["Timer", "Timers"]

#: Cancelled timers are dropped from the heap once there are more than this many of them and they are
#: more than half of it: a timer cancelled long before its time (a request's timeout, answered in
#: microseconds) otherwise stays until its time comes, and a client sending hundreds of requests a second
#: with a 10 s timeout kept a heap of thousands of dead entries that every push and pop walked (issue 13).
_COMPACT_AT: Final = 64


class Timer:
    """One timer: due at ``when`` (ties in ``order`` of scheduling); ``fn`` None once cancelled; ``dead`` is
    its heap's count of cancelled entries (a one-item list shared by its live entries), None once the entry
    left the heap.  Compared natively (``_before``, compiled): ``heapq`` over lists compared them item by item
    through Python's rich comparison, and a request's timeout (scheduled, then cancelled by the answer) cost
    about 2,000 instructions more."""

    __slots__ = ("arg", "dead", "fn", "order", "when")

    def __init__(self, when: float, order: int, fn: Callable[[Any, float], None], arg: Any, dead: list[int]) -> None:
        self.when = when
        self.order = order
        self.fn: Callable[[Any, float], None] | None = fn
        self.arg = arg
        self.dead: list[int] | None = dead


def _before(a: Timer, b: Timer) -> bool:
    return a.when < b.when or (a.when == b.when and a.order < b.order)


def _push(h: list[Timer], t: Timer) -> None:
    h.append(t)
    i = len(h) - 1
    while i > 0:
        up = (i - 1) >> 1
        parent = h[up]
        if not _before(t, parent):
            break
        h[i] = parent
        i = up
    h[i] = t


def _pop(h: list[Timer]) -> Timer:
    last = h.pop()
    if not h:
        return last
    top = h[0]
    n = len(h)
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _before(h[c + 1], h[c]):
            c += 1
        child = h[c]
        if not _before(child, last):
            break
        h[i] = child
        i = c
    h[i] = last
    return top


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
        entry = Timer(when, self._n, fn, arg, dead)
        _push(self._heap, entry)
        return entry

    @staticmethod
    def cancel(entry: Timer | None) -> None:
        if entry is not None and entry.fn is not None:
            entry.fn = entry.arg = None  # the argument too: a pending request and its timer point at each other
            dead = entry.dead
            if dead is not None:
                dead[0] += 1

    def compact(self) -> None:
        """Drop cancelled timers now (they otherwise stay until there are many of them, or their time comes):
        after many connections closed, their watchdogs would keep small objects alive all over the allocator's
        arenas."""
        h = self._heap
        live = sorted((e for e in h if e.fn is not None), key=_key)  # a sorted list is a heap
        for e in h:
            if e.fn is None:
                e.dead = None
        h[:] = live  # in place: a ``fire`` under way holds this list
        self._dead[0] = 0

    def next(self) -> float | None:
        h = self._heap
        while h and h[0].fn is None:
            _pop(h).dead = None
            self._dead[0] -= 1
        return h[0].when if h else None

    def fire(self, now: float, limit: int | None = None) -> bool:
        """Run the timers due at ``now`` (at most ``limit`` of them); True if some due ones are left."""
        h = self._heap
        n = 0
        while h and h[0].when <= now:
            if limit is not None and n >= limit:
                return True
            entry = _pop(h)
            entry.dead = None  # out of the heap: cancelling it now changes no count
            fn = entry.fn
            if fn is None:
                self._dead[0] -= 1
            else:
                n += 1
                fn(entry.arg, now)
        return False

    def clear(self) -> None:
        for e in self._heap:
            e.dead = None
        self._heap.clear()
        self._dead[0] = 0

    def __len__(self) -> int:
        """Timers in the heap, cancelled ones not yet dropped included (a bound, for tests and diagnostics)."""
        return len(self._heap)


def _key(e: Timer) -> tuple[float, int]:
    return e.when, e.order
