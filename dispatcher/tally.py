"""Latency counts as the hot path keeps them: ``Tally.add`` buckets one duration where it is measured.

A client's stats record one latency per event and per answered request.  Kept as floats in a list, each
sample cost a float object, a list slot and, every few thousand, a numpy fold (about 700 instructions an
event in all, and the cache lines of thousands of waiting floats).  A ``Tally`` computes the sample's
HdrHistogram bucket at once, in native arithmetic (compiled), and adds 1 to a byte per bucket: no object is
made, and the counts take a byte per bucket up to the largest value seen (7 kB for latencies up to 20
ms).  A byte that would reach 256 is carried to a short list instead.  ``Histogram.record_tally``
adds the bytes and carries to the histogram's counts, and the tally starts again: the core does it every few
thousand frames or every second, and readers before they read (``Stats.fold_latency``).

``librt.vecs.vec`` (mypyc's runtime library) is the byte array mypyc compiles to native indexing; it is an
ordinary sequence type when interpreted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from time import time

from librt.vecs import extend, vec
from mypy_extensions import i64, u8

__all__ = ["OneWayDue", "Tally", "Timeline"]

_NONE: i64 = 1 << 62  # ``lo`` when nothing is held


class Tally:
    """Bucket counts of durations for one histogram layout (``half_mag``, ``highest``, ``size``: its number of
    buckets; ``hdrlayout.Layout``).

    ``add(seconds)`` counts what ``Histogram.record_seconds(seconds)`` would: microseconds rounded half to
    even, negative and NaN values as 0, values above ``highest`` as ``highest`` and in ``overflow``."""

    def __init__(self, half_mag: int, highest: int, size: int) -> None:
        self.half_mag: i64 = half_mag
        self.highest: i64 = highest
        self.size: i64 = size
        self.top = float(highest)  # ``highest`` as a float: ``add`` compares the float value natively
        self.counts: vec[u8] = vec[u8]()  # per bucket, modulo 256
        self.carries: list[int] = []  # a bucket's index each time its count passed 255 (256 each)
        self.lo: i64 = _NONE  # the buckets counted since the last ``clear``: lo..hi
        self.hi: i64 = -1
        self.n: i64 = 0  # values counted since the last ``clear``
        self.overflow: i64 = 0

    def add(self, seconds: float) -> i64:
        """Count one duration in seconds; its bucket's index."""
        x = seconds * 1e6
        u: i64 = 0
        if x > 0.0:  # not negative, not NaN
            if x > self.top:
                self.overflow += 1
                u = self.highest
            else:
                u = i64(x)
                d = x - float(u)
                if d > 0.5 or (d == 0.5 and u & 1):  # rounded half to even, as numpy's rint
                    u += 1
                if u > self.highest:
                    self.overflow += 1
                    u = self.highest
        # HdrHistogram's index: the bucket is the bit length of u | mask, less the sub-bucket bits.
        h = self.half_mag
        b: i64 = 0
        t = (u | ((1 << (h + 1)) - 1)) >> (h + 1)
        while t:
            t >>= 1
            b += 1
        i = ((b + 1) << h) + (u >> b) - (1 << h)
        c = self.counts
        if i >= len(c):
            c = self._grow(i)
        k = c[i]
        if k == 255:
            self.carries.append(i)
            c[i] = 0
        else:
            c[i] = k + 1
        if i < self.lo:
            self.lo = i
        if i > self.hi:
            self.hi = i
        self.n += 1
        return i

    def add_run(self, seconds: float, k: i64) -> None:
        """Count ``k`` durations of ``seconds`` each (a run of frames queued at one time and sent together)."""
        if k <= 0:
            return
        over = self.overflow
        i = self.add(seconds)
        if k > 1:
            if self.overflow != over:
                self.overflow += k - 1
            c = self.counts
            total: i64 = i64(c[i]) + k - 1
            while total > 255:
                self.carries.append(i)
                total -= 256
            c[i] = u8(total)
            self.n += k - 1

    def _grow(self, i: i64) -> vec[u8]:
        """Counts that hold index ``i``: whole ranges of the layout at a time, with one spare."""
        size = min(((i >> self.half_mag) + 2) << self.half_mag, self.size)
        self.counts = extend(self.counts, bytes(size - len(self.counts)))
        return self.counts

    def clear(self) -> None:
        """Forget what is counted (``Histogram.record_tally`` has taken it), keeping the memory."""
        c = self.counts
        for i in range(self.lo, self.hi + 1):
            c[i] = 0
        self.carries = []
        self.lo = _NONE
        self.hi = -1
        self.n = 0
        self.overflow = 0


class Timeline:
    """Durations as a load recorder keeps them: counted for the whole run (``run``) and for the wall-clock
    second each one arrived in (``second``, counting second ``sec``; -1 before the first).

    ``record(seconds, nbytes, now)`` is one compiled call: two ``Tally.add`` and a comparison of ``now``
    (default ``time.time()``) with the current second.  ``fold()`` is called back, with the tallies still
    holding their samples, before a sample of another second is counted and when ``fold_every`` samples
    wait in ``run``: the caller takes both tallies into its histograms there (``Histogram.record_tally``)."""

    def __init__(self, run: Tally, second: Tally, fold: Callable[[], object], fold_every: int) -> None:
        self.run = run
        self.second = second
        self.fold = fold
        self.fold_every: i64 = fold_every
        self.sec: i64 = -1
        self.lo = 0.0  # samples arriving at lo <= now < next belong to ``sec``
        self.next = 0.0
        self.bytes: i64 = 0

    def record(self, seconds: float, nbytes: int = 0, now: float | None = None) -> None:
        """One duration in seconds (and ``nbytes`` of traffic), arrived at ``now`` (wall clock, seconds)."""
        if nbytes:
            self.bytes += nbytes
        t = time() if now is None else now
        if not self.lo <= t < self.next:
            self._cut(t)
        self.run.add(seconds)
        self.second.add(seconds)
        if self.run.n >= self.fold_every:
            self.fold()

    def _cut(self, t: float) -> None:
        if self.second.n:
            self.fold()
        sec: i64 = math.floor(t)
        self.sec = sec
        self.lo = float(sec)
        self.next = self.lo + 1.0

    def clear(self) -> None:
        """Forget every pending sample, the current second and the bytes."""
        self.run.clear()
        self.second.clear()
        self.sec = -1
        self.lo = self.next = 0.0
        self.bytes = 0


class OneWayDue:
    """The events of one read whose one-way latency is still to count (``CoreBase._count_one_way``): each
    one's send time and its tally's place in ``[wire id][tier]``, as native floats and ints in arrays kept
    from read to read.  A list of the events' records kept their floats alive until the read's end, so the
    interpreter's free list of floats ran dry: a malloc and a free for about every other event (callgrind, the
    bench's events loop, stats on against off: +0.44 float allocations an event), and the list's storage was
    freed and taken again at every read."""

    def __init__(self) -> None:
        self.sent: vec[float] = extend(vec[float](), [0.0] * 64)
        self.where: vec[i64] = extend(vec[i64](), [0] * 64)  # wire id * 4 + tier
        self.n: i64 = 0

    def push(self, sent: float, wire_id: i64, tier: i64) -> None:
        n = self.n
        if n == len(self.sent):  # as many as the largest read held: the arrays double
            self.sent = extend(self.sent, [0.0] * n)
            self.where = extend(self.where, [0] * n)
        self.sent[n] = sent
        self.where[n] = wire_id * 4 + tier
        self.n = n + 1

    def count(self, now: float, lat: list[list[Tally]]) -> i64:
        """Count each event's latency, ``now`` (on the sender's clock) less its send time, in its tally, and
        forget them; how many were negative (the clocks disagree by more than the latency: recorded as 0)."""
        sent, where = self.sent, self.where
        skewed: i64 = 0
        for i in range(self.n):
            one_way = now - sent[i]
            if one_way < 0.0:
                skewed += 1
                one_way = 0.0
            w = where[i]
            lat[w >> 2][w & 3].add(one_way)
        self.n = 0
        return skewed
