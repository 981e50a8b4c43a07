"""The per-peer outbound scheduler (roadmap: "QoS Enforcement").

Roblox throttles each player's traffic, so under floods the order in which the dispatcher drains its
outbound queues decides who waits.  One ``Scheduler`` per connection:

* **Budget.**  A token bucket of bytes (``budget`` per second) and of messages (``max_rate`` per second),
  refilled continuously and capped at one tick's worth.  The scheduler is work-conserving: a frame goes out
  at once while tokens last; otherwise it waits for the next tick (``tick_hz``, default 60).
* **CRITICAL** is strict priority and never dropped.  The lower tiers leave ``critical_reserve`` of a
  tick's budget untouched, so a CRITICAL frame usually goes out at once even while the link is saturated;
  it may overdraw the bucket by one frame, which the next tick repays, so it waits at most one tick while
  CRITICAL traffic alone fits the budget.
* **HIGH / NORMAL / BACKGROUND** share what is left by deficit round robin with weights (default 8/4/1),
  so no tier starves and each gets bytes in proportion to its weight when all are backlogged.
* **Chunking.**  A frame larger than ``chunk_size`` is sent as CHUNK frames of at most ``chunk_size``
  bytes, reassembled by the receiver, so a 64 kB snapshot never holds the link: CRITICAL frames interleave
  between its chunks (as GameNetworkingSockets lanes do).  A message whose first chunk is out is committed.
* **Overload.**  A frame with a coalesce key replaces the queued, uncommitted frame with the same key
  (most-recent-state); NORMAL and BACKGROUND queues are bounded in frames (``queue_limits``) and bytes
  (``queue_bytes``) and drop their oldest uncommitted frames to make room.  Responses to requests are
  never dropped (someone is waiting for them); instead, a request whose response would join a tier at its
  bound is refused at once (``overloaded``), so a request flood cannot grow the queues without limit.
  Every drop and coalesce is counted by tier, name and reason.
* **fifo** (``scheduler="fifo"``): the pre-migration behaviour kept for comparison — one FIFO queue, no
  priorities, no coalescing, no chunking, no bounds; the same budget.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Final

from .qosconfig import BACKGROUND, CRITICAL, HIGH, NORMAL, SchedulerConfig, Sink
from .tally import Tally
from .wire import CHUNK_OVERHEAD, encode_chunk

__all__ = ["Scheduler", "SchedulerConfig", "Sink"]

__all__ += ["BACKGROUND", "CRITICAL", "HIGH", "NORMAL"]
_MIN_CHUNK: Final = 64
#: The scheduler tells its sink what went out at least every this many frames (and at each tick).
_REPORT_EVERY: Final = 256


class _Item:
    __slots__ = ("committed", "frame", "key", "msg_id", "name", "offset", "t_enq", "tier")
    # ``committed``: it may no longer be dropped or coalesced (its first chunk is out, or it is a response).

    def __init__(self, frame: bytes, tier: int, name: str | None, key: Hashable | None, now: float,
                 committed: bool = False) -> None:
        self.frame = frame
        self.tier = tier
        self.name = name
        self.key = key
        self.t_enq = now
        self.offset = 0
        self.msg_id = 0
        self.committed = committed


class Scheduler:
    """Outbound frames of one connection; ``pull(now)`` returns what may go on the wire now."""

    __slots__ = (
        "_budget", "_byte_limit", "_bytes", "_cfg", "_coalesce", "_deficit", "_fifo", "_limit", "_max_rate",
        "_msg_ids", "_msgs", "_queues", "_reported", "_reserve", "_rr", "_runs", "_sent_bytes", "_sent_frames",
        "_sink", "_small", "_soj", "_t", "_tick", "_unreported", "_wake", "_watched", "counts", "pending", "qbytes",
    )

    def __init__(self, config: SchedulerConfig, sink: Sink) -> None:
        self._cfg = config
        self._sink = sink
        self._queues: tuple[deque[_Item], ...] = tuple(deque() for _ in range(4 if config.mode == "priority" else 1))
        self._deficit = [0, 0, 0]
        self._rr = 0
        self._coalesce: dict[Hashable, _Item] = {}
        self._tick = 1.0 / config.tick_hz
        self._bytes = (config.budget or 0.0) * self._tick  # tokens, full at start
        self._msgs = (config.max_rate or 0.0) * self._tick
        self._t: float | None = None
        self._wake: float | None = None
        self._msg_ids = 0
        self._runs = [0, 0, 0, 0]
        # Per-tier lists are updated as ``x[i] = x[i] + n``: compiled, ``x[i] += n`` is a generic in-place add.
        self.counts = [0, 0, 0, 0]  # frames queued per tier (read-only outside)
        self.qbytes = [0, 0, 0, 0]  # bytes queued per tier (read-only outside)
        self._reported: list[tuple[int, int]] | None = None  # depth last reported to the sink, per tier
        # Bytes and frames sent per tier since the last report to the sink.
        self._sent_bytes = [0, 0, 0, 0]
        self._sent_frames = [0, 0, 0, 0]
        # Each frame's sojourn (queued -> on the wire) is counted at once in its tier's tally, which the sink
        # owns and folds (``Sink.sojourn_tallies``; None: stats are off).  They went to the sink as lists of
        # floats and run lengths every 256 frames before: a float and two list slots per run, eight new lists
        # per report (callgrind: ``Scheduler.pull`` 3.3k -> 2.9k instructions in a Locust user's request).
        self._soj: list[Tally] | None = sink.sojourn_tallies() if sink.enabled else None
        self._unreported = 0  # frames the sink has not been told of yet
        # The sink's handle on this scheduler: the sink holds it weakly, so it lives as long as we do.
        self._watched = sink.watch(self) if sink.enabled else None
        # A frame up to this size goes whole (when it fits the tokens); a larger one is cut into chunks.
        tick_budget = (config.budget or float("inf")) * self._tick
        self._small = int(min(config.chunk_size, tick_budget))
        self._reserve = config.critical_reserve * tick_budget if config.budget is not None else 0.0
        self.pending = 0
        self._fifo = config.mode == "fifo"
        # The (frozen) config's limits as native attributes: compiled, each ``config.x`` is a generic getattr.
        self._budget: float | None = config.budget
        self._max_rate: float | None = config.max_rate
        self._limit = tuple(config.queue_limits.get(t) for t in range(4))  # frames per tier, at most
        self._byte_limit = tuple(config.queue_bytes.get(t) for t in range(4))

    @property
    def config(self) -> SchedulerConfig:
        return self._cfg

    def queued(self, tier: int) -> int:
        """Frames of ``tier`` waiting."""
        return self.counts[tier]

    def queued_bytes(self, tier: int) -> int:
        """Bytes of ``tier`` waiting."""
        return self.qbytes[tier]

    # -- in --------------------------------------------------------------------------------------

    def push(self, frame: bytes, tier: int, now: float, name: str | None = None, key: Hashable | None = None,
             droppable: bool = True) -> None:
        """Queue ``frame``.  ``key`` (not for CRITICAL) coalesces with a queued frame of the same key;
        ``droppable=False`` keeps it out of drop-oldest (responses)."""
        if self._fifo:
            q = self._queues[0]
            key = None
        else:
            q = self._queues[tier]
            if key is not None and tier != CRITICAL:
                old = self._coalesce.get(key)
                if old is not None and not old.committed:
                    self.qbytes[tier] = self.qbytes[tier] + len(frame) - len(old.frame)
                    old.frame, old.name = frame, name
                    self._sink.coalesced(tier, name)
                    return
            limit = self._limit[tier]
            if limit is not None and len(q) >= limit:
                self._drop_oldest(q, tier)
            byte_limit = self._byte_limit[tier]
            if byte_limit is not None:
                while q and self.qbytes[tier] + len(frame) > byte_limit and self._drop_oldest(q, tier):
                    pass
        it = _Item(frame, tier, name, key, now, not droppable)
        q.append(it)
        if key is not None:
            self._coalesce[key] = it
        self.pending += 1
        self.counts[tier] = self.counts[tier] + 1
        self.qbytes[tier] = self.qbytes[tier] + len(frame)

    def full(self, tier: int) -> bool:
        """Whether ``tier`` is at its bound (frames or bytes): the core refuses new requests whose responses
        would join it, rather than queue answers without limit (responses are never dropped)."""
        if self._fifo:
            return False
        limit, byte_limit = self._limit[tier], self._byte_limit[tier]
        return (limit is not None and self.counts[tier] >= limit) or (
            byte_limit is not None and self.qbytes[tier] >= byte_limit)

    def push_front(self, frame: bytes, now: float) -> None:
        """Queue a control frame ahead of everything (the handshake must open a connection's stream)."""
        it = _Item(frame, CRITICAL, None, None, now, committed=True)
        self._queues[0].appendleft(it)
        self.pending += 1
        self.counts[CRITICAL] = self.counts[CRITICAL] + 1
        self.qbytes[CRITICAL] = self.qbytes[CRITICAL] + len(frame)

    def restart(self) -> None:
        """The connection was replaced: a frame whose first chunks went on the old one starts over (the new
        peer's decoder has none of them); what never left stays queued."""
        for q in self._queues:
            for it in q:
                it.offset = 0
        self._wake = None

    def _drop_oldest(self, q: deque[_Item], tier: int) -> bool:
        for i, it in enumerate(q):
            if not it.committed:
                del q[i]
                self._forget(it)
                self.pending -= 1
                self.counts[tier] = self.counts[tier] - 1
                self.qbytes[tier] = self.qbytes[tier] - len(it.frame)
                self._sink.dropped(tier, it.name, "queue_full")
                return True
        return False

    def _forget(self, it: _Item) -> None:
        if it.key is not None and self._coalesce.get(it.key) is it:
            del self._coalesce[it.key]

    # -- out -------------------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """When the next tick is due (only while frames wait for budget)."""
        return self._wake if self.pending else None

    def pull(self, now: float) -> bytes:
        if not self.pending:
            self._wake = None
            self._refill(now)
            return b""
        ticked = self._wake is not None and now >= self._wake - 1e-9
        self._refill(now)
        out: list[bytes] = []
        if self._fifo:
            self._drain_fifo(out, now)
        else:
            self._drain_priority(out, now)
        if out and self._soj is not None:
            self._unreported += len(out)
            if self._unreported >= _REPORT_EVERY:
                self.report()
        if ticked:
            self._account_tick()
        if not self.pending:
            self._wake = None
            if self._reported is not None:
                self._report_depth()
        elif ticked or self._wake is None:
            # Frames wait: the next tick is one period after this one (or after now, when a backlog starts).
            nxt = (self._wake if ticked and self._wake is not None else now) + self._tick
            while nxt <= now:
                nxt += self._tick
            self._wake = nxt
        return out[0] if len(out) == 1 else b"".join(out)

    def _refill(self, now: float) -> None:
        if self._t is not None and now > self._t:
            dt = now - self._t
            budget, rate = self._budget, self._max_rate
            if budget is not None:
                # Up to one tick's worth plus one whole small frame: tokens a frame could not use at the
                # end of a tick carry over instead of being lost.
                self._bytes = min(budget * self._tick + self._small, self._bytes + budget * dt)
            if rate is not None:
                self._msgs = min(max(1.0, rate * self._tick), self._msgs + rate * dt)
        self._t = now if self._t is None else max(self._t, now)

    def _can_send(self) -> bool:
        return (self._budget is None or self._bytes > 0) and (self._max_rate is None or self._msgs > 0)

    def _can_send_lower(self) -> bool:
        return (self._budget is None or self._bytes > self._reserve) and (self._max_rate is None or self._msgs > 0)

    def _drain_fifo(self, out: list[bytes], now: float) -> None:
        q = self._queues[0]
        while q and self._can_send():
            it = q.popleft()
            self._finish(it, it.frame, out, now)

    def _drain_critical(self, q: deque[_Item], out: list[bytes], now: float) -> None:
        """Whole CRITICAL frames from the head of ``q`` while there are tokens (``_finish`` for each, inline:
        this loop carries most frames)."""
        limited, rated = self._budget is not None, self._max_rate is not None
        tokens, msgs = self._bytes, self._msgs
        soj = self._soj[CRITICAL] if self._soj is not None else None
        coalesce = self._coalesce
        n = nbytes = run = 0  # sojourns go as runs (frames queued at one time leave together); 0: none yet
        last = 0.0  # a float, not None before the first: compared natively
        while q and (not limited or tokens > 0) and (not rated or msgs > 0):
            it = q.popleft()
            frame = it.frame
            size = len(frame)
            out.append(frame)
            tokens -= size
            msgs -= 1
            n += 1
            nbytes += size
            if it.key is not None and coalesce.get(it.key) is it:
                del coalesce[it.key]
            if soj is not None:
                if run and it.t_enq == last:
                    run += 1
                else:
                    if run:
                        soj.add_run(now - last, run)
                    last, run = it.t_enq, 1
        self._bytes, self._msgs = tokens, msgs
        self.pending -= n
        self.counts[CRITICAL] = self.counts[CRITICAL] - n
        self.qbytes[CRITICAL] = self.qbytes[CRITICAL] - nbytes
        if soj is not None:
            self._sent_bytes[CRITICAL] = self._sent_bytes[CRITICAL] + nbytes
            self._sent_frames[CRITICAL] = self._sent_frames[CRITICAL] + n
            if run:
                soj.add_run(now - last, run)

    def _drain_priority(self, out: list[bytes], now: float) -> None:
        crit = self._queues[CRITICAL]
        if crit:
            self._drain_critical(crit, out, now)
            if crit:
                return
        weights = self._cfg.weights
        quantum = self._cfg.chunk_size
        lower = self._queues[1:]
        while (lower[0] or lower[1] or lower[2]) and self._can_send_lower():
            i = self._rr
            q = lower[i]
            if not q:
                self._deficit[i] = 0
                self._rr = (i + 1) % 3
                continue
            if self._deficit[i] <= 0:
                self._deficit[i] += weights[i] * quantum
            while q and self._deficit[i] > 0 and self._can_send_lower():
                n = self._send_unit(q, out, now)
                if not n:
                    return  # the head frame waits for the next tick's tokens
                self._deficit[i] -= n
            if self._deficit[i] <= 0 or not q:
                self._rr = (i + 1) % 3

    def _send_unit(self, q: deque[_Item], out: list[bytes], now: float) -> int:
        """Send the head frame of ``q``, or its next chunk: the bytes put on the wire (0: wait a tick).

        Lower tiers never overdraw the bucket by more than a minimum chunk, so the next tick always has
        tokens for CRITICAL.  A frame that fits a tick's budget and ``chunk_size`` goes whole when the
        tokens allow; a larger one goes in chunks sized to the tokens left.
        """
        it = q[0]
        frame = it.frame
        limited = self._budget is not None
        avail = self._bytes - self._reserve
        if it.offset == 0 and (len(frame) <= self._small or not limited):
            if limited and len(frame) > avail:
                return 0
            q.popleft()
            return self._finish(it, frame, out, now)
        if not it.committed:
            it.committed = True
            self._forget(it)
            self._msg_ids += 1
            it.msg_id = self._msg_ids
        room = max(_MIN_CHUNK, min(self._small, int(avail)) - CHUNK_OVERHEAD)
        end = min(len(frame), it.offset + room)
        last = end == len(frame)
        chunk = encode_chunk(it.msg_id, it.offset, last, frame[it.offset:end])
        it.offset = end
        if last:
            q.popleft()
            return self._finish(it, chunk, out, now, len(frame))
        self._bytes -= len(chunk)
        self._sent_bytes[it.tier] = self._sent_bytes[it.tier] + len(chunk)
        out.append(chunk)
        return len(chunk)

    def _finish(self, it: _Item, data: bytes, out: list[bytes], now: float, frame_len: int = 0) -> int:
        out.append(data)
        self._bytes -= len(data)
        self._msgs -= 1
        if it.key is not None:
            self._forget(it)
        self.pending -= 1
        self.counts[it.tier] = self.counts[it.tier] - 1
        self.qbytes[it.tier] = self.qbytes[it.tier] - (frame_len or len(data))
        soj = self._soj
        if soj is not None:
            tier = it.tier
            self._sent_bytes[tier] = self._sent_bytes[tier] + len(data)
            self._sent_frames[tier] = self._sent_frames[tier] + 1
            soj[tier].add(now - it.t_enq)
        return len(data)

    def _report_depth(self) -> None:
        """Tell the sink how the queues changed since the last report (sampled at ticks, not per frame)."""
        old = self._reported or [(0, 0)] * 4
        new = list(zip(self.counts, self.qbytes, strict=True))
        for tier in range(4):
            if new[tier] != old[tier]:
                self._sink.depth(tier, new[tier][0] - old[tier][0], new[tier][1] - old[tier][1])
        self._reported = None if not self.pending else new

    def close(self) -> None:
        """The connection is gone: what it had queued is no longer queued."""
        self._queues = tuple(deque() for _ in self._queues)
        self._coalesce.clear()
        self.counts = [0, 0, 0, 0]
        self.qbytes = [0, 0, 0, 0]
        self.pending = 0
        self._wake = None
        self.report()
        if self._reported is not None:
            self._report_depth()

    def report(self) -> None:
        """Tell the sink what went out since the last report: bytes and frames per tier (their sojourns are in
        its tallies already).  Reported every ``_REPORT_EVERY`` frames, at each tick, on ``close`` and whenever
        the sink is read (``Sink.watch``), not at every pull: a pull often carries one frame."""
        if self._soj is None or not self._unreported:
            return
        self._sink.sent(self._sent_bytes, self._sent_frames)
        nbytes, frames = self._sent_bytes, self._sent_frames
        for tier in range(4):
            nbytes[tier] = 0
            frames[tier] = 0
        self._unreported = 0

    def _account_tick(self) -> None:
        """A tick ended: a tier with frames still waiting was saturated during it."""
        self.report()
        self._report_depth()
        for tier in range(4):
            waiting = self.counts[tier] > 0
            self._runs[tier] = self._runs[tier] + 1 if waiting else 0
            self._sink.saturation(tier, waiting, self._runs[tier])
