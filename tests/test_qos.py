"""QoS scheduling under overload, deterministic in virtual time (no sleeps)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

import dispatcher
from dispatcher import ChannelRegistry, LoopbackHub, QoS, VirtualClock
from dispatcher.qos import Scheduler, SchedulerConfig
from dispatcher.stats import Stats

TICK = 1 / 60
BUDGET = 50_000.0  # bytes per second


@dataclass
class Flood:
    """What one flood run measured."""

    server: dispatcher.Transport
    received: dict[str, list[Any]] = field(default_factory=dict)
    critical_sent: int = 0

    def tier(self, q: QoS) -> Any:
        return self.server.stats().tiers[q]


def run_flood(registry: ChannelRegistry, *, mode: str, seconds: float = 4.0, high: bool = False,
              seed: int = 7) -> Flood:
    """10x budget oversubscription: BACKGROUND snapshots (~300 kB/s) and NORMAL deltas (~200 kB/s), plus
    a few small CRITICAL skill events at random moments, from the server to one player."""
    clock = VirtualClock(0.0)
    hub = LoopbackHub(registry, clock=clock, scheduler={"mode": mode, "budget": BUDGET, "tick_hz": 60})
    client = hub.connect(player_id=1)
    flood = Flood(hub.server)
    for name in ("Event.Skills.Execution", "Event.Stats.Updated", "Event.Cooldowns.Updated",
                 "Event.EntityInfo.Delta", "Event.Attributes.Updated"):
        flood.received[name] = []
        client.on(name, lambda env, name=name: flood.received[name].append(env.payload))
    rng = random.Random(seed)
    snapshot = {"stats": "x" * 5000}  # > chunk_size: goes in chunks
    steps_per_tick = 4
    for step in range(int(seconds / TICK) * steps_per_tick):
        t = step * TICK / steps_per_tick
        hub.run_until(t)
        if step % steps_per_tick == 0:  # once a tick: the floods
            hub.server.emit("Event.Stats.Updated", snapshot)  # BACKGROUND, 5 kB: 300 kB/s
            for i in range(16):  # NORMAL, ~210 B each: ~200 kB/s
                hub.server.emit("Event.Attributes.Updated", {"str": i, "pad": "y" * 190},
                                qos_override="NORMAL")
            if high:
                for _ in range(8):  # HIGH, ~210 B each: ~100 kB/s
                    hub.server.emit("Event.Cooldowns.Updated", {"pad": "z" * 200})
        if rng.random() < 0.15:  # CRITICAL at random moments, ~9/s
            hub.server.emit("Event.Skills.Execution", {"skillId": "Nova", "n": flood.critical_sent})
            flood.critical_sent += 1
    hub.run_until(seconds)
    return flood


@pytest.fixture(scope="module")
def qos_registry() -> ChannelRegistry:
    from .conftest import GAME_REGISTRY

    reg = {k: dict(v) for k, v in GAME_REGISTRY.items()}
    reg["Attributes"]["qos"] = "NORMAL"  # the deltas' declared tier (no override warning)
    return ChannelRegistry.from_dict(reg)


@pytest.fixture(scope="module")
def priority(qos_registry: ChannelRegistry) -> Flood:
    return run_flood(qos_registry, mode="priority")


@pytest.fixture(scope="module")
def fifo(qos_registry: ChannelRegistry) -> Flood:
    return run_flood(qos_registry, mode="fifo")


def test_link_is_oversubscribed_and_saturated(priority: Flood) -> None:
    offered = sum(t.sent and t.bytes_out for t in priority.server.stats().tiers)
    assert offered <= BUDGET * 4.0 * 1.05  # the budget holds
    bg = priority.tier(QoS.BACKGROUND)
    assert bg.saturation > 0.9 and bg.dropped > 0  # 10x oversubscribed: it waits and drops
    assert priority.tier(QoS.NORMAL).saturation > 0.9


def test_critical_waits_at_most_one_tick_and_is_never_dropped(priority: Flood) -> None:
    crit = priority.tier(QoS.CRITICAL)
    assert priority.server.stats()["Event.Skills.Execution"].sent == priority.critical_sent > 20
    assert crit.dropped == 0
    assert len(priority.received["Event.Skills.Execution"]) == priority.critical_sent
    # Sojourn: enqueue -> on the wire.  The histogram's max is its bucket's top (0.1% precision).
    assert crit.sojourn.max <= TICK * 1e6 * 1.001
    assert crit.sojourn.percentile(50) == 0  # the reserve: usually it does not wait at all
    assert crit.saturated_ticks == 0


def test_fifo_makes_critical_wait_behind_the_flood(priority: Flood, fifo: Flood) -> None:
    crit = fifo.tier(QoS.CRITICAL)
    ticks = crit.sojourn.percentile(50) / (TICK * 1e6)
    assert ticks > 10, f"fifo CRITICAL p50 sojourn is {ticks:.1f} ticks"
    assert crit.sojourn.max > 100 * priority.tier(QoS.CRITICAL).sojourn.max / 10
    assert fifo.tier(QoS.CRITICAL).longest_saturated_run > 10


def test_weighted_fair_shares_when_all_lower_tiers_are_backlogged(qos_registry: ChannelRegistry) -> None:
    flood = run_flood(qos_registry, mode="priority", high=True, seconds=6.0)
    tiers = flood.server.stats().tiers
    got = {q: tiers[q].bytes_out for q in (QoS.HIGH, QoS.NORMAL, QoS.BACKGROUND)}
    total = sum(got.values())
    for q, weight in ((QoS.HIGH, 8), (QoS.NORMAL, 4), (QoS.BACKGROUND, 1)):
        share, want = got[q] / total, weight / 13
        assert abs(share - want) <= 0.10 * want, f"{q.name}: {share:.3f} of the bytes, want {want:.3f}"
    assert all(tiers[q].saturation > 0.9 for q in got)  # all three stayed backlogged


def test_coalescing_keeps_the_latest_value(registry: ChannelRegistry) -> None:
    clock = VirtualClock(0.0)
    hub = LoopbackHub(registry, clock=clock, scheduler={"budget": 5_000.0})
    client = hub.connect(player_id=1)
    seen: dict[int, list[int]] = {}
    client.on("Event.EntityInfo.Delta", lambda env: seen.setdefault(env.payload["id"], []).append(env.payload["v"]))
    for v in range(50):  # 4 entities x 50 updates in one burst: far more than a tick's budget
        for entity in range(4):
            hub.server.emit("Event.EntityInfo.Delta", {"id": entity, "v": v, "pad": "p" * 100}, coalesce_key=entity)
    hub.advance(2.0)
    assert sorted(seen) == [0, 1, 2, 3]
    for values in seen.values():
        assert values[-1] == 49  # the latest value arrives
        assert values == sorted(values)  # never an older one after a newer one
    stats = hub.server.stats()
    assert stats.tiers[QoS.NORMAL].coalesced == stats["Event.EntityInfo.Delta"].coalesced > 150
    assert sum(len(v) for v in seen.values()) + stats["Event.EntityInfo.Delta"].coalesced == 200


def test_responses_are_never_dropped_from_a_flooded_tier(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0), scheduler={"queue_bytes": {"BACKGROUND": 8_000}})
    client = hub.connect(player_id=1)
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: {"v": env.payload["version"], "pad": "s" * 500})
    promises = []
    for i in range(40):  # BACKGROUND snapshots flood the same tier the responses travel in
        hub.server.emit("Event.Stats.Updated", {"blob": "x" * 3000})
        promises.append(client.request("Intent.Stats.RequestSnapshot", {"version": i}, timeout=30))
        hub.advance(TICK)
    hub.advance(10.0)
    # Every request is answered, or refused at once when the tier is full (admission control): none is
    # dropped after being accepted, none is left to time out.
    answered = {p.result(timeout=0).payload["v"] for p in promises if p.rejected_error is None}
    refused = [p.rejected_error for p in promises if p.rejected_error is not None]
    assert all(isinstance(e, dispatcher.RemoteError) and e.code == "overloaded" for e in refused)
    assert len(answered) + len(refused) == 40 and len(answered) >= 10
    stats = hub.server.stats()
    assert stats["Event.Stats.Updated"].drops.get("queue_full", 0) > 0
    assert stats["Intent.Stats.RequestSnapshot"].drops.get("queue_full", 0) == 0
    assert client.stats()["Intent.Stats.RequestSnapshot"].timeouts == 0


def test_a_request_flood_is_refused_not_queued_without_limit(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0), scheduler={"queue_bytes": {"BACKGROUND": 20_000}})
    client = hub.connect(player_id=1)
    ran: list[int] = []
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: ran.append(1) or {"blob": "s" * 4000})
    promises = [client.request("Intent.Stats.RequestSnapshot", {"version": i}, timeout=60) for i in range(100)]
    hub.advance(30.0)
    answered = [p for p in promises if p.done() and p.rejected_error is None]
    refused = [p.rejected_error for p in promises if isinstance(p.rejected_error, dispatcher.RemoteError)]
    assert len(answered) + len(refused) == 100
    assert len(answered) == len(ran) and 4 <= len(ran) <= 10  # about the bound's worth of 4 kB answers
    assert all(e.code == "overloaded" and "BACKGROUND queue to this player is full" in e.message for e in refused)
    assert hub.server.stats()["Intent.Stats.RequestSnapshot"].drops["overloaded"] == len(refused)
    assert hub.server.stats().tiers[QoS.BACKGROUND].max_queued_bytes <= 20_000 + 5_000


def test_big_frames_are_chunked_and_reassembled(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0))
    client = hub.connect(player_id=1)
    got: list[Any] = []
    client.on("Event.Stats.Updated", lambda env: got.append(env.payload))
    big = {"blob": bytes(range(256)) * 300}  # 77 kB
    hub.server.emit("Event.Stats.Updated", big)
    hub.server.emit("Event.Skills.Execution", {"skillId": "A"})
    hub.advance(3.0)  # 77 kB at 50 kB/s
    assert got == [big]
    assert hub.server.stats().tiers[QoS.CRITICAL].sojourn.max <= TICK * 1e6 * 1.001


class _Sink(Stats):
    pass


MIX = [(3, b"b1"), (0, b"c1"), (2, b"n1"), (1, b"h1"), (0, b"c2")]


@pytest.mark.parametrize(
    ("mode", "pushes", "want_order", "want_drops"),
    [
        ("priority", MIX, [b"c1", b"c2", b"h1", b"n1", b"b1"], 0),
        ("fifo", MIX, [b"b1", b"c1", b"n1", b"h1", b"c2"], 0),
        ("priority", [(3, b"b1"), (3, b"b2"), (3, b"b3")], [b"b2", b"b3"], 1),  # BACKGROUND bounded at 2
    ],
)
def test_scheduler_order_and_bounds(mode: str, pushes: list[tuple[int, bytes]], want_order: list[bytes],
                                    want_drops: int) -> None:
    stats = _Sink()
    sched = Scheduler(SchedulerConfig.from_options({"mode": mode, "budget": None, "queue_limits": {"BACKGROUND": 2}}),
                      stats)
    for tier, frame in pushes:
        sched.push(frame, tier, 0.0, "Event.X.Y")
    assert sched.pull(0.0) == b"".join(want_order)
    assert stats.tiers[QoS.BACKGROUND].drops.get("queue_full", 0) == want_drops
    assert stats["Event.X.Y"].drops.get("queue_full", 0) == want_drops


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "lifo"}, "scheduler mode is 'priority' or 'fifo'"),
        ({"budget": -1}, "budget must be > 0"),
        ({"weights": (8, 0, 1)}, "weights are three integers >= 1"),
        ({"tick": 30}, "unknown scheduler option"),
        ({"chunk_size": 10}, "chunk_size must be >= 64"),
    ],
)
def test_bad_scheduler_options(registry: ChannelRegistry, options: dict[str, Any], message: str) -> None:
    with pytest.raises(dispatcher.LocalProtocolError, match=message):
        dispatcher.Dispatcher("server", registry, scheduler=options)


def test_qos_override_clamp_policy(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0), qos_policy="clamp")
    client = hub.connect()
    got: list[QoS] = []
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: got.append(env.meta.qos))
    hub.clock.set(0.0)
    client.core.qos_policy = "clamp"
    client.request("Intent.Stats.RequestSnapshot", {"version": 1}, qos_override="CRITICAL")
    assert got == [QoS.BACKGROUND]
    assert client.stats()["Intent.Stats.RequestSnapshot"].qos_deviations == 1
