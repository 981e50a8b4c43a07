from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dispatcher import ChannelRegistry, Envelope, LocalProtocolError, LoopbackHub, VirtualClock
from dispatcher.replay import ReplayBuffer, ReplayFileError

from .conftest import GAME_REGISTRY, GAME_SCHEMAS

SKILLS = ["TripleStrike", "Nova", "Quake", "TripleStrike", "Blink"]


def _server_with_handlers(hub: LoopbackHub, log: list[tuple[str, Any, bool]]) -> None:
    def use(env: Envelope) -> None:
        log.append(("use", env.payload, env.meta.replayed))
        hub.server.emit("Event.Skills.Execution", {"skillId": env.payload["skillId"]})

    hub.server.on("Intent.Skills.Use", use)
    hub.server.on("Intent.Attributes.SpendPoints", lambda env: log.append(("spend", env.payload, env.meta.replayed)))


def test_capture_dump_load_replay_runs_same_handlers_in_same_order(registry: ChannelRegistry,
                                                                    tmp_path: Path) -> None:
    clock = VirtualClock(0.0)
    hub = LoopbackHub(registry, clock=clock, schemas=GAME_SCHEMAS, replay={"enabled": True, "buffer_size": 64})
    live: list[tuple[str, Any, bool]] = []
    _server_with_handlers(hub, live)
    a, b = hub.connect(player_id=1), hub.connect(player_id=2)
    for i, skill in enumerate(SKILLS):
        (a if i % 2 else b).intent("Intent.Skills.Use", {"skillId": skill, "target": i})
        a.intent("Intent.Attributes.SpendPoints", {"attribute": "str", "points": i + 1})
        hub.advance(0.1)
    path = tmp_path / "skills.replay"
    assert hub.server.replay_buffer.dump(path) > 0

    fresh = LoopbackHub(registry, clock=VirtualClock(50.0), replay={"enabled": True})
    replayed: list[tuple[str, Any, bool]] = []
    _server_with_handlers(fresh, replayed)
    fresh.server.replay_buffer.load(path)
    n = fresh.server.replay()  # every channel, oldest first
    assert n == len(live) == 10
    assert [(k, p) for k, p, _ in replayed] == [(k, p) for k, p, _ in live]
    assert all(flag for _, _, flag in replayed) and not any(flag for _, _, flag in live)

    # One channel, since a moment.
    replayed.clear()
    t_third = fresh.server.replay_buffer.entries("Skills", direction="in")[2].t
    assert fresh.server.replay("Skills", since=t_third) == 3
    assert [p["skillId"] for _, p, _ in replayed] == SKILLS[2:]


def test_loading_a_capture_of_another_registry_fails_clearly(registry: ChannelRegistry, tmp_path: Path) -> None:
    buf = ReplayBuffer(registry.hash)
    path = tmp_path / "a.replay"
    buf.dump(path)
    other = copy.deepcopy(GAME_REGISTRY)
    other["Skills"]["qos"] = "HIGH"
    other_reg = ChannelRegistry.from_dict(other)
    with pytest.raises(ReplayFileError, match=rf"captured with channel registry {registry.hash}, but this "
                                              rf"dispatcher's registry is {other_reg.hash}"):
        ReplayBuffer(other_reg.hash).load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xc1garbage", "not a replay file"),
        (b"\x81\xa6format\xa3xyz", "expected format 'netharness-replay'"),
        (b"\x82\xa6format\xb1netharness-replay\xa7version\x09", "version 9 is not supported"),
    ],
)
def test_bad_replay_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.replay"
    path.write_bytes(content)
    with pytest.raises(ReplayFileError, match=message):
        ReplayBuffer("x").load(path)
    with pytest.raises(ReplayFileError, match="no such replay file"):
        ReplayBuffer("x").load(tmp_path / "missing")


def test_ring_size_max_age_and_unreplayable(registry: ChannelRegistry) -> None:
    clock = VirtualClock(0.0)
    hub = LoopbackHub(registry, clock=clock, replay={"buffer_size": 3, "max_age": 1.0})
    client = hub.connect()
    hub.server.on("Intent.Skills.Use", lambda env: None)
    for i in range(5):
        client.intent("Intent.Skills.Use", {"skillId": f"s{i}"})
    client.intent("Intent.Skills.Use", {"skillId": "secret"}, replayable=False)
    entries = hub.server.replay_buffer.entries("Skills")
    assert [e.envelope.payload["skillId"] for e in entries] == ["s2", "s3", "s4"]
    hub.advance(2.0)
    client.intent("Intent.Skills.Use", {"skillId": "late"})
    assert [e.envelope.payload["skillId"] for e in hub.server.replay_buffer.entries("Skills")] == ["late"]


def test_replay_off_and_unknown_channel(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0))
    with pytest.raises(LocalProtocolError, match="replay is off"):
        hub.server.replay("Skills")
    hub2 = LoopbackHub(registry, clock=VirtualClock(0.0), replay=True)
    with pytest.raises(LocalProtocolError, match="no channel 'Skillz'"):
        hub2.server.replay("Skillz")
