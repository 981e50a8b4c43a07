from __future__ import annotations

import math
import re

import numpy as np
import pytest

from dispatcher import ChannelRegistry, LoopbackHub, Promise, QoS, VirtualClock

from .conftest import exact_percentile


def _parse_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def test_dump_percentiles_match_numpy_on_the_same_samples(registry: ChannelRegistry) -> None:
    """Requests answered after known (virtual) delays: the round trips the dispatcher records are the
    samples; dump() and snapshot() must give numpy's percentiles of them within the histogram's precision."""
    clock = VirtualClock(0.0)
    hub = LoopbackHub(registry, clock=clock)
    client = hub.connect()
    waiting: list[tuple[float, Promise[object]]] = []

    def slow(env: object) -> Promise[object]:
        p: Promise[object] = Promise()
        waiting.append((clock.now() + float(rng.lognormal(-6, 1.0)), p))
        return p

    rng = np.random.default_rng(3)
    hub.server.on("Intent.Stats.RequestSnapshot", slow)
    samples: list[float] = []
    for _ in range(2000):
        t0 = clock.now()
        client.request("Intent.Stats.RequestSnapshot", {"version": 1}).and_then(
            lambda env, t0=t0: samples.append((clock.now() - t0) * 1e6))
        due, p = waiting.pop()
        hub.run_until(due)
        p.resolve({"ok": True})
        hub.pump()
        hub.advance(0.001)
    assert len(samples) == 2000
    arr = np.array(samples)

    snap = client.stats().snapshot()["names"]["Intent.Stats.RequestSnapshot"]["latency_us"]["BACKGROUND"]
    for key, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)):
        want = exact_percentile(arr, p)
        assert math.isclose(snap[key], want, rel_tol=1e-3, abs_tol=1), (key, snap[key], want)
    assert snap["count"] == 2000

    text = client.stats().dump()
    row = next(line for line in text.splitlines() if line.startswith("Intent.Stats.RequestSnapshot"))
    p50, p99, p999, mx = (_parse_us(c) for c in row.split()[-4:])
    for got, p in ((p50, 50), (p99, 99), (p999, 99.9), (mx, 100)):
        want = exact_percentile(arr, p)
        assert math.isclose(got, want, rel_tol=2e-3, abs_tol=1), (p, got, want)  # + the table's 4 digits


def test_stats_off_records_nothing(registry: ChannelRegistry) -> None:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0), stats=False)
    client = hub.connect(stats=False)
    hub.server.on("Intent.Skills.Use", lambda env: None)
    client.intent("Intent.Skills.Use", {"skillId": "A"})
    assert hub.server.stats().snapshot()["names"] == {}
    assert client.stats().snapshot()["enabled"] is False


def test_snapshot_is_json_and_reset_clears(registry: ChannelRegistry) -> None:
    import json

    hub = LoopbackHub(registry, clock=VirtualClock(0.0))
    client = hub.connect()
    hub.server.emit("Event.Skills.Execution", {"skillId": "A"})
    snap = json.loads(json.dumps(client.stats().snapshot()))
    assert snap["names"]["Event.Skills.Execution"]["received"] == 1
    assert snap["names"]["Event.Skills.Execution"]["latency_us"]["CRITICAL"]["count"] == 1
    assert hub.server.stats().snapshot()["tiers"]["CRITICAL"]["sent"] >= 1
    client.stats().reset()
    assert client.stats().snapshot()["names"] == {}
    assert client.stats().tiers[QoS.CRITICAL].sent == 0


@pytest.mark.parametrize(("offset", "want_us", "skewed"), [
    (0.0, [1000, 2000, 3000, 4000], 0),  # the same clock: each event's age when its read came
    (0.0015, [2500, 3500, 4500, 5500], 0),  # the server's clock ahead: added
    (-0.0025, [0, 0, 500, 1500], 2),  # behind by more than two of them: counted as skewed, recorded as 0
])
def test_events_one_way_latency_per_read(registry: ChannelRegistry, offset: float, want_us: list[int],
                                         skewed: int) -> None:
    """Events sent 1 ms apart reach the client in one read, 1 ms after the last: each one's one-way latency
    is the read's time less its sent time, on the server's clock (the client's clock offset added); negative
    ones count as ``clock_skew`` and as 0, never lost."""
    clock = VirtualClock(0.0)
    hub = LoopbackHub(registry, clock=clock)
    client = hub.connect()
    client.core.clock.offset = offset
    for _ in range(4):  # into the server core's queue: the hub pumps them in one go
        hub.server_core.emit("Event.Skills.Execution", {"skillId": "A"}, clock.now())
        clock.advance(0.001)
    hub.pump()
    h = client.stats().histogram("Event.Skills.Execution", QoS.CRITICAL)
    assert h.count == 4
    got = h.percentiles([12.5, 37.5, 62.5, 87.5])
    assert all(math.isclose(g, w, rel_tol=1e-3) for g, w in zip(got, want_us, strict=True)), got
    assert client.stats().peer.get("clock_skew", 0) == skewed


def test_a_read_of_many_events_counts_each_once(registry: ChannelRegistry) -> None:
    """One read of 300 events (the queue starts with room for 64, and doubles), then one of 5: each event's
    latency lands once, in its own name's and tier's histogram (two names on two tiers, one read)."""
    clock = VirtualClock(0.0)
    hub = LoopbackHub(registry, clock=clock, scheduler={"budget": None})
    client = hub.connect(scheduler={"budget": None})
    names = (("Event.Skills.Execution", QoS.CRITICAL, {"skillId": "A"}),
             ("Event.Cooldowns.Updated", QoS.HIGH, {"skillId": "A", "ready_in": 1.0}))
    for n in (300, 5):
        for i in range(n):
            name, _, payload = names[i % 2]
            hub.server_core.emit(name, payload, clock.now())
        clock.advance(0.002)
        hub.pump()
    assert len(client.core._one_way_due.sent) >= 300  # the 300 came in one read: the queue grew to hold them
    got = [client.stats().histogram(name, tier) for name, tier, _ in names]
    assert [h.count for h in got] == [153, 152]
    assert all(math.isclose(h.percentile(100), 2000, rel_tol=1e-3) for h in got)
