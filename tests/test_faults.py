"""Reconnects, resumes and reliable delivery, in virtual time: the loopback pair and the simulated link."""

from __future__ import annotations

from collections import Counter
from typing import Any

from dispatcher import ChannelRegistry, Envelope, LoopbackHub, QoS, VirtualClock
from dispatcher.runtime.sim import Link, SimHub


def _skill_log(hub: LoopbackHub) -> list[tuple[int, int]]:
    handled: list[tuple[int, int]] = []
    hub.server.on("Intent.Skills.Use", lambda env: handled.append((env.meta.player_id, env.payload["target"])))
    return handled


def test_reliable_intents_exactly_once_across_dropped_connections(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0))
    handled = _skill_log(hub)
    client = hub.connect(player_id=7)
    for i in range(200):
        client.intent("Intent.Skills.Use", {"skillId": "Nova", "target": i})  # Skills is reliable
        if i % 10 == 3:
            hub.cut(client, "down")  # the server handles it, but its ACK is lost...
        elif i % 10 == 4:
            hub.cut(client, "up")  # ...and this one never reaches the server
        elif i % 10 == 5:
            hub.mend(client)
            hub.drop_connection(client)  # reconnect: resume, re-send what was not acknowledged
        hub.advance(0.01)
    hub.advance(1.0)
    assert sorted(handled) == [(7, i) for i in range(200)]  # none lost, none doubled
    assert client.core.session().unacked == {}
    assert hub.server.stats().peer["resumes"] == 20
    assert hub.server.stats()["Intent.Skills.Use"].duplicates > 0  # re-sent ones were recognised


def test_pending_request_survives_a_reconnect_and_runs_once(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0))
    client = hub.connect()
    calls: list[int] = []
    hub.server.on("Intent.Attributes.SpendPoints", lambda env: calls.append(1) or {"ok": len(calls)})
    hub.cut(client, "down")
    p = client.request("Intent.Attributes.SpendPoints", {"attribute": "str", "points": 1}, timeout=30)
    hub.mend(client)
    hub.drop_connection(client)
    assert p.result(timeout=1).payload == {"ok": 1}
    assert calls == [1]


def test_server_events_reach_a_detached_player_after_resume(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0))
    client = hub.connect(player_id=3)
    got: list[Any] = []
    client.on("Event.Skills.Execution", lambda env: got.append(env.payload["n"]))
    hub.drop_connection(client, reconnect=False)
    for n in range(5):  # emitted while the player is away: queued (Skills is reliable)
        hub.server.emit("Event.Skills.Execution", {"skillId": "A", "n": n}, to=3)
    assert got == []
    hub._reconnect(hub._cid(client))
    assert got == [0, 1, 2, 3, 4]


def test_expired_session_is_not_resumed(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0), resume_grace=1.0)
    client = hub.connect(player_id=3)
    hub.drop_connection(client, reconnect=False)
    hub.advance(2.0)
    assert hub.server_core.players() == []
    hub._reconnect(hub._cid(client))
    assert client.core.session().open
    assert hub.server.stats().peer["resumes"] == 0


def test_sim_exactly_once_under_latency_jitter_and_disconnects(registry: ChannelRegistry) -> None:
    """200 ms latency, 50 ms jitter, lossy for unreliable frames, a disconnect every 2-4 s: every reliable
    CRITICAL intent of every player is handled exactly once (30 s of play; in virtual time it runs in a small
    fraction of a second: `pytest --durations` shows it)."""
    link = Link(latency=0.2, jitter=0.05, bandwidth=200_000, drop=0.05)
    hub = SimHub(registry, up=link, down=link, seed=11, disconnect_every=(2.0, 4.0))
    handled = _skill_log(hub)
    clients = [hub.connect(player_id=p) for p in range(1, 6)]
    for step in range(600):  # 30 s of play, 20 intents/s per player
        for c in clients:
            c.intent("Intent.Skills.Use", {"skillId": "Nova", "target": step})
        hub.advance(0.05)
    hub.advance(5.0)
    counts = Counter(handled)
    assert set(counts.values()) == {1}
    assert sorted(counts) == [(p, i) for p in range(1, 6) for i in range(600)]
    assert hub.disconnects >= 30


def test_sim_keeps_the_qos_ordering(registry: ChannelRegistry) -> None:
    """The QoS tests' flood over a 200 ms / 50 ms-jitter link that drops every few seconds: CRITICAL is
    still delivered exactly once and ahead of the flood, and the lower tiers keep their weighted shares."""
    link = Link(latency=0.2, jitter=0.05, bandwidth=1_000_000)
    hub = SimHub(registry, up=link, down=link, seed=5, disconnect_every=(2.0, 4.0), reconnect_delay=0.1)
    client = hub.connect(player_id=1)
    crit: list[int] = []
    client.on("Event.Skills.Execution", lambda env: crit.append(env.payload["n"]))
    n = 0
    for step in range(60 * 8):  # 8 s at 60 Hz: 10x the 50 kB/s budget
        hub.server.emit("Event.Stats.Updated", {"stats": "x" * 5000})
        for i in range(16):
            hub.server.emit("Event.Attributes.Updated", {"str": i, "pad": "y" * 190}, qos_override="NORMAL")
        for _ in range(8):
            hub.server.emit("Event.Cooldowns.Updated", {"pad": "z" * 200})
        if step % 7 == 0:
            hub.server.emit("Event.Skills.Execution", {"skillId": "Nova", "n": n})
            n += 1
        hub.advance(1 / 60)
    hub.advance(3.0)
    assert hub.disconnects >= 2
    assert sorted(crit) == list(range(n))  # reliable CRITICAL: exactly once
    tiers = hub.server.stats().tiers
    soj = tiers[QoS.CRITICAL].sojourn
    assert soj.percentile(50) == 0  # CRITICAL does not wait behind the flood while connected
    got = {q: tiers[q].bytes_out for q in (QoS.HIGH, QoS.NORMAL, QoS.BACKGROUND)}
    total = sum(got.values())
    for q, w in ((QoS.HIGH, 8), (QoS.NORMAL, 4), (QoS.BACKGROUND, 1)):
        assert abs(got[q] / total - w / 13) <= 0.1 * w / 13, (q.name, got[q] / total)


def test_sim_is_deterministic(registry: ChannelRegistry) -> None:
    def run() -> tuple[Any, ...]:
        link = Link(latency=0.1, jitter=0.05, drop=0.2)
        hub = SimHub(registry, up=link, down=link, seed=3, disconnect_every=(1.0, 2.0))
        c = hub.connect(player_id=1)
        got: list[Envelope] = []
        c.on("Event.Cooldowns.Updated", got.append)
        for i in range(300):
            hub.server.emit("Event.Cooldowns.Updated", {"i": i})
            hub.advance(0.02)
        return hub.lost_frames, hub.disconnects, tuple(e.payload["i"] for e in got)

    assert run() == run()
