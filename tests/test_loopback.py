"""The dispatcher's behaviour end to end over the in-process pair, in virtual time (no sleeps)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import dispatcher
from dispatcher import (
    ConnectionClosed,
    DispatcherError,
    Envelope,
    LocalProtocolError,
    LoopbackHub,
    Promise,
    QoS,
    RemoteError,
    RemoteProtocolError,
    RequestTimeout,
    UnknownNameError,
    ValidationError,
    VirtualClock,
)

from .conftest import GAME_SCHEMAS


def test_request_response_round_trip(hub: LoopbackHub) -> None:
    client = hub.connect(player_id=42)
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: {"stats": {"str": 5}, "asked": env.payload["version"]})
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 3})
    resp = p.result(timeout=1)
    assert resp.name == "Intent.Stats.RequestSnapshot"
    assert resp.payload == {"stats": {"str": 5}, "asked": 3}
    assert resp.meta.is_response and resp.meta.reply_to == 1
    assert resp.meta.player_id == 42 and resp.meta.ts_ack is not None
    assert client.stats()["Intent.Stats.RequestSnapshot"].sent == 1


def test_and_then_and_catch_chain(hub: LoopbackHub) -> None:
    client = hub.connect()
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: {"v": env.payload["version"] * 2})
    seen: list[Any] = []
    client.request("Intent.Stats.RequestSnapshot", {"version": 4}).and_then(
        lambda env: env.payload["v"] + 1).and_then(seen.append).catch(seen.append)
    assert seen == [9]


def test_intent_reaches_server_handler_with_session_player_id(hub: LoopbackHub) -> None:
    client = hub.connect(player_id=7)
    got: list[Envelope] = []
    hub.server.on("Intent.Skills.Use", got.append)
    env = client.intent("Intent.Skills.Use", {"skillId": "TripleStrike"})
    assert env is not None and env.meta.qos is QoS.CRITICAL and env.meta.seq == 1
    assert [e.payload for e in got] == [{"skillId": "TripleStrike"}]
    assert got[0].meta.player_id == 7  # stamped by the server from the session


def test_emit_to_one_player_and_to_all(hub: LoopbackHub) -> None:
    a, b, c = hub.connect(player_id=1), hub.connect(player_id=2), hub.connect(player_id=3)
    inbox: dict[int, list[Any]] = {1: [], 2: [], 3: []}
    for pid, client in ((1, a), (2, b), (3, c)):
        client.on("Event.Skills.Execution", lambda env, pid=pid: inbox[pid].append(env.payload))
    sent = hub.server.emit("Event.Skills.Execution", {"skillId": "Nova"}, to=2)
    assert len(sent) == 1
    assert inbox == {1: [], 2: [{"skillId": "Nova"}], 3: []}
    sent = hub.server.emit("Event.Skills.Execution", {"skillId": "Quake"})
    assert len(sent) == 3
    assert inbox == {1: [{"skillId": "Quake"}], 2: [{"skillId": "Nova"}, {"skillId": "Quake"}],
                     3: [{"skillId": "Quake"}]}
    hub.server.emit("Event.Skills.Execution", {"skillId": "Zap"}, to=[1, 3, 99])
    assert inbox[1][-1] == inbox[3][-1] == {"skillId": "Zap"} and len(inbox[2]) == 2
    assert hub.server.stats()["Event.Skills.Execution"].drops == {"not_connected": 1}


@pytest.mark.parametrize("options", [
    {},
    {"player_id": 7},
    {"trace_id": "t-1"},
    {"player_id": 7, "trace_id": "t-1"},
    {"reliable": True},
    {"replayable": False, "reliable": False, "player_id": 0},
    {"qos_override": "BACKGROUND", "trace_id": "t-2"},
])
def test_emit_options_reach_every_recipient(hub: LoopbackHub, options: dict[str, Any]) -> None:
    """What ``emit`` stamps (origin player, trace, flags, tier) arrives as sent, at each recipient."""
    clients = [hub.connect(player_id=pid) for pid in (1, 2)]
    got: list[Envelope] = []
    for client in clients:
        client.on("Event.Skills.Execution", got.append)
    sent = hub.server.emit("Event.Skills.Execution", {"skillId": "Nova"}, **options)
    assert len(sent) == len(got) == 2
    for out, env in zip(sent, got, strict=True):
        assert env.payload == {"skillId": "Nova"} and env.meta.seq == out.meta.seq == 1
        assert (env.meta.player_id, env.meta.trace_id, env.meta.flags, env.meta.qos, env.meta.ts_sent) == \
               (out.meta.player_id, out.meta.trace_id, out.meta.flags, out.meta.qos, out.meta.ts_sent)
    assert got[0].meta.player_id == options.get("player_id")
    assert got[0].meta.trace_id == options.get("trace_id")
    assert got[0].meta.flags == dispatcher.Flags(options.get("replayable"), options.get("reliable"))
    assert got[0].meta.qos == QoS.parse(options.get("qos_override", "CRITICAL"))  # the channel's, unless overridden


def test_on_and_disconnect(hub: LoopbackHub) -> None:
    client = hub.connect(player_id=1)
    got: list[Any] = []
    handle = client.on("Event.Cooldowns.Updated", lambda env: got.append(env.payload))
    hub.server.emit("Event.Cooldowns.Updated", {"skill": "A"}, to=1)
    client.disconnect(handle)
    hub.server.emit("Event.Cooldowns.Updated", {"skill": "B"}, to=1)
    handle2 = client.events.Cooldowns.Updated(lambda env: got.append(("helper", env.payload)))
    hub.server.emit("Event.Cooldowns.Updated", {"skill": "C"}, to=1)
    handle2()
    handle2()  # idempotent
    hub.server.emit("Event.Cooldowns.Updated", {"skill": "D"}, to=1)
    assert got == [{"skill": "A"}, ("helper", {"skill": "C"})]
    assert not handle.active


def test_handler_raising_rejects_request_and_server_keeps_serving(hub: LoopbackHub) -> None:
    client = hub.connect()

    def snapshot(env: Envelope) -> Any:
        if env.payload["version"] == 13:
            raise ValueError("version 13 is cursed")
        return {"ok": True}

    hub.server.on("Intent.Stats.RequestSnapshot", snapshot)
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 13})
    with pytest.raises(DispatcherError, match="version 13 is cursed") as exc:
        p.result(timeout=1)
    assert isinstance(exc.value, RemoteError) and exc.value.code == "handler_error"
    assert "ValueError" in exc.value.message
    assert client.request("Intent.Stats.RequestSnapshot", {"version": 1}).result(timeout=1).payload == {"ok": True}
    assert hub.server.stats()["Intent.Stats.RequestSnapshot"].handler_errors == 1


def test_timeout_after_configured_retries_in_virtual_time(hub: LoopbackHub, clock: VirtualClock) -> None:
    client = hub.connect()
    calls: list[int] = []

    def never_answers(env: Envelope) -> Promise[Any]:
        calls.append(env.meta.seq)
        return Promise()

    hub.server.on("Intent.Stats.RequestSnapshot", never_answers)
    t0 = clock.now()
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 1}, timeout=1.0, retries=2)
    with pytest.raises(RequestTimeout, match=r"no response after 3 attempt\(s\) of 1s each"):
        p.result()
    elapsed = clock.now() - t0
    assert 3.0 < elapsed < 3.0 + 2 * 0.15 + 0.2 * 1.5  # three timeouts plus two jittered backoffs
    st = client.stats()["Intent.Stats.RequestSnapshot"]
    assert (st.retries, st.timeouts, st.failures) == (2, 1, 1)
    # The retries reached the server and were recognised: the handler ran once.
    assert calls == [1]
    assert hub.server.stats()["Intent.Stats.RequestSnapshot"].duplicates == 2


def test_critical_requests_default_to_one_retry(hub: LoopbackHub, clock: VirtualClock) -> None:
    client = hub.connect()
    hub.cut(client)
    p = client.request("Intent.Attributes.RequestSnapshot", None, timeout=0.5)  # Attributes is CRITICAL
    with pytest.raises(RequestTimeout, match=r"2 attempt"):
        p.result()
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 1}, timeout=0.5)  # BACKGROUND: no retry
    with pytest.raises(RequestTimeout, match=r"1 attempt"):
        p.result()


def test_retry_recovers_a_lost_request(hub: LoopbackHub) -> None:
    client = hub.connect()
    calls: list[int] = []
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: calls.append(1) or {"n": len(calls)})
    hub.cut(client, "up")
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 1}, timeout=1.0, retries=1)
    hub.advance(1.0)  # the first attempt times out; the retry waits a backoff
    hub.mend(client)
    assert p.result(timeout=5).payload == {"n": 1}
    assert client.stats()["Intent.Stats.RequestSnapshot"].retries == 1


@pytest.mark.parametrize("trace_id", [None, "trace-7"])
def test_a_retry_carries_what_the_first_attempt_did(hub: LoopbackHub, trace_id: str | None) -> None:
    """A request's Envelope is built only when something needs it (a retry, a resend, a logger): the retry's
    is the first attempt's (name, payload, seq, tier, send time, trace)."""
    client = hub.connect()
    seen: list[Envelope] = []
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: seen.append(env) or {"ok": True})
    hub.cut(client, "up")
    t0 = hub.clock.now()
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 7}, timeout=1.0, retries=1, trace_id=trace_id)
    hub.advance(1.0)
    hub.mend(client)
    assert p.result(timeout=5).payload == {"ok": True}
    [env] = seen
    assert (env.name, env.payload, env.meta.seq, env.meta.qos, env.meta.trace_id) == (
        "Intent.Stats.RequestSnapshot", {"version": 7}, 1, QoS.BACKGROUND, trace_id)
    assert env.meta.ts_sent == t0


def test_retry_after_lost_response_does_not_rerun_handler(hub: LoopbackHub) -> None:
    client = hub.connect()
    calls: list[int] = []
    hub.server.on("Intent.Attributes.SpendPoints", lambda env: calls.append(1) or {"spent": env.payload["points"]})
    hub.cut(client, "down")
    p = client.request("Intent.Attributes.SpendPoints", {"attribute": "str", "points": 3}, timeout=1.0, retries=1)
    assert calls == [1]  # the server ran it; the response is lost
    hub.mend(client)
    assert p.result(timeout=5).payload == {"spent": 3}
    assert calls == [1]  # the retry got the cached response: points were spent once


def test_dev_mode_raises_on_invalid_payload(hub: LoopbackHub) -> None:
    client = hub.connect()
    with pytest.raises(ValidationError, match=r"Intent.Skills.Use: invalid payload: skillId: expected a string"):
        client.intent("Intent.Skills.Use", {"skillId": 5})
    with pytest.raises(ValidationError, match=r"points: 500 is above the maximum 100"):
        client.request("Intent.Attributes.SpendPoints", {"attribute": "str", "points": 500})
    assert client.stats()["Intent.Skills.Use"].sent == 0


def test_release_mode_rejects_promise_and_drops_intent(registry: dispatcher.ChannelRegistry,
                                                        clock: VirtualClock) -> None:
    hub = LoopbackHub(registry, clock=clock, schemas=GAME_SCHEMAS, mode="release")
    client = hub.connect()
    got: list[Any] = []
    hub.server.on("Intent.Skills.Use", got.append)
    assert client.intent("Intent.Skills.Use", {"skillId": 5}) is None
    p = client.request("Intent.Attributes.SpendPoints", {"attribute": "luck", "points": 1})
    with pytest.raises(ValidationError, match=r"attribute: 'luck' is not one of dex, int, str"):
        p.result(timeout=1)
    st = client.stats()["Intent.Skills.Use"]
    assert (st.sent, st.validation_errors, st.drops) == (0, 1, {"invalid_payload": 1})
    assert got == []


def test_server_validates_on_receive_whatever_the_client_sends(registry: dispatcher.ChannelRegistry,
                                                                clock: VirtualClock) -> None:
    hub = LoopbackHub(registry, clock=clock, schemas=GAME_SCHEMAS)
    client = hub.connect(schemas={})  # this client has no schemas: it sends anything
    got: list[Any] = []
    hub.server.on("Intent.Skills.Use", got.append)
    hub.server.on("Intent.Attributes.SpendPoints", lambda env: {"ok": True})
    client.intent("Intent.Skills.Use", {"skillId": ""})
    p = client.request("Intent.Attributes.SpendPoints", {"attribute": "str"})
    with pytest.raises(RemoteError, match=r"invalid_payload: .*points: missing required field"):
        p.result(timeout=1)
    assert got == []
    assert hub.server.stats()["Intent.Skills.Use"].validation_errors == 1


def test_sequence_regression_dropped_and_counted(hub: LoopbackHub, clock: VirtualClock) -> None:
    client = hub.connect()
    got: list[Any] = []
    hub.server.on("Intent.Skills.Use", lambda env: got.append(env.meta.seq))
    now = clock.now()
    client.core.intent("Intent.Skills.Use", {"skillId": "A"}, now)
    first = client.core.data_to_send(now)
    client.core.intent("Intent.Skills.Use", {"skillId": "B"}, now)
    second = client.core.data_to_send(now)
    key = hub.client_key(client)
    hub.server_core.receive_data(second, now, key)
    hub.server_core.receive_data(first, now, key)  # late, but never seen: accepted
    hub.server_core.receive_data(second, now, key)  # a replay: dropped
    hub.server_core.receive_data(first, now, key)  # a replay: dropped
    assert got == [2, 1]
    st = hub.server.stats()["Intent.Skills.Use"]
    assert (st.seq_regressions, st.seq_late, st.seq_gaps) == (2, 1, 1)
    assert st.drops == {"duplicate": 2}


def test_client_cannot_send_server_only_event(hub: LoopbackHub) -> None:
    client = hub.connect()
    with pytest.raises(LocalProtocolError, match=r"a client cannot send 'Event.Skills.Execution'"):
        client.emit("Event.Skills.Execution", {"skillId": "x"})
    with pytest.raises(LocalProtocolError, match=r"'Event.Cooldowns.Updated' is an event, not an intent"):
        client.intent("Event.Cooldowns.Updated", {})
    with pytest.raises(LocalProtocolError, match=r"a server cannot send 'Intent.Skills.Use'"):
        hub.server.intent("Intent.Skills.Use", {"skillId": "x"})
    with pytest.raises(LocalProtocolError, match=r"'Intent.Nope.X' is not declared"):
        client.intent("Intent.Nope.X", {})
    with pytest.raises(LocalProtocolError, match=r"a client never receives one"):
        client.on("Intent.Skills.Use", lambda env: None)


def test_wrong_direction_on_the_wire_is_dropped_and_counted(hub: LoopbackHub, clock: VirtualClock) -> None:
    from dispatcher.wire import encode_envelope

    client = hub.connect()
    bad = Envelope("Event.Skills.Execution", {"skillId": "fake"}, dispatcher.Meta(1, QoS.CRITICAL, clock.now()))
    hub.server_core.receive_data(encode_envelope(bad, hub.registry.wire_id(bad.name)), clock.now(),
                                 hub.client_key(client))
    assert hub.server.stats()["Event.Skills.Execution"].wrong_direction == 1
    got: list[Any] = []
    hub.server.on("Intent.Skills.Use", got.append)
    client.intent("Intent.Skills.Use", {"skillId": "real"})
    assert len(got) == 1  # the connection is still up


def test_require_subscriber_warns_sender(hub: LoopbackHub, caplog: pytest.LogCaptureFixture) -> None:
    client = hub.connect()
    with caplog.at_level(logging.WARNING, logger="dispatcher"):
        client.intent("Intent.Skills.Use", {"skillId": "A"}, require_subscriber=True)
    assert "Intent.Skills.Use: the server has no subscriber" in caplog.text
    assert client.stats()["Intent.Skills.Use"].no_subscriber == 1
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 1})
    with pytest.raises(RemoteError, match="no_subscriber"):
        p.result(timeout=1)


def test_handler_returning_a_promise_answers_later(hub: LoopbackHub) -> None:
    client = hub.connect()
    later: Promise[Any] = Promise()
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: later)
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 1})
    assert not p.done()
    later.resolve({"late": True})
    hub.pump()
    assert p.result(timeout=0).payload == {"late": True}


def test_intent_and_event_helpers(hub: LoopbackHub) -> None:
    client = hub.connect(player_id=5)
    got: list[Any] = []
    hub.server.on("Intent.Skills.Use", lambda env: got.append(env.payload))
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: {"v": 1})
    client.intents.Skills.Use({"skillId": "TripleStrike"})
    assert got == [{"skillId": "TripleStrike"}]
    assert client.intents.Stats.RequestSnapshot.request({"version": 1}).result(timeout=1).payload == {"v": 1}
    events: list[Any] = []
    client.events.Attributes.Updated(lambda env: events.append(env.payload))
    hub.server.events.Attributes.Updated.emit({"str": 3}, to=5)
    assert events == [{"str": 3}]
    with pytest.raises(UnknownNameError, match=r"intents.Skills has no 'Usee'; known: Use"):
        client.intents.Skills.Usee  # noqa: B018
    with pytest.raises(AttributeError, match=r"intents has no 'Skill'; known: Attributes, Skills, Stats"):
        client.intents.Skill  # noqa: B018


def test_logger_and_bus_see_every_envelope(hub: LoopbackHub) -> None:
    client = hub.connect()
    log_: list[tuple[str, str]] = []
    client.set_logger(lambda env, direction: log_.append((env.name, direction)))
    bus: list[Any] = []
    client.bus.on("Event.Cooldowns.Updated", lambda payload, meta: bus.append((payload, meta.seq)))
    hub.server.on("Intent.Skills.Use", lambda env: None)
    client.intent("Intent.Skills.Use", {"skillId": "A"})
    hub.server.emit("Event.Cooldowns.Updated", {"cd": 1.5})
    assert log_ == [("Intent.Skills.Use", "out"), ("Event.Cooldowns.Updated", "in")]
    assert bus == [({"cd": 1.5}, 1)]


@pytest.mark.parametrize("trace_id", [None, "t-9"])
@pytest.mark.parametrize("watch", ["nothing", "logger"])
def test_a_response_frame_carries_what_its_envelope_says(hub: LoopbackHub, trace_id: str | None,
                                                         watch: str) -> None:
    """The server encodes a response from the values at hand and builds its ``Envelope`` only for a logger
    (or a replay buffer): what the client receives is that envelope, field for field."""
    client = hub.connect(player_id=5)
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: {"stats": {"str": 5}, "asked": env.payload["version"]})
    sent: list[Envelope] = []
    if watch == "logger":
        hub.server.set_logger(lambda env, direction: sent.append(env) if direction == "out" else None)
    hub.clock.advance(1.25)
    now = hub.clock.now()
    resp = client.request("Intent.Stats.RequestSnapshot", {"version": 2}, trace_id=trace_id).result(timeout=1)
    m = resp.meta
    assert resp.payload == {"stats": {"str": 5}, "asked": 2}
    assert (m.is_response, m.reply_to, m.player_id, m.trace_id, m.ts_sent, m.ts_ack, m.seq) == \
           (True, 1, 5, trace_id, now, now, 1)
    if watch == "logger":
        assert len(sent) == 1 and sent[0].payload == resp.payload
        assert sent[0].meta == m


def test_bad_token_and_registry_mismatch_refused(hub: LoopbackHub, registry: dispatcher.ChannelRegistry) -> None:
    with pytest.raises(RemoteProtocolError, match=r"bad_token: bad auth token for player 9"):
        hub.connect(player_id=9, token="forged")
    other = dispatcher.ChannelRegistry.from_dict({"Solo": {"remote": "SoloChannel", "intents": ["Intent.Solo.Go"]}})
    hub2 = LoopbackHub(registry, clock=hub.clock)
    hub2.registry = other  # a client built from another registry
    with pytest.raises(RemoteProtocolError, match=rf"registry mismatch: client hash {other.hash}, server hash "
                                                  rf"{registry.hash}"):
        hub2.connect()
    assert hub.server.stats().peer["handshake_failures"] == 1
    assert hub2.server.stats().peer["handshake_failures"] == 1
    ok = hub.connect(player_id=9)
    assert ok.player_id == 9


def test_garbage_closes_only_that_connection(hub: LoopbackHub, clock: VirtualClock) -> None:
    good, bad = hub.connect(player_id=1), hub.connect(player_id=2)
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: {"ok": env.meta.player_id})
    with pytest.raises(RemoteProtocolError, match="undecodable msgpack"):
        hub.server_core.receive_data(b"\xc1\xc1\xc1", clock.now(), hub.client_key(bad))
    hub.pump()
    assert hub.server_core.session(hub.client_key(bad)).closed
    assert bad.core.session().close_code == "malformed_frame"
    assert hub.server.stats().peer["malformed_frames"] == 1
    assert good.request("Intent.Stats.RequestSnapshot", {"version": 1}).result(timeout=1).payload == {"ok": 1}
    with pytest.raises(LocalProtocolError, match="not connected"):
        bad.intent("Intent.Skills.Use", {"skillId": "A"})


def test_close_rejects_pending_and_is_idempotent(hub: LoopbackHub) -> None:
    client = hub.connect()
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: Promise())
    p = client.request("Intent.Stats.RequestSnapshot", {"version": 1})
    client.close()
    client.close()
    with pytest.raises(ConnectionClosed):
        p.result(timeout=0)
    with pytest.raises(LocalProtocolError, match="closed"):
        client.intent("Intent.Skills.Use", {"skillId": "A"})
    assert hub.server_core.players() == []


def test_qos_override_above_declared_tier_warns_and_counts(hub: LoopbackHub) -> None:
    client = hub.connect()
    hub.server.on("Intent.Stats.RequestSnapshot", lambda env: env.meta.qos.name)
    resp = client.request("Intent.Stats.RequestSnapshot", {"version": 1}, qos_override="CRITICAL").result(timeout=1)
    # The client's claim is a hint: the server clamps it to the channel's declared tier, counts it, and
    # answers on the declared tier (issue 12: the server decides).
    assert resp.payload == "BACKGROUND" and resp.meta.qos is QoS.BACKGROUND
    assert client.stats()["Intent.Stats.RequestSnapshot"].qos_deviations == 1
    assert hub.server.stats().peer["qos_clamped"] == 1


def test_loopback_function_returns_a_pair(registry: dispatcher.ChannelRegistry) -> None:
    server, client = dispatcher.loopback(channel_registry=registry)
    server.on("Intent.Skills.Use", lambda env: None)
    assert server.peer == "server" and client.peer == "client"
    assert client.intent("Intent.Skills.Use", {"skillId": "A"}) is not None
    assert server.stats()["Intent.Skills.Use"].received == 1
    with pytest.raises(LocalProtocolError, match=r"a server takes listen=\(host, port\)"):
        dispatcher.init(peer="server", channel_registry=registry, connect=("127.0.0.1", 1))
    with pytest.raises(LocalProtocolError, match=r"peer must be 'server' or 'client', got 'host'"):
        dispatcher.init(peer="host", channel_registry=registry)


def test_dedup_cache_is_bounded_and_never_reruns_an_evicted_request(registry: dispatcher.ChannelRegistry,
                                                                    clock: VirtualClock) -> None:
    hub = LoopbackHub(registry, clock=clock, dedup_bytes=2_000)
    client = hub.connect()
    calls: list[int] = []
    hub.server.on("Intent.Attributes.SpendPoints", lambda env: calls.append(1) or {"pad": "x" * 500})
    hub.cut(client, "down")  # the first answer is lost...
    first = client.request("Intent.Attributes.SpendPoints", {"attribute": "str", "points": 1}, timeout=5, retries=1)
    hub.mend(client)
    for _ in range(10):  # ...and pushed out of the 2 kB dedup cache by later answers
        client.request("Intent.Attributes.SpendPoints", {"attribute": "dex", "points": 1}).result(timeout=1)
    with pytest.raises(RemoteError, match=r"expired: .* already ran and its answer is no longer kept"):
        first.result(timeout=30)  # the retry is refused, not run again
    assert len(calls) == 11
    assert len(hub.server_core.session(hub.client_key(client)).answered) <= 4
