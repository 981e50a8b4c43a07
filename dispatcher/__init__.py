"""A sans-I/O game-networking dispatcher: envelopes, a channel registry, QoS tiers, request/response,
schema validation and diagnostics, with loopback, simulated and TCP runtimes.

    import dispatcher
    reg = dispatcher.ChannelRegistry.load("registry.toml")
    server, client = dispatcher.loopback(channel_registry=reg)
    server.on("Intent.Stats.RequestSnapshot", lambda env: {"stats": {}})
    client.request("Intent.Stats.RequestSnapshot", {"version": 3}).result(timeout=5)
"""

from __future__ import annotations

from typing import Any

from . import _build

# The one import-time action: with NETHARNESS_PURE_PYTHON=1, or when a compiled source changed since the
# build (a warning says which and how to rebuild), a meta-path finder makes ``dispatcher.*`` load from .py.
_PURE_REASON = _build.choose(__name__)

from . import replay, wire
from .auth import make_secret, make_token
from .bus import EventBus, Subscription
from .config import DispatcherConfig, ReplayConfig, RequestConfig, SessionConfig
from .core import Dispatcher
from .decoder import FrameDecoder
from .envelope import Envelope, Flags, Meta, QoS
from .errors import (
    ConnectionClosed,
    DispatcherError,
    LocalProtocolError,
    RegistryError,
    RegistryWarning,
    RemoteError,
    RemoteProtocolError,
    RequestTimeout,
    UnknownNameError,
    ValidationError,
)
from .limits import Limits
from .promise import Promise
from .qos import SchedulerConfig
from .registry import Channel, ChannelRegistry, Direction
from .runtime.clock import MonotonicClock, VirtualClock, host_clock_id
from .runtime.loopback import LoopbackHub, loopback
from .schema import SchemaRegistry
from .stats import Stats
from .transport import Transport

__all__ = [
    "COMPILED",
    "Channel",
    "ChannelRegistry",
    "ConnectionClosed",
    "Direction",
    "Dispatcher",
    "DispatcherConfig",
    "DispatcherError",
    "Envelope",
    "EventBus",
    "Flags",
    "Limits",
    "LocalProtocolError",
    "LoopbackHub",
    "Meta",
    "MonotonicClock",
    "Promise",
    "QoS",
    "RegistryError",
    "RegistryWarning",
    "RemoteError",
    "RemoteProtocolError",
    "ReplayConfig",
    "RequestConfig",
    "RequestTimeout",
    "SchedulerConfig",
    "SchemaRegistry",
    "SessionConfig",
    "Stats",
    "Subscription",
    "Transport",
    "UnknownNameError",
    "ValidationError",
    "VirtualClock",
    "compiled_modules",
    "init",
    "loopback",
    "make_secret",
    "make_token",
    "replay",
]

__version__ = "0.1.0"

# ``wire.FrameDecoder``: the old home of ``decoder.FrameDecoder`` (a module ``__getattr__`` in ``wire`` would
# crash a compiled ``wire``, and importing ``decoder`` there would make the two a circle).
wire.__dict__["FrameDecoder"] = FrameDecoder


def compiled_modules() -> list[str]:
    """The core's modules running compiled (mypyc) in this process; empty when the pure-Python build runs
    (``NETHARNESS_PURE_PYTHON=1``, no compiler at install time, or sources changed since the build)."""
    return _build.compiled_modules(__name__)


#: Whether the compiled (mypyc) build of the core runs here (see ``compiled_modules``).
COMPILED = bool(compiled_modules())


def init(*, peer: str, channel_registry: ChannelRegistry, listen: tuple[str, int] | None = None,
         connect: tuple[str, int] | None = None, secret: bytes | str | None = None,
         server_info: dict[str, Any] | None = None,
         player_id: int | None = None, token: str | None = None, connect_timeout: float = 5.0,
         reconnect: bool = True, reconnect_timeout: float = 30.0, config: DispatcherConfig | None = None,
         **options: Any) -> Transport:
    """Start a TCP transport (seed: ``Networking.init``).

    ``peer="server"`` with ``listen=(host, port)`` (port 0: any free one; ``transport.address`` says which)
    and a ``secret`` (generated when None; ``transport.secret``); or ``peer="client"`` with
    ``connect=(host, port)``, ``player_id`` and ``token=make_token(secret, player_id)``.  A client returns once
    the server welcomed it, and raises ``RemoteProtocolError`` if refused (bad token, registry mismatch) or
    ``ConnectionClosed`` if nothing answers.  A server's ``server_info`` (a small dict, at most
    ``limits.server_info_bytes`` packed) reaches every client in its WELCOME (``transport.server_info``).
    ``config`` (a ``DispatcherConfig``) and/or its keyword ``options`` (``schemas``, ``mode``,
    ``qos_overrides``, ``replay``, ``scheduler``, ``stats``, ``rate_limits``, ``limits``, ...) configure the core.
    """
    if peer not in ("server", "client"):
        raise LocalProtocolError(f"peer must be 'server' or 'client', got {peer!r}")
    if (peer == "server") != (listen is not None) or (peer == "client") != (connect is not None):
        raise LocalProtocolError("a server takes listen=(host, port); a client takes connect=(host, port)")
    from .runtime.tcp import TcpClientRuntime, TcpServerRuntime  # gevent is imported only when used

    cfg = DispatcherConfig.of(config, **options)
    if not cfg.session.clock_id:
        cfg = cfg.with_options(clock_id=host_clock_id())

    if peer == "server":
        assert listen is not None
        core = Dispatcher("server", channel_registry, cfg, secret=make_secret() if secret is None else secret,
                          server_info=server_info)
        return Transport(core, TcpServerRuntime(core, (listen[0], int(listen[1]))))
    assert connect is not None
    core = Dispatcher("client", channel_registry, cfg, player_id=player_id, token=token)
    return Transport(core, TcpClientRuntime(core, (connect[0], int(connect[1])), connect_timeout=connect_timeout,
                                            reconnect=reconnect, reconnect_timeout=reconnect_timeout))
