"""The per-peer connection state machine (issue 12): what each state admits, the challenge-response
handshake (whole, byte by byte, with trailing data), and the decoder's contract on hostile bytes."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dispatcher
from dispatcher import ChannelRegistry, Dispatcher, RemoteProtocolError
from dispatcher.auth import make_token, prove, prove_resume, token_expiry
from dispatcher.connection import ADMITS, State
from dispatcher.decoder import FrameDecoder
from dispatcher.text import escape
from dispatcher.wire import (
    PROTOCOL_VERSION,
    Ack,
    Challenge,
    Close,
    FrameType,
    Hello,
    Nack,
    Ping,
    Pong,
    Welcome,
    encode_chunk,
    encode_control,
)
from harness.game import load_registry

REG = load_registry()
SECRET = b"s" * 32
SAMPLE: dict[int, bytes] = {
    FrameType.ENVELOPE: bytes((0x97, 0, 0, 1, 0, 0, 0, 0xC0)),
    FrameType.NACK: encode_control(Nack(0, 1, "x", "y")),
    FrameType.HELLO: encode_control(Hello(PROTOCOL_VERSION, REG.hash, 1, "p", 0.0)),
    FrameType.WELCOME: encode_control(Welcome(PROTOCOL_VERSION, "s", 1, 0.0, 0.0)),
    FrameType.CLOSE: encode_control(Close("bye", "now")),
    FrameType.PING: encode_control(Ping(0.0)),
    FrameType.PONG: encode_control(Pong(0.0, 0.0)),
    FrameType.ACK: encode_control(Ack(0, [1])),
    FrameType.CHUNK: encode_chunk(1, 0, False, b"xx"),
    FrameType.CHALLENGE: encode_control(Challenge(PROTOCOL_VERSION, "n", 0.0)),
}


class Pair:
    """A server core and a client core joined in memory; ``step`` moves bytes until nothing moves."""

    def __init__(self, *, byte_by_byte: bool = False, trailing: bytes = b"", client: dict[str, Any] | None = None,
                 **server: Any) -> None:
        self.now = 0.0
        self.server = Dispatcher("server", REG, secret=SECRET, **server)
        opts = {"player_id": 7, "token": make_token(SECRET, 7), **(client or {})}
        self.client = Dispatcher("client", REG, **opts)
        self.byte_by_byte = byte_by_byte
        self.trailing = trailing
        self.server.open_session(self.now, "c1")
        self.client.open_session(self.now)
        self.step()

    def step(self) -> None:
        moved = True
        while moved:
            moved = False
            down = self.server.data_to_send(self.now, "c1")
            up = self.client.data_to_send(self.now)
            if down:
                moved = True
                self._feed(self.client, down, dispatcher.core.SERVER_PEER)
            if up:
                moved = True
                self._feed(self.server, up, "c1")

    def _feed(self, core: Dispatcher, data: bytes, peer: Any) -> None:
        pieces = [data[i:i + 1] for i in range(len(data))] if self.byte_by_byte else [data]
        for p in pieces:
            try:
                core.receive_data(p, self.now, peer)
            except RemoteProtocolError:
                return

    def advance(self, dt: float) -> None:
        end = self.now + dt
        while True:
            nt = min((t for t in (self.server.next_timer(), self.client.next_timer()) if t is not None),
                     default=None)
            if nt is None or nt > end:
                break
            self.now = max(self.now, nt)
            self.server.handle_timer(self.now)
            self.client.handle_timer(self.now)
            self.step()
        self.now = end
        self.step()


# -- the admission table --------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["server", "client"])
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("ftype", list(FrameType))
def test_each_state_admits_exactly_its_frame_types(role: str, state: State, ftype: FrameType) -> None:
    dec = FrameDecoder(REG.names, admits=ADMITS[(role, state)])  # type: ignore[index]
    admitted = ftype in ADMITS[(role, state)]  # type: ignore[index]
    if admitted:
        dec.feed(SAMPLE[ftype])  # decodes (a lone first CHUNK yields nothing yet)
    else:
        with pytest.raises(RemoteProtocolError) as e:
            dec.feed(SAMPLE[ftype])
        assert e.value.code == "not_admitted"


def test_before_auth_only_the_handshake_is_admitted() -> None:
    for role, other in (("server", FrameType.HELLO), ("client", FrameType.WELCOME)):
        admits = ADMITS[(role, State.AWAITING_AUTH)]  # type: ignore[index]
        assert other in admits and FrameType.CLOSE in admits
        for t in (FrameType.ENVELOPE, FrameType.CHUNK, FrameType.PING, FrameType.NACK, FrameType.ACK):
            assert t not in admits


# -- the handshake ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["whole", "byte_by_byte", "trailing"])
def test_handshake_opens_both_sides(mode: str) -> None:
    p = Pair(byte_by_byte=mode == "byte_by_byte")
    if mode == "trailing":  # an envelope right behind the HELLO (pipelined) is admitted once OPEN
        p.client.intent("Intent.Skills.Use", {"skillId": "Nova"}, p.now)
        p.step()
        assert p.server.stats["Intent.Skills.Use"].received == 1
    s, c = p.server.session("c1"), p.client.session()
    assert s.state == State.OPEN and c.state == State.OPEN and s.player_id == 7
    assert c.resume_secret and c.resume_secret == s.resume_secret and s.session_id == c.session_id


def test_a_captured_hello_replays_on_no_other_connection() -> None:
    p = Pair()
    first_nonce = p.server.session("c1").nonce
    assert first_nonce is not None
    captured = encode_control(Hello(PROTOCOL_VERSION, REG.hash, 7, prove(make_token(SECRET, 7), 7, first_nonce),
                                    0.0))
    p.server.open_session(p.now, "attacker")
    with pytest.raises(RemoteProtocolError, match="bad auth token"):
        p.server.receive_data(captured, p.now, "attacker")
    assert p.server.session("c1").open  # the victim is untouched
    assert b"bad_token" in p.server.data_to_send(p.now, "attacker")


def test_resume_needs_the_resume_secret() -> None:
    p = Pair()
    victim = p.server.session("c1")
    p.server.open_session(p.now, "attacker")
    nonce = p.server.session("attacker").nonce
    assert nonce is not None and victim.session_id is not None
    hello = Hello(PROTOCOL_VERSION, REG.hash, 7, prove(make_token(SECRET, 7), 7, nonce), 0.0, victim.session_id,
                  None, prove_resume("guess", 7, victim.session_id, nonce))
    with pytest.raises(RemoteProtocolError, match="resume refused"):
        p.server.receive_data(encode_control(hello), p.now, "attacker")
    assert p.server.session("c1") is victim and victim.open


def test_a_second_login_replaces_the_first_which_is_told_why() -> None:
    p = Pair()
    p.server.open_session(p.now, "c2")
    nonce = p.server.session("c2").nonce
    assert nonce is not None
    p.server.receive_data(encode_control(Hello(PROTOCOL_VERSION, REG.hash, 7,
                                               prove(make_token(SECRET, 7), 7, nonce), 0.0)), p.now, "c2")
    assert p.server.session("c2").open and p.server.session("c1").closed
    assert b"replaced" in p.server.data_to_send(p.now, "c1")


def test_expired_and_non_ascii_tokens_are_refused_with_a_close() -> None:
    p = Pair(client={"token": make_token(SECRET, 7, expires=1000)})
    assert token_expiry(make_token(SECRET, 7, expires=1000)) == 1000
    assert p.client.session().close_code == "token_expired"
    q = Pair(client={"token": "\u00e9\u4e2d" * 10})
    assert q.client.session().close_code == "bad_token"


def test_clock_domain_is_shared_only_for_one_clock() -> None:
    shared = Pair(client={"clock_id": "boot/CLOCK_MONOTONIC"}, clock_id="boot/CLOCK_MONOTONIC")
    assert shared.client.clock_domain == "shared" and shared.client.clock_offset == 0.0
    apart = Pair(client={"clock_id": "a"}, clock_id="b")
    assert apart.client.clock_domain == "ntp"


def test_server_info_reaches_the_client_and_is_bounded() -> None:
    p = Pair(server_info={"zones": 8})
    assert p.client.server_info == {"zones": 8}
    with pytest.raises(dispatcher.LocalProtocolError, match="server_info"):
        Dispatcher("server", REG, server_info={"blob": "x" * 10_000})


# -- timeouts in virtual time ---------------------------------------------------------------------------

def test_silence_after_login_closes_and_keepalive_prevents_it() -> None:
    p = Pair(limits={"idle_timeout": 3.0}, client={"clock_sync_interval": 1.0})
    p.advance(10.0)
    assert p.server.session("c1").open  # the client's pings keep it alive
    q = Pair(limits={"idle_timeout": 3.0}, client={"clock_sync_interval": 0.0, "limits": {"keepalive_interval": 0}})
    q.advance(10.0)
    assert q.server.session("c1").close_code == "idle_timeout"


def test_a_partial_frame_that_stalls_closes_the_connection() -> None:
    p = Pair(limits={"stall_timeout": 2.0})
    p.server.receive_data(encode_control(Ping(1.0))[:2], p.now, "c1")
    p.advance(5.0)
    assert p.server.session("c1").close_code == "stalled"


def test_no_hello_within_the_handshake_timeout_closes() -> None:
    srv = Dispatcher("server", REG, secret=SECRET, limits={"handshake_timeout": 2.0})
    srv.open_session(0.0, "x")
    assert srv.next_timer() == 2.0
    srv.handle_timer(2.0)
    assert srv.session("x").close_code == "handshake_timeout"


# -- hostile bytes ----------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    dec = FrameDecoder(REG.names, 4096)
    try:
        dec.feed(data)
    except RemoteProtocolError as e:
        assert len(str(e)) < 400


_leaf = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats() | st.text(max_size=8)
         | st.binary(max_size=8))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.recursive(_leaf, lambda x: st.lists(x, max_size=4) | st.dictionaries(st.text(max_size=3), x,
                                                                                        max_size=3)),
                min_size=1, max_size=12))
def test_any_msgpack_array_decodes_or_raises_remote_protocol_error(items: list[Any]) -> None:
    with contextlib.suppress(RemoteProtocolError):
        FrameDecoder(REG.names).feed(msgpack.packb(items, use_bin_type=True))


@pytest.mark.parametrize("depth", [100, 1000, 1023, 5000])
def test_deep_nesting_is_a_remote_protocol_error_or_a_frame(depth: int) -> None:
    nested = b"\x91" * depth + b"\xc0"
    for frame in (nested, b"\x92\x05" + nested, bytes((0x97, 0, 0, 1, 0, 0, 0)) + nested):
        try:
            FrameDecoder(REG.names).feed(frame)
        except RemoteProtocolError as e:
            assert len(str(e)) < 400


def test_deep_nesting_in_a_payload_reaches_a_close_not_a_crash() -> None:
    p = Pair()
    nested = b"\x91" * 1020 + b"\xc0"
    with pytest.raises(RemoteProtocolError, match="nested deeper than 32"):  # a request's payload, 1,020 deep
        p.server.receive_data(bytes((0x97, 0, 1, 1, 0, 2, 0)) + nested, p.now, "c1")
    assert b"malformed_frame" in p.server.data_to_send(p.now, "c1")
    q = Pair()
    with pytest.raises(RemoteProtocolError, match="unknown wire id list"):  # nested where an int belongs
        q.server.receive_data(bytes((0x97, 0)) + nested + bytes((0, 0, 0, 0, 0xC0)), q.now, "c1")
    assert q.server.session("c1").closed


def test_reasons_are_escaped_and_bounded() -> None:
    s = escape("evil\nWARNING forged line" + "x" * 1000)
    assert "\n" not in s and len(s) <= 200 and s.startswith("evil\\nWARNING")
    assert escape([[[]]]) == "list of length 1"


def test_pre_auth_frames_are_small() -> None:
    srv = Dispatcher("server", REG, secret=SECRET)
    srv.open_session(0.0, "x")
    with pytest.raises(RemoteProtocolError, match="4096-byte limit"):
        srv.receive_data(msgpack.packb([2, "x" * 10_000]), 0.0, "x")
    assert srv.stats.peer["oversized_frames"] == 1


def test_registry_is_the_games() -> None:
    assert isinstance(REG, ChannelRegistry)


# -- budgets: retransmissions pay, cached answers are re-sent at most once per interval, CRITICAL bounded ----

def _request_frame(seq: int, bits: int) -> bytes:
    from dispatcher.envelope import Envelope, Meta
    from dispatcher.wire import encode_envelope

    env = Envelope("Intent.Attributes.SpendPoints", {"attribute": "str", "points": 1}, Meta(seq, 0, 0.0))
    return encode_envelope(env, REG.wire_id(env.name), bits)


def test_retransmissions_pay_the_rate_limit() -> None:
    from dispatcher.wire import Bits

    p = Pair(rate_limits={"default": 10.0})
    p.server.on("Intent.Attributes.SpendPoints", lambda env: {"attributes": {}, "points": 0})
    for seq in range(1, 41):
        p.server.receive_data(_request_frame(seq, Bits.REQUEST | Bits.RETRANSMIT), p.now, "c1")
    assert p.server.stats.peer["rate_limited"] == 30  # a burst of 10, then refused, retransmit bit or not


def test_a_cached_answer_goes_again_at_most_once_per_interval() -> None:
    from dispatcher.wire import Bits

    p = Pair()
    p.server.on("Intent.Attributes.SpendPoints", lambda env: {"attributes": {}, "points": 0})
    p.server.receive_data(_request_frame(1, Bits.REQUEST), p.now, "c1")
    for _ in range(50):
        p.server.receive_data(_request_frame(1, Bits.REQUEST | Bits.RETRANSMIT), p.now, "c1")
    assert p.server.stats.peer["answer_resends_dropped"] == 49
    assert p.server.stats["Intent.Attributes.SpendPoints"].duplicates == 50


def test_a_peer_that_overruns_critical_is_disconnected_with_a_reason() -> None:
    p = Pair(limits={"critical_frames": 5}, scheduler={"budget": 10.0})
    p.server.on("Intent.Attributes.SpendPoints", lambda env: {"attributes": {}, "points": 0})
    from dispatcher.wire import Bits

    for seq in range(1, 20):
        p.server.receive_data(_request_frame(seq, Bits.REQUEST), p.now, "c1")
        if p.server.session("c1").closed:
            break
    c = p.server.session("c1")
    assert c.close_code == "overloaded" and p.server.stats.peer["critical_overruns"] == 1
    assert b"overloaded" in p.server.data_to_send(p.now, "c1")


def test_a_claimed_tier_is_clamped_and_answers_go_on_the_declared_tier() -> None:
    from dispatcher.envelope import Envelope, Meta
    from dispatcher.wire import Bits, encode_envelope

    p = Pair()
    p.server.on("Intent.Stats.RequestSnapshot", lambda env: {"version": 1, "stats": {}})
    env = Envelope("Intent.Stats.RequestSnapshot", {"version": 1}, Meta(1, 0, 0.0))  # claims CRITICAL
    p.server.receive_data(encode_envelope(env, REG.wire_id(env.name), Bits.REQUEST), p.now, "c1")
    assert p.server.stats.peer["qos_clamped"] == 1
    out = p.server.session("c1").out
    assert out.queued(0) == 0 and out.queued(3) == 1  # the answer waits on BACKGROUND, not CRITICAL


def test_frames_pipelined_behind_the_hello_pass_the_small_pre_auth_limit() -> None:
    from dispatcher.wire import Bits

    srv = Dispatcher("server", REG, secret=SECRET)
    srv.on("Intent.Attributes.SpendPoints", lambda env: {"attributes": {}, "points": 0})
    srv.open_session(0.0, "x")
    nonce = srv.session("x").nonce
    assert nonce is not None
    hello = encode_control(Hello(PROTOCOL_VERSION, REG.hash, 7, prove(make_token(SECRET, 7), 7, nonce), 0.0))
    burst = b"".join(_request_frame(seq, Bits.REQUEST) for seq in range(1, 201))  # ~10 kB, one read
    assert len(burst) > 4096
    srv.receive_data(hello + burst, 0.0, "x")
    assert srv.session("x").open and srv.stats["Intent.Attributes.SpendPoints"].received == 200


@pytest.mark.parametrize(("ts", "depth", "refused"), [
    (b"\x00", 32, False), (b"\x00", 33, True),  # int ts_sent: the smallest frame head
    (b"\xcb" + b"\x00" * 8, 32, False), (b"\xcb" + b"\x00" * 8, 33, True),  # float ts_sent
])
def test_the_depth_walk_is_skipped_only_for_frames_too_small_to_be_too_deep(ts: bytes, depth: int,
                                                                          refused: bool) -> None:
    from dispatcher.decoder import FrameDecoder

    frame = bytes((0x97, 0, 0, 1, 0, 0)) + ts + b"\x91" * (depth - 1) + b"\x90"  # `depth` nested arrays
    dec = FrameDecoder(REG.names, max_depth=32)
    if refused:
        with pytest.raises(RemoteProtocolError, match="nested deeper than 32"):
            dec.feed(frame)
    else:
        assert len(dec.feed(frame)) == 1


@pytest.mark.parametrize(("per_connection", "shared", "connections", "written"), [
    (10.0, 60.0, 200, 60),  # a reconnecting attacker: one bad HELLO per connection, the shared budget caps
    (10.0, 1000.0, 200, 200),  # a generous shared budget: every connection's first line is written
    (1.0, 60.0, 30, 30),  # fewer connections than the shared budget: each one's own budget decides
])
def test_connections_in_their_handshake_share_one_log_budget(per_connection: float, shared: float,
                                                             connections: int, written: int,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    srv = Dispatcher("server", REG, secret=SECRET, limits={"log_lines_per_minute": per_connection,
                                                           "handshake_log_lines_per_minute": shared})
    bad = encode_control(Hello(PROTOCOL_VERSION, REG.hash, 7, "not a proof", 0.0))
    with caplog.at_level("WARNING", logger="dispatcher"):
        for i in range(connections):
            srv.open_session(0.0, f"c{i}")
            with contextlib.suppress(RemoteProtocolError):
                srv.receive_data(bad, 0.0, f"c{i}")
    assert len([r for r in caplog.records if r.name == "dispatcher"]) == written
    assert srv.stats.peer.get("log_lines_suppressed", 0) == connections - written
