"""Sequence numbers: stamped per channel and peer on send, checked per channel and peer on receive."""

from __future__ import annotations

from typing import Final

__all__ = ["DUPLICATE", "IN_ORDER", "LATE", "STALE", "ReceiveWindow"]

IN_ORDER: Final = 0  # the next expected number, or a jump ahead (the skipped ones are a gap)
LATE: Final = 1  # below the highest seen but never seen: fills a gap (reordered across QoS tiers)
DUPLICATE: Final = 2  # seen before, inside the window
STALE: Final = 3  # older than the window: a regression


class ReceiveWindow:
    """Anti-replay window for one (sender, channel), as in DTLS/IPsec.

    The scheduler may reorder envelopes of one channel across QoS tiers (a CRITICAL override overtakes
    queued BACKGROUND traffic), so an envelope below the highest seen number is accepted once if it falls
    inside the window and was never seen.  ``gap`` after an ``IN_ORDER`` result says how many numbers the
    jump skipped; later ``LATE`` arrivals fill some of them.
    """

    __slots__ = ("gap", "highest", "missing", "window")

    def __init__(self, window: int = 1024) -> None:
        self.window = window
        self.highest = 0
        self.missing: set[int] = set()
        self.gap = 0

    def check(self, seq: int) -> int:
        h = self.highest
        if seq == h + 1:
            self.highest = seq
            self.gap = 0
            return IN_ORDER
        if seq > h:
            skipped = seq - h - 1
            self.missing.update(range(max(h + 1, seq - self.window), seq))
            self.highest = seq
            self.gap = skipped
            if len(self.missing) > 2 * self.window:
                floor = seq - self.window
                self.missing = {s for s in self.missing if s > floor}
            return IN_ORDER
        if seq in self.missing:
            self.missing.discard(seq)
            return LATE
        return DUPLICATE if seq > h - self.window else STALE
