"""The public ``Transport`` object: the seed's API around a core and a runtime."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

from .bus import EventBus, Subscription
from .config import DispatcherConfig
from .core import Dispatcher, Handler
from .envelope import Envelope, QoS
from .errors import LocalProtocolError
from .helpers import EventHelpers, IntentHelpers
from .promise import Promise
from .registry import ChannelRegistry
from .replay import ReplayBuffer
from .stats import Stats

__all__ = ["Runtime", "Transport"]


class Runtime(Protocol):
    """What a runtime gives a transport: its clock, delivery of queued bytes, and blocking waits."""

    def now(self) -> float: ...

    def flush(self) -> None: ...

    def wait(self, promise: Promise[Any], timeout: float | None) -> None: ...

    def close(self) -> None: ...


class Transport:
    """One peer's end of the dispatcher (``peer="server"`` or ``"client"``)."""

    def __init__(self, core: Dispatcher, runtime: Runtime) -> None:
        self.core = core
        self.runtime = runtime
        self._closed = False
        # After a send: the runtime writes now, or (a TCP server) once this turn of its event loop ends.
        self._sent = runtime.flush_soon if getattr(runtime, "coalesce", False) else runtime.flush  # type: ignore[attr-defined]
        self._now = runtime.now  # bound once: each send reads the clock and (a request) names the waiter
        self._wait = runtime.wait
        self.intents = IntentHelpers(self)
        self.events = EventHelpers(self)

    # -- identity ---------------------------------------------------------------------------------

    @property
    def peer(self) -> str:
        return self.core.role

    @property
    def registry(self) -> ChannelRegistry:
        return self.core.registry

    @property
    def bus(self) -> EventBus:
        """The local event bus every received envelope is published to as ``(name, payload, meta)``."""
        return self.core.bus

    @property
    def player_id(self) -> int | None:
        return self.core.player_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def address(self) -> tuple[str, int] | None:
        """Where a TCP server listens (or where a client connects); None in-process."""
        return getattr(self.runtime, "address", None)

    @property
    def secret(self) -> bytes | str | None:
        """A server's secret (tokens are ``make_token(secret, player_id)``)."""
        return self.core.secret

    @property
    def config(self) -> DispatcherConfig:
        """This peer's configuration (frozen; ``config.with_options(...)`` derives another)."""
        return self.core.config

    @property
    def server_info(self) -> dict[str, Any]:
        """Client: what the server's runtime said about itself in the WELCOME (e.g. the game config);
        server: what it sends."""
        return self.core.server_info

    # -- clocks (issue 11) -----------------------------------------------------------------------

    @property
    def clock_offset(self) -> float:
        """The server's clock minus ours, in seconds (0.0 exactly in the shared-clock domain)."""
        return self.core.clock_offset

    @property
    def clock_error(self) -> float:
        """The offset's error bound in seconds: 0.0 when shared, else half the chosen sample's round trip."""
        return self.core.clock_error

    @property
    def clock_domain(self) -> str:
        """``"shared"`` (peers read one monotonic clock: same host) or ``"ntp"`` (estimated)."""
        return self.core.clock_domain

    def now(self) -> float:
        """This side's clock (seconds; the runtime's: monotonic, or a loopback hub's virtual clock)."""
        return self.runtime.now()

    def server_time(self) -> float:
        """The server's clock now, as this side estimates it: ``now() + clock_offset`` (a server: ``now()``)."""
        return self.runtime.now() + self.core.clock_offset

    @property
    def rtt(self) -> float | None:
        """The last clock sample's round trip (client), or None."""
        return self.core.rtt

    def on_ack(self, callback: Callable[[Envelope, float], Any]) -> Callable[[], None]:
        """``callback(envelope, now)`` when a reliable envelope this side sent is acknowledged by the peer;
        returns a handle that unsubscribes."""
        return self.core.on_ack(callback)

    # -- connections -----------------------------------------------------------------------------

    def players(self) -> list[int]:
        """Player ids with an open session (a server; a client: its own id once welcomed)."""
        if self.core.role == "client":
            return [self.core.player_id] if self.core.player_id is not None and self.connected else []
        return self.core.players()

    @property
    def connected(self) -> bool:
        """A client: its session is open (not closed, not waiting for a reconnect).  A server: not closed."""
        if self._closed:
            return False
        if self.core.role == "server":
            return True
        s = self.core.session_or_none()
        return s is not None and s.open

    @property
    def reconnects(self) -> int:
        """Times a TCP client reconnected after losing its connection (0 in-process)."""
        return int(getattr(self.runtime, "reconnects", 0))

    def flush(self) -> None:
        """Deliver what the core queued now (sends already flush; for code that drives the core's timers or
        queues another way, e.g. a game loop that emits in bulk with ``emit(..., flush=False)``)."""
        self.runtime.flush()

    # -- the seed's API -------------------------------------------------------------------------

    def intent(self, name: str, payload: Any = None, *, qos_override: str | int | QoS | None = None,
               trace_id: str | None = None, require_subscriber: bool | None = None,
               reliable: bool | None = None, replayable: bool | None = None,
               coalesce_key: Hashable = None) -> Envelope | None:
        """Fire-and-forget an intent (client).  Returns the envelope, or None if release mode dropped it."""
        if self._closed:
            self._check_open()
        env = self.core.intent(name, payload, self._now(), qos_override=qos_override, trace_id=trace_id,
                               require_subscriber=require_subscriber, reliable=reliable, replayable=replayable,
                               coalesce_key=coalesce_key)
        self._sent()
        return env

    def request(self, name: str, payload: Any = None, *, timeout: float | None = None,
                retries: int | None = None, qos_override: str | int | QoS | None = None,
                trace_id: str | None = None) -> Promise[Envelope]:
        """Send a request (client); a Promise of the response envelope."""
        if self._closed:
            self._check_open()
        p = self.core.request(name, payload, self._now(), timeout=timeout, retries=retries,
                              qos_override=qos_override, trace_id=trace_id, waiter=self._wait)
        self._sent()
        return p

    def emit(self, name: str, payload: Any = None, *, to: int | Iterable[int] | None = None,
             qos_override: str | int | QoS | None = None, trace_id: str | None = None,
             player_id: int | None = None, reliable: bool | None = None,
             replayable: bool | None = None, coalesce_key: Hashable = None) -> list[Envelope]:
        """Send an event (server) to a player id, a list of them, or everyone (``to=None``)."""
        self._check_open()
        sent = self.core.emit(name, payload, self.runtime.now(), to=to, qos_override=qos_override,
                              trace_id=trace_id, player_id=player_id, reliable=reliable, replayable=replayable,
                              coalesce_key=coalesce_key)
        self._sent()
        return sent

    def on(self, name: str, handler: Handler) -> Subscription:
        """Subscribe ``handler(envelope)`` to ``name``; returns a callable handle that unsubscribes."""
        return self.core.on(name, handler)

    def disconnect(self, handle: Subscription | Callable[[], None]) -> None:
        """Unsubscribe (seed: ``transport.disconnect(handle)``); the same as calling the handle."""
        handle()

    def stats(self) -> Stats:
        return self.core.stats

    def set_logger(self, logger: Callable[[Envelope, str], Any] | None) -> None:
        """``logger(envelope, direction)`` for every envelope sent ("out") and accepted ("in")."""
        self.core.logger = logger

    def replay(self, channel: str | None = None, since: float | None = None) -> int:
        """Re-inject buffered incoming envelopes of ``channel`` since ``since`` into the local handlers and
        bus (seed: ``Networking.replay(channel, sinceTimestamp)``); the number replayed."""
        n = self.core.replay(channel, self.runtime.now(), since=since)
        self.runtime.flush()
        return n

    @property
    def replay_buffer(self) -> ReplayBuffer:
        """The replay buffer (``dump(path)``, ``load(path)``, ``entries()``); needs ``replay=`` at init."""
        if self.core.replay_buffer is None:
            raise LocalProtocolError(self.core.replay_off_message())
        return self.core.replay_buffer

    def close(self) -> None:
        """Close the connection(s); pending requests reject with ``ConnectionClosed``.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.core.close(self.runtime.now())
        self.runtime.flush()
        self.runtime.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError(f"this {self.peer} transport is closed")

    def __repr__(self) -> str:
        return f"<Transport {self.peer} player={self.player_id} {'closed' if self._closed else 'open'}>"
