"""The simulated runtime: virtual time and a link model, seeded and deterministic.

``SimHub`` is a ``LoopbackHub`` whose bytes travel a modelled link, one per direction (``Link``):
bandwidth (bytes are serialized onto the link in order), latency plus uniform jitter (delivery stays in
order, as on one stream), and losses of unreliable envelope frames (never of reliable ones, requests,
chunks or control frames: those ride the stream a real transport keeps).  ``disconnect_at(t, client)`` or
``disconnect_every=(lo, hi)`` break a connection at chosen or random moments; the client reconnects after
``reconnect_delay`` and resumes its session.  Minutes of play run in milliseconds of CPU.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..registry import ChannelRegistry
from ..transport import Transport
from ..wire import Bits
from .clock import VirtualClock
from .loopback import DOWN, UP, LoopbackHub

__all__ = ["Link", "SimHub"]


@dataclass(frozen=True, slots=True)
class Link:
    """One direction of a simulated connection."""

    latency: float = 0.0  # seconds
    jitter: float = 0.0  # seconds, uniform in [-jitter, +jitter], never below zero delay
    bandwidth: float | None = None  # bytes per second; None: unlimited
    drop: float = 0.0  # probability that an unreliable envelope frame is lost

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0:
            raise ValueError(f"latency and jitter are >= 0 seconds, got {self.latency}, {self.jitter}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s or None, got {self.bandwidth}")
        if not 0 <= self.drop <= 1:
            raise ValueError(f"drop is a probability in [0, 1], got {self.drop}")


_UNRELIABLE_MASK = Bits.ACK_REQUESTED | Bits.REQUEST | Bits.RETRANSMIT | Bits.RESPONSE


class SimHub(LoopbackHub):
    def __init__(self, channel_registry: ChannelRegistry, *, up: Link | None = None, down: Link | None = None,
                 seed: int = 0, reconnect_delay: float = 0.25,
                 disconnect_every: tuple[float, float] | None = None, start: float = 0.0,
                 **options: Any) -> None:
        super().__init__(channel_registry, clock=VirtualClock(start), **options)
        self.links = {UP: up or Link(), DOWN: down or Link()}
        self.rng = random.Random(seed)
        self.reconnect_delay = reconnect_delay
        self.disconnect_every = disconnect_every
        self._events: list[tuple[float, int, str, Hashable, Any]] = []  # (time, n, kind, client, data)
        self._n_events = 0
        self._free: dict[tuple[Hashable, str], float] = {}  # when each link is next free (bandwidth)
        self._last: dict[tuple[Hashable, str], float] = {}  # last arrival on each link (order)
        self.lost_frames = 0
        self.disconnects = 0

    def connect(self, **options: Any) -> Transport:
        t = super().connect(**options)
        if self.disconnect_every is not None:
            self._schedule_random_disconnect(self._cid(t))
        return t

    def disconnect_at(self, t: float, client: Transport) -> None:
        """Break ``client``'s connection at virtual time ``t`` (it reconnects ``reconnect_delay`` later)."""
        self._event(t, "break", self._cid(client), None)

    def _schedule_random_disconnect(self, cid: Hashable) -> None:
        assert self.disconnect_every is not None
        lo, hi = self.disconnect_every
        self._event(self.clock.now() + self.rng.uniform(lo, hi), "break", cid, "again")

    def _event(self, t: float, kind: str, cid: Hashable, data: Any) -> None:
        self._n_events += 1
        heapq.heappush(self._events, (t, self._n_events, kind, cid, data))

    # -- the link ---------------------------------------------------------------------------------

    def _transmit(self, cid: Hashable, direction: str, data: bytes, now: float) -> None:
        link = self.links[direction]
        if link.drop:
            data = self._lose_frames(data, link.drop)
            if not data:
                return
        lane = (cid, direction)
        start = max(now, self._free.get(lane, now))
        tx = len(data) / link.bandwidth if link.bandwidth else 0.0
        self._free[lane] = start + tx
        delay = link.latency + (self.rng.uniform(-link.jitter, link.jitter) if link.jitter else 0.0)
        arrival = max(start + tx + max(0.0, delay), self._last.get(lane, 0.0))
        self._last[lane] = arrival
        self._event(arrival, direction, cid, (self._epoch[cid], data))

    def _lose_frames(self, data: bytes, p: float) -> bytes:
        """``data`` without the unreliable envelope frames the dice took."""
        up = msgpack.Unpacker(raw=False, strict_map_key=False)
        up.feed(data)
        kept, start = [], 0
        for frame in up:
            end = up.tell()
            unreliable = frame[0] == 0 and not frame[4] & _UNRELIABLE_MASK
            if unreliable and self.rng.random() < p:
                self.lost_frames += 1
            else:
                kept.append(data[start:end])
            start = end
        return b"".join(kept)

    # -- time -------------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        t = super().next_timer()
        if self._events and (t is None or self._events[0][0] < t):
            return self._events[0][0]
        return t

    def _fire_timers(self, now: float) -> None:
        while self._events and self._events[0][0] <= now:
            _, _, kind, cid, data = heapq.heappop(self._events)
            if kind in (UP, DOWN):
                epoch, payload = data
                if epoch == self._epoch.get(cid):  # bytes of a broken connection never arrive
                    self._deliver(cid, kind, payload, now)
            elif kind == "break":
                if cid in self._conn:
                    self.disconnects += 1
                    self._break(cid)
                    self._event(now + self.reconnect_delay, "reconnect", cid, None)
                if data == "again" and cid in self._clients:
                    self._schedule_random_disconnect(cid)
            elif kind == "reconnect":
                self._reconnect(cid)
        super()._fire_timers(now)
