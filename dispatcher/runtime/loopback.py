"""The in-process runtime: a server core and any number of client cores, bytes delivered instantly.

For tests and library users.  Every call pumps bytes between the cores until nothing moves, so a request
to a handler that answers at once is settled when ``request()`` returns.  With a ``VirtualClock`` time
moves only through ``advance()``/``run_until()`` or a ``Promise.result(timeout)``, which jumps from timer
to timer: timeouts and retries are tested deterministically, with no sleeps.

``LoopbackHub`` is also the base of the simulated link (``sim.SimHub``), which only changes how bytes
travel (``_transmit``) and adds events in virtual time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ..auth import make_secret, make_token
from ..config import DispatcherConfig
from ..core import SERVER_PEER, Dispatcher
from ..errors import LocalProtocolError, RemoteProtocolError
from ..promise import Promise
from ..registry import ChannelRegistry
from ..transport import Transport
from .clock import Clock, MonotonicClock

__all__ = ["LoopbackHub", "loopback"]

UP, DOWN = "up", "down"  # client -> server, server -> client


class _Side:
    """The Runtime a loopback transport sees: the hub's clock and pump."""

    def __init__(self, hub: LoopbackHub, cid: Hashable | None) -> None:
        self.hub = hub
        self.cid = cid  # None for the server

    def now(self) -> float:
        return self.hub.clock.now()

    def flush(self) -> None:
        self.hub.pump()

    def wait(self, promise: Promise[Any], timeout: float | None) -> None:
        self.hub.wait(promise, timeout)

    def close(self) -> None:
        if self.cid is not None:
            self.hub.disconnect(self.cid)


class LoopbackHub:
    """One server and its players in one process.

    ``hub.server`` is the server transport; ``hub.connect(player_id=...)`` adds a player and returns its
    client transport.  ``hub.cut(client)`` loses everything sent on that link until ``hub.mend(client)``;
    ``hub.drop_connection(client)`` breaks the connection and reconnects it (the session resumes).
    """

    def __init__(self, channel_registry: ChannelRegistry, *, clock: Clock | None = None,
                 secret: bytes | str | None = None, config: DispatcherConfig | None = None,
                 schemas: Any = None, mode: str | None = None, server_info: Mapping[str, Any] | None = None,
                 server: Mapping[str, Any] | None = None, **server_options: Any) -> None:
        """``config`` (and ``schemas``, ``mode``) configure every peer of the hub; ``server`` (a dict) and
        ``server_options`` the server alone, ``connect(**client_options)`` one client."""
        self.registry = channel_registry
        self.clock = clock or MonotonicClock()
        self.secret = secret if secret is not None else make_secret()
        both: dict[str, Any] = {}
        if schemas is not None:
            both["schemas"] = schemas
        if mode is not None:
            both["mode"] = mode
        cfg = DispatcherConfig.of(config, **both)
        if not cfg.session.clock_id:  # they read one clock, so their clock domain is shared
            cfg = cfg.with_options(clock_id=self.clock.id)
        #: The configuration every peer starts from (``connect()`` options and ``server_options`` on top).
        self.config = cfg
        self.server_core = Dispatcher("server", channel_registry,
                                      cfg.with_options(**{**server_options, **dict(server or {})}),
                                      secret=self.secret, server_info=server_info)
        self.server = Transport(self.server_core, _Side(self, None))
        self._clients: dict[Hashable, Dispatcher] = {}  # by client id
        self._conn: dict[Hashable, Hashable] = {}  # client id -> its connection's key on the server
        self._client_of: dict[Hashable, Hashable] = {}  # connection key -> client id
        self._epoch: dict[Hashable, int] = {}  # connections a client has had
        self._cut_up: set[Hashable] = set()
        self._cut_down: set[Hashable] = set()
        self._n = 0
        self._pumping = False
        self._again = False

    # -- players ----------------------------------------------------------------------------------

    def connect(self, *, player_id: int | None = None, token: str | None = None,
                **client_options: Any) -> Transport:
        """A new player; raises ``RemoteProtocolError`` when the server refuses the handshake."""
        self._n += 1
        pid = self._n if player_id is None else player_id
        cid = f"loopback-{self._n}"
        core = Dispatcher("client", self.registry, self.config.with_options(**client_options), player_id=pid,
                          token=make_token(self.secret, pid) if token is None else token)
        self._clients[cid] = core
        self._epoch[cid] = 0
        self._attach(cid)
        core.open_session(self.clock.now())
        self.pump()
        s = core.session()
        self._run_while(lambda: s.handshaking, core.handshake_timeout)  # a link with latency: let it cross
        if not s.open:
            self.disconnect(cid)
            raise RemoteProtocolError(f"handshake refused: {s.close_code}: {s.close_message}",
                                      code=s.close_code or "handshake")
        return Transport(core, _Side(self, cid))

    def _attach(self, cid: Hashable) -> Hashable:
        """A new connection for client ``cid``: its key on the server."""
        key = cid if self._epoch[cid] == 0 else f"{cid}#{self._epoch[cid]}"
        self._conn[cid] = key
        self._client_of[key] = cid
        self.server_core.open_session(self.clock.now(), key)
        return key

    def client_key(self, transport: Transport) -> Hashable:
        """The server's key for this client's current connection."""
        side = transport.runtime
        assert isinstance(side, _Side) and side.cid is not None, "not a loopback client of this hub"
        return self._conn[side.cid]

    def _cid(self, transport: Transport) -> Hashable:
        side = transport.runtime
        assert isinstance(side, _Side) and side.cid is not None, "not a loopback client of this hub"
        return side.cid

    def cut(self, transport: Transport, direction: str = "both") -> None:
        """Lose every byte on this client's link until ``mend``: ``"up"`` (client -> server), ``"down"``
        (server -> client) or ``"both"``."""
        if direction not in (UP, DOWN, "both"):
            raise ValueError(f"direction is 'up', 'down' or 'both', got {direction!r}")
        cid = self._cid(transport)
        if direction in (UP, "both"):
            self._cut_up.add(cid)
        if direction in (DOWN, "both"):
            self._cut_down.add(cid)

    def mend(self, transport: Transport) -> None:
        cid = self._cid(transport)
        self._cut_up.discard(cid)
        self._cut_down.discard(cid)

    def drop_connection(self, transport: Transport, *, reconnect: bool = True) -> None:
        """Break this client's connection (no CLOSE: a crash or a network fault) and, with ``reconnect``,
        connect again at once: the client resumes its session."""
        self._break(self._cid(transport))
        if reconnect:
            self._reconnect(self._cid(transport))

    def _break(self, cid: Hashable) -> None:
        now = self.clock.now()
        self._epoch[cid] += 1  # bytes still in flight on the old connection are lost
        key = self._conn.pop(cid, None)
        if key is not None:
            self._client_of.pop(key, None)
            self.server_core.connection_lost(now, key)
        core = self._clients.get(cid)
        if core is not None:
            core.connection_lost(now)

    def _reconnect(self, cid: Hashable) -> None:
        core = self._clients.get(cid)
        if core is None or cid in self._conn:
            return
        self._attach(cid)
        core.reopen(self.clock.now())
        self.pump()

    def disconnect(self, cid: Hashable) -> None:
        core = self._clients.pop(cid, None)
        if core is None:
            return
        core.close_session(SERVER_PEER, "closed", "the client disconnected", notify=False)
        key = self._conn.pop(cid, None)
        if key is not None:
            self._client_of.pop(key, None)
            self.server_core.close_session(key, "closed", "the client disconnected", notify=False)
            self.server_core.forget(key)

    # -- moving bytes and time --------------------------------------------------------------

    def pump(self) -> None:
        """Move queued bytes both ways until nothing moves (re-entrant calls just ask for another round)."""
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                now = self.clock.now()
                for key in self.server_core.take_dirty():
                    data = self.server_core.data_to_send(now, key)
                    cid = self._client_of.get(key)
                    if data and cid is not None:
                        self._transmit(cid, DOWN, data, now)
                for cid, core in list(self._clients.items()):
                    if core.take_dirty():
                        data = core.data_to_send(now)
                        if data:
                            self._transmit(cid, UP, data, now)
        finally:
            self._pumping = False

    def _transmit(self, cid: Hashable, direction: str, data: bytes, now: float) -> None:
        """Put bytes on the link (here: delivered at once, unless the link is cut)."""
        if cid in (self._cut_up if direction == UP else self._cut_down):
            return
        self._deliver(cid, direction, data, now)
        self._again = True

    def _deliver(self, cid: Hashable, direction: str, data: bytes, now: float) -> None:
        try:
            if direction == DOWN:
                core = self._clients.get(cid)
                if core is not None:
                    core.receive_data(data, now)
            else:
                key = self._conn.get(cid)
                if key is not None:
                    self.server_core.receive_data(data, now, key)
        except RemoteProtocolError:
            self._again = True  # the CLOSE frame the receiver queued goes out on the next round

    def next_timer(self) -> float | None:
        times = [t for t in (c.next_timer() for c in (self.server_core, *self._clients.values())) if t is not None]
        return min(times) if times else None

    def _fire_timers(self, now: float) -> None:
        for c in (self.server_core, *self._clients.values()):
            c.handle_timer(now)
        self.pump()

    def run_until(self, t: float) -> None:
        """Move time to ``t``, firing every timer due on the way (a virtual clock jumps; a real one sleeps)."""
        while True:
            nt = self.next_timer()
            if nt is None or nt > t:
                break
            self._move_to(nt)
            self._fire_timers(self.clock.now())
        self._move_to(t)
        self._fire_timers(self.clock.now())

    def advance(self, dt: float) -> None:
        self.run_until(self.clock.now() + dt)

    def _move_to(self, t: float) -> None:
        if self.clock.virtual:
            if t > self.clock.now():
                self.clock.set(t)  # type: ignore[attr-defined]
        else:
            delay = t - self.clock.now()
            if delay > 0:
                time.sleep(delay)

    def wait(self, promise: Promise[Any], timeout: float | None) -> None:
        self._run_while(lambda: not promise.done(), timeout)

    def _run_while(self, waiting: Callable[[], bool], timeout: float | None) -> None:
        """Jump from timer to timer while ``waiting()``, for at most ``timeout`` seconds (None: until no timer
        is left, when nothing could change any more)."""
        deadline = None if timeout is None else self.clock.now() + timeout
        while waiting():
            nt = self.next_timer()
            if nt is None:
                return
            if deadline is not None and nt > deadline:
                self._move_to(deadline)
                return
            self._move_to(nt)
            self._fire_timers(self.clock.now())

    def close(self) -> None:
        for cid in list(self._clients):
            self.disconnect(cid)
        self.server.close()


def loopback(channel_registry: ChannelRegistry, *, clock: Clock | None = None, player_id: int = 1,
             config: DispatcherConfig | None = None, server: Mapping[str, Any] | None = None,
             client: Mapping[str, Any] | None = None, client_options: Mapping[str, Any] | None = None,
             secret: bytes | str | None = None, server_info: Mapping[str, Any] | None = None,
             token: str | None = None, **options: Any) -> tuple[Transport, Transport]:
    """An in-process ``(server, client)`` pair.

    ``config`` (a ``DispatcherConfig``) and the keyword ``options`` (``replay``, ``scheduler``, ``mode``,
    ``schemas``, ``limits``, ...) configure BOTH peers; ``server={...}`` and ``client={...}`` add options for
    one side only (``client_options`` is the old name of ``client``).  ``secret``/``server_info`` are the
    server's, ``player_id``/``token`` the client's.  ``server.runtime.hub`` adds players."""
    for side, extra in (("server", server), ("client", client), ("client_options", client_options)):
        if extra is not None and not isinstance(extra, Mapping):
            raise LocalProtocolError(f"loopback({side}=...) is a dict of options for that side, "
                                     f"got {type(extra).__name__}")
    shared = DispatcherConfig.of(config, **options)
    hub = LoopbackHub(channel_registry, clock=clock, secret=secret, config=shared, server_info=server_info,
                      server=server)
    peer = hub.connect(player_id=player_id, token=token, **{**dict(client_options or {}), **dict(client or {})})
    return hub.server, peer
