"""The TCP client's reading (dispatcher/runtime/tcpclientconn.py): a greenlet blocked in ``result()`` reads
its answer itself, and nothing is lost or stuck when several greenlets wait, events arrive meanwhile, a
waiter dies, times out, or the connection goes away.  Real gevent sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import pytest

import dispatcher
from harness.game import load_registry
from harness.game.schemas import SCHEMAS

REG = load_registry()
ASK = "Intent.Attributes.RequestSnapshot"  # answered with {"attributes": {"str": n}, "points": n}
EVENT = "Event.Skills.Execution"  # reliable: every one emitted must arrive


@pytest.fixture
def server() -> Iterator[dispatcher.Transport]:
    srv = dispatcher.init(peer="server", channel_registry=REG, listen=("127.0.0.1", 0), schemas=SCHEMAS,
                          mode="release")
    srv.on(ASK, lambda env: _answer(int(env.payload["traceId"])))
    yield srv
    srv.close()


def _answer(n: int) -> dict[str, Any]:
    return {"attributes": {"str": n}, "points": n}


def _player(server: dispatcher.Transport, pid: int, **kw: Any) -> dispatcher.Transport:
    assert server.address is not None and server.secret is not None
    return dispatcher.init(peer="client", channel_registry=REG, connect=server.address, player_id=pid,
                           token=dispatcher.make_token(server.secret, pid), schemas=SCHEMAS, mode="release", **kw)


def _ask(client: dispatcher.Transport, n: int, **kw: Any) -> int:
    env = client.request(ASK, {"traceId": str(n)}, **kw).result()
    return int(env.payload["points"])


def test_the_waiting_greenlet_reads_its_own_answer(server: dispatcher.Transport) -> None:
    client = _player(server, 1)
    where: list[Any] = []
    client.set_logger(lambda env, direction: where.append(gevent.getcurrent()) if direction == "in" else None)
    try:
        assert _ask(client, 7) == 7
        assert where == [gevent.getcurrent()]  # decoded and settled here: no reader greenlet in between
    finally:
        client.close()


@pytest.mark.parametrize(("waiters", "asks", "events"), [(1, 50, 0), (1, 30, 40), (4, 25, 0), (4, 20, 60)])
def test_concurrent_waiters_and_events_each_get_theirs(server: dispatcher.Transport, waiters: int, asks: int,
                                                        events: int) -> None:
    client = _player(server, 2)
    got: list[int] = []
    client.on(EVENT, lambda env: got.append(env.payload["seq"]))

    def emitter() -> None:
        for i in range(events):
            server.emit(EVENT, {"skillId": "Nova", "caster": 1, "at": 0.0, "seq": i}, to=2)
            gevent.sleep(0)

    def asker(w: int) -> list[int]:
        return [_ask(client, w * 1000 + i) for i in range(asks)]

    try:
        em = gevent.spawn(emitter)
        jobs = [gevent.spawn(asker, w) for w in range(waiters)]
        gevent.joinall([em, *jobs], timeout=30, raise_error=True)
        assert [j.value for j in jobs] == [[w * 1000 + i for i in range(asks)] for w in range(waiters)]
        deadline = gevent.get_hub().loop.now() + 10
        while len(got) < events and gevent.get_hub().loop.now() < deadline:
            gevent.sleep(0.01)  # the last events arrive after the last answer: the reader greenlet reads them
        assert got == list(range(events))
    finally:
        client.close()


def test_a_killed_waiter_hands_the_reading_back(server: dispatcher.Transport) -> None:
    stuck = dispatcher.Promise[Any]()
    server.on("Intent.Stats.RequestSnapshot", lambda env: stuck)  # never answered
    client = _player(server, 3)
    try:
        g = gevent.spawn(lambda: client.request("Intent.Stats.RequestSnapshot", {"version": 1}).result())
        gevent.sleep(0.05)
        g.kill()
        assert g.dead
        got: list[Any] = []
        client.on(EVENT, lambda env: got.append(env.payload["seq"]))
        server.emit(EVENT, {"skillId": "Nova", "caster": 1, "at": 0.0, "seq": 5}, to=3)
        with gevent.Timeout(10):
            while not got:  # nobody waits: the reader greenlet reads again
                gevent.sleep(0.01)
        assert got == [5] and _ask(client, 11) == 11
    finally:
        client.close()


@pytest.mark.parametrize("how", ["result timeout", "request timeout"])
def test_an_unanswered_wait_ends_and_the_connection_goes_on(server: dispatcher.Transport, how: str) -> None:
    server.on("Intent.Stats.RequestSnapshot", lambda env: dispatcher.Promise())  # never answered
    client = _player(server, 4)
    try:
        with gevent.Timeout(10):
            if how == "result timeout":
                p = client.request("Intent.Stats.RequestSnapshot", {"version": 1}, timeout=30)
                with pytest.raises(TimeoutError, match="still pending"):
                    p.result(timeout=0.05)
            else:
                p = client.request("Intent.Stats.RequestSnapshot", {"version": 1}, timeout=0.05, retries=0)
                with pytest.raises(dispatcher.RequestTimeout):
                    p.result()
            assert _ask(client, 12) == 12
    finally:
        client.close()


def test_a_waiter_learns_that_the_server_closed(server: dispatcher.Transport) -> None:
    server.on("Intent.Stats.RequestSnapshot", lambda env: dispatcher.Promise())  # never answered
    client = _player(server, 5)
    try:
        p = client.request("Intent.Stats.RequestSnapshot", {"version": 1}, timeout=30)
        gevent.spawn_later(0.05, server.close)
        with gevent.Timeout(10), pytest.raises(dispatcher.ConnectionClosed):
            p.result()
    finally:
        client.close()


def test_a_dropped_connection_resumes_under_a_waiter(server: dispatcher.Transport) -> None:
    answer = dispatcher.Promise[Any]()
    server.on("Intent.Stats.RequestSnapshot", lambda env: answer)
    client = _player(server, 6)
    try:
        p = client.request("Intent.Stats.RequestSnapshot", {"version": 1}, timeout=30)
        gevent.spawn_later(0.05, client.runtime.drop)  # type: ignore[attr-defined]
        gevent.spawn_later(0.5, answer.resolve, {"version": 1, "stats": {"hp": 1.0}})
        with gevent.Timeout(20):
            assert p.result().payload["stats"] == {"hp": 1.0}
        assert client.reconnects >= 1
    finally:
        client.close()


@pytest.mark.parametrize(("host", "family"), [
    ("127.0.0.1", "AF_INET"), ("::1", "AF_INET6"), ("10.0.0.255", "AF_INET"), ("localhost", None),
    ("game.example", None), ("127.0.0.1.", None), ("fe80::1%eth0", None), ("", None),
])
def test_an_address_literal_is_dialled_without_the_resolver(host: str, family: str | None) -> None:
    import socket

    from dispatcher.runtime.tcpclient import _numeric_family
    assert _numeric_family(host) == (None if family is None else getattr(socket, family))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_client_connects_by_address_and_by_name(server: dispatcher.Transport, host: str) -> None:
    assert server.address is not None and server.secret is not None
    client = dispatcher.init(peer="client", channel_registry=REG, connect=(host, server.address[1]), player_id=5,
                             token=dispatcher.make_token(server.secret, 5), schemas=SCHEMAS, mode="release")
    try:
        assert _ask(client, 3) == 3
    finally:
        client.close()


def test_many_requests_leave_no_pile_of_cancelled_timeouts(server: dispatcher.Transport) -> None:
    """Each answered request cancels its timeout long before its time (10 s here): the core's timer heap
    stays small instead of holding one dead entry per request of the last 10 seconds (issue 13)."""
    client = _player(server, 6)
    try:
        for n in range(600):
            assert _ask(client, n, timeout=10.0) == n
        assert len(client.core.timers) < 200
    finally:
        client.close()


def _until(cond: Any, seconds: float = 10.0) -> None:
    deadline = gevent.get_hub().loop.now() + seconds
    while not cond() and gevent.get_hub().loop.now() < deadline:
        gevent.sleep(0.005)


@pytest.mark.parametrize("then", ["request", "close", "delay", "delay changed"])
def test_acknowledgements_of_reads_leave_together(server: dispatcher.Transport, then: str) -> None:
    """The ACKs that reads of reliable events queue wait up to the runtime's ``ack_delay`` for company: the
    client's next send takes them along (a request, the CLOSE), else the delay's end; none is lost."""
    acked: list[int] = []
    server.on_ack(lambda env, now: acked.append(env.meta.seq) if env.name == EVENT else None)
    client = _player(server, 7, clock_sync_interval=0, limits={"keepalive_interval": 0})  # no pings: none else sends
    client.runtime.ack_delay = 0.05 if then == "delay" else 60.0  # type: ignore[attr-defined]
    got: list[int] = []
    client.on(EVENT, lambda env: got.append(env.payload["seq"]))
    try:
        for i in range(5):  # one read each: every event is read before the next one is sent
            server.emit(EVENT, {"skillId": "Nova", "caster": 1, "at": 0.0, "seq": i}, to=7)
            _until(lambda i=i: len(got) > i)
            if then == "delay changed" and i == 0:  # the next read's deferred flush takes the new delay
                client.runtime.ack_delay = 0.05  # type: ignore[attr-defined]
        assert got == list(range(5))
        if not then.startswith("delay"):
            gevent.sleep(0.05)  # time for acknowledgements sent at once to arrive (none should)
            assert acked == []  # not one send per read
        if then == "request":
            assert _ask(client, 9) == 9
        elif then == "close":
            client.close()
        _until(lambda: len(acked) == 5)
        assert sorted(acked) == [1, 2, 3, 4, 5]
    finally:
        client.close()


def test_no_ack_delay_acknowledges_each_read(server: dispatcher.Transport) -> None:
    acked: list[int] = []
    server.on_ack(lambda env, now: acked.append(env.meta.seq) if env.name == EVENT else None)
    client = _player(server, 8)
    client.runtime.ack_delay = 0.0  # type: ignore[attr-defined]
    try:
        for i in range(3):
            server.emit(EVENT, {"skillId": "Nova", "caster": 1, "at": 0.0, "seq": i}, to=8)
            _until(lambda i=i: len(acked) > i)  # acknowledged before the next event is even sent
        assert acked == [1, 2, 3]
        assert client.runtime._later is None  # type: ignore[attr-defined]  # no read deferred its flush
    finally:
        client.close()
