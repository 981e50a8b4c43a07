"""The core's hot path (issue 13): fast envelope construction, compact records built into an ``Envelope`` only
for someone who looks, and statistics that are coalesced on the way in but never stale when read."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import dispatcher.receiving
import dispatcher.stats
import dispatcher.wire
from dispatcher import ChannelRegistry, Envelope, Flags, LoopbackHub, Meta, QoS, VirtualClock
from dispatcher.envelope import envelope_of, make_envelope, make_meta

ARGS: list[tuple[str, tuple[Any, ...]]] = [
    ("minimal", (1, QoS.CRITICAL, 2.5)),
    ("every field", (7, QoS.BACKGROUND, 1.0, 2.0, 42, "trace", Flags(True, False), True, 6)),
]


@pytest.mark.parametrize("args", [a for _, a in ARGS], ids=[n for n, _ in ARGS])
def test_fast_constructors_make_ordinary_frozen_envelopes(args: tuple[Any, ...]) -> None:
    want = Envelope("Intent.Skills.Use", {"skillId": "Nova"}, Meta(*args))
    fast = envelope_of("Intent.Skills.Use", {"skillId": "Nova"}, *args)
    assert type(fast) is Envelope and type(fast.meta) is Meta
    assert fast == want and fast.meta == want.meta and hash(fast.meta) == hash(want.meta)
    assert make_envelope(want.name, want.payload, make_meta(*args)) == want
    assert dataclasses.replace(fast.meta, replayed=True).replayed is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.meta.seq = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.name = "x"  # type: ignore[misc]


def _pair(registry: ChannelRegistry, **options: Any) -> tuple[LoopbackHub, Any]:
    hub = LoopbackHub(registry, clock=VirtualClock(0.0), scheduler={"budget": None}, **options)
    return hub, hub.connect(scheduler={"budget": None}, **options)


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the envelopes built from now on: ``envelope.envelope_of`` (interpreted in both builds; the
    compiled modules hold it in a C static, so it cannot be patched where they call it) makes each from a
    draft of its module's ``_EnvelopeDraft``, which is looked up at every call: a counting twin replaces it."""
    built = [0]

    class CountingDraft(dispatcher.envelope._EnvelopeDraft):
        __slots__ = ()

        def __init__(self) -> None:
            built[0] += 1

    monkeypatch.setattr(dispatcher.envelope, "_EnvelopeDraft", CountingDraft)
    return built


@pytest.mark.parametrize(("who", "builds"), [("nobody", 0), ("handler", 3), ("bus", 3)])
def test_the_envelope_is_built_only_for_someone_who_looks(registry: ChannelRegistry, monkeypatch: pytest.MonkeyPatch,
                                                          who: str, builds: int) -> None:
    hub, client = _pair(registry)
    seen: list[Any] = []
    if who == "handler":
        hub.server.on("Intent.Skills.Use", seen.append)
    elif who == "bus":
        hub.server.core.bus.on("Intent.Skills.Use", lambda payload, meta: seen.append(payload))
    built = _count_builds(monkeypatch)
    sent = [client.intent("Intent.Skills.Use", {"skillId": f"s{i}"}) for i in range(3)]
    hub.pump()
    assert all(type(e) is Envelope for e in sent)  # intent() returns the envelope it sent: 3 builds
    assert built[0] - len(sent) == builds  # and the receiving side built one per envelope for whoever looks
    assert len(seen) == builds
    st = hub.server.stats()["Intent.Skills.Use"]
    assert st.received == 3 and st.no_subscriber == (0 if who == "handler" else 3)  # the bus is no handler


def test_tier_figures_are_current_when_read_though_reported_by_hundreds(registry: ChannelRegistry) -> None:
    """The scheduler reports every 256 frames; three frames are visible at once, because reading flushes."""
    hub, client = _pair(registry)
    hub.pump()
    before = client.stats().tiers[QoS.CRITICAL].sent  # the handshake
    for i in range(3):
        client.intent("Intent.Skills.Use", {"skillId": f"s{i}"})  # Skills: CRITICAL
    hub.pump()
    crit = client.stats().tiers[QoS.CRITICAL]
    assert crit.sent == before + 3 and crit.sojourn.count == before + 3
    assert client.stats().snapshot()["tiers"]["CRITICAL"]["sojourn_us"]["count"] == before + 3


def test_sojourns_waiting_to_be_folded_stay_few(registry: ChannelRegistry) -> None:
    """A tier's queue sojourns wait as counts by bucket (a ``Tally``, whose memory does not grow with them)
    until folded, at most one fold's worth: lists of them grew a Locust process by megabytes (issue 13)."""
    hub, client = _pair(registry)
    n = 3000
    for i in range(n):
        client.intent("Intent.Skills.Use", {"skillId": f"s{i % 7}"})
        if i % 50 == 49:
            hub.pump()
    hub.pump()
    stats = client.core.stats
    held = [t.n for t in stats.sojourn_tallies()]
    assert 0 < sum(held) < dispatcher.stats._FOLD_SOJOURNS  # nothing folded yet: 3,000 frames wait
    # counts by bucket, a byte each up to the largest sojourn (2 kB here; the whole layout is 23 kB), and a carry
    # per 256 of a bucket's frames: not a value per frame
    assert all(len(t.counts) <= 4096 and len(t.carries) <= t.n // 256 for t in stats.sojourn_tallies())
    assert stats.tiers[QoS.CRITICAL].sojourn.count >= n  # reading folds them all


def test_sojourns_after_a_reset_count_in_the_new_figures_only(registry: ChannelRegistry) -> None:
    """The schedulers count sojourns straight into the stats' tallies (``Sink.sojourn_tallies``); a reset
    replaces the tallies in the list the schedulers hold, so what leaves after it counts once, in the new
    figures, and what left before it is gone."""
    hub, client = _pair(registry)
    stats = client.core.stats
    tallies = stats.sojourn_tallies()
    for i in range(300):  # before the reset: gone from the figures after it
        client.intent("Intent.Skills.Use", {"skillId": f"s{i % 7}"})
    hub.pump()
    assert stats.tiers[QoS.CRITICAL].sent >= 300
    stats.reset()
    assert stats.sojourn_tallies() is tallies and all(t.n == 0 for t in tallies)
    assert stats.tiers[QoS.CRITICAL].sent == 0 and stats.tiers[QoS.CRITICAL].sojourn.count == 0
    for i in range(40):
        client.intent("Intent.Skills.Use", {"skillId": f"s{i % 7}"})
        hub.pump()
    crit = stats.tiers[QoS.CRITICAL]
    assert crit.sent == 40 and crit.sojourn.count == 40
    assert crit.bytes_out > 0 and sum(t.n for t in tallies) == 0  # reading folded them


def test_latency_samples_are_current_when_read_and_bounded_when_not(registry: ChannelRegistry) -> None:
    hub, client = _pair(registry)
    client.on("Event.Skills.Execution", lambda env: None)
    n = 10_000
    for i in range(n // 50):
        for _ in range(50):
            hub.server_core.emit("Event.Skills.Execution", {"skillId": "Nova", "caster": 1, "at": 0.0}, hub.clock.now())
        hub.pump()
        if i == 0:
            assert client.stats().latency_of("Event.Skills.Execution").count == 50
    stats = client.core.stats
    held = sum(t.n for _, t in stats._lat_pending)
    assert held < dispatcher.receiving._FOLD_EVERY + 50  # folded every 512 frames received, not kept until read
    assert stats.latency_of("Event.Skills.Execution").count == n


def test_latency_histograms_take_their_memory_within_the_first_folds(registry: ChannelRegistry) -> None:
    """A name's latency histogram takes its counts at the first fold after its first sample (a few seconds
    of a player's traffic), not once 128 samples of it have waited: a load generator's players took theirs
    a minute into a run (issue 13: the Locust process grew by 7 MB after warm-up)."""
    hub, client = _pair(registry)
    for _ in range(dispatcher.receiving._FOLD_EVERY // 50 + 1):
        for _ in range(49):
            hub.server_core.emit("Event.Skills.Execution", {"skillId": "Nova", "caster": 1, "at": 0.0}, hub.clock.now())
        hub.server_core.emit("Event.EntityInfo.Delta", {"id": 1, "hp": 10, "x": 0.0, "y": 0.0}, hub.clock.now())
        hub.pump()
    lat = client.core.stats._latency  # not read through the stats: that would fold
    taken = {name for (name, _), h in lat.items() if h._counts is not None}
    assert taken == {"Event.Skills.Execution", "Event.EntityInfo.Delta"}


def test_stats_off_records_nothing(registry: ChannelRegistry) -> None:
    hub, client = _pair(registry, stats=False)
    client.intent("Intent.Skills.Use", {"skillId": "s"})
    hub.pump()
    assert client.stats().tiers[QoS.CRITICAL].sent == 0
    assert client.stats().snapshot()["enabled"] is False
