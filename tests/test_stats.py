from __future__ import annotations

import math
import re

import numpy as np

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
