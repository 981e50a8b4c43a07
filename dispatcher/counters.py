"""The counters ``Stats`` keeps: per envelope name (``NameStats``) and per QoS tier (``TierStats``)."""

from __future__ import annotations

from typing import Any

from .histogram import Histogram

__all__ = ["NAME_COUNTERS", "PEER_COUNTERS", "NameStats", "TierStats"]

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
