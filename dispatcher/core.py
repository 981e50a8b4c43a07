"""The sans-I/O dispatcher core (seed: ``Dispatcher.lua``): the dispatching layer over per-peer connections.

One ``Dispatcher`` per peer role.  It never touches a socket, a clock or a greenlet: runtimes feed it
bytes with ``receive_data(data, now, peer)``, take bytes with ``data_to_send(now, peer)``, ask
``next_timer()`` when it next needs waking and call ``handle_timer(now)`` then.  A server has one
``Connection`` per connected player (``peer`` is the runtime's key for it); a client has one.

The layers: ``connection`` (the per-peer state machine and what it admits), ``receiving`` (the inbound
pipeline), ``sending`` (the API and retries), ``roles`` (server and client: handshake, direction, budgets,
timers).  Handlers and bus subscribers run synchronously inside ``receive_data``; sends they make are
queued and reported by ``take_dirty()`` so the runtime knows which connections have bytes to write.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from .base import SERVER_PEER, AckListener, Handler, Logger, Role
from .bus import EventBus, HandlerTable
from .clocksync import ClockSync, Domain
from .config import DispatcherConfig
from .connection import Answers, Connection, NameInfo, State
from .decoder import FrameDecoder
from .envelope import QoS, make_meta
from .errors import LocalProtocolError, RegistryError
from .qos import Scheduler
from .receiving import Receiver
from .registry import ChannelRegistry
from .replay import ReplayBuffer
from .roles import ClientRole, ServerRole
from .schema import SchemaRegistry
from .stats import NullStats, Stats
from .tally import OneWayDue
from .timers import Timers
from .wire import pack_payload

__all__ = ["SERVER_PEER", "Dispatcher", "Handler", "Logger", "Session"]

Session = Connection


class Dispatcher(Receiver):
    """The dispatcher core for one peer role (``"server"`` or ``"client"``)."""

    def __init__(
        self,
        role: Role,
        registry: ChannelRegistry,
        config: DispatcherConfig | None = None,
        *,
        player_id: int | None = None,
        token: str | None = None,
        secret: bytes | str | None = None,
        server_info: Mapping[str, Any] | None = None,
        wall_clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        """``config`` (a ``DispatcherConfig``) and/or its keyword ``options`` (``mode``, ``scheduler``,
        ``replay``, ``limits``, ``request_timeout``, ... see ``config.OPTIONS``); ``player_id``/``token``
        (a client) and ``secret``/``server_info`` (a server) say who this peer is."""
        if role not in ("server", "client"):
            raise LocalProtocolError(f"peer must be 'server' or 'client', got {role!r}")
        if not isinstance(registry, ChannelRegistry):
            raise LocalProtocolError(
                f"channel_registry must be a ChannelRegistry (use ChannelRegistry.load or .from_dict), "
                f"got {type(registry).__name__}"
            )
        cfg = DispatcherConfig.of(config, **options)
        self.config = cfg
        self.role = role
        self.impl = ServerRole(self) if role == "server" else ClientRole(self)
        # The role's per-envelope steps, bound once (None: this role has no such step).
        self._charges = self.impl.charge if role == "server" else None
        self.registry = registry
        self.schemas = cfg.schemas if cfg.schemas is not None else SchemaRegistry(None)
        self.schemas.check_names(registry.names)
        self._tests = self.schemas.tests  # the same dict for the core's life
        self.mode = cfg.mode
        self.qos_policy = cfg.qos_policy
        self.require_subscriber = cfg.require_subscriber
        self.stats = Stats() if cfg.stats else NullStats()
        self.player_id = player_id
        self.token = token
        self.secret = secret
        self.max_frame_size = cfg.max_frame_size
        req = cfg.requests
        self.request_timeout = req.timeout
        self.retry_backoff = req.retry_backoff
        self.retry_backoff_max = req.retry_backoff_max
        self.dedup_window = req.dedup_window
        self.dedup_bytes = req.dedup_bytes
        self.rng = random.Random(cfg.seed)
        self.scheduler = cfg.scheduler
        rc = cfg.replay
        self.replay_buffer = (ReplayBuffer(registry.hash, buffer_size=rc.buffer_size, max_age=rc.max_age)
                              if rc.enabled else None)
        lim = cfg.limits
        self.limits = lim
        self._crit_frames, self._crit_bytes = lim.critical_frames, lim.critical_bytes
        self.server_info = self._check_server_info(server_info)
        self.clock_id = cfg.session.clock_id
        self.wall_clock = wall_clock
        self.bus = EventBus()
        self.handlers = HandlerTable()
        self._handler_table, self._bus_table = self.handlers.table, self.bus.table
        self.logger = None
        self._ack_listeners = []
        self._ack_legacy: AckListener | None = None
        self.clock = ClockSync()
        self.resume_grace = cfg.session.resume_grace
        self.clock_sync_interval = cfg.session.clock_sync_interval
        self.timers = Timers()

        chan_index = {name: i for i, name in enumerate(registry.channels)}
        self._channel_qos = [ch.qos for ch in registry.channels.values()]
        for ch_name, tier in cfg.qos_overrides:
            if ch_name not in chan_index:
                raise RegistryError(
                    f"qos_overrides names channel {ch_name!r}, which the registry does not declare; "
                    f"channels: {', '.join(chan_index)}"
                )
            self._channel_qos[chan_index[ch_name]] = tier
        rates = cfg.rate_limit_map()
        default_rate = float(rates.pop("default", 500.0))
        for ch_name in rates:
            if ch_name not in chan_index:
                raise RegistryError(f"rate_limits names channel {ch_name!r}, which the registry does not declare")
        # Envelopes per second a player may send on each channel (Roblox allows ~500 fires/s per remote).
        self._rates = [float(rates.get(ch, default_rate)) for ch in chan_index]
        self._reliable = [ch.reliable for ch in registry.channels.values()]
        self._info = {
            n: NameInfo(n, registry.wire_id(n), registry.channel_of(n), chan_index[registry.channel_of(n).name],
                        registry.kind(n), n in registry.channel_of(n).coalesce)
            for n in registry.names
        }
        # The names this side may send (the checks of ``_outgoing``, made once).
        self._sendable = {n: i for n, i in self._info.items() if i.kind != self.impl.incoming}
        self._by_wire = [self._info[n] for n in registry.names]
        probes = (make_meta(0, QoS.BACKGROUND, 0.0), make_meta(0, QoS.BACKGROUND, 0.0, is_response=True))
        self._accepts = [(self.impl.expects(i, probes[0]), self.impl.expects(i, probes[1])) for i in self._by_wire]
        self._ns = self.stats.bind(registry.names)  # NameStats by wire id (the hot path's counters)
        self._lat = self.stats.bind_latency(registry.names)  # [wire id][tier] -> samples (seconds)
        self._timed = self.stats.enabled
        self._one_way = self._timed and role == "client"
        self._one_way_due = OneWayDue()
        self._unfolded = 0
        self._fold_at = 0.0  # the first input folds at once: histograms take their memory when a run starts
        self._sessions = {}
        self._players = {}
        self._dirty = {}
        self._tick_at = {}  # connections whose scheduler waits for its next tick, and when
        self._ticks: list[tuple[float, int, Hashable]] = []
        self._tick_n = 0
        self._warned = set()

    def _check_server_info(self, info: Mapping[str, Any] | None) -> dict[str, Any]:
        if info is None:
            return {}
        if not isinstance(info, Mapping) or not all(isinstance(k, str) for k in info):
            raise LocalProtocolError("server_info is a dict with string keys")
        size = len(pack_payload(dict(info)))
        if size > self.limits.server_info_bytes:
            raise LocalProtocolError(f"server_info packs to {size} bytes; at most {self.limits.server_info_bytes} "
                                     "are allowed (limits.server_info_bytes)")
        return dict(info)

    # -- identity and clocks -----------------------------------------------------------------------------

    @property
    def handshake_timeout(self) -> float:
        return self.limits.handshake_timeout

    @property
    def clock_offset(self) -> float:
        """The server's clock minus ours, in seconds (client side)."""
        return self.clock.offset

    @property
    def clock_error(self) -> float:
        return self.clock.error

    @property
    def clock_domain(self) -> Domain:
        return self.clock.domain

    @property
    def rtt(self) -> float | None:
        return self.clock.rtt

    # -- acknowledgements ----------------------------------------------------------------------------

    def on_ack(self, callback: AckListener) -> Callable[[], None]:
        """``callback(envelope, now)`` when a reliable envelope this side sent is acknowledged; returns a
        handle that unsubscribes."""
        self._ack_listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._ack_listeners:
                self._ack_listeners.remove(callback)

        return unsubscribe

    @property
    def ack_listener(self) -> AckListener | None:
        """The single listener of earlier versions (kept until the harness uses ``on_ack``)."""
        return self._ack_legacy

    @ack_listener.setter
    def ack_listener(self, fn: AckListener | None) -> None:
        if self._ack_legacy is not None and self._ack_legacy in self._ack_listeners:
            self._ack_listeners.remove(self._ack_legacy)
        self._ack_legacy = fn
        if fn is not None:
            self._ack_listeners.append(fn)

    # -- connections ---------------------------------------------------------------------------------

    def _new_connection(self, key: Hashable, now: float) -> Connection:
        lim = self.limits
        decoder = FrameDecoder(self.registry.names, self.max_frame_size, limit=lim.preauth_frame_size,
                               chunk_budget=lim.chunk_budget, max_depth=lim.payload_depth)
        return Connection(key, self.role, len(self._channel_qos), decoder, Scheduler(self.scheduler, self.stats),
                          Answers(self.dedup_window, self.dedup_bytes), lim, now)

    def open_session(self, now: float, peer: Hashable = SERVER_PEER) -> Connection:
        """A new connection.  A server sends its CHALLENGE at once; a client answers it with HELLO."""
        if peer in self._sessions and not self._sessions[peer].closed:
            raise LocalProtocolError(f"a session for {peer!r} is already open")
        c = self._new_connection(peer, now)
        self._sessions[peer] = c
        self.impl.open(c, now)
        return c

    def connection_lost(self, now: float, peer: Hashable = SERVER_PEER) -> None:
        """The runtime lost ``peer``'s connection without a CLOSE.  An open session is kept DETACHED for
        ``resume_grace`` seconds (a server) or until ``reopen`` (a client); pending requests stay pending."""
        c = self._sessions.get(peer)
        if c is None or c.closed or c.state == State.DETACHED:
            return
        if c.state != State.OPEN or self.resume_grace <= 0:
            self.forget(peer)
            return
        self.impl.lost(c, now)

    def reopen(self, now: float) -> Connection:
        """Client: a new connection replaces the lost one.  After the server's CHALLENGE, HELLO asks it to
        resume the session; unacknowledged reliable envelopes and pending requests go again, flagged as
        retransmissions (the server's windows make them count once)."""
        c = self._sessions.get(SERVER_PEER)
        if c is None or c.closed:
            raise LocalProtocolError("nothing to reopen: the session is closed")
        lim = self.limits
        c.decoder = FrameDecoder(self.registry.names, self.max_frame_size, limit=lim.preauth_frame_size,
                                 chunk_budget=lim.chunk_budget, max_depth=lim.payload_depth)
        c.out.restart()
        c.enter(State.AWAITING_AUTH, self.limits)
        c.hello_sent = False
        c.held = True
        c.resuming = True
        c.nonce = None
        return c

    def session(self, peer: Hashable = SERVER_PEER) -> Connection:
        try:
            return self._sessions[peer]
        except KeyError:
            raise LocalProtocolError(f"no session for peer {peer!r}") from None

    def session_or_none(self, peer: Hashable = SERVER_PEER) -> Connection | None:
        return self._sessions.get(peer)

    @property
    def sessions(self) -> list[Connection]:
        return list(self._sessions.values())

    def players(self) -> list[int]:
        """Player ids with an open session (server)."""
        return list(self._players)

    def forget(self, peer: Hashable) -> None:
        """Drop a closed connection's state (the runtime closed its socket)."""
        c = self._sessions.get(peer)
        if c is not None:
            if not c.closed:
                self._end(c, "closed", "connection dropped")
            c.enter(State.CLOSED, self.limits)
            c.out.close()
            del self._sessions[peer]
            self._dirty.pop(peer, None)
            self._tick_at.pop(peer, None)

    def close(self, now: float) -> None:
        """Close every connection (a CLOSE frame is queued for each; flush, then drop the sockets)."""
        for c in list(self._sessions.values()):
            self.close_session(c.key, "closing", f"the {self.role} closed the connection", now=now)
        self.timers.clear()

    # -- bytes out, timers ---------------------------------------------------------------------------

    def data_to_send(self, now: float, peer: Hashable = SERVER_PEER) -> bytes:
        """The bytes to write to ``peer`` now.  No side effect on timers: ``next_timer`` says when the
        scheduler's next tick is due."""
        c = self._sessions.get(peer)
        if c is None or c.state == State.DETACHED or c.held:
            return b""
        data = c.out.pull(now)
        if c.closed:
            close, c.close_frame = c.close_frame, None
            data = data + close if close else data
        elif (wake := c.out.next_wakeup()) is not None and self._tick_at.get(peer) != wake:
            self._tick_at[peer] = wake
            self._tick_n += 1
            heapq.heappush(self._ticks, (wake, self._tick_n, peer))
        if data:
            self.stats.count("bytes_out", len(data))
        return data

    def take_dirty(self) -> list[Hashable]:
        """Peers that have bytes queued since the last call (the runtime should flush them)."""
        if not self._dirty:
            return []
        d = list(self._dirty)
        self._dirty.clear()
        return d

    def has_dirty(self) -> bool:
        """Whether some peer has bytes queued since the last ``take_dirty`` (which this does not reset)."""
        return bool(self._dirty)

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must next be called, or None."""
        ticks, at = self._ticks, self._tick_at
        while ticks and at.get(ticks[0][2]) != ticks[0][0]:
            heapq.heappop(ticks)
        t = self.timers.next()
        if ticks and (t is None or ticks[0][0] < t):
            return ticks[0][0]
        return t

    def handle_timer(self, now: float, limit: int | None = None) -> bool:
        """Do what is due at ``now``: ticks, then timers (at most ``limit`` of them, so that a runtime can let
        other work in between when thousands fall due together).  True if some due timers are left."""
        ticks, at = self._ticks, self._tick_at
        while ticks and ticks[0][0] <= now:
            wake, _, peer = heapq.heappop(ticks)
            if at.get(peer) == wake:
                del at[peer]
                c = self._sessions.get(peer)
                if c is not None and not c.closed:
                    self._dirty[peer] = None  # the runtime pulls its next tick's worth
        return self.timers.fire(now, limit)
