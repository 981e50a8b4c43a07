"""One ``DispatcherConfig`` for every peer: each option given to ``loopback`` reaches both sides; ``server=`` /
``client=`` override one side; the old keyword spellings still work and bad ones are clear errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import dispatcher
from dispatcher import (
    ChannelRegistry,
    DispatcherConfig,
    LocalProtocolError,
    QoS,
    RegistryError,
    ReplayConfig,
    SchedulerConfig,
    Transport,
    VirtualClock,
)

from .conftest import GAME_SCHEMAS

Check = Callable[[Transport], bool]

#: option, value, and what it must have done to a peer (checked on the server and on the client).
OPTIONS: list[tuple[str, Any, Check]] = [
    ("replay", {"enabled": True, "buffer_size": 7}, lambda t: t.core.replay_buffer is not None
     and t.replay_buffer.buffer_size == 7),
    ("replay", True, lambda t: t.core.replay_buffer is not None),
    ("scheduler", "fifo", lambda t: t.core.scheduler.mode == "fifo"),
    ("scheduler", {"tick_hz": 30.0, "budget": None}, lambda t: t.core.scheduler.tick_hz == 30.0
     and t.core.scheduler.budget is None),
    ("mode", "release", lambda t: t.core.mode == "release"),
    ("stats", False, lambda t: not t.stats().enabled),
    ("qos_overrides", {"Skills": "BACKGROUND"},
     lambda t: t.core._channel_qos[list(t.registry.channels).index("Skills")] == QoS.BACKGROUND),
    ("qos_policy", "clamp", lambda t: t.core.qos_policy == "clamp"),
    ("require_subscriber", True, lambda t: t.core.require_subscriber),
    ("request_timeout", 1.25, lambda t: t.core.request_timeout == 1.25),
    ("retry_backoff", 0.5, lambda t: t.core.retry_backoff == 0.5),
    ("retry_backoff_max", 4.0, lambda t: t.core.retry_backoff_max == 4.0),
    ("dedup_window", 16, lambda t: t.core.dedup_window == 16),
    ("dedup_bytes", 4096, lambda t: t.core.dedup_bytes == 4096),
    ("requests", {"timeout": 2.5}, lambda t: t.core.request_timeout == 2.5),
    ("limits", {"nack_rate": 3.0}, lambda t: t.core.limits.nack_rate == 3.0),
    ("handshake_timeout", 4.0, lambda t: t.core.handshake_timeout == 4.0),
    ("resume_grace", 9.0, lambda t: t.core.resume_grace == 9.0),
    ("clock_sync_interval", 2.0, lambda t: t.core.clock_sync_interval == 2.0),
    ("session", {"resume_grace": 8.0}, lambda t: t.core.resume_grace == 8.0),
    ("max_frame_size", 1 << 16, lambda t: t.core.max_frame_size == 1 << 16),
    ("rate_limits", {"default": 50.0}, lambda t: set(t.core._rates) == {50.0}),
    ("seed", 7, lambda t: t.config.seed == 7),
    ("schemas", GAME_SCHEMAS, lambda t: t.core.schemas.validate("Intent.Skills.Use", {}) is not None),
]


@pytest.mark.parametrize(("option", "value", "check"), OPTIONS, ids=[f"{o}={v!r}"[:40] for o, v, _ in OPTIONS])
def test_each_option_reaches_both_peers(registry: ChannelRegistry, option: str, value: Any, check: Check) -> None:
    server, client = dispatcher.loopback(registry, clock=VirtualClock(0.0), **{option: value})
    assert check(server), f"{option} did not reach the server"
    assert check(client), f"{option} did not reach the client"
    assert server.config == client.config.with_options(clock_id=server.config.session.clock_id)
    default_server, default_client = dispatcher.loopback(registry, clock=VirtualClock(0.0))
    if option not in ("seed",):
        assert not (check(default_server) and check(default_client)), f"{option}: the check passes on defaults"


@pytest.mark.parametrize(("option", "value", "check"), OPTIONS, ids=[f"{o}={v!r}"[:40] for o, v, _ in OPTIONS])
def test_each_option_can_be_given_to_one_side(registry: ChannelRegistry, option: str, value: Any,
                                              check: Check) -> None:
    if option in ("seed",):
        pytest.skip("no observable default to tell apart")
    server, client = dispatcher.loopback(registry, clock=VirtualClock(0.0), client={option: value})
    assert check(client)
    assert not check(server), f"client={{{option!r}: ...}} reached the server"
    server, client = dispatcher.loopback(registry, clock=VirtualClock(0.0), server={option: value})
    assert check(server)
    assert not check(client), f"server={{{option!r}: ...}} reached the client"


def test_loopback_replay_and_fifo_configure_both_and_client_replay_works(registry: ChannelRegistry) -> None:
    server, client = dispatcher.loopback(registry, replay={"enabled": True}, scheduler="fifo")
    assert server.core.scheduler.mode == client.core.scheduler.mode == "fifo"
    seen: list[Any] = []
    client.on("Event.Skills.Execution", lambda env: seen.append((env.payload, env.meta.replayed)))
    server.emit("Event.Skills.Execution", {"skillId": "Nova"}, to=1)
    assert client.replay("Skills") == 1
    assert seen == [({"skillId": "Nova"}, False), ({"skillId": "Nova"}, True)]


def test_config_object_and_keywords_agree(registry: ChannelRegistry) -> None:
    cfg = DispatcherConfig(replay=ReplayConfig(enabled=True), scheduler=SchedulerConfig(mode="fifo"))
    assert cfg == DispatcherConfig.of(replay={"enabled": True}, scheduler="fifo")
    server, client = dispatcher.loopback(registry, config=cfg, client={"mode": "release"})
    assert server.config.replay.enabled and client.config.replay.enabled
    assert (server.core.mode, client.core.mode) == ("dev", "release")
    with pytest.raises(AttributeError):
        cfg.mode = "release"  # type: ignore[misc]


def test_replay_off_message_says_how_to_turn_it_on(registry: ChannelRegistry) -> None:
    server, client = dispatcher.loopback(registry, server={"replay": True})
    with pytest.raises(LocalProtocolError, match=r"client.*replay.enabled=False.*loopback\(client="):
        client.replay("Skills")
    assert server.replay("Skills") == 0


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"bogus": 1}, LocalProtocolError, "unknown option.*bogus.*allowed"),
    ({"mode": "fast"}, LocalProtocolError, "mode must be 'dev' or 'release'"),
    ({"scheduler": "lifo"}, LocalProtocolError, "scheduler mode is 'priority' or 'fifo'"),
    ({"scheduler": {"nope": 1}}, LocalProtocolError, "unknown scheduler option"),
    ({"replay": {"size": 3}}, LocalProtocolError, "unknown replay option.*allowed: enabled"),
    ({"replay": {"buffer_size": 0}}, LocalProtocolError, "buffer_size must be >= 1"),
    ({"limits": {"nope": 1}}, LocalProtocolError, "unknown limit"),
    ({"handshake_timeout": -1}, LocalProtocolError, "handshake_timeout must be a number >= 0"),
    ({"request_timeout": 0}, LocalProtocolError, "request_timeout must be a number of seconds > 0"),
    ({"qos_overrides": {"Skills": "FAST"}}, RegistryError, "valid tiers"),
    ({"qos_overrides": {"Nope": "HIGH"}}, RegistryError, "does not declare"),
    ({"rate_limits": {"Nope": 5.0}}, RegistryError, "does not declare"),
    ({"rate_limits": {"default": -5}}, LocalProtocolError, "must be a number > 0"),
    ({"qos_policy": "drop"}, LocalProtocolError, "qos_policy must be"),
    ({"requests": {"tries": 3}}, LocalProtocolError, "unknown requests option"),
]


@pytest.mark.parametrize(("options", "error", "match"), BAD, ids=[str(o)[:40] for o, _, _ in BAD])
def test_bad_options_are_clear_errors_everywhere(registry: ChannelRegistry, options: dict[str, Any],
                                                 error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        dispatcher.loopback(registry, **options)
    with pytest.raises(error, match=match):
        dispatcher.Dispatcher("server", registry, **options)
    with pytest.raises(error, match=match):
        dispatcher.loopback(registry, client=options)


def test_loopback_side_overrides_must_be_dicts(registry: ChannelRegistry) -> None:
    with pytest.raises(LocalProtocolError, match=r"server=.... is a dict"):
        dispatcher.loopback(registry, server="fifo")  # type: ignore[arg-type]
