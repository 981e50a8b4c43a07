"""Outbound queueing per peer.  (Issue 2: strict priority by tier, no budget; the scheduler comes next.)"""

from __future__ import annotations

from collections import deque

from .envelope import QoS

__all__ = ["Outbound"]


class Outbound:
    """Frames waiting for the wire, one FIFO per tier, drained most urgent first."""

    __slots__ = ("_queues", "pending")

    def __init__(self) -> None:
        self._queues: tuple[deque[bytes], ...] = tuple(deque() for _ in QoS)
        self.pending = 0

    def push(self, frame: bytes, qos: int) -> None:
        self._queues[qos].append(frame)
        self.pending += 1

    def pull(self, now: float) -> bytes:
        if not self.pending:
            return b""
        out: list[bytes] = []
        for q in self._queues:
            out.extend(q)
            q.clear()
        self.pending = 0
        return b"".join(out)

    def next_wakeup(self) -> float | None:
        return None
