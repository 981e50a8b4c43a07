"""Diagnostics (roadmap: "Diagnostics Layer"): counters per envelope name and per QoS tier, latency
histograms, queue depth, sojourn and saturation.  ``transport.stats()`` returns the transport's ``Stats``.

* Per name: sent, received, bytes, retries, timeouts, failures, validation errors, sequence regressions
  and gaps, drops by reason, coalesced, qos deviations; latency histograms per tier (requests: round
  trip; events: one-way from ``ts_sent`` on the server's clock).
* Per tier: frames and bytes queued now and at most, sojourn (enqueue -> on the wire) histogram, sent,
  drops by reason, coalesced, saturated ticks (a tick that ended with the tier's frames still waiting)
  and the longest run of them (as Unreal's ``FNetConnectionSaturationAnalytics`` counts).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from .counters import NAME_COUNTERS, PEER_COUNTERS, NameStats, TierStats
from .envelope import QoS
from .histogram import Histogram, merged
from .qosconfig import Reporter
from .statstext import format_us, merge_snapshots, text_table
from .tally import Tally

__all__ = [
    "NAME_COUNTERS",
    "PEER_COUNTERS",
    "NameStats",
    "NullStats",
    "Stats",
    "TierStats",
    "format_us",
    "merge_snapshots",
    "text_table",
]


def _no_mypyc_attr(*_args: Any, **_kwargs: Any) -> Any:
    return lambda cls: cls


try:
    from mypy_extensions import mypyc_attr
except ImportError:  # the decorator only means something to mypyc, and mypy_extensions comes with mypy
    mypyc_attr = _no_mypyc_attr

_TIERS = tuple(QoS)
#: A tier's sojourns are counted at once in a ``Tally`` (counts by bucket: its memory does not grow with them),
#: folded into the tier's histogram once this many frames are counted, or when the stats are read.  They
#: waited in lists before, folded by numpy every 256 entries: about 900 instructions per request of a
#: Locust user (callgrind), and at 4096 entries megabytes of a Locust process's growth (issue 13).
_FOLD_SOJOURNS = 4096


@mypyc_attr(native_class=False)  # weakly referenced: an ordinary Python class, also when compiled
class _Watched:
    """A weakly referenced handle on a reporter that the reporter keeps (a compiled ``Scheduler`` cannot be
    weakly referenced itself): it goes when the reporter goes."""

    __slots__ = ("__weakref__", "source")

    def __init__(self, source: Reporter) -> None:
        self.source = source


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled (the core calls it per frame); users subclass it
class Stats:
    """Aggregated diagnostics of one transport.  ``snapshot()`` is JSON-able; ``dump()`` is a table."""

    enabled = True

    def __init__(self) -> None:
        self.names: dict[str, NameStats] = {}
        self._tiers: tuple[TierStats, ...] = tuple(TierStats() for _ in _TIERS)
        # Per tier, the tally the schedulers count sojourns in until they join the tier's histogram.
        self._soj: list[Tally] = self._sojourn_tallies()
        self._sources: weakref.WeakSet[_Watched] = weakref.WeakSet()
        self._latency: dict[tuple[str, int], Histogram] = {}
        # The hot path's latency recorders (``Tally``: counts by bucket), folded by thousands.
        self._lat_pending: list[tuple[Histogram, Tally]] = []
        self.peer: dict[str, int] = dict.fromkeys(PEER_COUNTERS, 0)

    @property
    def latency(self) -> dict[tuple[str, int], Histogram]:
        """Latency histograms by (name, tier), up to date."""
        self.flush()
        return self._latency

    @property
    def tiers(self) -> tuple[TierStats, ...]:
        """Per tier scheduling figures, up to date (the schedulers report what they hold first)."""
        self.flush()
        return self._tiers

    def flush(self) -> None:
        """Have every scheduler report the figures it still holds; fold held sojourns into their histograms."""
        for w in list(self._sources):
            w.source.report()
        for tier in range(4):
            self._fold_sojourns(tier)
        self.fold_latency()

    def fold_latency(self) -> None:
        """Latency samples recorded through ``bind_latency`` into their histograms (the core calls this every
        few thousand frames, readers through ``flush``)."""
        for h, t in self._lat_pending:
            if t.n:
                h.record_tally(t)

    def watch(self, source: Reporter) -> object:
        w = _Watched(source)
        self._sources.add(w)
        return w

    def _sojourn_tallies(self) -> list[Tally]:
        """The tallies the tiers' sojourns are counted in; every tier's sojourn histogram takes its memory now:
        a tier's first frame may wait in its queue minutes into a run, and a load generator holds four per
        player (issue 13: the Locust process grew)."""
        if self.enabled:
            for t in self._tiers:
                t.sojourn.reserve()
        return [t.sojourn.tally() for t in self._tiers]

    def __getitem__(self, name: str) -> NameStats:
        s = self.names.get(name)
        if s is None:
            s = self.names[name] = NameStats()
        return s

    def bind(self, names: Iterable[str]) -> list[NameStats]:
        """The counters of ``names``, in order, created now: the core indexes them by wire id on its hot
        path instead of looking names up.  They stay valid across ``reset()``."""
        return [self[n] for n in names]

    # -- recording (the core and the scheduler call these) ----------------------------------------

    def count(self, counter: str, n: int = 1) -> None:
        self.peer[counter] = self.peer.get(counter, 0) + n

    def drop(self, name: str, reason: str, n: int = 1) -> None:
        s = self[name]
        s.dropped += n
        s.drops[reason] = s.drops.get(reason, 0) + n

    def histogram(self, name: str, qos: int) -> Histogram:
        """The latency histogram of ``name`` at tier ``qos`` (created empty on first use), up to date."""
        self.fold_latency()
        return self._histogram(name, qos)

    def _histogram(self, name: str, qos: int) -> Histogram:
        h = self._latency.get((name, qos))
        if h is None:
            h = self._latency[(name, qos)] = Histogram()
        return h

    def bind_latency(self, names: Iterable[str]) -> list[list[Tally]]:
        """``[wire id][tier] -> Tally``: for the hot path, a recorder per name and tier that counts each latency
        in seconds (``add``) by bucket, folded into its histogram by ``fold_latency`` (the caller's duty, every
        few thousand frames or every second) and whenever the stats are read.  Empty when disabled: nothing is
        recorded."""
        out = []
        for n in names:
            row: list[Tally] = []
            for q in _TIERS:
                h = self._histogram(n, q)
                t = h.tally()
                self._lat_pending.append((h, t))
                row.append(t)
            out.append(row)
        return out

    def sent(self, nbytes: list[int], frames: list[int]) -> None:
        tiers, soj = self._tiers, self._soj
        for i in range(4):
            if frames[i] or nbytes[i]:
                t = tiers[i]
                t.bytes_out += nbytes[i]
                t.sent += frames[i]
                if soj[i].n >= _FOLD_SOJOURNS:
                    self._fold_sojourns(i)

    def sojourn_tallies(self) -> list[Tally]:
        """The tallies the schedulers count each tier's sojourns in (``Sink.sojourn_tallies``): the same list
        for this object's life, whose items ``reset`` replaces."""
        return self._soj

    def _fold_sojourns(self, tier: int) -> None:
        """The sojourns counted for ``tier`` into its histogram."""
        self._tiers[tier].sojourn.record_tally(self._soj[tier])

    def dropped(self, tier: int, name: str | None, reason: str) -> None:
        t = self._tiers[tier]
        t.dropped += 1
        t.drops[reason] = t.drops.get(reason, 0) + 1
        if name is not None:
            self.drop(name, reason)

    def coalesced(self, tier: int, name: str | None) -> None:
        self._tiers[tier].coalesced += 1
        if name is not None:
            self[name].coalesced += 1

    def depth(self, tier: int, dmsgs: int, dbytes: int) -> None:
        t = self._tiers[tier]
        t.queued_msgs += dmsgs
        t.queued_bytes += dbytes
        if t.queued_msgs > t.max_queued_msgs:
            t.max_queued_msgs = t.queued_msgs
        if t.queued_bytes > t.max_queued_bytes:
            t.max_queued_bytes = t.queued_bytes

    def saturation(self, tier: int, saturated: bool, run: int) -> None:
        t = self._tiers[tier]
        t.ticks += 1
        if saturated:
            t.saturated_ticks += 1
            if run > t.longest_saturated_run:
                t.longest_saturated_run = run

    # -- reading -----------------------------------------------------------------------------------

    def latency_of(self, name: str | None = None, qos: int | None = None) -> Histogram:
        """Latency of one name and/or tier (None: all), merged."""
        return merged(h for (n, q), h in self.latency.items()
                      if (name is None or n == name) and (qos is None or q == qos))

    def reset(self) -> None:
        for s in self.names.values():
            s.reset()
        for h in self.latency.values():  # kept: the core holds their recorders (``latency`` folds them first)
            h.reset()
        queued = [(t.queued_msgs, t.queued_bytes) for t in self.tiers]  # what is queued stays queued
        self._tiers = tuple(TierStats() for _ in _TIERS)
        self._soj[:] = self._sojourn_tallies()  # in place: the schedulers hold this list
        for t, (m, b) in zip(self._tiers, queued, strict=True):
            t.queued_msgs = t.max_queued_msgs = m
            t.queued_bytes = t.max_queued_bytes = b
        self.peer = dict.fromkeys(PEER_COUNTERS, 0)

    def snapshot(self) -> dict[str, Any]:
        self.flush()
        names: dict[str, Any] = {}
        active = {n for (n, _), h in self._latency.items() if h.count}
        for n, s in sorted(self.names.items()):
            if not s and n not in active:
                continue
            names[n] = s.snapshot()
            names[n]["latency_us"] = {QoS(q).name: h.to_dict() for (hn, q), h in sorted(self._latency.items())
                                      if hn == n and h.count}
        return {
            "version": 1,
            "enabled": self.enabled,
            "names": names,
            "tiers": {tier.name: self._tiers[tier].snapshot() for tier in _TIERS},
            "peer": dict(self.peer),
        }

    def dump(self, file: Any = None) -> str:
        """A readable table: per name counters and latency percentiles, then per tier scheduling."""
        self.flush()
        rows = []
        active = {n for (n, _), h in self._latency.items() if h.count}
        for n, s in sorted(self.names.items()):
            if not s and n not in active:
                continue
            h = self.latency_of(n)
            lat = [format_us(v) for v in h.percentiles([50, 99, 99.9])] + [format_us(h.max)] if h.count else ["-"] * 4
            rows.append((n, s.sent, s.received, s.retries, s.timeouts, s.failures, s.dropped, h.count, *lat))
        text = text_table(("name", "sent", "recv", "retries", "timeouts", "failures", "dropped", "samples",
                       "p50", "p99", "p99.9", "max"), rows)
        trows = []
        for tier in _TIERS:
            t = self._tiers[tier]
            soj = ([format_us(v) for v in t.sojourn.percentiles([50, 99])] + [format_us(t.sojourn.max)]
                   if t.sent else ["-"] * 3)
            trows.append((tier.name, t.sent, t.bytes_out, t.queued_msgs, t.max_queued_msgs, t.dropped, t.coalesced,
                          f"{100 * t.saturation:.1f}%", t.longest_saturated_run, *soj))
        text += "\n\n" + text_table(("tier", "sent", "bytes", "queued", "max queued", "dropped", "coalesced",
                                 "saturated", "longest run", "sojourn p50", "p99", "max"), trows)
        peer = ", ".join(f"{k}={v}" for k, v in self.peer.items() if v)
        text += f"\n\npeer: {peer or 'no events'}\n"
        if file is not None:
            file.write(text)
        return text


class NullStats(Stats):
    """Recording off (``stats=False``): the same interface, nothing kept."""

    enabled = False

    def __getitem__(self, name: str) -> NameStats:
        return NameStats()

    def bind(self, names: Iterable[str]) -> list[NameStats]:
        return [NameStats() for _ in names]

    def bind_latency(self, names: Iterable[str]) -> list[list[Tally]]:
        return []

    def count(self, counter: str, n: int = 1) -> None:
        pass

    def watch(self, source: Reporter) -> object:
        return None

    def fold_latency(self) -> None:
        pass

    def drop(self, name: str, reason: str, n: int = 1) -> None:
        pass

    def sent(self, nbytes: list[int], frames: list[int]) -> None:
        pass

    def dropped(self, tier: int, name: str | None, reason: str) -> None:
        pass

    def coalesced(self, tier: int, name: str | None) -> None:
        pass

    def depth(self, tier: int, dmsgs: int, dbytes: int) -> None:
        pass

    def saturation(self, tier: int, saturated: bool, run: int) -> None:
        pass

