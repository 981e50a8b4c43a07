from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dispatcher import ChannelRegistry, Direction, QoS, RegistryError, RegistryWarning

from .conftest import GAME_REGISTRY, SEED_REGISTRY


def test_seed_registry_loads_with_low_warning() -> None:
    with pytest.warns(RegistryWarning, match=r"channel 'Stats': qos 'LOW' is not a tier; treating it as BACKGROUND"):
        reg = ChannelRegistry.from_dict(SEED_REGISTRY)
    assert reg.channels["Stats"].qos is QoS.BACKGROUND
    assert reg.channels["Attributes"].qos is QoS.CRITICAL
    assert reg.channels["Attributes"].direction is Direction.BIDIRECTIONAL
    assert reg.kind("Intent.Attributes.SpendPoints") == "intent"
    assert reg.kind("Event.Stats.Updated") == "event"
    assert reg.channel_of("Event.Attributes.Updated").name == "Attributes"


def test_wire_ids_are_compact_and_stable() -> None:
    reg = ChannelRegistry.from_dict(GAME_REGISTRY)
    ids = sorted(reg.wire_id(n) for n in reg.names)
    assert ids == list(range(len(reg.names)))
    for n in reg.names:
        assert reg.name_of(reg.wire_id(n)) == n
    # Declaring channels in another order gives the same ids and hash.
    again = ChannelRegistry.from_dict(dict(reversed(list(GAME_REGISTRY.items()))))
    assert again.hash == reg.hash
    assert [again.wire_id(n) for n in reg.names] == [reg.wire_id(n) for n in reg.names]


def test_hash_changes_with_content() -> None:
    reg = ChannelRegistry.from_dict(GAME_REGISTRY)
    changed = copy.deepcopy(GAME_REGISTRY)
    changed["Skills"]["qos"] = "HIGH"
    assert ChannelRegistry.from_dict(changed).hash != reg.hash


def test_load_toml(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(
        '[Stats]\nremote = "StatsChannel"\nqos = "NORMAL"\ndirection = "bidirectional"\n'
        'intents = ["Intent.Stats.RequestSnapshot"]\nevents = ["Event.Stats.Updated"]\n'
    )
    reg = ChannelRegistry.load(path)
    assert reg.names == ("Intent.Stats.RequestSnapshot", "Event.Stats.Updated")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[Stats\n", r"registry.toml: not valid TOML"),
        ('[Stats]\nremote = "S"\nqos = "FAST"\n', r"registry.toml: channel 'Stats': unknown qos tier 'FAST'"),
    ],
)
def test_load_toml_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(content)
    with pytest.raises(RegistryError, match=message):
        ChannelRegistry.load(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"no such registry file"):
        ChannelRegistry.load(tmp_path / "nope.toml")


def _with(**changes: Any) -> dict[str, Any]:
    table = copy.deepcopy(GAME_REGISTRY)
    for path, value in changes.items():
        channel, key = path.split("__")
        table[channel][key] = value
    return table


BAD_REGISTRIES = [
    pytest.param(
        _with(Skills__qos="SUPER"),
        r"channel 'Skills': unknown qos tier 'SUPER'; valid tiers: CRITICAL, HIGH, NORMAL, BACKGROUND",
        id="unknown-tier",
    ),
    pytest.param(
        _with(Skills__direction="both_ways"),
        r"channel 'Skills': unknown direction 'both_ways'; allowed: bidirectional, server_to_client, "
        r"client_to_server",
        id="unknown-direction",
    ),
    pytest.param(
        _with(Cooldowns__events=["Event.Cooldowns.Updated", "Event.Skills.Reset"]),
        r"must be named Event.Cooldowns.<Thing>",
        id="event-of-another-channel",
    ),
    pytest.param(
        _with(Skills__intents=["Intent.Skills.Use", "Intent.Skills.Use"]),
        r"'Intent.Skills.Use' is declared twice in channel 'Skills'; a name belongs to exactly one channel",
        id="name-twice",
    ),
    pytest.param(
        _with(Cooldowns__remote="SkillsChannel"),
        r"channels '(Skills|Cooldowns)' and '(Skills|Cooldowns)' both use remote 'SkillsChannel'; "
        r"remote names must be unique",
        id="duplicate-remote",
    ),
    pytest.param(
        _with(Skills__intents=["Skills.Use"]),
        r"channel 'Skills': intent 'Skills.Use' must be named Intent.Skills.<Verb>",
        id="intent-name-shape",
    ),
    pytest.param(
        _with(Skills__events=["Event.Skills"]),
        r"channel 'Skills': event 'Event.Skills' must be named Event.Skills.<Thing>",
        id="event-name-shape",
    ),
    pytest.param(
        _with(Cooldowns__intents=["Intent.Cooldowns.Reset"]),
        r"channel 'Cooldowns': direction 'server_to_client' carries no intents \(client -> server\), "
        r"but 'Intent.Cooldowns.Reset' is declared",
        id="intent-on-server-to-client",
    ),
    pytest.param(
        _with(Skills__direction="client_to_server"),
        r"channel 'Skills': direction 'client_to_server' carries no events \(server -> client\), "
        r"but 'Event.Skills.Execution' is declared",
        id="event-on-client-to-server",
    ),
    pytest.param(
        _with(Skills__remote=""),
        r"channel 'Skills': 'remote' must be a non-empty string",
        id="missing-remote",
    ),
    pytest.param(
        _with(Skills__priority=3),
        r"channel 'Skills': unknown key\(s\) priority; allowed: remote, qos, direction",
        id="unknown-key",
    ),
    pytest.param(
        _with(Skills__coalesce=["Event.Stats.Updated"]),
        r"channel 'Skills': coalesce names 'Event.Stats.Updated', which this channel does not declare",
        id="coalesce-foreign-name",
    ),
    pytest.param({}, r"declares no channels", id="empty"),
    pytest.param({"Bad Name": {"remote": "X"}}, r"channel name 'Bad Name' must be an identifier", id="channel-name"),
]


@pytest.mark.parametrize(("table", "message"), BAD_REGISTRIES)
def test_registry_mistakes_name_channel_and_problem(table: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        ChannelRegistry.from_dict(table)


def test_name_in_two_channels() -> None:
    table = copy.deepcopy(GAME_REGISTRY)
    table["Skills"]["intents"] = ["Intent.Skills.Use", "Intent.Stats.RequestSnapshot"]
    with pytest.raises(RegistryError, match=r"'Intent.Stats.RequestSnapshot' is declared in channels "
                                            r"'(Stats|Skills)' and '(Stats|Skills)'; a name belongs to exactly one"):
        ChannelRegistry.from_dict(table)


def test_unknown_name_suggests() -> None:
    reg = ChannelRegistry.from_dict(GAME_REGISTRY)
    with pytest.raises(RegistryError, match=r"'Intent.Skill.Use' is not declared.*did you mean 'Intent.Skills.Use'"):
        reg.wire_id("Intent.Skill.Use")
