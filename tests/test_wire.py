from __future__ import annotations

import contextlib
import itertools
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import ChannelRegistry, Envelope, Flags, Meta, QoS, RemoteProtocolError
from dispatcher.decoder import FrameDecoder
from dispatcher.wire import (
    Bits,
    Close,
    EnvelopeFrame,
    Hello,
    Nack,
    Ping,
    encode_control,
    encode_envelope,
)

from .conftest import GAME_REGISTRY

REG = ChannelRegistry.from_dict(GAME_REGISTRY)

payloads = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda kids: st.lists(kids, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(-(2**63), 2**63), kids, max_size=5),
    max_leaves=20,
)
opt_bool = st.none() | st.booleans()
metas = st.builds(
    Meta,
    seq=st.integers(0, 2**63),
    qos=st.sampled_from(list(QoS)),
    ts_sent=st.floats(allow_nan=False, allow_infinity=False),
    ts_ack=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    player_id=st.none() | st.integers(-(2**63), 2**63 - 1),
    trace_id=st.none() | st.text(max_size=36),
    flags=st.builds(Flags, replayable=opt_bool, reliable=opt_bool),
    is_response=st.booleans(),
    reply_to=st.none() | st.integers(0, 2**63),
)
envelopes = st.builds(Envelope, name=st.sampled_from(REG.names), payload=payloads, meta=metas)
transport_bits = st.sampled_from([0, Bits.REQUEST, Bits.REQUEST | Bits.RETRANSMIT, Bits.REQUIRE_SUBSCRIBER])
TRANSPORT_MASK = Bits.REQUEST | Bits.RETRANSMIT | Bits.REQUIRE_SUBSCRIBER


def _frame(env: Envelope, bits: int = 0) -> bytes:
    return encode_envelope(env, REG.wire_id(env.name), bits)


def _envs(frames: list[Any]) -> list[Envelope]:
    assert all(isinstance(f, EnvelopeFrame) for f in frames)
    return [f.envelope for f in frames]


@given(envelopes, transport_bits)
def test_roundtrip_whole(env: Envelope, bits: int) -> None:
    data = _frame(env, bits)
    frames = FrameDecoder(REG.names).feed(data)
    assert _envs(frames) == [env]
    assert frames[0].bits & TRANSPORT_MASK == bits
    assert frames[0].size == len(data)
    # The hand-assembled frame is exactly what msgpack would produce for the whole array.
    assert msgpack.unpackb(data, raw=False, strict_map_key=False)[6] == env.payload


@given(envelopes)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_roundtrip_byte_by_byte(env: Envelope) -> None:
    data = _frame(env)
    dec = FrameDecoder(REG.names)
    got: list[Any] = []
    for i in range(len(data)):
        got += dec.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert got == []
    assert _envs(got) == [env]


@given(envelopes, envelopes, st.data())
def test_roundtrip_with_trailing_bytes(a: Envelope, b: Envelope, data: st.DataObject) -> None:
    fa, fb = _frame(a), _frame(b)
    cut = data.draw(st.integers(0, len(fb) - 1))
    dec = FrameDecoder(REG.names)
    assert _envs(dec.feed(fa + fb[:cut])) == [a]
    assert _envs(dec.feed(fb[cut:])) == [b]


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    dec = FrameDecoder(REG.names)
    with contextlib.suppress(RemoteProtocolError):
        dec.feed(data)


# Random msgpack arrays that look like frames reach the field checks, not just the msgpack parser.
frame_like = st.lists(
    st.integers(-3, 12) | st.floats() | st.none() | st.text(max_size=5) | st.booleans() | st.binary(max_size=3)
    | st.lists(st.integers(-(2**63), 2**63), max_size=2),
    min_size=1, max_size=12,
).map(lambda xs: msgpack.packb([abs(xs[0]) % 9 if isinstance(xs[0], int) else xs[0], *xs[1:]]))


@given(st.lists(frame_like, min_size=1, max_size=4))
def test_frame_shaped_garbage_decodes_or_raises_remote_protocol_error(chunks: list[bytes]) -> None:
    dec = FrameDecoder(REG.names)
    with contextlib.suppress(RemoteProtocolError):
        dec.feed(b"".join(chunks))


def test_control_frames_roundtrip() -> None:
    frames = [Nack(3, 17, "handler_error", "ValueError: boom"), Hello(1, REG.hash, 42, "tok", 1.5),
              Close("bad_token", "nope"), Ping(2.25)]
    dec = FrameDecoder(REG.names)
    assert dec.feed(b"".join(encode_control(f) for f in frames)) == frames


ENV = Envelope("Intent.Skills.Use", {"skillId": "TripleStrike"}, Meta(1, QoS.CRITICAL, 1.0))


MALFORMED = [
    pytest.param(msgpack.packb({"a": 1}), r"a frame is an array starting with its type", id="not-an-array"),
    pytest.param(msgpack.packb([]), r"a frame is an array starting with its type", id="empty-array"),
    pytest.param(msgpack.packb([99, 1]), r"unknown frame type 99", id="unknown-type"),
    pytest.param(msgpack.packb([0, 999, 1, 0, 0, 1.0, None]), r"unknown wire id 999; this registry has ids 0\.\.",
                 id="unknown-wire-id"),
    pytest.param(msgpack.packb([0, 0, -1, 0, 0, 1.0, None]), r"sequence number must be a non-negative integer",
                 id="negative-seq"),
    pytest.param(msgpack.packb([0, 0, 1, 9, 0, 1.0, None]), r"qos must be 0..3, got 9", id="bad-qos"),
    pytest.param(msgpack.packb([0, 0, 1, 0, 0, "now", None]), r"ts_sent must be a number", id="ts-not-number"),
    pytest.param(msgpack.packb([0, 0, 1, 0, 0, float("inf"), None]), r"ts_sent is not finite", id="ts-inf"),
    pytest.param(msgpack.packb([0, 0, 1, 0, 0, 1.0]), r"envelope frame has 6 items, expected 7 to 11",
                 id="short-envelope"),
    pytest.param(msgpack.packb([0, 0, 1, 0, 0, 1.0, None, "me"]), r"player_id must be an integer",
                 id="player-id-type"),
    pytest.param(msgpack.packb([1, 0, 1, "x"]), r"Nack frame has 3 fields, expected 4", id="nack-arity"),
    pytest.param(msgpack.packb([2, "1", "h", None, None, 0.0, None]), r"Hello field version has type str",
                 id="hello-field-type"),
    pytest.param(b"\xc1", r"undecodable msgpack", id="reserved-byte"),
    pytest.param(msgpack.packb(msgpack.ExtType(5, b"x")), r"extension type 5 is not allowed", id="ext-type"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_frames_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as exc:
        FrameDecoder(REG.names).feed(data)
    assert exc.value.code == "malformed_frame"


def test_decoder_stays_broken_after_an_error() -> None:
    dec = FrameDecoder(REG.names)
    with pytest.raises(RemoteProtocolError):
        dec.feed(b"\xc1")
    with pytest.raises(RemoteProtocolError, match="connection already failed"):
        dec.feed(_frame(ENV))


def test_frame_size_limit() -> None:
    big = Envelope("Event.Stats.Updated", {"blob": b"x" * 5000}, Meta(1, QoS.BACKGROUND, 0.0))
    small = FrameDecoder(REG.names, max_frame_size=4096)
    with pytest.raises(RemoteProtocolError, match=r"exceeds the 4096-byte limit|larger than the 4096-byte limit"):
        small.feed(_frame(big))
    # Byte by byte, the limit holds before the whole frame is buffered.
    dec = FrameDecoder(REG.names, max_frame_size=4096)
    data = _frame(Envelope("Event.Stats.Updated", {"blob": b"x" * 200_000}, Meta(1, QoS.BACKGROUND, 0.0)))
    with pytest.raises(RemoteProtocolError, match=r"4096"):
        for i in range(0, len(data), 1000):
            dec.feed(data[i : i + 1000])
    assert i < len(data) - 1000  # it failed long before the end
    assert _envs(FrameDecoder(REG.names, max_frame_size=8192).feed(_frame(big))) == [big]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(envelopes, min_size=1, max_size=4), st.lists(st.integers(0, 4096), max_size=6), st.data())
def test_small_mode_before_login_decodes_like_the_streaming_unpacker(envs: list[Envelope], cuts: list[int],
                                                                      data: st.DataObject) -> None:
    """Before login (limit below the maximum) frames are decoded whole from a small buffer, then the streaming
    unpacker takes over when the limit rises: any split of the bytes, and a rise after any frame, give the
    same frames as one streaming decoder."""
    hello = encode_control(Hello(2, REG.hash, 7, "p" * 64, 1.5))
    stream = hello + b"".join(_frame(e) for e in envs)
    want = FrameDecoder(REG.names).feed(stream)
    small = FrameDecoder(REG.names, limit=1 << 16)
    assert small.limit < 1 << 20
    rise_after = data.draw(st.integers(1, len(want)))
    got: list[Any] = []
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    for a, b in itertools.pairwise(points):
        small.receive(stream[a:b])
        for fr in small.frames():
            got.append(fr)
            if len(got) == rise_after:
                small.limit = 1 << 20  # the connection logged in: the streaming unpacker from here on
    assert got == want
    assert small.buffered == 0


def test_small_mode_refuses_an_oversized_or_malformed_frame_like_the_unpacker() -> None:
    small = FrameDecoder(REG.names, limit=64)
    with pytest.raises(RemoteProtocolError, match="larger than the 64-byte limit"):
        small.feed(encode_control(Close("x" * 100, "y")))
    with pytest.raises(RemoteProtocolError, match="undecodable msgpack"):
        FrameDecoder(REG.names, limit=64).feed(b"\xc1")
    partial = FrameDecoder(REG.names, limit=64)
    assert partial.feed(encode_control(Close("a", "b"))[:-1]) == [] and partial.buffered > 0
    with pytest.raises(RemoteProtocolError, match="larger than the 64-byte limit"):  # in progress, too big
        FrameDecoder(REG.names, limit=64).feed(b"\x92\x04\xda\x01\x00" + b"z" * 100)
