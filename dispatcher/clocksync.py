"""The peer's clock relative to ours (issue 11: clock domains).

Peers on one host share ``CLOCK_MONOTONIC``: the handshake carries each side's clock identity (the
kernel's boot id and the clock's name, or an in-process clock's id) and, when they match, the offset is
exactly 0 with no error ("shared").  Otherwise ("ntp") each round trip (handshake, keepalive PING/PONG)
gives a sample: the peer read its clock at ``peer_ts``, taken to be the midpoint of our round trip; the
sample with the shortest round trip among the last 8 wins and its half round trip is the error bound.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

__all__ = ["ClockSync", "Domain"]

Domain = Literal["shared", "ntp"]


class ClockSync:
    __slots__ = ("domain", "error", "offset", "rtt", "samples")

    def __init__(self) -> None:
        self.domain: Domain = "ntp"
        self.offset = 0.0  # the peer's clock minus ours
        self.error = 0.0
        self.rtt: float | None = None  # round trip of the chosen sample
        self.samples: deque[tuple[float, float]] = deque(maxlen=8)  # (rtt, offset)

    def share(self) -> None:
        """Both peers read one clock: offset 0, exactly."""
        self.domain = "shared"
        self.offset = self.error = 0.0
        self.samples.clear()

    def sample(self, sent: float, peer_ts: float, now: float) -> None:
        rtt = max(0.0, now - sent)
        if self.domain == "shared":
            self.rtt = rtt if self.rtt is None else min(self.rtt, rtt)
            return
        self.samples.append((rtt, peer_ts - (sent + now) / 2))
        self.rtt, self.offset = min(self.samples)
        self.error = self.rtt / 2
