"""One peer's connection: an explicit state machine (h11 style) and the per-connection state it owns.

States::

    AWAITING_AUTH --handshake--> OPEN --lost--> DETACHED --resumed--> OPEN
          |                       |                |
          +------- error / CLOSE -+---> CLOSING ---+--> CLOSED  (the runtime flushed and forgot it)

``ADMITS`` is the one table of which frame types each state admits, per role: before authentication only
the handshake (and CLOSE), within ``Limits.preauth_frame_size``; envelopes, CHUNKs, PINGs, NACKs and ACKs
only when OPEN.  The decoder checks it as soon as a frame's type is known.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from enum import StrEnum
from typing import Any, Literal

from .decoder import FrameDecoder
from .envelope import Envelope, QoS, envelope_of
from .limits import Limits
from .promise import Promise
from .qos import Scheduler
from .registry import Channel, Kind
from .schema import SchemaRegistry
from .sequence import ReceiveWindow
from .text import LogGate
from .timers import Timer
from .wire import FrameType

__all__ = ["ADMITS", "Answers", "Bucket", "Connection", "NameInfo", "PendingRequest", "State"]

Role = Literal["server", "client"]


class State(StrEnum):
    AWAITING_AUTH = "awaiting_auth"
    OPEN = "open"
    DETACHED = "detached"
    CLOSING = "closing"
    CLOSED = "closed"


_F = FrameType
_AFTER_AUTH = frozenset(int(t) for t in (_F.ENVELOPE, _F.NACK, _F.CLOSE, _F.PING, _F.PONG, _F.ACK, _F.CHUNK))
_NOTHING: frozenset[int] = frozenset()

#: Which frame types each (role, state) admits.  Everything else closes the connection (``not_admitted``).
ADMITS: dict[tuple[Role, State], frozenset[int]] = {
    ("server", State.AWAITING_AUTH): frozenset((_F.HELLO, _F.CLOSE)),
    ("client", State.AWAITING_AUTH): frozenset((_F.CHALLENGE, _F.WELCOME, _F.CLOSE)),
    ("server", State.OPEN): _AFTER_AUTH,
    ("client", State.OPEN): _AFTER_AUTH,
    **{(r, s): _NOTHING for r in ("server", "client") for s in (State.DETACHED, State.CLOSING, State.CLOSED)},
}


class NameInfo:
    """Everything the hot path needs to know about one envelope name, computed once."""

    __slots__ = ("chan", "channel", "coalesce", "kind", "name", "response_key", "wire_id")

    def __init__(self, name: str, wire_id: int, channel: Channel, chan: int, kind: Kind, coalesce: bool) -> None:
        self.name = name
        self.wire_id = wire_id
        self.channel = channel
        self.chan = chan
        self.kind = kind
        self.coalesce = coalesce  # the registry lists it under its channel's ``coalesce``
        self.response_key = name + SchemaRegistry.RESPONSE_SUFFIX  # its response's schema (``schemas.tests``)


class Bucket:
    """A token bucket: ``rate`` per second, holding at most ``burst``."""

    __slots__ = ("burst", "rate", "t", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.t = rate, burst, burst, now

    def take(self, now: float) -> bool:
        tokens = self.tokens
        if now > self.t:
            tokens += (now - self.t) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        self.t = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class PendingRequest:
    __slots__ = ("attempts", "env", "first_sent", "frame", "info", "payload", "promise", "retries_left", "seq",
                 "tier", "timeout", "timer", "trace_id")

    def __init__(self, info: NameInfo, env: Envelope | None, frame: bytes, promise: Promise[Envelope],
                 retries: int, timeout: float, now: float, tier: int, payload: Any, seq: int,
                 trace_id: str | None) -> None:
        self.info = info
        self.env = env  # None until ``envelope()`` needs it
        self.tier = tier
        self.payload = payload
        self.seq = seq
        self.trace_id = trace_id
        self.frame = frame
        self.promise = promise
        self.attempts = 1
        self.retries_left = retries
        self.timeout = timeout
        self.first_sent = now
        self.timer: Timer | None = None

    def envelope(self) -> Envelope:
        """The request's ``Envelope``, built at its first use (a retry, a resend): most requests never need it."""
        if self.env is None:
            self.env = envelope_of(self.info.name, self.payload, self.seq, QoS(self.tier), self.first_sent,
                                   trace_id=self.trace_id)
        return self.env


class Answers:
    """Requests a connection already ran, by (channel, seq): the answer frame (None while it is computed),
    so a retried request is answered again without running its handler twice, and at most once per resend
    interval.  Bounded in entries and bytes; an evicted answer leaves a per-channel floor, so a late retry
    of it is refused, never run again."""

    __slots__ = ("_bytes", "_floor", "_frames", "_resent", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._frames: OrderedDict[tuple[int, int], bytes | None] = OrderedDict()
        self._resent: dict[tuple[int, int], float] = {}
        self._bytes = 0
        self._floor: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def start(self, key: tuple[int, int]) -> None:
        self._frames[key] = None
        self._evict()

    def store(self, key: tuple[int, int], frame: bytes) -> None:
        if key in self._frames:
            old = self._frames[key]
            self._bytes += len(frame) - (len(old) if old is not None else 0)
            self._frames[key] = frame
            self._evict()

    def get(self, key: tuple[int, int]) -> bytes | None:
        return self._frames.get(key)

    def may_resend(self, key: tuple[int, int], now: float, interval: float) -> bool:
        last = self._resent.get(key)
        if last is not None and now - last < interval:
            return False
        self._resent[key] = now
        return True

    def new_connection(self) -> None:
        """A resumed session's answers may go once more at once (the last copy went down the old link)."""
        self._resent.clear()

    def evicted(self, key: tuple[int, int]) -> bool:
        return key not in self._frames and key[1] <= self._floor.get(key[0], 0)

    def _evict(self) -> None:
        frames = self._frames
        while frames and (len(frames) > self.max_entries or self._bytes > self.max_bytes):
            (chan, seq), frame = frames.popitem(last=False)
            self._resent.pop((chan, seq), None)
            self._bytes -= len(frame) if frame is not None else 0
            self._floor[chan] = max(self._floor.get(chan, 0), seq)


class Connection:
    """The state of one connection (and, across reconnects, of one player's session)."""

    __slots__ = (
        "acks",
        "answered",
        "buckets",
        "close_code",
        "close_frame",
        "close_message",
        "closed",
        "decoder",
        "handshaking",
        "held",
        "hello_sent",
        "key",
        "last_heard",
        "log",
        "n_channels",
        "nacks",
        "nonce",
        "open",
        "opened",
        "out",
        "partial_since",
        "peer_clock",
        "pending",
        "pings",
        "player_id",
        "resume_secret",
        "resuming",
        "role",
        "seq",
        "session_id",
        "state",
        "unacked",
        "watchdog",
        "windows",
    )

    def __init__(self, key: Hashable, role: Role, n_channels: int, decoder: FrameDecoder, out: Scheduler,
                 answers: Answers, limits: Limits, now: float) -> None:
        self.key = key
        self.role: Role = role
        self.state = State.AWAITING_AUTH
        self.open = self.closed = False
        self.handshaking = True
        self.player_id: int | None = None
        self.session_id: str | None = None
        self.resume_secret: str | None = None
        self.nonce: str | None = None  # server: the challenge it sent; client: the one it answered
        self.peer_clock = ""
        self.hello_sent = False
        self.resuming = False
        self.held = role == "client"  # a client's output waits behind its HELLO
        self.decoder = decoder
        self.out = out
        self.seq = [0] * n_channels
        # Receive windows and rate buckets are made at login (``enter(OPEN)``): a connection that never
        # authenticates costs little.
        self.windows: list[ReceiveWindow] = []
        self.n_channels = n_channels
        self.pending: dict[int, PendingRequest] = {}  # our requests awaiting answers, by ``seq_key``
        self.answered = answers  # requests already run: retries get the same answer
        self.close_code: str | None = None
        self.close_message: str | None = None
        self.close_frame: bytes | None = None  # our CLOSE, sent before anything else still queued
        # Reliable envelopes sent and not yet acknowledged, by ``seq_key``: re-sent after a reconnect.
        self.unacked: dict[int, tuple[Envelope, NameInfo]] = {}
        self.acks: dict[int, list[int]] = {}  # reliable seqs received, to acknowledge, by channel
        self.buckets: list[Bucket] = []  # per channel (server rate limits)
        self.pings = Bucket(limits.ping_rate, max(1.0, limits.ping_rate), now)
        self.nacks = Bucket(limits.nack_rate, max(1.0, limits.nack_rate), now)
        self.log = LogGate(limits.log_lines_per_minute)
        self.opened = now
        self.last_heard = now
        self.partial_since: float | None = None
        self.watchdog: Timer | None = None
        self.enter(State.AWAITING_AUTH, limits)

    def seq_key(self, chan: int, seq: int) -> int:
        """One int for (channel, seq): the key of ``unacked`` and ``pending`` (cheaper to hash and compare than a
        tuple, for a store and a removal per envelope)."""
        return seq * self.n_channels + chan

    def enter(self, state: State, limits: Limits) -> None:
        """Move to ``state``: the decoder takes that state's admitted frame types and size limit."""
        self.state = state
        # Plain attributes, not properties: the hot path reads them for every frame.
        self.open = state == State.OPEN
        self.closed = state in (State.CLOSING, State.CLOSED)
        self.handshaking = state == State.AWAITING_AUTH
        if state == State.OPEN and not self.windows:
            self.windows = [ReceiveWindow() for _ in range(self.n_channels)]
        self.decoder.admits = ADMITS[(self.role, state)]
        self.decoder.limit = limits.preauth_frame_size if state == State.AWAITING_AUTH else self.decoder_max
        self.decoder.chunk_budget = limits.chunk_budget

    @property
    def decoder_max(self) -> int:
        return self.decoder._max

    def __repr__(self) -> str:
        return f"<Connection {self.key!r} player={self.player_id} {self.state.value}>"


#: The old name (a connection is a player's session).
Session = Connection
