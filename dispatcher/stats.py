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

from collections.abc import Callable, Iterable
from typing import Any

from .envelope import QoS
from .histogram import Histogram, merged

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

#: Counters kept per envelope name.
NAME_COUNTERS = (
    "sent",
    "received",
    "bytes_out",
    "bytes_in",
    "retries",
    "timeouts",
    "failures",
    "validation_errors",
    "handler_errors",
    "no_subscriber",
    "wrong_direction",
    "seq_regressions",
    "seq_gaps",
    "seq_late",
    "duplicates",
    "late_responses",
    "dropped",
    "coalesced",
    "qos_deviations",
)

#: Counters kept per dispatcher (connection-level events).
PEER_COUNTERS = (
    "connections",
    "disconnects",
    "resumes",
    "handshake_failures",
    "malformed_frames",
    "oversized_frames",
    "spoofed_player_id",
    "rate_limited",
    "frames_in",
    "bytes_in",
    "bytes_out",
    # the trust boundary (issue 12)
    "not_admitted",
    "qos_clamped",
    "answer_resends_dropped",
    "pings_dropped",
    "nacks_suppressed",
    "log_lines_suppressed",
    "critical_overruns",
    "handshake_timeouts",
    "idle_timeouts",
    "stalled",
    "replaced",
    "connections_refused",
    "clock_skew",
)

_TIERS = tuple(QoS)


class NameStats:
    """Counters of one envelope name; ``drops`` breaks ``dropped`` down by reason."""

    __slots__ = (*NAME_COUNTERS, "drops")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.retries = 0
        self.timeouts = 0
        self.failures = 0
        self.validation_errors = 0
        self.handler_errors = 0
        self.no_subscriber = 0
        self.wrong_direction = 0
        self.seq_regressions = 0
        self.seq_gaps = 0
        self.seq_late = 0
        self.duplicates = 0
        self.late_responses = 0
        self.dropped = 0
        self.coalesced = 0
        self.qos_deviations = 0
        self.drops: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        d: dict[str, Any] = {f: getattr(self, f) for f in NAME_COUNTERS}
        d["drops"] = dict(self.drops)
        return d

    def reset(self) -> None:
        for f in NAME_COUNTERS:
            setattr(self, f, 0)
        self.drops = {}

    def __bool__(self) -> bool:
        return any(getattr(self, f) for f in NAME_COUNTERS)


class TierStats:
    """Scheduling figures of one QoS tier, summed over the transport's connections."""

    __slots__ = ("bytes_out", "coalesced", "dropped", "drops", "longest_saturated_run", "max_queued_bytes",
                 "max_queued_msgs", "queued_bytes", "queued_msgs", "saturated_ticks", "sent", "sojourn", "ticks")

    def __init__(self) -> None:
        self.queued_msgs = 0
        self.queued_bytes = 0
        self.max_queued_msgs = 0
        self.max_queued_bytes = 0
        self.sent = 0
        self.bytes_out = 0
        self.dropped = 0
        self.drops: dict[str, int] = {}
        self.coalesced = 0
        self.ticks = 0
        self.saturated_ticks = 0
        self.longest_saturated_run = 0
        self.sojourn = Histogram()

    @property
    def saturation(self) -> float:
        """Fraction of ticks that ended with this tier's frames still waiting."""
        return self.saturated_ticks / self.ticks if self.ticks else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "queued_msgs": self.queued_msgs, "queued_bytes": self.queued_bytes,
            "max_queued_msgs": self.max_queued_msgs, "max_queued_bytes": self.max_queued_bytes,
            "sent": self.sent, "bytes_out": self.bytes_out, "dropped": self.dropped, "drops": dict(self.drops),
            "coalesced": self.coalesced, "ticks": self.ticks, "saturated_ticks": self.saturated_ticks,
            "saturation": round(self.saturation, 6), "longest_saturated_run": self.longest_saturated_run,
            "sojourn_us": self.sojourn.to_dict(),
        }


class Stats:
    """Aggregated diagnostics of one transport.  ``snapshot()`` is JSON-able; ``dump()`` is a table."""

    enabled = True

    def __init__(self) -> None:
        self.names: dict[str, NameStats] = {}
        self.tiers: tuple[TierStats, ...] = tuple(TierStats() for _ in _TIERS)
        self._reserve_sojourns()
        self.latency: dict[tuple[str, int], Histogram] = {}
        self.peer: dict[str, int] = dict.fromkeys(PEER_COUNTERS, 0)

    def _reserve_sojourns(self) -> None:
        """Every tier's sojourn histogram takes its memory now: a tier's first frame may wait in its queue
        minutes into a run, and a load generator holds four per player (issue 13: the Locust process grew)."""
        if self.enabled:
            for t in self.tiers:
                t.sojourn.reserve()

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
        """The latency histogram of ``name`` at tier ``qos`` (created empty on first use)."""
        h = self.latency.get((name, qos))
        if h is None:
            h = self.latency[(name, qos)] = Histogram()
        return h

    def bind_latency(self, names: Iterable[str]) -> list[list[Callable[[float], None]]]:
        """``[wire id][tier] -> record_seconds`` of each name's latency histograms, for the hot path."""
        return [[self.histogram(n, q).record_seconds for q in _TIERS] for n in names]

    def sent(self, nbytes: list[int], sojourns: list[list[float]]) -> None:
        tiers = self.tiers
        for i in range(4):
            soj = sojourns[i]
            if soj:
                t = tiers[i]
                t.bytes_out += nbytes[i]
                t.sent += len(soj)
                t.sojourn.record_many_seconds(soj)
            elif nbytes[i]:
                tiers[i].bytes_out += nbytes[i]

    def dropped(self, tier: int, name: str | None, reason: str) -> None:
        t = self.tiers[tier]
        t.dropped += 1
        t.drops[reason] = t.drops.get(reason, 0) + 1
        if name is not None:
            self.drop(name, reason)

    def coalesced(self, tier: int, name: str | None) -> None:
        self.tiers[tier].coalesced += 1
        if name is not None:
            self[name].coalesced += 1

    def depth(self, tier: int, dmsgs: int, dbytes: int) -> None:
        t = self.tiers[tier]
        t.queued_msgs += dmsgs
        t.queued_bytes += dbytes
        if t.queued_msgs > t.max_queued_msgs:
            t.max_queued_msgs = t.queued_msgs
        if t.queued_bytes > t.max_queued_bytes:
            t.max_queued_bytes = t.queued_bytes

    def saturation(self, tier: int, saturated: bool, run: int) -> None:
        t = self.tiers[tier]
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
        for h in self.latency.values():  # kept: the core holds their recorders
            h.reset()
        queued = [(t.queued_msgs, t.queued_bytes) for t in self.tiers]  # what is queued stays queued
        self.tiers = tuple(TierStats() for _ in _TIERS)
        self._reserve_sojourns()
        for t, (m, b) in zip(self.tiers, queued, strict=True):
            t.queued_msgs = t.max_queued_msgs = m
            t.queued_bytes = t.max_queued_bytes = b
        self.peer = dict.fromkeys(PEER_COUNTERS, 0)

    def snapshot(self) -> dict[str, Any]:
        names: dict[str, Any] = {}
        active = {n for (n, _), h in self.latency.items() if h.count}
        for n, s in sorted(self.names.items()):
            if not s and n not in active:
                continue
            names[n] = s.snapshot()
            names[n]["latency_us"] = {QoS(q).name: h.to_dict() for (hn, q), h in sorted(self.latency.items())
                                      if hn == n and h.count}
        return {
            "version": 1,
            "enabled": self.enabled,
            "names": names,
            "tiers": {tier.name: self.tiers[tier].snapshot() for tier in _TIERS},
            "peer": dict(self.peer),
        }

    def dump(self, file: Any = None) -> str:
        """A readable table: per name counters and latency percentiles, then per tier scheduling."""
        rows = []
        active = {n for (n, _), h in self.latency.items() if h.count}
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
            t = self.tiers[tier]
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

    def bind_latency(self, names: Iterable[str]) -> list[list[Callable[[float], None]]]:
        return [[_ignore] * len(_TIERS) for _ in names]

    def count(self, counter: str, n: int = 1) -> None:
        pass

    def drop(self, name: str, reason: str, n: int = 1) -> None:
        pass

    def sent(self, nbytes: list[int], sojourns: list[list[float]]) -> None:
        pass

    def dropped(self, tier: int, name: str | None, reason: str) -> None:
        pass

    def coalesced(self, tier: int, name: str | None) -> None:
        pass

    def depth(self, tier: int, dmsgs: int, dbytes: int) -> None:
        pass

    def saturation(self, tier: int, saturated: bool, run: int) -> None:
        pass


def _ignore(seconds: float) -> None:
    pass


def format_us(v: float) -> str:
    """Microseconds, readable to 4 significant digits: 850us, 12.34ms, 1.5s."""
    if v < 1000:
        return f"{v:.0f}us"
    if v < 1_000_000:
        return f"{v / 1000:.4g}ms"
    return f"{v / 1e6:.4g}s"


def text_table(header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        lines.append("  ".join(padded))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def merge_snapshots(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two ``Stats.snapshot()``s as one (players of a run, workers of a run): counters add, ``max_*`` and
    ``longest_*`` take the larger, histograms merge, ratios are recomputed."""
    out: dict[str, Any] = _merge(a, b)
    return out


def _merge(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        if "hdr" in a and "hdr" in b:  # a histogram (with its summary)
            return merged([Histogram.decode(a["hdr"]), Histogram.decode(b["hdr"])]).to_dict()
        out = {k: (_merge(a[k], b[k], k) if k in a and k in b else (a[k] if k in a else b[k])) for k in {*a, *b}}
        if "saturated_ticks" in out and "ticks" in out:
            out["saturation"] = round(out["saturated_ticks"] / out["ticks"], 6) if out["ticks"] else 0.0
        return dict(sorted(out.items()))
    if isinstance(a, bool) or isinstance(b, bool) or key in ("version",):
        return a
    if isinstance(a, int | float) and isinstance(b, int | float):
        return max(a, b) if key.startswith(("max_", "longest_")) else a + b
    return a
