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

import time
from time import time as _time
from typing import Any

from dispatcher.histogram import Histogram
from dispatcher.tally import Timeline

__all__ = ["Entry", "Recorder"]

SERIES_FIGURES = 2
FOLD_EVERY = 4096


class Entry:
    """The figures of one (kind, qos, name).  ``record(seconds, nbytes=0, now=None)`` is the hot path: the
    compiled ``Timeline.record`` itself (no Python frame per sample), which buckets the sample at once in a
    tally for the run's histogram and one for the current wall-clock second.  The tallies are taken into
    the histograms (``Recorder.fold_entry``) when a sample of another second comes, every ``FOLD_EVERY``
    samples and when a figure is read, so they never hold more than a few thousand samples."""

    __slots__ = ("_count", "_rec", "behind", "clock_skew", "failures", "hist", "key", "log", "lost", "record", "sent")

    def __init__(self, key: tuple[str, str, str], recorder: Recorder) -> None:
        self.key = key
        self._rec = recorder
        self.sent = 0  # sends issued (intents and requests): each ends as a sample, a failure or lost
        self._count = 0  # samples folded, failures, skewed (``count`` adds the pending samples)
        self.failures = 0
        self.lost = 0
        self.clock_skew = 0
        self.behind = 0
        self.hist = Histogram()
        self.log = Timeline(self.hist.tally(), Histogram(significant_figures=SERIES_FIGURES).tally(),
                            self._fold, FOLD_EVERY)
        self.record = self.log.record

    def _fold(self) -> None:
        self._rec.fold_entry(self)

    @property
    def count(self) -> int:
        """Samples recorded (folded or not), failures and skewed one-way samples."""
        return self._count + self.log.run.n

    @count.setter
    def count(self, value: int) -> None:
        self._count = value - self.log.run.n

    @property
    def bytes(self) -> int:
        return self.log.bytes

    @bytes.setter
    def bytes(self, value: int) -> None:
        self.log.bytes = value

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
        self.sent = self._count = self.failures = self.lost = self.clock_skew = self.behind = 0
        self.hist = Histogram()
        self.log.clear()


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
            if e.log.run.n:
                self.fold_entry(e)
        self._fold_failures()

    def _fold_failures(self) -> None:
        fails, self._fail_secs = self._fail_secs, []
        for sec, skey in fails:
            self._slot(sec, skey)[1] += 1

    def fold_entry(self, e: Entry) -> None:
        log = e.log
        n = log.run.n
        if n:
            e._count += n
            e.hist.record_tally(log.run)
        if log.second.n:
            slot = self._slot(log.sec, f"{e.key[0]}|{e.key[1]}")
            slot[0] += log.second.n
            slot[2].record_tally(log.second)
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
