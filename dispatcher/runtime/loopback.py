"""The in-process runtime: a server core and any number of client cores, bytes delivered instantly.

For tests and library users.  Every call pumps bytes between the cores until nothing moves, so a request
to a handler that answers at once is settled when ``request()`` returns.  With a ``VirtualClock`` time
moves only through ``advance()``/``run_until()`` or a ``Promise.result(timeout)``, which jumps from timer
to timer: timeouts and retries are tested deterministically, with no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

from ..auth import make_secret, make_token
from ..core import SERVER_PEER, Dispatcher
from ..errors import RemoteProtocolError
from ..promise import Promise
from ..registry import ChannelRegistry
from ..transport import Transport
from .clock import Clock, MonotonicClock

__all__ = ["LoopbackHub", "loopback"]


class _Side:
    """The Runtime a loopback transport sees: the hub's clock and pump."""

    def __init__(self, hub: LoopbackHub, key: Hashable | None) -> None:
        self.hub = hub
        self.key = key  # None for the server

    def now(self) -> float:
        return self.hub.clock.now()

    def flush(self) -> None:
        self.hub.pump()

    def wait(self, promise: Promise[Any], timeout: float | None) -> None:
        self.hub.wait(promise, timeout)

    def close(self) -> None:
        if self.key is not None:
            self.hub.disconnect(self.key)


class LoopbackHub:
    """One server and its players in one process.

    ``hub.server`` is the server transport; ``hub.connect(player_id=...)`` adds a player and returns its
    client transport.  ``hub.cut(client)`` loses everything sent on that link until ``hub.mend(client)``.
    """

    def __init__(self, channel_registry: ChannelRegistry, *, clock: Clock | None = None,
                 secret: bytes | str | None = None, schemas: Any = None, mode: str = "dev",
                 **server_options: Any) -> None:
        self.registry = channel_registry
        self.shared: dict[str, Any] = {"schemas": schemas, "mode": mode}  # both peers, unless connect() says
        self.clock = clock or MonotonicClock()
        self.secret = secret if secret is not None else make_secret()
        self.server_core = Dispatcher("server", channel_registry, secret=self.secret, **self.shared,
                                      **server_options)
        self.server = Transport(self.server_core, _Side(self, None))
        self._clients: dict[Hashable, Dispatcher] = {}
        self._cut_up: set[Hashable] = set()
        self._cut_down: set[Hashable] = set()
        self._n = 0
        self._pumping = False
        self._again = False

    def connect(self, *, player_id: int | None = None, token: str | None = None,
                **client_options: Any) -> Transport:
        """A new player; raises ``RemoteProtocolError`` when the server refuses the handshake."""
        self._n += 1
        pid = self._n if player_id is None else player_id
        key = f"loopback-{self._n}"
        core = Dispatcher("client", self.registry, player_id=pid,
                          token=make_token(self.secret, pid) if token is None else token,
                          **{**self.shared, **client_options})
        now = self.clock.now()
        self._clients[key] = core
        self.server_core.open_session(now, key)
        core.open_session(now)
        self.pump()
        s = core.session()
        if not s.open:
            self.disconnect(key)
            raise RemoteProtocolError(f"handshake refused: {s.close_code}: {s.close_message}",
                                      code=s.close_code or "handshake")
        return Transport(core, _Side(self, key))

    def client_key(self, transport: Transport) -> Hashable:
        side = transport.runtime
        assert isinstance(side, _Side) and side.key is not None, "not a loopback client of this hub"
        return side.key

    def cut(self, transport: Transport, direction: str = "both") -> None:
        """Lose every byte on this client's link until ``mend``: ``"up"`` (client -> server), ``"down"``
        (server -> client) or ``"both"``."""
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction is 'up', 'down' or 'both', got {direction!r}")
        key = self.client_key(transport)
        if direction in ("up", "both"):
            self._cut_up.add(key)
        if direction in ("down", "both"):
            self._cut_down.add(key)

    def mend(self, transport: Transport) -> None:
        key = self.client_key(transport)
        self._cut_up.discard(key)
        self._cut_down.discard(key)

    def disconnect(self, key: Hashable) -> None:
        core = self._clients.pop(key, None)
        if core is None:
            return
        core.close_session(SERVER_PEER, "closed", "the client disconnected", notify=False)
        self.server_core.close_session(key, "closed", "the client disconnected", notify=False)
        self.server_core.forget(key)

    # -- moving bytes and time --------------------------------------------------------------

    def pump(self) -> None:
        """Deliver queued bytes both ways until nothing moves (re-entrant calls just ask for another round)."""
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
                    core = self._clients.get(key)
                    if data and core is not None and key not in self._cut_down:
                        self._deliver(core, data, now, SERVER_PEER, key)
                        self._again = True
                for key, core in list(self._clients.items()):
                    if not core.take_dirty():
                        continue
                    data = core.data_to_send(now)
                    if data and key not in self._cut_up:
                        self._deliver(self.server_core, data, now, key, key)
                        self._again = True
        finally:
            self._pumping = False

    def _deliver(self, core: Dispatcher, data: bytes, now: float, peer: Hashable, key: Hashable) -> None:
        try:
            core.receive_data(data, now, peer)
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
        deadline = None if timeout is None else self.clock.now() + timeout
        while not promise.done():
            nt = self.next_timer()
            if nt is None:
                return  # nothing will ever settle it
            if deadline is not None and nt > deadline:
                self._move_to(deadline)
                return
            self._move_to(nt)
            self._fire_timers(self.clock.now())

    def close(self) -> None:
        for key in list(self._clients):
            self.disconnect(key)
        self.server.close()


def loopback(channel_registry: ChannelRegistry, *, clock: Clock | None = None, player_id: int = 1,
             client_options: dict[str, Any] | None = None, **options: Any) -> tuple[Transport, Transport]:
    """An in-process ``(server, client)`` pair.  ``schemas`` and ``mode`` go to both peers, other
    ``options`` to the server, ``client_options`` to the client.  ``server.runtime.hub`` adds players."""
    hub = LoopbackHub(channel_registry, clock=clock, **options)
    client = hub.connect(player_id=player_id, **(client_options or {}))
    return hub.server, client

