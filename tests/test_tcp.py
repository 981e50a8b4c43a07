"""The TCP runtime over real loopback sockets (gevent), the game server, and ``netharness serve``."""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.socket
import pytest

import dispatcher
from dispatcher import ChannelRegistry, Envelope, Meta, QoS
from dispatcher.auth import prove
from dispatcher.decoder import FrameDecoder
from dispatcher.wire import (
    PROTOCOL_VERSION,
    Challenge,
    Close,
    Hello,
    Welcome,
    encode_control,
    encode_envelope,
)
from harness.game import load_registry
from harness.game.schemas import SCHEMAS
from harness.game.services import Game, GameConfig

from .conftest import GAME_REGISTRY

REG = load_registry()


@pytest.fixture
def server() -> Iterator[dispatcher.Transport]:
    srv = dispatcher.init(peer="server", channel_registry=REG, listen=("127.0.0.1", 0), schemas=SCHEMAS,
                          mode="release", max_frame_size=64 * 1024)
    yield srv
    srv.close()


def _player(server: dispatcher.Transport, pid: int, **kw: Any) -> dispatcher.Transport:
    assert server.address is not None and server.secret is not None
    return dispatcher.init(peer="client", channel_registry=REG, connect=server.address, player_id=pid,
                           token=dispatcher.make_token(server.secret, pid), schemas=SCHEMAS, **kw)


class RawPeer:
    """A hand-driven client socket: a real handshake, then whatever bytes a test wants to send."""

    def __init__(self, server: dispatcher.Transport, pid: int, *, token: str | None = None,
                 registry_hash: str | None = None) -> None:
        assert server.address is not None and server.secret is not None
        self.sock = gevent.socket.create_connection(server.address, timeout=5)
        self.decoder = FrameDecoder(REG.names)
        self.inbox: list[Any] = []
        tok = dispatcher.make_token(server.secret, pid) if token is None else token
        challenge = self.read_frame()
        assert isinstance(challenge, Challenge)
        proof = prove(tok, pid, challenge.nonce)
        self.sock.sendall(encode_control(Hello(PROTOCOL_VERSION, registry_hash or REG.hash, pid, proof, 0.0)))
        self.first = self.read_frame()

    def read_frame(self) -> Any:
        while not self.inbox:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.inbox += self.decoder.feed(data)
        return self.inbox.pop(0)

    def send_envelope(self, name: str, payload: Any, seq: int, player_id: int | None = None) -> None:
        env = Envelope(name, payload, Meta(seq, QoS.CRITICAL, 0.0, player_id=player_id))
        self.sock.sendall(encode_envelope(env, REG.wire_id(name)))

    def closed_with(self) -> Close | None:
        """The CLOSE frame the server sent before closing (None if it closed without one)."""
        while True:
            fr = self.read_frame()
            if fr is None or isinstance(fr, Close):
                return fr


def test_200_players_while_six_kinds_of_abuse_are_refused(server: dispatcher.Transport) -> None:
    game = Game(server, GameConfig(zones=4))
    seen_by_zone: Counter[int] = Counter()

    def play(pid: int) -> list[Any]:
        c = _player(server, pid)
        c.on("Event.Skills.Execution", lambda env: seen_by_zone.update([pid % 4]))
        out = []
        for i in range(3):
            out.append(c.request("Intent.Attributes.SpendPoints", {"attribute": "str", "points": 1}).result(10))
            out.append(c.request("Intent.Skills.Use", {"skillId": "Nova", "target": i}).result(10))
            gevent.sleep(0.01)
        gevent.sleep(0.5)  # let the zone's broadcasts arrive
        c.close()
        return out

    players = [gevent.spawn(play, pid) for pid in range(1, 201)]
    gevent.sleep(0.2)  # the abuse happens while they play

    # 1. A bad token.
    with pytest.raises(dispatcher.RemoteProtocolError, match=r"bad_token: bad auth token for player 9001"):
        dispatcher.init(peer="client", channel_registry=REG, connect=server.address, player_id=9001, token="x")
    # 2. Another registry.
    other_table = copy.deepcopy(GAME_REGISTRY)
    other_table["Skills"]["qos"] = "HIGH"
    other = ChannelRegistry.from_dict(other_table)
    with pytest.raises(dispatcher.RemoteProtocolError,
                       match=rf"registry mismatch: client hash {other.hash}, server hash {REG.hash}"):
        dispatcher.init(peer="client", channel_registry=other, connect=server.address, player_id=9002,
                        token=dispatcher.make_token(server.secret or "", 9002))
    # 3. A spoofed player id: the server stamps the session's id.
    spoofer = RawPeer(server, 9003)
    assert isinstance(spoofer.first, Welcome)
    stamped: list[int | None] = []
    server.bus.on("Intent.Attributes.SpendPoints",
                  lambda payload, meta: payload["attribute"] == "dex" and stamped.append(meta.player_id))
    spoofer.send_envelope("Intent.Attributes.SpendPoints", {"attribute": "dex", "points": 1}, 1, player_id=1)
    # 4. A wrong-direction event: dropped and counted, the connection stays up.
    spoofer.send_envelope("Event.Skills.Execution", {"skillId": "Nova", "caster": 1, "at": 0.0}, 1)
    # 5. An oversized frame: that connection is closed with the reason.
    big = RawPeer(server, 9004)
    huge = Envelope("Intent.Stats.RequestSnapshot", {"blob": "x" * 200_000}, Meta(1, QoS.BACKGROUND, 0.0))
    big.sock.sendall(encode_envelope(huge, REG.wire_id(huge.name)))
    close = big.closed_with()
    assert close is not None and close.code == "malformed_frame" and "65536-byte limit" in close.message
    # 6. Random garbage.
    junk = RawPeer(server, 9005)
    junk.sock.sendall(b"\xc1" + os.urandom(64))  # 0xc1 is never valid msgpack: malformed from byte one
    close = junk.closed_with()
    assert close is not None and close.code == "malformed_frame", close

    results = [g.get(timeout=60) for g in players]
    assert all(g.successful() for g in players)
    assert len(results) == 200
    for out in results:
        assert [r.payload["points"] for r in out[0::2]] == [999_999, 999_998, 999_997]
        assert all(r.payload["accepted"] for r in out[1::2])
    assert sum(seen_by_zone.values()) > 200 * 3  # executions reached the casters' zones
    peer = server.stats().peer
    assert peer["handshake_failures"] >= 2
    assert peer["spoofed_player_id"] == 1 and stamped == [9003]
    assert server.stats()["Event.Skills.Execution"].wrong_direction == 1
    assert peer["oversized_frames"] == 1
    assert peer["malformed_frames"] >= 1
    assert game.handled == 200 * 6 + 1


def test_killing_the_socket_20_times_loses_and_doubles_nothing(server: dispatcher.Transport) -> None:
    handled: Counter[int] = Counter()
    server.on("Intent.Skills.Use", lambda env: handled.update([env.payload["target"]]))
    client = _player(server, 77)
    sent = 0
    kills = 0

    def killer() -> None:
        nonlocal kills
        rt = client.runtime
        for _ in range(20):
            gevent.sleep(0.05)
            while not (client.core.session().open and rt._conns):  # type: ignore[attr-defined]
                gevent.sleep(0.005)  # kill a live connection, mid-stream
            rt.drop()  # type: ignore[attr-defined]
            kills += 1

    k = gevent.spawn(killer)
    while not k.dead or sent < 400:
        client.intent("Intent.Skills.Use", {"skillId": "Nova", "target": sent})  # reliable CRITICAL
        sent += 1
        gevent.sleep(0.004)  # ~250/s, under the rate limit
    for _ in range(200):  # let the last reconnect resume and the re-sends drain
        if not client.core.session().unacked and client.core.session().open:
            break
        gevent.sleep(0.02)
    client.close()
    assert kills == 20
    assert client.runtime.reconnects >= 20  # type: ignore[attr-defined]
    assert sorted(handled) == list(range(sent)), "lost some"
    assert set(handled.values()) == {1}, "doubled some"
    assert server.stats().peer["resumes"] >= 20


def test_connect_errors_are_clear() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(dispatcher.ConnectionClosed, match=rf"cannot connect to 127.0.0.1:{port}"):
        dispatcher.init(peer="client", channel_registry=REG, connect=("127.0.0.1", port), player_id=1, token="t")
    srv = dispatcher.init(peer="server", channel_registry=REG, listen=("127.0.0.1", 0))
    try:
        assert srv.address is not None
        with pytest.raises(dispatcher.LocalProtocolError, match=r"cannot listen on 127.0.0.1:\d+: the port is taken"):
            dispatcher.init(peer="server", channel_registry=REG, listen=srv.address)
    finally:
        srv.close()


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def test_netharness_serve_answers_a_client_and_stops_cleanly() -> None:
    proc = _serve()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"listening on tcp://([\d.]+):(\d+) \(registry (\w+)\)", line)
        assert m, line
        secret = re.match(r"secret: (\w+)", proc.stdout.readline())
        assert secret
        host, port = m.group(1), int(m.group(2))
        assert m.group(3) == REG.hash
        client = dispatcher.init(peer="client", channel_registry=REG, connect=(host, port), player_id=5,
                                 token=dispatcher.make_token(secret.group(1), 5))
        resp = client.request("Intent.Stats.RequestSnapshot", {"version": 1}).result(timeout=10)
        assert resp.payload["version"] >= 1 and "hp" in resp.payload["stats"]
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=20)[1]
    assert proc.returncode == 0, err
    assert "stopped: 1 connections served, 1 intents handled" in err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("snapshot_rate = -1\n", r"snapshot_rate must be >= 0"),
        ("colour = 'red'\n", r"unknown key\(s\) colour; allowed: snapshot_bytes"),
        ("zones = 'many'\n", r"zones must be int"),
    ],
)
def test_serve_rejects_a_bad_config(tmp_path: Any, config: str, message: str) -> None:
    path = tmp_path / "game.toml"
    path.write_text(config)
    proc = _serve("--config", str(path))
    err = proc.communicate(timeout=20)[1]
    assert proc.returncode == 2
    assert re.search(message, err), err
