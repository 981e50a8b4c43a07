"""The sans-I/O dispatcher core (seed: ``Dispatcher.lua``).

One ``Dispatcher`` per peer role.  It never touches a socket, a clock or a greenlet: runtimes feed it
bytes with ``receive_data(data, now, peer)``, take bytes with ``data_to_send(now, peer)``, ask
``next_timer()`` when it next needs waking and call ``handle_timer(now)`` then.  A server has one session
per connected player (``peer`` is the runtime's key for the connection); a client has one.

Handlers and bus subscribers run synchronously inside ``receive_data``; sends they make are queued and
reported by ``take_dirty()`` so the runtime knows which connections have bytes to write.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from .auth import verify_token
from .bus import EventBus, HandlerTable, Subscription
from .envelope import Envelope, Flags, Meta, QoS
from .errors import (
    ConnectionClosed,
    LocalProtocolError,
    RegistryError,
    RemoteError,
    RemoteProtocolError,
    RequestTimeout,
    ValidationError,
)
from .promise import Promise, Waiter
from .qos import Scheduler, SchedulerConfig
from .registry import Channel, ChannelRegistry, Kind
from .replay import ReplayBuffer
from .schema import SchemaRegistry
from .sequence import DUPLICATE, IN_ORDER, LATE, ReceiveWindow
from .stats import NullStats, Stats
from .wire import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    Ack,
    Bits,
    Close,
    EnvelopeFrame,
    FrameDecoder,
    Hello,
    Nack,
    Ping,
    Pong,
    Welcome,
    encode_control,
    encode_envelope,
    pack_payload,
)

__all__ = ["SERVER_PEER", "Dispatcher", "Handler", "Session"]

log = logging.getLogger("dispatcher")

Role = Literal["server", "client"]
Mode = Literal["dev", "release"]
Handler = Callable[[Envelope], Any]
Logger = Callable[[Envelope, str], Any]

#: The key of a client's only session.
SERVER_PEER = "server"

# A session's life: HANDSHAKE -> OPEN -> (DETACHED -> OPEN)* -> CLOSED.  DETACHED: its connection was lost;
# the state waits ``resume_grace`` seconds for the player to reconnect and resume it.
HANDSHAKE, OPEN, DETACHED, CLOSED = "handshake", "open", "detached", "closed"


@dataclass(frozen=True, slots=True)
class NameInfo:
    """Everything the hot path needs to know about one envelope name, computed once."""

    name: str
    wire_id: int
    channel: Channel
    chan: int
    kind: Kind
    coalesce: bool  # the registry lists it under its channel's ``coalesce``


class PendingRequest:
    __slots__ = ("attempts", "env", "first_sent", "frame", "info", "promise", "retries_left", "timeout", "timer")

    def __init__(self, info: NameInfo, env: Envelope, frame: bytes, promise: Promise[Envelope],
                 retries: int, timeout: float, now: float) -> None:
        self.info = info
        self.env = env
        self.frame = frame
        self.promise = promise
        self.attempts = 1
        self.retries_left = retries
        self.timeout = timeout
        self.first_sent = now
        self.timer: list[Any] | None = None


class Answers:
    """Requests a session already ran, by (channel, seq): the answer frame (None while it is computed), so a
    retried request is answered again without running its handler twice.  Bounded in entries and bytes;
    an evicted answer leaves a per-channel floor, so a late retry of it is refused, never run again."""

    __slots__ = ("_bytes", "_floor", "_frames", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._frames: OrderedDict[tuple[int, int], bytes | None] = OrderedDict()
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

    def evicted(self, key: tuple[int, int]) -> bool:
        return key not in self._frames and key[1] <= self._floor.get(key[0], 0)

    def _evict(self) -> None:
        frames = self._frames
        while frames and (len(frames) > self.max_entries or self._bytes > self.max_bytes):
            (chan, seq), frame = frames.popitem(last=False)
            self._bytes -= len(frame) if frame is not None else 0
            self._floor[chan] = max(self._floor.get(chan, 0), seq)


class Session:
    """The state of one connection: handshake, sequence numbers, receive windows, queues, requests."""

    __slots__ = (
        "acks",
        "answered",
        "buckets",
        "close_code",
        "close_message",
        "decoder",
        "expiry_timer",
        "key",
        "out",
        "pending",
        "player_id",
        "seq",
        "session_id",
        "state",
        "tick_timer",
        "unacked",
        "windows",
    )

    def __init__(self, key: Hashable, n_channels: int, decoder: FrameDecoder, out: Scheduler,
                 answers: Answers) -> None:
        self.key = key
        self.state = HANDSHAKE
        self.player_id: int | None = None
        self.session_id: str | None = None
        self.decoder = decoder
        self.out = out
        self.tick_timer: list[Any] | None = None
        self.seq = [0] * n_channels
        self.windows = [ReceiveWindow() for _ in range(n_channels)]
        self.pending: dict[tuple[int, int], PendingRequest] = {}
        self.answered = answers  # requests already run: retries get the same answer
        self.close_code: str | None = None
        self.close_message: str | None = None
        # Reliable envelopes sent and not yet acknowledged, by (channel, seq): re-sent after a reconnect.
        self.unacked: dict[tuple[int, int], tuple[Envelope, NameInfo]] = {}
        self.acks: dict[int, list[int]] = {}  # reliable seqs received, to acknowledge, by channel
        self.buckets: list[list[float]] = []  # per channel [tokens, last refill] (server rate limits)
        self.expiry_timer: list[Any] | None = None  # handshake deadline, then the detached grace period

    @property
    def open(self) -> bool:
        return self.state == OPEN

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    @property
    def handshaking(self) -> bool:
        return self.state == HANDSHAKE

    def __repr__(self) -> str:
        return f"<Session {self.key!r} player={self.player_id} {self.state}>"


class Dispatcher:
    """The dispatcher core for one peer role (``"server"`` or ``"client"``)."""

    def __init__(
        self,
        role: Role,
        registry: ChannelRegistry,
        *,
        schemas: SchemaRegistry | Mapping[str, Any] | None = None,
        mode: Mode = "dev",
        qos_overrides: Mapping[str, str | int | QoS] | None = None,
        qos_policy: Literal["warn", "clamp"] = "warn",
        require_subscriber: bool = False,
        stats: bool = True,
        player_id: int | None = None,
        token: str | None = None,
        secret: bytes | str | None = None,
        seed: int | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        request_timeout: float = 5.0,
        retry_backoff: float = 0.1,
        retry_backoff_max: float = 2.0,
        dedup_window: int = 1024,
        dedup_bytes: int = 1 << 20,
        scheduler: SchedulerConfig | str | Mapping[str, Any] | None = None,
        replay: bool | dict[str, Any] | None = None,
        rate_limits: Mapping[str, float] | None = None,
        handshake_timeout: float = 10.0,
        resume_grace: float = 30.0,
        clock_sync_interval: float = 5.0,
    ) -> None:
        if role not in ("server", "client"):
            raise LocalProtocolError(f"peer must be 'server' or 'client', got {role!r}")
        if mode not in ("dev", "release"):
            raise LocalProtocolError(f"mode must be 'dev' or 'release', got {mode!r}")
        if qos_policy not in ("warn", "clamp"):
            raise LocalProtocolError(f"qos_policy must be 'warn' or 'clamp', got {qos_policy!r}")
        if not isinstance(registry, ChannelRegistry):
            raise LocalProtocolError(
                f"channel_registry must be a ChannelRegistry (use ChannelRegistry.load or .from_dict), "
                f"got {type(registry).__name__}"
            )
        self.role: Role = role
        self.registry = registry
        self.schemas = schemas if isinstance(schemas, SchemaRegistry) else SchemaRegistry(schemas)
        self.schemas.check_names(registry.names)
        self.mode: Mode = mode
        self.qos_policy = qos_policy
        self.require_subscriber = require_subscriber
        self.stats: Stats = Stats() if stats else NullStats()
        self.player_id = player_id
        self.token = token
        self.secret = secret
        self.max_frame_size = max_frame_size
        self.request_timeout = request_timeout
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.dedup_window = dedup_window
        self.dedup_bytes = dedup_bytes
        self.rng = random.Random(seed)
        try:
            self.scheduler = SchedulerConfig.from_options(scheduler)
            self.replay_buffer = ReplayBuffer.from_options(registry.hash, replay)
        except ValueError as e:
            raise LocalProtocolError(str(e)) from None
        self.bus = EventBus()
        self.handlers: HandlerTable[Handler] = HandlerTable()
        self.logger: Logger | None = None
        #: Called as ``ack_listener(envelope, now)`` when a reliable envelope this side sent is acknowledged.
        self.ack_listener: Callable[[Envelope, float], Any] | None = None
        self.clock_offset = 0.0  # server clock minus this clock (client side, from the handshake and pings)
        self.rtt: float | None = None  # round trip of the best clock sample
        self.clock_domain = "ntp"  # "shared" when the runtime knows both peers read one monotonic clock
        self._clock_samples: list[tuple[float, float]] = []  # (rtt, offset), the last 8
        self.handshake_timeout = handshake_timeout
        self.resume_grace = resume_grace
        self.clock_sync_interval = clock_sync_interval
        self.now = 0.0  # the latest time a runtime gave us

        chan_index = {name: i for i, name in enumerate(registry.channels)}
        self._channel_qos: list[QoS] = [ch.qos for ch in registry.channels.values()]
        for ch_name, tier in (qos_overrides or {}).items():
            if ch_name not in chan_index:
                raise RegistryError(
                    f"qos_overrides names channel {ch_name!r}, which the registry does not declare; "
                    f"channels: {', '.join(chan_index)}"
                )
            try:
                self._channel_qos[chan_index[ch_name]] = QoS.parse(tier)
            except ValueError as e:
                raise RegistryError(f"qos_overrides[{ch_name!r}]: {e}") from None
        limits = dict(rate_limits or {})
        default_rate = float(limits.pop("default", 500.0))
        for ch_name in limits:
            if ch_name not in chan_index:
                raise RegistryError(f"rate_limits names channel {ch_name!r}, which the registry does not declare")
        # Envelopes per second a player may send on each channel (Roblox allows ~500 fires/s per remote).
        self._rates: list[float] = [float(limits.get(ch, default_rate)) for ch in chan_index]
        self._reliable: list[bool] = [ch.reliable for ch in registry.channels.values()]
        self._info: dict[str, NameInfo] = {
            n: NameInfo(n, registry.wire_id(n), registry.channel_of(n), chan_index[registry.channel_of(n).name],
                        registry.kind(n), n in registry.channel_of(n).coalesce)
            for n in registry.names
        }
        self._ns = self.stats.bind(registry.names)  # NameStats by wire id (the hot path's counters)
        self._lat = self.stats.bind_latency(registry.names)  # [wire id][tier] -> record_seconds
        self._sessions: dict[Hashable, Session] = {}
        self._players: dict[int, Session] = {}
        self._dirty: dict[Hashable, None] = {}
        self._timers: list[list[Any]] = []
        self._timer_n = 0
        self._session_n = 0
        self._warned: set[str] = set()
        self._ping_timer: list[Any] | None = None

    # ------------------------------------------------------------------------------------------
    # sessions

    def open_session(self, now: float, peer: Hashable = SERVER_PEER) -> Session:
        """A new connection.  A client sends its HELLO at once; a server waits for one."""
        self.now = now
        if peer in self._sessions and not self._sessions[peer].closed:
            raise LocalProtocolError(f"a session for {peer!r} is already open")
        s = Session(peer, len(self._channel_qos), FrameDecoder(self.registry.names, self.max_frame_size),
                    Scheduler(self.scheduler, self.stats), Answers(self.dedup_window, self.dedup_bytes))
        self._sessions[peer] = s
        if self.role == "client":
            self._hello(s, now, None)
        else:
            s.buckets = [[rate, now] for rate in self._rates]
            s.expiry_timer = self._schedule(now + self.handshake_timeout, self._handshake_expired, s)
        return s

    def _hello(self, s: Session, now: float, resume: str | None) -> None:
        hello = Hello(PROTOCOL_VERSION, self.registry.hash, self.player_id, self.token, now, resume)
        s.out.push_front(encode_control(hello), now)
        self._dirty[s.key] = None

    def _handshake_expired(self, s: Session, now: float) -> None:
        if s.state == HANDSHAKE:
            self.stats.count("handshake_failures")
            log.warning("closing %r: no HELLO within %gs", s.key, self.handshake_timeout)
            self.close_session(s.key, "handshake_timeout", f"no HELLO within {self.handshake_timeout:g}s")

    def connection_lost(self, now: float, peer: Hashable = SERVER_PEER) -> None:
        """The runtime lost ``peer``'s connection without a CLOSE.  An open session is kept DETACHED for
        ``resume_grace`` seconds (a server) or until ``reopen`` (a client); pending requests stay pending."""
        self.now = now
        s = self._sessions.get(peer)
        if s is None or s.closed or s.state == DETACHED:
            return
        if s.state != OPEN or self.resume_grace <= 0:
            self.forget(peer)
            return
        s.state = DETACHED
        self.stats.count("disconnects")
        self._cancel(s.tick_timer)
        s.tick_timer = None
        self._dirty.pop(peer, None)
        if self.role == "server":
            del self._sessions[peer]  # the player's entry in _players keeps it for a resume
            s.expiry_timer = self._schedule(now + self.resume_grace, self._detached_expired, s)

    def _detached_expired(self, s: Session, now: float) -> None:
        if s.state == DETACHED:
            self._end(s, "expired", f"not resumed within {self.resume_grace:g}s")
            s.out.close()

    def reopen(self, now: float) -> Session:
        """Client: a new connection replaces the lost one.  HELLO asks the server to resume the session;
        unacknowledged reliable envelopes and pending requests go again, flagged as retransmissions (the
        server's windows make them count once)."""
        self.now = now
        s = self._sessions.get(SERVER_PEER)
        if s is None or s.closed:
            raise LocalProtocolError("nothing to reopen: the session is closed")
        s.decoder = FrameDecoder(self.registry.names, self.max_frame_size)
        s.out.restart()
        s.state = HANDSHAKE
        self._hello(s, now, s.session_id)
        self._resend(s)
        return s

    def _resend(self, s: Session) -> None:
        """After a reconnect: every unacknowledged reliable envelope and pending request, again."""
        for env, info in sorted(s.unacked.values(), key=lambda e: e[0].meta.seq):
            self._push(s, encode_envelope(env, info.wire_id, Bits.ACK_REQUESTED | Bits.RETRANSMIT), env.meta.qos,
                       info.name, droppable=False)
        for pend in s.pending.values():
            self._push(s, encode_envelope(pend.env, pend.info.wire_id, Bits.REQUEST | Bits.RETRANSMIT),
                       pend.env.meta.qos, pend.info.name, droppable=False)

    def session(self, peer: Hashable = SERVER_PEER) -> Session:
        try:
            return self._sessions[peer]
        except KeyError:
            raise LocalProtocolError(f"no session for peer {peer!r}") from None

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def players(self) -> list[int]:
        """Player ids with an open session (server)."""
        return list(self._players)

    def close_session(self, peer: Hashable, code: str = "closed", message: str = "connection closed",
                      *, notify: bool = True) -> None:
        """End a session: pending requests reject with ``ConnectionClosed``; the peer gets a CLOSE frame
        when ``notify`` (flush ``data_to_send`` once more before closing the socket)."""
        s = self._sessions.get(peer)
        if s is None or s.closed:
            return
        if notify:
            self._push(s, encode_control(Close(code, message)), 0)
        self._end(s, code, message)

    def _end(self, s: Session, code: str, message: str) -> None:
        if s.state == OPEN:
            self.stats.count("disconnects")
        s.state = CLOSED
        s.close_code, s.close_message = code, message
        if s.player_id is not None and self._players.get(s.player_id) is s:
            del self._players[s.player_id]
        self._cancel(s.tick_timer)
        self._cancel(s.expiry_timer)
        pending, s.pending = s.pending, {}
        for p in pending.values():
            self._cancel(p.timer)
            self.stats[p.info.name].failures += 1
            p.promise.reject(ConnectionClosed(code, message))

    def forget(self, peer: Hashable) -> None:
        """Drop a closed session's state (the runtime closed its socket)."""
        s = self._sessions.get(peer)
        if s is not None:
            if not s.closed:
                self._end(s, "closed", "connection dropped")
            s.out.close()
            del self._sessions[peer]
            self._dirty.pop(peer, None)

    # ------------------------------------------------------------------------------------------
    # bytes in, bytes out, timers

    def receive_data(self, data: bytes, now: float, peer: Hashable = SERVER_PEER) -> None:
        """Feed bytes from ``peer``.  ``RemoteProtocolError`` means the connection must be closed after
        flushing ``data_to_send`` (it carries the CLOSE frame telling the peer why)."""
        self.now = now
        s = self._sessions.get(peer)
        if s is None or s.closed or s.state == DETACHED:
            return
        try:
            frames = s.decoder.feed(data)
        except RemoteProtocolError as e:
            self.stats.count("oversized_frames" if s.decoder.oversized else "malformed_frames")
            self._protocol_failure(s, e)
            raise
        st = self.stats
        st.count("frames_in", len(frames))
        st.count("bytes_in", len(data))
        for fr in frames:
            if s.closed:
                break
            try:
                if type(fr) is EnvelopeFrame:
                    self._on_envelope(s, fr, now)
                else:
                    self._on_control(s, fr, now)
                    s = self._sessions.get(peer, s)  # a HELLO that resumes swaps in the player's session
            except RemoteProtocolError as e:
                self._protocol_failure(s, e)
                raise
        if s.decoder.spoofed:
            st.count("spoofed_player_id", s.decoder.spoofed)
            s.decoder.spoofed = 0
        if s.acks and not s.closed:
            for chan, seqs in s.acks.items():
                self._push(s, encode_control(Ack(chan, seqs)), QoS.CRITICAL)
            s.acks = {}

    def _protocol_failure(self, s: Session, e: RemoteProtocolError) -> None:
        log.warning("closing %r: %s", s.key, e)
        if s.state == HANDSHAKE:
            self.stats.count("handshake_failures")
        self.close_session(s.key, e.code, str(e))

    def data_to_send(self, now: float, peer: Hashable = SERVER_PEER) -> bytes:
        """The bytes to write to ``peer`` now."""
        self.now = now
        s = self._sessions.get(peer)
        if s is None or s.state == DETACHED:
            return b""
        data = s.out.pull(now)
        if data:
            self.stats.count("bytes_out", len(data))
        wake = s.out.next_wakeup()
        if wake is not None and (s.tick_timer is None or s.tick_timer[2] is None or s.tick_timer[0] > wake):
            self._cancel(s.tick_timer)
            s.tick_timer = self._schedule(wake, self._on_tick, s)
        return data

    def _on_tick(self, s: Session, now: float) -> None:
        s.tick_timer = None
        if not s.closed:
            self._dirty[s.key] = None  # the runtime pulls its next tick's worth

    def take_dirty(self) -> list[Hashable]:
        """Peers that have bytes queued since the last call (the runtime should flush them)."""
        if not self._dirty:
            return []
        d = list(self._dirty)
        self._dirty.clear()
        return d

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must next be called, or None."""
        t = self._timers
        while t and t[0][2] is None:
            heapq.heappop(t)
        return t[0][0] if t else None

    def handle_timer(self, now: float) -> None:
        self.now = now
        t = self._timers
        while t and t[0][0] <= now:
            entry = heapq.heappop(t)
            fn = entry[2]
            if fn is not None:
                fn(entry[3], now)

    def _schedule(self, when: float, fn: Callable[[Any, float], None], arg: Any) -> list[Any]:
        self._timer_n += 1
        entry = [when, self._timer_n, fn, arg]
        heapq.heappush(self._timers, entry)
        return entry

    @staticmethod
    def _cancel(entry: list[Any] | None) -> None:
        if entry is not None:
            entry[2] = entry[3] = None  # the argument too: a pending request and its timer point at each other

    def _push(self, s: Session, frame: bytes, qos: int, name: str | None = None, key: Hashable = None,
              droppable: bool = True) -> None:
        s.out.push(frame, qos, self.now, name, key, droppable)
        self._dirty[s.key] = None

    # ------------------------------------------------------------------------------------------
    # the API (the Transport adds the clock and the runtime)

    def on(self, name: str, handler: Handler) -> Subscription:
        """Handle envelopes named ``name`` that arrive here.  On a server, a handler's return value
        (or a Promise of it) answers a request; the first non-None value among the handlers wins."""
        info = self._known(name)
        incoming = "event" if self.role == "client" else "intent"
        if info.kind != incoming:
            raise LocalProtocolError(
                f"{name!r} is an {info.kind}: {info.kind}s travel "
                f"{'client -> server' if info.kind == 'intent' else 'server -> client'}, "
                f"so a {self.role} never receives one; a {self.role} can subscribe to {incoming}s"
            )
        return self.handlers.add(name, handler)

    def intent(self, name: str, payload: Any, now: float, *, qos_override: str | int | QoS | None = None,
               trace_id: str | None = None, require_subscriber: bool | None = None,
               reliable: bool | None = None, replayable: bool | None = None,
               coalesce_key: Hashable = None) -> Envelope | None:
        """Fire-and-forget.  Returns the envelope sent (None when release mode dropped an invalid one).

        ``coalesce_key``: while the link is saturated, a queued envelope of the same name and key is
        replaced by this one (names the registry lists under ``coalesce`` coalesce by name alone)."""
        self.now = now
        info = self._outgoing(name, "intent")
        s = self._client_session()
        if not self._valid_out(name, payload):
            return None
        qos = self._tier(info, qos_override)
        bits = Bits.REQUIRE_SUBSCRIBER if (self.require_subscriber if require_subscriber is None
                                           else require_subscriber) else 0
        flags = Flags.of(replayable, reliable)
        s.seq[info.chan] += 1
        env = Envelope(name, payload, Meta(s.seq[info.chan], qos, now, None, None, trace_id, flags))
        is_reliable = self._reliable[info.chan] if reliable is None else reliable
        if is_reliable:
            s.unacked[(info.chan, env.meta.seq)] = (env, info)
            bits |= Bits.ACK_REQUESTED
        self._send(s, info, env, encode_envelope(env, info.wire_id, bits), coalesce_key, droppable=not is_reliable)
        return env

    def request(self, name: str, payload: Any, now: float, *, timeout: float | None = None,
                retries: int | None = None, qos_override: str | int | QoS | None = None,
                trace_id: str | None = None, waiter: Waiter | None = None) -> Promise[Envelope]:
        """Send a request; the promise resolves with the response envelope or rejects with
        ``RequestTimeout`` (after ``1 + retries`` attempts), ``RemoteError``, ``ValidationError`` or
        ``ConnectionClosed``.  Retries wait an exponential backoff with jitter; CRITICAL defaults to 1."""
        self.now = now
        info = self._outgoing(name, "intent")
        s = self._client_session()
        p: Promise[Envelope] = Promise(waiter)
        timeout = self.request_timeout if timeout is None else timeout
        if timeout <= 0:
            raise LocalProtocolError(f"{name}: timeout must be > 0 seconds, got {timeout}")
        qos = self._tier(info, qos_override)
        if retries is None:
            retries = 1 if qos == QoS.CRITICAL else 0
        elif retries < 0:
            raise LocalProtocolError(f"{name}: retries must be >= 0, got {retries}")
        if not self._valid_out(name, payload):
            p.reject(ValidationError(name, self.schemas.validate(name, payload) or "invalid"))
            return p
        s.seq[info.chan] += 1
        env = Envelope(name, payload, Meta(s.seq[info.chan], qos, now, None, None, trace_id))
        frame = encode_envelope(env, info.wire_id, Bits.REQUEST)
        pend = PendingRequest(info, env, frame, p, retries, timeout, now)
        s.pending[(info.chan, env.meta.seq)] = pend
        pend.timer = self._schedule(now + timeout, self._on_request_timeout, (s, pend))
        self._send(s, info, env, frame)
        return p

    def emit(self, name: str, payload: Any, now: float, *, to: int | Iterable[int] | None = None,
             qos_override: str | int | QoS | None = None, trace_id: str | None = None,
             player_id: int | None = None, reliable: bool | None = None,
             replayable: bool | None = None, coalesce_key: Hashable = None) -> list[Envelope]:
        """Server: send an event to one player, a list of players, or (``to=None``) every player.

        ``player_id`` is the origin player stamped in the meta (e.g. the caster of a skill).  Returns the
        envelopes sent, one per recipient; a recipient that is not connected is skipped and counted.
        """
        self.now = now
        info = self._outgoing(name, "event")
        if not self._valid_out(name, payload):
            return []
        if to is None:
            targets: list[Session] = list(self._players.values())
        else:
            ids = [to] if isinstance(to, int) else list(to)
            targets = []
            for pid in ids:
                s = self._players.get(pid)
                if s is None:
                    self.stats.drop(name, "not_connected")
                else:
                    targets.append(s)
        qos = self._tier(info, qos_override)
        flags = Flags.of(replayable, reliable)
        body = pack_payload(payload)
        is_reliable = self._reliable[info.chan] if reliable is None else reliable
        bits = Bits.ACK_REQUESTED if is_reliable else 0
        sent = []
        for s in targets:
            s.seq[info.chan] += 1
            env = Envelope(name, payload, Meta(s.seq[info.chan], qos, now, None, player_id, trace_id, flags))
            if is_reliable:
                s.unacked[(info.chan, env.meta.seq)] = (env, info)
            self._send(s, info, env, encode_envelope(env, info.wire_id, bits, body), coalesce_key,
                       droppable=not is_reliable)
            sent.append(env)
        return sent

    def replay(self, channel: str | None, now: float, *, since: float | None = None) -> int:
        """Re-inject the buffered incoming envelopes of ``channel`` (None: all) received at or after
        ``since`` into the local handlers and bus, oldest first, marked ``meta.replayed``.  A replayed request
        runs its handlers; their answer goes nowhere.  Returns how many were replayed."""
        self.now = now
        if self.replay_buffer is None:
            raise LocalProtocolError("replay is off for this transport; init it with replay={'enabled': True}")
        if channel is not None and channel not in self.registry.channels:
            raise LocalProtocolError(
                f"no channel {channel!r} in the registry; channels: {', '.join(self.registry.channels)}")
        n = 0
        for entry in self.replay_buffer.entries(channel, since=since, direction="in"):
            env = entry.envelope
            if env.meta.is_response:
                continue
            env = replace(env, meta=replace(env.meta, replayed=True))
            self.bus.emit(env.name, env.payload, env.meta)
            for h in self.handlers.get(env.name):
                try:
                    h(env)
                except Exception as e:
                    self.stats[env.name].handler_errors += 1
                    log.exception("handler for %s raised on replay: %s", env.name, e)
            n += 1
        return n

    def close(self, now: float) -> None:
        """Close every session (a CLOSE frame is queued for each; flush, then drop the sockets)."""
        self.now = now
        for s in list(self._sessions.values()):
            self.close_session(s.key, "closing", f"the {self.role} closed the connection")
        self._timers.clear()

    # ------------------------------------------------------------------------------------------
    # send helpers

    def _known(self, name: str) -> NameInfo:
        info = self._info.get(name)
        if info is None:
            raise LocalProtocolError(self.registry._unknown(name))
        return info

    def _outgoing(self, name: str, kind: Kind) -> NameInfo:
        info = self._known(name)
        sender = "client" if kind == "intent" else "server"
        if info.kind != kind:
            how = "intents are sent by clients (intent/request)" if info.kind == "intent" else (
                "events are emitted by the server (emit)")
            raise LocalProtocolError(f"{name!r} is an {info.kind}, not an {kind}: {how}")
        if self.role != sender:
            raise LocalProtocolError(
                f"a {self.role} cannot send {name!r}: {kind}s travel "
                f"{'client -> server' if kind == 'intent' else 'server -> client'} "
                f"(channel {info.channel.name!r} is {info.channel.direction.value})"
            )
        return info

    def _client_session(self) -> Session:
        s = self._sessions.get(SERVER_PEER)
        if s is None or s.closed:
            why = f" ({s.close_code}: {s.close_message})" if s is not None else ""
            raise LocalProtocolError(f"not connected: the transport is closed{why}")
        return s  # while DETACHED, sends queue up for the reconnect

    def _valid_out(self, name: str, payload: Any) -> bool:
        reason = self.schemas.validate(name, payload)
        if reason is None:
            return True
        if self.mode == "dev":
            raise ValidationError(name, reason)
        st = self.stats[name]
        st.validation_errors += 1
        self.stats.drop(name, "invalid_payload")
        return False

    def _tier(self, info: NameInfo, override: str | int | QoS | None) -> QoS:
        declared = self._channel_qos[info.chan]
        if override is None:
            return declared
        try:
            qos = QoS.parse(override)
        except ValueError as e:
            raise LocalProtocolError(f"{info.name}: qos_override: {e}") from None
        if qos < declared:  # more urgent than the channel declares
            self.stats[info.name].qos_deviations += 1
            if info.name not in self._warned:
                self._warned.add(info.name)
                log.warning("%s: qos_override %s is above channel %s's declared tier %s (policy %s)",
                            info.name, qos.name, info.channel.name, declared.name, self.qos_policy)
            if self.qos_policy == "clamp":
                return declared
        return qos

    def _send(self, s: Session, info: NameInfo, env: Envelope, frame: bytes, coalesce_key: Hashable = None,
              droppable: bool = True) -> None:
        """Queue an envelope; ``droppable=False`` (reliable envelopes, responses) keeps it out of drop-oldest."""
        key = (info.name, coalesce_key) if coalesce_key is not None or info.coalesce else None
        self._push(s, frame, env.meta.qos, info.name, key, droppable)
        if self.replay_buffer is not None:
            self.replay_buffer.push(env, "out", self.now)
        st = self._ns[info.wire_id]
        st.sent += 1
        st.bytes_out += len(frame)
        if self.logger is not None:
            self._log(env, "out")

    def _log(self, env: Envelope, direction: str) -> None:
        assert self.logger is not None
        try:
            self.logger(env, direction)
        except Exception:
            log.exception("logger raised on %s (%s)", env.name, direction)

    # ------------------------------------------------------------------------------------------
    # receive path

    def _on_envelope(self, s: Session, fr: EnvelopeFrame, now: float) -> None:
        if s.state != OPEN:
            raise RemoteProtocolError("an envelope arrived before the handshake completed", code="handshake")
        env, bits = fr.envelope, fr.bits
        name = env.name
        info = self._info[name]
        st = self._ns[fr.wire_id]
        meta = env.meta
        if self.role == "server" and meta.player_id != s.player_id:
            # Decoded before the handshake set the decoder's stamp (pipelined after HELLO): stamp it here.
            if meta.player_id is not None:
                self.stats.count("spoofed_player_id")
            meta = replace(meta, player_id=s.player_id)
            env = Envelope(name, env.payload, meta)
        # Direction: a server takes intents (not responses); a client takes events and responses.
        expected = meta.is_response if self.role == "client" and info.kind == "intent" else (
            info.kind == ("intent" if self.role == "server" else "event") and not meta.is_response)
        if not expected:
            st.wrong_direction += 1
            self.stats.drop(name, "wrong_direction")
            log.warning("%r sent %s %s, which travels the other way; dropped", s.key,
                        "a response to" if meta.is_response else "the " + info.kind, name)
            if bits & Bits.REQUEST:
                self._nack(s, info, meta.seq, "wrong_direction",
                           f"{name} is an {info.kind}; a {self.role} does not accept it")
            return
        if bits & Bits.ACK_REQUESTED:  # acknowledged whatever happens next: the sender must stop re-sending
            acks = s.acks.get(info.chan)
            if acks is None:
                s.acks[info.chan] = [meta.seq]
            else:
                acks.append(meta.seq)
        if self.role == "server" and not bits & Bits.RETRANSMIT:
            bucket = s.buckets[info.chan]
            rate = self._rates[info.chan]
            tokens = min(rate, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if tokens < 1.0:
                bucket[0] = tokens
                self.stats.count("rate_limited")
                self.stats.drop(name, "rate_limited")
                if bits & Bits.REQUEST:
                    self._nack(s, info, meta.seq, "rate_limited",
                               f"more than {rate:g} envelopes/s on channel {info.channel.name}")
                return
            bucket[0] = tokens - 1.0
        window = s.windows[info.chan]
        verdict = window.check(meta.seq)
        if verdict != IN_ORDER:
            if verdict == LATE:
                st.seq_late += 1
            elif bits & Bits.RETRANSMIT:
                st.duplicates += 1
                if bits & Bits.REQUEST:
                    key = (info.chan, meta.seq)
                    cached = s.answered.get(key)
                    if cached is not None:
                        self._push(s, cached, meta.qos)
                    elif s.answered.evicted(key):  # it ran; its answer is gone: refuse, never run it twice
                        self._nack(s, info, meta.seq, "expired",
                                   f"request {meta.seq} already ran and its answer is no longer kept")
                return
            else:
                st.seq_regressions += 1
                self.stats.drop(name, "seq_regression" if verdict != DUPLICATE else "duplicate")
                return
        elif window.gap:
            st.seq_gaps += window.gap
        st.received += 1
        st.bytes_in += fr.size

        if meta.is_response:
            self._on_response(s, info, env, now)
            return
        reason = self.schemas.validate(name, env.payload)
        if reason is not None:
            st.validation_errors += 1
            self.stats.drop(name, "invalid_payload")
            log.warning("%r sent an invalid %s: %s", s.key, name, reason)
            if bits & Bits.REQUEST:
                self._nack(s, info, meta.seq, "invalid_payload", reason)
            return
        if self.role == "client":  # one-way latency on the server's clock
            self._lat[fr.wire_id][meta.qos](now + self.clock_offset - meta.ts_sent)
        if self.replay_buffer is not None:
            self.replay_buffer.push(env, "in", now)
        self.bus.emit(name, env.payload, meta)
        if self.logger is not None:
            self._log(env, "in")
        handlers = self.handlers.get(name)
        if bits & Bits.REQUEST:
            self._serve_request(s, info, env, handlers)
            return
        if not handlers:
            st.no_subscriber += 1
            if bits & Bits.REQUIRE_SUBSCRIBER:
                self._nack(s, info, meta.seq, "no_subscriber", f"no handler for {name} on the {self.role}")
            return
        for h in handlers:
            try:
                h(env)
            except Exception as e:
                st.handler_errors += 1
                log.exception("handler for %s raised: %s", name, e)

    def _serve_request(self, s: Session, info: NameInfo, env: Envelope, handlers: tuple[Handler, ...]) -> None:
        name, st = info.name, self.stats[info.name]
        key = (info.chan, env.meta.seq)
        if s.out.full(env.meta.qos):  # admission control: its answer could only wait behind a full queue
            self.stats.drop(name, "overloaded")
            self._nack(s, info, env.meta.seq, "overloaded",
                       f"the {env.meta.qos.name} queue to this player is full; try again later")
            return
        s.answered.start(key)
        if not handlers:
            st.no_subscriber += 1
            self._nack(s, info, env.meta.seq, "no_subscriber", f"no handler for {name} on the {self.role}", key)
            return
        result: Any = None
        try:
            for h in handlers:
                r = h(env)
                if result is None:
                    result = r
        except Exception as e:
            st.handler_errors += 1
            log.warning("handler for %s raised %s: %s", name, type(e).__name__, e)
            self._nack(s, info, env.meta.seq, "handler_error", f"{type(e).__name__}: {e}", key)
            return
        if isinstance(result, Promise):
            result.and_then(lambda v: self._respond(s, info, env, v)).catch(
                lambda e: self._handler_failed(s, info, env, e))
        else:
            self._respond(s, info, env, result)

    def _handler_failed(self, s: Session, info: NameInfo, req: Envelope, e: BaseException) -> None:
        self.stats[info.name].handler_errors += 1
        self._nack(s, info, req.meta.seq, "handler_error", f"{type(e).__name__}: {e}", (info.chan, req.meta.seq))

    def _respond(self, s: Session, info: NameInfo, req: Envelope, payload: Any) -> None:
        if s.closed:
            return
        name = info.name
        key = (info.chan, req.meta.seq)
        reason = self.schemas.validate(name, payload, response=True)
        if reason is not None:
            self.stats[name].validation_errors += 1
            self._nack(s, info, req.meta.seq, "handler_error", f"the response is invalid: {reason}", key)
            return
        try:
            body = pack_payload(payload)
        except LocalProtocolError as e:
            self._nack(s, info, req.meta.seq, "handler_error", f"the response cannot be sent: {e}", key)
            return
        now = self.now
        s.seq[info.chan] += 1
        env = Envelope(name, payload, Meta(s.seq[info.chan], req.meta.qos, now, now, s.player_id,
                                           req.meta.trace_id, Flags.of(), True, req.meta.seq))
        frame = encode_envelope(env, info.wire_id, 0, body)
        s.answered.store(key, frame)
        self._send(s, info, env, frame, droppable=False)  # someone is waiting for it

    def _nack(self, s: Session, info: NameInfo, seq: int, code: str, message: str,
              key: tuple[int, int] | None = None) -> None:
        frame = encode_control(Nack(info.wire_id, seq, code, message))
        if key is not None:
            s.answered.store(key, frame)
        self._push(s, frame, QoS.CRITICAL)

    def _on_response(self, s: Session, info: NameInfo, env: Envelope, now: float) -> None:
        pend = s.pending.pop((info.chan, env.meta.reply_to or 0), None)
        st = self.stats[info.name]
        if pend is None:
            st.late_responses += 1
            return
        self._cancel(pend.timer)
        self._lat[info.wire_id][pend.env.meta.qos](now - pend.first_sent)
        reason = self.schemas.validate(info.name, env.payload, response=True)
        if reason is not None:
            st.validation_errors += 1
            st.failures += 1
            pend.promise.reject(ValidationError(info.name + " response", reason))
            return
        if self.replay_buffer is not None:
            self.replay_buffer.push(env, "in", now)
        self.bus.emit(info.name, env.payload, env.meta)
        if self.logger is not None:
            self._log(env, "in")
        pend.promise.resolve(env)

    def _on_request_timeout(self, arg: tuple[Session, PendingRequest], now: float) -> None:
        s, pend = arg
        key = (pend.info.chan, pend.env.meta.seq)
        if s.pending.get(key) is not pend:
            return
        st = self.stats[pend.info.name]
        if pend.retries_left > 0:
            pend.retries_left -= 1
            backoff = min(self.retry_backoff_max, self.retry_backoff * 2 ** (pend.attempts - 1))
            pend.timer = self._schedule(now + backoff * self.rng.uniform(0.5, 1.5), self._retransmit, arg)
            return
        del s.pending[key]
        st.timeouts += 1
        st.failures += 1
        pend.promise.reject(RequestTimeout(pend.info.name, pend.attempts, pend.timeout))

    def _retransmit(self, arg: tuple[Session, PendingRequest], now: float) -> None:
        s, pend = arg
        if s.closed or s.pending.get((pend.info.chan, pend.env.meta.seq)) is not pend:
            return
        pend.attempts += 1
        self.stats[pend.info.name].retries += 1
        frame = encode_envelope(pend.env, pend.info.wire_id, Bits.REQUEST | Bits.RETRANSMIT)
        self._push(s, frame, pend.env.meta.qos)
        pend.timer = self._schedule(now + pend.timeout, self._on_request_timeout, arg)

    # ------------------------------------------------------------------------------------------
    # control frames

    def _on_control(self, s: Session, fr: Any, now: float) -> None:
        t = type(fr)
        if t is Nack:
            self._on_nack(s, fr)
        elif t is Hello:
            self._on_hello(s, fr, now)
        elif t is Welcome:
            self._on_welcome(s, fr, now)
        elif t is Close:
            log.info("%r closed the connection: %s: %s", s.key, fr.code, fr.message)
            self._end(s, fr.code, fr.message)
        elif t is Ping:
            self._push(s, encode_control(Pong(fr.ts, now)), 0)
        elif t is Pong:
            self._clock_sample(fr.echo, fr.ts, now)
        elif t is Ack:
            if not 0 <= fr.chan < len(self._channel_qos):
                raise RemoteProtocolError(f"ACK for unknown channel {fr.chan}", code="malformed_frame")
            listener = self.ack_listener
            for seq in fr.seqs:
                entry = s.unacked.pop((fr.chan, seq), None)
                if entry is not None and listener is not None:
                    listener(entry[0], now)

    def _on_nack(self, s: Session, fr: Nack) -> None:
        if not 0 <= fr.wire_id < len(self.registry.names):
            raise RemoteProtocolError(f"NACK for unknown wire id {fr.wire_id}", code="malformed_frame")
        info = self._info[self.registry.name_of(fr.wire_id)]
        pend = s.pending.pop((info.chan, fr.reply_to), None)
        st = self.stats[info.name]
        if pend is not None:
            self._cancel(pend.timer)
            st.failures += 1
            if fr.code == "no_subscriber":
                st.no_subscriber += 1
            pend.promise.reject(RemoteError(info.name, fr.code, fr.message))
        elif fr.code == "no_subscriber":
            st.no_subscriber += 1
            log.warning("%s: the %s has no subscriber (require_subscriber): %s", info.name,
                        "server" if self.role == "client" else "client", fr.message)
        else:
            log.warning("%s: peer refused seq %d: %s: %s", info.name, fr.reply_to, fr.code, fr.message)

    def _on_hello(self, s: Session, h: Hello, now: float) -> None:
        if self.role != "server" or s.state != HANDSHAKE:
            raise RemoteProtocolError("unexpected HELLO", code="handshake")
        if h.version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"protocol version mismatch: the client speaks {h.version}, the server {PROTOCOL_VERSION}",
                code="version_mismatch")
        if h.registry_hash != self.registry.hash:
            raise RemoteProtocolError(
                f"channel registry mismatch: client hash {h.registry_hash}, server hash {self.registry.hash}; "
                "both peers must load the same registry", code="registry_mismatch")
        pid = h.player_id
        if self.secret is not None and (pid is None or not verify_token(self.secret, pid, h.token)):
            raise RemoteProtocolError(f"bad auth token for player {pid}", code="bad_token")
        if pid is None:
            self._session_n += 1
            pid = self._session_n
            while pid in self._players:
                pid += 1
        self._cancel(s.expiry_timer)
        old = self._players.get(pid)
        if old is not None and old is not s and h.resume is not None and old.session_id == h.resume:
            self._resume(old, s, h, now)
            return
        if old is not None and old is not s:
            self.close_session(old.key, "replaced", f"player {pid} connected again")
            if old.state == DETACHED:
                self._end(old, "replaced", f"player {pid} connected again")
        self._session_n += 1
        s.session_id = f"{self._session_n:x}-{self.rng.getrandbits(48):012x}"
        s.player_id = pid
        s.decoder.player_id = pid
        s.state = OPEN
        self._players[pid] = s
        self.stats.count("connections")
        s.out.push_front(encode_control(Welcome(PROTOCOL_VERSION, s.session_id, pid, now, h.ts, False)), now)
        self._dirty[s.key] = None

    def _resume(self, old: Session, new: Session, h: Hello, now: float) -> None:
        """Re-attach a player's session (windows, dedup cache, queues, unacked envelopes) to a new connection."""
        if old.state == OPEN:  # the old connection is not known dead yet: it is now
            self._sessions.pop(old.key, None)
            self._dirty.pop(old.key, None)
        self._cancel(old.expiry_timer)
        self._cancel(old.tick_timer)
        old.tick_timer = None
        old.key = new.key
        old.decoder = new.decoder
        old.decoder.player_id = old.player_id
        old.out.restart()
        old.state = OPEN
        self._sessions[new.key] = old
        self.stats.count("resumes")
        old.out.push_front(encode_control(Welcome(PROTOCOL_VERSION, old.session_id or "", old.player_id, now,
                                                  h.ts, True)), now)
        self._dirty[new.key] = None
        self._resend(old)

    def _on_welcome(self, s: Session, w: Welcome, now: float) -> None:
        if self.role != "client" or s.state != HANDSHAKE:
            raise RemoteProtocolError("unexpected WELCOME", code="handshake")
        if s.session_id is not None and not w.resumed:
            # A fresh server session (ours expired, or the server restarted): its sequence numbers restart.
            s.windows = [ReceiveWindow() for _ in s.windows]
        elif w.resumed:
            self.stats.count("resumes")
        s.state = OPEN
        s.session_id = w.session
        s.player_id = w.player_id
        self.player_id = w.player_id
        self._clock_sample(w.echo, w.ts, now)
        self.stats.count("connections")
        if self.clock_sync_interval > 0:
            self._cancel(self._ping_timer)
            self._ping_timer = self._schedule(now + self.clock_sync_interval, self._ping, s)

    def _ping(self, s: Session, now: float) -> None:
        self._ping_timer = None
        if s.state == OPEN:
            self._push(s, encode_control(Ping(now)), 0)
        if not s.closed:
            self._ping_timer = self._schedule(now + self.clock_sync_interval, self._ping, s)

    def _clock_sample(self, sent: float, peer_ts: float, now: float) -> None:
        """NTP-style: the peer's clock read at ``peer_ts`` is taken to be the midpoint of our round trip;
        the offset of the sample with the shortest round trip among the last 8 wins."""
        rtt = max(0.0, now - sent)
        self._clock_samples = [*self._clock_samples[-7:], (rtt, peer_ts - (sent + now) / 2)]
        self.rtt, self.clock_offset = min(self._clock_samples)
        if self.clock_domain == "shared":  # one host's monotonic clock: the offset is exactly 0
            self.clock_offset = 0.0


