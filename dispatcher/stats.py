"""Diagnostics: counters per envelope name and per connection (seed: ``transport.stats()``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["NAME_COUNTERS", "PEER_COUNTERS", "NameStats", "NullStats", "Stats"]

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
    "handshake_failures",
    "malformed_frames",
    "oversized_frames",
    "spoofed_player_id",
    "frames_in",
    "frames_out",
    "bytes_in",
    "bytes_out",
)


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


class Stats:
    """Aggregated counters of one transport.  ``snapshot()`` is JSON-able; ``dump()`` is a table."""

    enabled = True

    def __init__(self) -> None:
        self.names: dict[str, NameStats] = {}
        self.peer: dict[str, int] = dict.fromkeys(PEER_COUNTERS, 0)

    def __getitem__(self, name: str) -> NameStats:
        s = self.names.get(name)
        if s is None:
            s = self.names[name] = NameStats()
        return s

    def drop(self, name: str, reason: str, n: int = 1) -> None:
        s = self[name]
        s.dropped += n
        s.drops[reason] = s.drops.get(reason, 0) + n

    def count(self, counter: str, n: int = 1) -> None:
        self.peer[counter] = self.peer.get(counter, 0) + n

    def reset(self) -> None:
        self.names.clear()
        self.peer = dict.fromkeys(PEER_COUNTERS, 0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "names": {n: s.snapshot() for n, s in sorted(self.names.items())},
            "peer": dict(self.peer),
        }

    def dump(self, file: Any = None) -> str:
        """The counters as a readable table (also printed to ``file`` when given)."""
        cols = ("sent", "received", "bytes_out", "bytes_in", "retries", "timeouts", "failures", "dropped")
        rows = [(n, *(getattr(s, c) for c in cols)) for n, s in sorted(self.names.items())]
        text = _table(("name", *cols), rows)
        peer = ", ".join(f"{k}={v}" for k, v in self.peer.items() if v)
        text += f"\npeer: {peer or 'no events'}\n"
        if file is not None:
            file.write(text)
        return text


class NullStats(Stats):
    """Recording off (``stats=False``): the same interface, nothing kept."""

    enabled = False

    def __getitem__(self, name: str) -> NameStats:
        return _SINK

    def drop(self, name: str, reason: str, n: int = 1) -> None:
        pass

    def count(self, counter: str, n: int = 1) -> None:
        pass


_SINK = NameStats()


def _table(header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        lines.append("  ".join(padded))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
