"""The harness's measurements: histograms, never raw samples, so memory stays flat however long the run.

Per ``(kind, qos, name)`` — kind is ``request``, ``intent`` or ``event`` — sends, counts, failures, work
``lost`` (never acknowledged or answered by the end of the run; also failures), one-way samples that came
out negative (``clock_skew``: counted, never clamped into the histogram), bytes, sends behind schedule and
an HdrHistogram-compatible latency histogram in microseconds (3 significant figures); how late every
scheduled send started (one histogram per recorder, the scenario's ``lateness``);
per second and ``(kind, qos)`` a coarser histogram (2 figures) for latency over time.  Workers ship deltas
(``take()``) to the master, which ``merge()``s them: histograms add, so merged percentiles are exact to the
histograms' precision.
"""

from __future__ import annotations

import math
import time
from time import time as _time
from typing import Any

from dispatcher.histogram import Histogram, micros

__all__ = ["Entry", "Recorder"]

SERIES_FIGURES = 2
FOLD_EVERY = 4096


class Entry:
    """The figures of one (kind, qos, name).  ``record`` is the hot path: one list append, one clock read
    and one comparison per sample.  Samples are folded into the histograms with numpy (one conversion, one
    vector of microseconds for both the run's histogram and the per-second series) every ``FOLD_EVERY``
    samples or when a figure is read, so pending samples never pile up.  Which second a sample belongs to
    is kept as cuts (the index where each new second starts), not per sample."""

    __slots__ = ("_count", "_cuts", "_lat", "_lo", "_next", "_rec", "behind", "bytes", "clock_skew", "failures",
                 "hist", "key", "lost", "sent")

    def __init__(self, key: tuple[str, str, str], recorder: Recorder) -> None:
        self.key = key
        self._rec = recorder
        self.sent = 0  # sends issued (intents and requests): each ends as a sample, a failure or lost
        self._count = 0  # samples folded, failures, skewed (``count`` adds the pending samples)
        self.failures = 0
        self.lost = 0
        self.clock_skew = 0
        self.bytes = 0
        self.behind = 0
        self.hist = Histogram()
        self._lat: list[float] = []  # seconds, not yet folded
        self._cuts: list[tuple[int, int]] = []  # (index in _lat, wall-clock second) where each second starts
        self._lo = self._next = 0.0  # the current second: samples at lo <= t < next need no cut

    @property
    def count(self) -> int:
        """Samples recorded (folded or not), failures and skewed one-way samples."""
        return self._count + len(self._lat)

    @count.setter
    def count(self, value: int) -> None:
        self._count = value - len(self._lat)

    def record(self, seconds: float, nbytes: int = 0, now: float | None = None) -> None:
        lat = self._lat
        lat.append(seconds)
        if nbytes:
            self.bytes += nbytes
        t = _time() if now is None else now
        if not self._lo <= t < self._next or len(lat) >= FOLD_EVERY:
            self._cut(t)

    def _cut(self, t: float) -> None:
        """A sample outside the current second (or a full list): note where the new second starts; fold."""
        lat = self._lat
        if not self._lo <= t < self._next:
            sec = math.floor(t)
            self._lo, self._next = float(sec), sec + 1.0
            self._cuts.append((len(lat) - 1, sec))
        if len(lat) >= FOLD_EVERY:
            self._rec.fold_entry(self)

    def fail(self) -> None:
        self._count += 1
        self.failures += 1

    def skewed(self) -> None:
        """A one-way sample that came out negative (the clocks' offset is off by more than the latency): it
        arrived, so it counts, but it has no latency to record."""
        self._count += 1
        self.clock_skew += 1

    def reset(self) -> None:
        """Zero it in place: users keep references to their entries."""
        self.sent = self._count = self.failures = self.lost = self.clock_skew = self.bytes = self.behind = 0
        self.hist = Histogram()
        self._lat, self._cuts = [], []
        self._lo = self._next = 0.0


class Recorder:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str], Entry] = {}
        # second -> "kind|qos" -> [count, failures, Histogram, or its encoding once the second is past]
        self.series: dict[int, dict[str, list[Any]]] = {}
        self._fail_secs: list[tuple[int, str]] = []
        self._compacted = 0
        self.lateness = Histogram()  # how late each scheduled send started, microseconds
        self.scheduled = 0  # scheduled sends

    def reset(self) -> None:
        """Start over (a new swarm, or Locust's stats were reset); users keep their entries."""
        self.fold()
        for e in self.entries.values():
            e.reset()
        self.series = {}
        self.lateness = Histogram()
        self.scheduled = 0

    def entry(self, kind: str, qos: str, name: str) -> Entry:
        key = (kind, qos, name)
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = Entry(key, self)
        return e

    def fail(self, e: Entry, now: float | None = None, *, lost: bool = False) -> None:
        e.fail()
        if lost:
            e.lost += 1
        self._fail_secs.append((int(time.time() if now is None else now), f"{e.key[0]}|{e.key[1]}"))
        if len(self._fail_secs) >= FOLD_EVERY:  # bounded: without this they piled up until the run's end
            self._fold_failures()

    def late(self, seconds: float) -> None:
        """A scheduled send started ``seconds`` after its intended time (0 or more)."""
        self.scheduled += 1
        self.lateness.record_seconds(max(0.0, seconds))

    def _slot(self, sec: int, series_key: str) -> list[Any]:
        slot = self.series.setdefault(sec, {}).get(series_key)
        if slot is None:
            slot = self.series[sec][series_key] = [0, 0, Histogram(significant_figures=SERIES_FIGURES)]
        elif isinstance(slot[2], str):  # a compacted second that got a late sample
            slot[2] = Histogram.decode(slot[2])
        return slot

    def _compact(self, before: int) -> None:
        """Seconds before ``before`` keep their histogram encoded (~200 bytes instead of ~24 kB of counts), so
        the series grows by a few kB a second however long the run."""
        for sec, slots in self.series.items():
            if sec < before:
                for slot in slots.values():
                    if not isinstance(slot[2], str):
                        slot[2] = slot[2].encode()

    def fold(self) -> None:
        """Move every pending sample into the histograms and the per-second series."""
        for e in self.entries.values():
            if e._lat:
                self.fold_entry(e)
        self._fold_failures()

    def _fold_failures(self) -> None:
        fails, self._fail_secs = self._fail_secs, []
        for sec, skey in fails:
            self._slot(sec, skey)[1] += 1

    def fold_entry(self, e: Entry) -> None:
        lat, cuts = e._lat, e._cuts
        if not lat:
            return
        n = len(lat)
        e._count += n
        e._lat = []
        # The current second goes on in the next list: it starts with a cut at 0 (none if no second yet).
        e._cuts = [(0, int(e._lo))] if e._next else []
        us = micros(lat)  # one conversion for the run's histogram and the seconds
        e.hist.record_many(us)
        skey = f"{e.key[0]}|{e.key[1]}"
        ends = [i for i, _ in cuts[1:]] + [n]
        for (start, sec), end in zip(cuts, ends, strict=True):
            if end > start:
                slot = self._slot(sec, skey)
                slot[0] += end - start
                slot[2].record_many(us[start:end])
        now = int(_time())
        if now != self._compacted:
            self._compacted = now
            self._compact(now - 2)

    # -- shipping and merging (workers -> master) ----------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything recorded, JSON-able and mergeable."""
        self.fold()
        return {
            "entries": [
                {"kind": k, "qos": q, "name": n, "sent": e.sent, "count": e.count, "failures": e.failures,
                 "lost": e.lost, "clock_skew": e.clock_skew, "bytes": e.bytes, "behind": e.behind,
                 "hdr": e.hist.encode()}
                for (k, q, n), e in sorted(self.entries.items()) if e.count or e.behind or e.sent
            ],
            "scheduled": self.scheduled,
            "lateness": self.lateness.encode(),
            "series": {str(sec): {sk: [c, f, h if isinstance(h, str) else h.encode()]
                                  for sk, (c, f, h) in slots.items()}
                       for sec, slots in sorted(self.series.items())},
        }

    def take(self) -> dict[str, Any]:
        """A snapshot, then start over (entries are zeroed in place): what a worker ships in each report."""
        snap = self.snapshot()
        self.reset()
        return snap

    def merge(self, snap: dict[str, Any]) -> None:
        for row in snap["entries"]:
            e = self.entry(row["kind"], row["qos"], row["name"])
            e.sent += row.get("sent", 0)
            e.count += row["count"]
            e.failures += row["failures"]
            e.lost += row.get("lost", 0)
            e.clock_skew += row.get("clock_skew", 0)
            e.bytes += row["bytes"]
            e.behind += row["behind"]
            e.hist.merge(Histogram.decode(row["hdr"]))
        self.scheduled += snap.get("scheduled", 0)
        if snap.get("lateness"):
            self.lateness.merge(Histogram.decode(snap["lateness"]))
        for sec, slots in snap["series"].items():
            for sk, (c, f, h) in slots.items():
                slot = self._slot(int(sec), sk)
                slot[0] += c
                slot[1] += f
                slot[2].merge(Histogram.decode(h))
