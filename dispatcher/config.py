"""``DispatcherConfig``: every option of a dispatcher in one frozen value, shared by the core, ``Transport``,
``init`` and ``loopback``.

    cfg = DispatcherConfig.of(replay={"enabled": True}, scheduler="fifo")   # the keyword spelling
    cfg = DispatcherConfig(replay=ReplayConfig(enabled=True), scheduler=SchedulerConfig(mode="fifo"))
    cfg.with_options(mode="release")                                        # a copy with some changed

The old keyword arguments of ``Dispatcher``, ``init`` and ``loopback`` still work: ``DispatcherConfig.of``
(through ``with_options``) is the one place that converts them, and the place their errors come from
(``LocalProtocolError`` saying what was wrong and what is allowed).  Checks that need the channel registry
(``qos_overrides`` and ``rate_limits`` name channels) are made when a core is built.

What identifies one peer (a server's ``secret`` and ``server_info``, a client's ``player_id`` and ``token``)
is not configuration: it stays a keyword of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from .envelope import QoS
from .errors import LocalProtocolError
from .limits import Limits
from .qos import SchedulerConfig
from .schema import SchemaRegistry
from .wire import DEFAULT_MAX_FRAME_SIZE

__all__ = ["OPTIONS", "DispatcherConfig", "ReplayConfig", "RequestConfig", "SessionConfig"]

Mode = Literal["dev", "release"]


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Replay buffers (``transport.replay``): off unless ``enabled``."""

    enabled: bool = False
    buffer_size: int = 256
    max_age: float | None = None

    @classmethod
    def from_options(cls, value: ReplayConfig | bool | Mapping[str, Any] | None) -> ReplayConfig:
        """From None/False (off), True, ``{"enabled", "buffer_size", "max_age"}`` (a dict means on unless it
        says ``enabled: False``) or a ``ReplayConfig``; ``ValueError`` saying what is allowed."""
        if isinstance(value, ReplayConfig):
            return value
        if value is None or value is False:
            return cls()
        if value is True:
            return cls(enabled=True)
        if not isinstance(value, Mapping):
            raise ValueError(f"replay is True/False, a dict of enabled, buffer_size, max_age, or a ReplayConfig; "
                             f"got {type(value).__name__}")
        opts = dict(value)
        unknown = sorted(set(opts) - {"enabled", "buffer_size", "max_age"})
        if unknown:
            raise ValueError(f"unknown replay option(s) {', '.join(unknown)}; allowed: enabled, buffer_size, max_age")
        cfg = cls(enabled=bool(opts.pop("enabled", True)), **opts)
        if type(cfg.buffer_size) is not int or cfg.buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {cfg.buffer_size!r}")
        if cfg.max_age is not None and not (isinstance(cfg.max_age, int | float) and cfg.max_age > 0):
            raise ValueError(f"max_age must be > 0 seconds or None, got {cfg.max_age!r}")
        return cfg


@dataclass(frozen=True, slots=True)
class RequestConfig:
    """Requests sent (timeouts, retries) and requests served (the answer cache for retried ones)."""

    timeout: float = 5.0
    retry_backoff: float = 0.1
    retry_backoff_max: float = 2.0
    #: Answers kept per connection for retried requests: entries and bytes.  A retry comes within a request
    #: timeout or two (or after a resume), so a few hundred kB is seconds of even large answers; at 1 MiB
    #: the cache was most of a server's memory per player (its queues hold 200 kB) and kept growing for
    #: minutes under 8 kB snapshot answers (issue 13).  An evicted answer is never run again: NACK ``expired``.
    dedup_window: int = 1024
    dedup_bytes: int = 256 << 10


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Sessions and clocks: how long a lost session waits for a resume, how often the client samples the
    server's clock, and which monotonic clock this side reads (equal ids on both peers: a shared clock)."""

    resume_grace: float = 30.0
    clock_sync_interval: float = 5.0
    clock_id: str = ""


#: The flat keyword options and where each lives in the config (``with_options`` converts them).
OPTIONS: dict[str, str] = {
    "schemas": "schemas", "mode": "mode", "qos_overrides": "qos_overrides", "qos_policy": "qos_policy",
    "require_subscriber": "require_subscriber", "stats": "stats", "seed": "seed",
    "max_frame_size": "max_frame_size", "rate_limits": "rate_limits",
    "scheduler": "scheduler", "replay": "replay", "limits": "limits", "requests": "requests",
    "session": "session",
    "request_timeout": "requests.timeout", "retry_backoff": "requests.retry_backoff",
    "retry_backoff_max": "requests.retry_backoff_max", "dedup_window": "requests.dedup_window",
    "dedup_bytes": "requests.dedup_bytes",
    "handshake_timeout": "limits.handshake_timeout",
    "resume_grace": "session.resume_grace", "clock_sync_interval": "session.clock_sync_interval",
    "clock_id": "session.clock_id",
}


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """All of one dispatcher's options.  Frozen: share one between peers, derive others with
    ``with_options``."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    limits: Limits = field(default_factory=Limits)
    requests: RequestConfig = field(default_factory=RequestConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    #: The payload validators (None: no schemas), shared as they are.
    schemas: SchemaRegistry | None = None
    #: dev: an invalid payload raises at the call; release: it is dropped (the promise rejects) and counted.
    mode: Mode = "dev"
    #: Channel name -> tier, this side's override of the registry's declared tier (sorted pairs).
    qos_overrides: tuple[tuple[str, QoS], ...] = ()
    #: What a ``qos_override`` above the channel's tier does: warn once, or clamp to the declared tier.
    qos_policy: Literal["warn", "clamp"] = "warn"
    require_subscriber: bool = False
    stats: bool = True
    seed: int | None = None
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    #: Channel name (or "default") -> envelopes per second a player may send (sorted pairs).
    rate_limits: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, config: DispatcherConfig | None = None, **options: Any) -> DispatcherConfig:
        """``config`` (or the defaults) with the keyword ``options`` applied."""
        base = cls() if config is None else config
        if not isinstance(base, DispatcherConfig):
            raise LocalProtocolError(f"config must be a DispatcherConfig, got {type(base).__name__}")
        return base.with_options(**options) if options else base

    def with_options(self, **options: Any) -> DispatcherConfig:
        """A copy with the keyword options applied (the old flat names included: ``request_timeout``,
        ``handshake_timeout``, ...).  ``LocalProtocolError`` names an unknown option or a bad value."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise LocalProtocolError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(OPTIONS))}")
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        try:
            for key, value in options.items():
                path = OPTIONS[key]
                if "." in path:
                    group, name = path.split(".")
                    nested.setdefault(group, {})[name] = value
                else:
                    top[path] = _convert(path, value)
            cfg = replace(self, **top)
            for group, values in nested.items():
                sub = getattr(cfg, group)
                if group == "limits":
                    sub = Limits.from_options({**{f.name: getattr(sub, f.name) for f in fields(sub)}, **values})
                else:
                    sub = replace(sub, **values)
                cfg = replace(cfg, **{group: sub})
        except ValueError as e:
            raise LocalProtocolError(str(e)) from None
        cfg._check()
        return cfg

    def _check(self) -> None:
        if self.mode not in ("dev", "release"):
            raise LocalProtocolError(f"mode must be 'dev' or 'release', got {self.mode!r}")
        if self.qos_policy not in ("warn", "clamp"):
            raise LocalProtocolError(f"qos_policy must be 'warn' or 'clamp', got {self.qos_policy!r}")
        r = self.requests
        for what, v in (("request_timeout", r.timeout), ("retry_backoff", r.retry_backoff),
                        ("retry_backoff_max", r.retry_backoff_max)):
            if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
                raise LocalProtocolError(f"{what} must be a number of seconds > 0, got {v!r}")
        if type(self.max_frame_size) is not int or self.max_frame_size < 256:
            raise LocalProtocolError(f"max_frame_size must be an integer >= 256 bytes, got {self.max_frame_size!r}")

    def rate_limit_map(self) -> dict[str, float]:
        return dict(self.rate_limits)

    def to_options(self) -> dict[str, Any]:
        """The config as keyword options (``DispatcherConfig.of(**cfg.to_options()) == cfg``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _convert(name: str, value: Any) -> Any:
    """One top-level option in its config form; ``ValueError`` saying what is allowed."""
    if name == "scheduler":
        return SchedulerConfig.from_options(value)
    if name == "replay":
        return ReplayConfig.from_options(value)
    if name == "limits":
        return Limits.from_options(value)
    if name == "requests":
        return _sub(RequestConfig, value, "requests")
    if name == "session":
        return _sub(SessionConfig, value, "session")
    if name == "schemas":
        return value if value is None or isinstance(value, SchemaRegistry) else SchemaRegistry(value)
    if name == "qos_overrides":
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise ValueError(f"qos_overrides maps channel names to tiers, got {type(value).__name__}")
        out = []
        for ch, tier in value.items():
            try:
                out.append((str(ch), QoS.parse(tier)))
            except ValueError as e:
                # the registry error the core used to raise for this, kept as it was
                from .errors import RegistryError

                raise RegistryError(f"qos_overrides[{ch!r}]: {e}") from None
        return tuple(sorted(out))
    if name == "rate_limits":
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise ValueError("rate_limits maps channel names (or 'default') to envelopes/s, "
                             f"got {type(value).__name__}")
        pairs = []
        for ch, rate in value.items():
            if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
                raise ValueError(f"rate_limits[{ch!r}] must be a number > 0 (envelopes per second), got {rate!r}")
            pairs.append((str(ch), float(rate)))
        return tuple(sorted(pairs))
    if name in ("require_subscriber", "stats"):
        return bool(value)
    return value


def _sub(cls: Any, value: Any, what: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is a {cls.__name__} or a dict of its fields, got {type(value).__name__}")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return cls(**value)
