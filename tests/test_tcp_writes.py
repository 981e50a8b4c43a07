"""How the TCP runtime writes and reads (dispatcher/runtime/tcpbase.py, tcpconn.py, tcpclientconn.py): a server
writes what one turn of its event loop queued for a player in one ``send``; a client writes at once; no read
finds an empty socket after a short read; a connecting client waits for its WELCOME without polling.  Real
gevent sockets on 127.0.0.1; the sockets are wrapped only to count the calls that reach them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import pytest

import dispatcher
from dispatcher.runtime.tcpclientconn import ClientConn
from harness.game import load_registry
from harness.game.schemas import SCHEMAS

REG = load_registry()
ASK = "Intent.Attributes.RequestSnapshot"
EVENT = "Event.Skills.Execution"  # CRITICAL, reliable: every one emitted must arrive
SKILL = {"skillId": "Nova", "caster": 1, "target": 2, "at": 0.0}


class Counting:
    """A socket that counts ``send`` calls and the ``recv`` calls that found it empty."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sends = 0
        self.reads = 0  # reads that returned bytes
        self.empty_recvs = 0

    def send(self, data: Any) -> int:
        self.sends += 1
        return int(self._raw.send(data))

    def recv(self, size: int) -> bytes:
        try:
            data = bytes(self._raw.recv(size))
        except BlockingIOError:
            self.empty_recvs += 1
            raise
        self.reads += 1
        return data

    def recv_into(self, buffer: Any, size: int = 0) -> int:  # what ``ClientConn`` reads with
        try:
            n = int(self._raw.recv_into(buffer, size))
        except BlockingIOError:
            self.empty_recvs += 1
            raise
        self.reads += 1
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@pytest.fixture
def server() -> Iterator[dispatcher.Transport]:
    srv = dispatcher.init(peer="server", channel_registry=REG, listen=("127.0.0.1", 0), schemas=SCHEMAS,
                          mode="release", scheduler={"budget": None})  # unlimited: no tick holds frames back
    srv.on(ASK, lambda env: {"attributes": {"str": 1}, "points": 1})
    yield srv
    srv.close()


def _player(server: dispatcher.Transport, pid: int) -> dispatcher.Transport:
    assert server.address is not None and server.secret is not None
    return dispatcher.init(peer="client", channel_registry=REG, connect=server.address, player_id=pid,
                           token=dispatcher.make_token(server.secret, pid), schemas=SCHEMAS, mode="release")


def _server_conn(server: dispatcher.Transport) -> Any:
    conns = list(server.runtime._conns.values())  # type: ignore[attr-defined]
    assert len(conns) == 1
    return conns[0]


@pytest.mark.parametrize("events", [1, 5, 40])
def test_a_server_writes_one_turns_envelopes_to_a_player_in_one_send(server: dispatcher.Transport,
                                                                     events: int) -> None:
    client = _player(server, 1)
    got: list[int] = []
    client.bus.on(EVENT, lambda payload, meta: got.append(payload["target"]))
    try:
        conn = _server_conn(server)
        conn.raw = counting = Counting(conn.raw)
        for i in range(events):
            server.emit(EVENT, {**SKILL, "target": i}, to=1)
        assert counting.sends == 0  # queued: written when this turn of the event loop ends
        deadline = 50
        while len(got) < events and deadline:
            gevent.sleep(0.01)
            deadline -= 1
        assert got == list(range(events))  # all of them, in order
        assert counting.sends == 1
    finally:
        client.close()


def test_a_server_flush_writes_at_once(server: dispatcher.Transport) -> None:
    client = _player(server, 2)
    try:
        conn = _server_conn(server)
        conn.raw = counting = Counting(conn.raw)
        server.emit(EVENT, SKILL, to=2)
        server.flush()  # the public flush does not wait for the turn to end
        assert counting.sends == 1
    finally:
        client.close()


def test_a_client_writes_its_request_at_once(server: dispatcher.Transport) -> None:
    client = _player(server, 3)
    try:
        conn = client.runtime._conn  # type: ignore[attr-defined]
        conn.raw = counting = Counting(conn.raw)
        p = client.request(ASK, None)
        assert counting.sends == 1  # a closed loop waits for this answer: no deferral on a client
        assert p.result(timeout=5).payload["points"] == 1
    finally:
        client.close()


@pytest.mark.parametrize("asks", [1, 30])
def test_a_waiting_client_never_reads_an_empty_socket(server: dispatcher.Transport, asks: int) -> None:
    client = _player(server, 4)
    try:
        conn = client.runtime._conn  # type: ignore[attr-defined]
        conn.raw = counting = Counting(conn.raw)
        conn._recv_into = counting.recv_into  # the waiting path's read, bound when the connection was made
        for _ in range(asks):
            assert client.request(ASK, None).result(timeout=5).payload["points"] == 1
        assert counting.reads >= asks  # the answers were read through the counter
        assert counting.empty_recvs == 0  # each answer: readiness, one recv, done
    finally:
        client.close()


def test_events_read_by_the_reader_greenlet_arrive_without_empty_reads(server: dispatcher.Transport,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped: list[Counting] = []
    spawn = gevent.spawn

    def counting_spawn(fn: Any, *args: Any) -> Any:
        conn = getattr(fn, "__self__", None)  # the client's reader greenlet: ``ClientConn.read_loop``
        if isinstance(conn, ClientConn) and getattr(fn, "__name__", "") == "read_loop":
            conn.raw = Counting(conn.raw)  # before its reader greenlet starts reading
            wrapped.append(conn.raw)
        return spawn(fn, *args)

    # Not ``ClientConn.__init__``: the compiled runtime constructs its connection natively.
    monkeypatch.setattr(gevent, "spawn", counting_spawn)
    client = _player(server, 5)
    got: list[int] = []
    client.bus.on(EVENT, lambda payload, meta: got.append(payload["target"]))
    try:
        before = wrapped[0].empty_recvs  # the handshake's (its first read may come before the CHALLENGE)
        for i in range(20):
            server.emit(EVENT, {**SKILL, "target": i}, to=5)
            gevent.sleep(0.002)  # separate turns: separate sends, separate reads
        deadline = 100
        while len(got) < 20 and deadline:
            gevent.sleep(0.01)
            deadline -= 1
        assert got == list(range(20))
        assert wrapped[0].reads > 0  # the events were read through the counter
        assert wrapped[0].empty_recvs == before  # each read: readiness, one recv, back to waiting
    finally:
        client.close()


def test_a_client_waits_for_its_welcome_without_polling(server: dispatcher.Transport,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    me = gevent.getcurrent()
    sleeps: list[float] = []
    real_sleep = gevent.sleep

    def counting_sleep(seconds: float = 0, *args: Any) -> None:
        if gevent.getcurrent() is me:
            sleeps.append(seconds)
        real_sleep(seconds, *args)

    monkeypatch.setattr(gevent, "sleep", counting_sleep)
    client = _player(server, 6)  # the reader greenlet wakes it when the WELCOME arrives
    try:
        assert client.connected
        assert sleeps == []
    finally:
        client.close()
