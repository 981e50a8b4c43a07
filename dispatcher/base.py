"""State and small helpers shared by the dispatching layer's halves (``receiving``, ``sending``, ``core``).

``CoreBase`` declares what a ``Dispatcher`` holds and the few operations every path needs: queue a frame
on a connection (CRITICAL bounded), refuse with a NACK (rate-limited), close a connection with a bounded,
escaped reason, and log a warning under the connection's log budget.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Hashable
from typing import Any, Final, Literal, Protocol

from .bus import EventBus, HandlerTable
from .clocksync import ClockSync
from .connection import Connection, NameInfo, State
from .envelope import Envelope, Meta, QoS
from .errors import ConnectionClosed, LocalProtocolError, RemoteProtocolError
from .limits import Limits
from .qos import SchedulerConfig
from .registry import ChannelRegistry, Kind
from .replay import ReplayBuffer
from .schema import SchemaRegistry
from .schematest import Test
from .stats import NameStats, Stats
from .tally import OneWayDue, Tally
from .text import LogGate, escape
from .timers import Timer, Timers
from .wire import Close, Nack, encode_control

__all__ = ["SERVER_PEER", "CoreBase", "Handler", "Logger", "Mode", "Role", "RoleSteps", "log"]

log = logging.getLogger("dispatcher")

Role = Literal["server", "client"]
Mode = Literal["dev", "release"]
Handler = Callable[[Envelope], Any]
Logger = Callable[[Envelope, str], Any]
AckListener = Callable[[Envelope, float], Any]

#: The key of a client's only connection.
SERVER_PEER: Final = "server"


class RoleSteps(Protocol):
    """What the dispatching layer asks of its role (``roles.ServerRole`` / ``roles.ClientRole``)."""

    name: str
    peer: str
    incoming: Kind

    def open(self, c: Connection, now: float) -> None: ...

    def handshake(self, c: Connection, fr: object, now: float) -> Connection: ...

    def expects(self, info: NameInfo, meta: Meta) -> bool: ...

    def charge(self, c: Connection, info: NameInfo, now: float) -> bool: ...

    def lost(self, c: Connection, now: float) -> None: ...


class CoreBase:
    role: Role
    impl: RoleSteps
    registry: ChannelRegistry
    schemas: SchemaRegistry
    mode: Mode
    qos_policy: Literal["warn", "clamp"]
    require_subscriber: bool
    stats: Stats
    player_id: int | None
    token: str | None
    secret: bytes | str | None
    max_frame_size: int
    request_timeout: float
    retry_backoff: float
    retry_backoff_max: float
    dedup_window: int
    dedup_bytes: int
    rng: random.Random
    scheduler: SchedulerConfig
    replay_buffer: ReplayBuffer | None
    bus: EventBus
    handlers: HandlerTable[Handler]
    logger: Logger | None
    limits: Limits
    _handshake_log: LogGate | None = None
    clock_id: str
    server_info: dict[str, Any]
    clock: ClockSync
    resume_grace: float
    clock_sync_interval: float
    wall_clock: Callable[[], float]
    timers: Timers
    _channel_qos: list[QoS]
    _rates: list[float]
    _reliable: list[bool]
    _info: dict[str, NameInfo]
    _sendable: dict[str, NameInfo]
    _ns: list[NameStats]
    _lat: list[list[Tally]]  # ``stats.bind_latency``: empty when the stats are off
    _timed: bool  # the stats are on: latencies are recorded
    _one_way: bool  # and this is a client: each event's one-way latency too
    _one_way_due: OneWayDue  # the events delivered in this read (``_count_one_way``)
    _sessions: dict[Hashable, Connection]
    _players: dict[int, Connection]
    _dirty: dict[Hashable, None]
    _tick_at: dict[Hashable, float]
    _warned: set[str]
    _ack_listeners: list[AckListener]
    _charges: Callable[[Connection, NameInfo, float], bool] | None
    _by_wire: list[NameInfo]  # by wire id
    _handler_table: dict[str, tuple[Handler, ...]]  # ``handlers.table``
    _bus_table: dict[str, tuple[Callable[[Any, Meta], Any], ...]]  # ``bus.table``
    _unfolded: int  # frames received since the latency samples were last folded
    _fold_at: float  # and when they are next folded whatever that count
    _crit_frames: int  # ``limits.critical_frames`` and ``critical_bytes`` (read per CRITICAL frame queued)
    _crit_bytes: int
    _tests: dict[str, Test]  # ``schemas.tests``
    _accepts: list[tuple[bool, bool]]  # by wire id: whether this side accepts it as (not a response, a response)

    # -- queueing ------------------------------------------------------------------------------------

    def _push(self, c: Connection, frame: bytes, qos: int, now: float, name: str | None = None,
              key: Hashable = None, droppable: bool = True) -> None:
        out = c.out
        out.push(frame, qos, now, name, key, droppable)
        self._dirty[c.key] = None
        if qos == 0 and (out.counts[0] > self.limits.critical_frames or out.qbytes[0] > self.limits.critical_bytes):
            self._overrun(c, now)

    def _overrun(self, c: Connection, now: float) -> None:
        """More CRITICAL frames or bytes queued to ``c`` than the limits allow: the peer is not reading."""
        self.stats.count("critical_overruns")
        self.close_session(c.key, "overloaded",
                           f"more than {self.limits.critical_frames} frames or {self.limits.critical_bytes} "
                           "bytes queued on CRITICAL to this peer", now=now)

    def _nack(self, c: Connection, info: NameInfo, seq: int, code: str, message: str, now: float,
              key: tuple[int, int] | None = None) -> None:
        # The budget first: a suppressed NACK costs no escaping or encoding (unless a retransmission's
        # cached answer needs the frame).
        allowed = c.nacks.take(now)
        if allowed or key is not None:
            frame = encode_control(Nack(info.wire_id, seq, code, escape(message, self.limits.reason_chars)))
            if key is not None:
                c.answered.store(key, frame)
        if not allowed:
            self.stats.count("nacks_suppressed")
            return
        self._push(c, frame, QoS.CRITICAL, now)

    def _count_one_way(self, now: float) -> None:
        """The one-way latency of each event ``_deliver`` queued (at the end of each read, and before a Pong
        moves the clock offset), on the server's clock, counted in a loop of its own (``OneWayDue.count``).
        Callgrind with cache simulation, the bench's events loop, stats on against off, per event: computed
        on each event's path, +408 instructions, +36 first-level instruction-cache and +54 data-cache misses;
        counted this way, +438, +20 and -11.  The queue holds the events of one read at most."""
        skewed = self._one_way_due.count(now + self.clock.offset, self._lat)
        if skewed:
            self.stats.count("clock_skew", skewed)

    def _schema_reason(self, name: str, payload: Any, key: str | None = None) -> str | None:
        """Why ``payload`` is invalid for ``name`` (``key``: its response's schema key), or None: the compiled
        test first (no call into the registry per envelope), the validator only when it says no."""
        k = name if key is None else key
        test = self._tests.get(k)
        if test is None or test.ok(payload):
            return None
        return self.schemas.reason(k, payload)

    def _declared(self, info: NameInfo) -> QoS:
        """The tier this side gives ``info``'s channel: the registry's, with this side's overrides."""
        return self._channel_qos[info.chan]

    def _send(self, c: Connection, info: NameInfo, env: Envelope | None, frame: bytes, now: float,
              coalesce_key: Hashable = None, droppable: bool = True, qos: int = -1) -> None:
        """Queue an envelope; ``droppable=False`` (reliable envelopes, responses) keeps it out of drop-oldest.
        ``qos``: ``env.meta.qos`` when the caller has it at hand.  ``env`` may be None (with ``qos``) only when
        there is no replay buffer and no logger to see it."""
        key = (info.name, coalesce_key) if coalesce_key is not None or info.coalesce else None
        if qos < 0:
            assert env is not None
            qos = env.meta.qos
        out = c.out  # ``_push``, inline
        out.push(frame, qos, now, info.name, key, droppable)
        self._dirty[c.key] = None
        if qos == 0 and (out.counts[0] > self._crit_frames or out.qbytes[0] > self._crit_bytes):
            self._overrun(c, now)
        if self.replay_buffer is not None and env is not None:
            self.replay_buffer.push(env, "out", now)
        st = self._ns[info.wire_id]
        st.sent += 1
        st.bytes_out += len(frame)
        if self.logger is not None and env is not None:
            self._log(env, "out")

    def _log(self, env: Envelope, direction: str) -> None:
        assert self.logger is not None
        try:
            self.logger(env, direction)
        except Exception:
            log.exception("logger raised on %s (%s)", env.name, direction)

    # -- closing -------------------------------------------------------------------------------------

    def close_session(self, peer: Hashable, code: str = "closed", message: str = "connection closed",
                      *, notify: bool = True, now: float = 0.0) -> None:
        """End a connection: pending requests reject with ``ConnectionClosed``; with ``notify`` the peer gets
        a CLOSE frame (the next ``data_to_send`` returns it first), then the runtime closes the socket."""
        c = self._sessions.get(peer)
        if c is None or c.closed:
            return
        message = escape(message, self.limits.reason_chars)
        if notify and c.state != State.DETACHED:
            c.close_frame = encode_control(Close(escape(code, 40), message))
            self._dirty[c.key] = None
        self._end(c, code, message, State.CLOSING if notify else State.CLOSED)

    def _end(self, c: Connection, code: str, message: str, state: State = State.CLOSED) -> None:
        if c.state == State.OPEN:
            self.stats.count("disconnects")
        c.enter(state, self.limits)
        c.close_code, c.close_message = code, message
        if c.player_id is not None and self._players.get(c.player_id) is c:
            del self._players[c.player_id]
        Timers.cancel(c.watchdog)
        self._tick_at.pop(c.key, None)
        pending, c.pending = c.pending, {}
        for p in pending.values():
            Timers.cancel(p.timer)
            self.stats[p.info.name].failures += 1
            p.promise.reject(ConnectionClosed(code, message))

    def _protocol_failure(self, c: Connection, e: RemoteProtocolError, now: float) -> None:
        self._warn(c, now, "closing %s: %s: %s", escape(str(c.key), 80), e.code, escape(str(e)))
        if c.state == State.AWAITING_AUTH:
            self.stats.count("handshake_failures")
        self.close_session(c.key, e.code, str(e), now=now)

    # -- logging -------------------------------------------------------------------------------------

    def _warn(self, c: Connection | None, now: float, fmt: str, *args: Any) -> None:
        """A warning under ``c``'s log budget; every argument a peer chose must be ``escape``d by the caller."""
        if c is not None and not (c.log.allow(now) and (c.state != State.AWAITING_AUTH
                                                         or self._handshake_log_allows(now))):
            self.stats.count("log_lines_suppressed")
            return
        log.warning(fmt, *args)

    def _handshake_log_allows(self, now: float) -> bool:
        """The budget shared by every connection still in its handshake (``handshake_log_lines_per_minute``)."""
        if self._handshake_log is None:
            self._handshake_log = LogGate(self.limits.handshake_log_lines_per_minute)
        return self._handshake_log.allow(now)

    # -- implemented by the halves (declared here so that roles need only this class) -------------------

    def _resend(self, c: Connection, now: float) -> None:
        raise NotImplementedError

    def _new_connection(self, key: Hashable, now: float) -> Connection:
        raise NotImplementedError

    # -- names and timers ----------------------------------------------------------------------------

    def _known(self, name: str) -> NameInfo:
        info = self._info.get(name)
        if info is None:
            raise LocalProtocolError(self.registry._unknown(name))
        return info

    def _schedule(self, when: float, fn: Callable[[Any, float], None], arg: Any) -> Timer:
        return self.timers.schedule(when, fn, arg)
