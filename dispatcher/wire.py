"""The wire format: msgpack frames in a compact array form.

Every frame is one msgpack array whose first item is its ``FrameType``.  An envelope travels as::

    [0, wire_id, seq, qos, bits, ts_sent, payload, player_id?, trace_id?, reply_to?, ts_ack?]

with the registry's wire id instead of the name string and trailing nils left off.  ``bits`` holds the
envelope's flags (response, reliable, replayable) and transport bits (request, retransmit,
require_subscriber).

The handshake (protocol version 2) is challenge-response::

    server -> CHALLENGE [9, version, nonce, ts, clock_id]
    client -> HELLO     [2, version, registry_hash, player_id, proof, ts, resume, expires, resume_proof, clock_id]
    server -> WELCOME   [3, version, session, player_id, ts, echo, resumed, resume_secret, clock_id, server_info]

``proof = auth.prove(token, player_id, nonce)``; a resume also carries
``resume_proof = auth.prove_resume(resume_secret, player_id, session, nonce)``.  ``clock_id`` names the
sender's monotonic clock (boot id + clock name): equal ids mean one shared clock.
``dispatcher.decoder.FrameDecoder`` decodes a byte stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Final, NamedTuple

import msgpack

from .envelope import Envelope, Flags, envelope_of
from .errors import LocalProtocolError, RemoteProtocolError
from .text import describe

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "Ack",
    "Bits",
    "Challenge",
    "Close",
    "EnvelopeFrame",
    "Frame",
    "FrameType",
    "Hello",
    "Nack",
    "Ping",
    "Pong",
    "Welcome",
    "encode_chunk",
    "encode_control",
    "encode_envelope",
    "encode_packed",
    "encode_plain",
    "encode_tailed",
    "flags_bits",
    "frame_tail",
    "pack_payload",
    "parse_control",
    "record_envelope",
    "record_flags",
]

PROTOCOL_VERSION = 2
DEFAULT_MAX_FRAME_SIZE = 1 << 20
#: Bytes of CHUNK framing around a chunk's data, at most (array, type, msg id, offset, flag, bin header).
CHUNK_OVERHEAD = 16
#: Messages being reassembled at once from one peer, at most (its scheduler commits one per lower tier).
MAX_PARTIALS = 16


class FrameType(IntEnum):
    ENVELOPE = 0
    NACK = 1
    HELLO = 2
    WELCOME = 3
    CLOSE = 4
    PING = 5
    PONG = 6
    ACK = 7
    CHUNK = 8
    CHALLENGE = 9


class Bits:
    RESPONSE: Final = 1
    REQUEST: Final = 2
    RETRANSMIT: Final = 4
    REQUIRE_SUBSCRIBER: Final = 8
    RELIABLE_SET: Final = 16
    RELIABLE: Final = 32
    REPLAYABLE_SET: Final = 64
    REPLAYABLE: Final = 128
    ACK_REQUESTED: Final = 256  # reliable: the receiver acknowledges it; the sender re-sends it until then
    ALL: Final = 511


class EnvelopeFrame(NamedTuple):
    envelope: Envelope
    wire_id: int
    bits: int
    size: int


class Nack(NamedTuple):
    """A request (or a require_subscriber intent) refused: ``code`` and a human-readable message."""

    wire_id: int
    reply_to: int
    code: str
    message: str


class Challenge(NamedTuple):
    """The server's first frame: a fresh nonce the client's proof must cover."""

    version: int
    nonce: str
    ts: float
    clock_id: str = ""


class Hello(NamedTuple):
    """The client's answer to CHALLENGE.  ``resume``: the session id of a connection that was lost."""

    version: int
    registry_hash: str
    player_id: int | None
    proof: str | None
    ts: float
    resume: str | None = None
    expires: int | None = None
    resume_proof: str | None = None
    clock_id: str = ""


class Welcome(NamedTuple):
    """The server's answer to HELLO; ``resumed`` when it re-attached the session named in ``resume``."""

    version: int
    session: str
    player_id: int | None
    ts: float
    echo: float
    resumed: bool = False
    resume_secret: str = ""
    clock_id: str = ""
    server_info: dict[str, Any] | None = None


class Close(NamedTuple):
    """The sender is closing the connection, with a reason code and message."""

    code: str
    message: str


class Ping(NamedTuple):
    ts: float


class Pong(NamedTuple):
    echo: float
    ts: float


class Ack(NamedTuple):
    """Reliable envelopes of channel ``chan`` (index in the registry's order) that arrived, by seq."""

    chan: int
    seqs: list[int]


ControlFrame = Nack | Challenge | Hello | Welcome | Close | Ping | Pong | Ack
Frame = EnvelopeFrame | ControlFrame

_NUM = (int, float)
_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))
_OPT_DICT = (dict, type(None))
_BOOL = (bool,)
_INTS = (list,)  # a list of ints (checked item by item)
#: Per control frame type: its class, the types of its fields, and how many fields are required.
CONTROL: dict[int, tuple[type[Any], tuple[tuple[type, ...], ...], int]] = {
    FrameType.NACK: (Nack, ((int,), (int,), (str,), (str,)), 4),
    FrameType.CHALLENGE: (Challenge, ((int,), (str,), _NUM, (str,)), 3),
    FrameType.HELLO: (Hello, ((int,), (str,), _OPT_INT, _OPT_STR, _NUM, _OPT_STR, _OPT_INT, _OPT_STR, (str,)), 5),
    FrameType.WELCOME: (Welcome, ((int,), (str,), _OPT_INT, _NUM, _NUM, _BOOL, (str,), (str,), _OPT_DICT), 5),
    FrameType.CLOSE: (Close, ((str,), (str,)), 2),
    FrameType.PING: (Ping, (_NUM,), 1),
    FrameType.PONG: (Pong, (_NUM, _NUM), 2),
    FrameType.ACK: (Ack, ((int,), _INTS), 2),
}
# ``Final``: compiled, a C static (or inlined) instead of a globals-dict lookup per use.
_NO_FLAGS: Final = Flags.of()
_FLAG_BITS: Final = Bits.REPLAYABLE_SET | Bits.RELIABLE_SET
_RESPONSE: Final = Bits.RESPONSE
_envelope_of: Final = envelope_of
_TYPE_OF: dict[type[Any], int] = {cls: t for t, (cls, _, _) in CONTROL.items()}

#: One reusable packer: ``msgpack.packb`` builds a ``Packer`` per call, which costs more than packing a small
#: frame.  ``pack`` runs in C without calling back into Python (no ``default``), so no other thread or greenlet
#: can interleave; after an error it starts clean.
_pack: Final[Callable[[Any], bytes]] = msgpack.Packer(use_bin_type=True).pack


def pack_payload(payload: Any) -> bytes:
    """msgpack bytes of a payload; ``LocalProtocolError`` when it holds something msgpack cannot carry."""
    try:
        return _pack(payload)
    except (TypeError, ValueError, OverflowError) as e:
        raise LocalProtocolError(
            f"payload cannot be encoded ({e}); allowed: nil, booleans, numbers, strings, bytes, "
            "arrays and tables of those"
        ) from None


def flags_bits(f: Flags, is_response: bool = False) -> int:
    """The frame bits that carry ``f`` (and the response mark)."""
    bits = Bits.RESPONSE if is_response else 0
    if f.reliable is not None:
        bits |= Bits.RELIABLE_SET | (Bits.RELIABLE if f.reliable else 0)
    if f.replayable is not None:
        bits |= Bits.REPLAYABLE_SET | (Bits.REPLAYABLE if f.replayable else 0)
    return bits


def encode_plain(wire_id: int, seq: int, qos: int, bits: int, ts_sent: float, payload: Any) -> bytes:
    """The frame of an envelope without a tail (no player_id, trace_id, reply_to, ts_ack) and whose flag bits
    are in ``bits``: what ``encode_envelope`` makes of it, from the values (the send path has them at hand)."""
    return _pack_frame((0, wire_id, seq, qos, bits, ts_sent, payload), payload)


def encode_envelope(env: Envelope, wire_id: int, bits: int = 0, payload_bytes: bytes | None = None) -> bytes:
    """One envelope frame.  ``payload_bytes`` (from ``pack_payload``) lets a broadcast pack once."""
    m = env.meta
    f = m.flags
    if m.is_response or f is not _NO_FLAGS:
        bits |= flags_bits(f, m.is_response)
    if payload_bytes is None and m.player_id is None and m.trace_id is None and m.reply_to is None \
            and m.ts_ack is None:  # the common case: no tail
        return encode_plain(wire_id, m.seq, m.qos, bits, m.ts_sent, env.payload)
    tail = frame_tail(m.player_id, m.trace_id, m.reply_to, m.ts_ack)
    if payload_bytes is None:  # one pack of the whole frame
        return encode_tailed(wire_id, m.seq, int(m.qos), bits, m.ts_sent, env.payload, tail)
    return encode_packed(wire_id, m.seq, int(m.qos), bits, m.ts_sent, payload_bytes, tail)


def encode_tailed(wire_id: int, seq: int, qos: int, bits: int, ts_sent: float, payload: Any,
                  tail: tuple[Any, ...]) -> bytes:
    """As ``encode_plain``, with a tail (``frame_tail``): a response's (player, trace, reply_to, ts_ack)."""
    return _pack_frame((0, wire_id, seq, qos, bits, ts_sent, payload, *tail), payload)


def _pack_frame(frame: tuple[Any, ...], payload: Any) -> bytes:
    """One pack of a whole envelope frame; ``LocalProtocolError`` when ``payload`` is what msgpack cannot carry."""
    try:
        return _pack(frame)
    except (TypeError, ValueError, OverflowError):
        pack_payload(payload)  # raises LocalProtocolError saying what is wrong
        raise


def frame_tail(player_id: int | None, trace_id: str | None, reply_to: int | None = None,
               ts_ack: float | None = None) -> tuple[Any, ...]:
    """A frame's optional tail items, without the trailing ``None`` ones."""
    tail: tuple[Any, ...] = (player_id, trace_id, reply_to, ts_ack)
    n = 4
    while n and tail[n - 1] is None:
        n -= 1
    return tail[:n]


def encode_packed(wire_id: int, seq: int, qos: int, bits: int, ts_sent: float, payload_bytes: bytes,
                  tail: tuple[Any, ...] = ()) -> bytes:
    """A frame whose payload is packed already (``pack_payload``: a broadcast packs it once), its flag bits in
    ``bits``; ``tail`` is (player_id, trace_id, reply_to, ts_ack) without its trailing ``None`` items."""
    head = _pack((0, wire_id, seq, qos, bits, ts_sent))
    n = len(tail)
    if n:
        tail_bytes = _pack(tail)[1:]  # drop the fixarray header: the items join the frame's array
        return bytes((0x90 | (7 + n),)) + head[1:] + payload_bytes + tail_bytes
    return bytes((0x97,)) + head[1:] + payload_bytes


def record_flags(bits: int) -> Flags:
    """The ``Flags`` an envelope's bits carry."""
    if not bits & _FLAG_BITS:
        return _NO_FLAGS
    return Flags.of(replayable=bool(bits & Bits.REPLAYABLE) if bits & Bits.REPLAYABLE_SET else None,
                    reliable=bool(bits & Bits.RELIABLE) if bits & Bits.RELIABLE_SET else None)


def record_envelope(r: list[Any], name: str) -> Envelope:
    """The ``Envelope`` of a record (``FrameDecoder._record``) named ``name``."""
    bits: int = r[4]  # typed: native bit tests
    return _envelope_of(name, r[6], r[2], r[3], r[5], r[10], r[7], r[8],
                       _NO_FLAGS if not bits & _FLAG_BITS else record_flags(bits), bool(bits & _RESPONSE), r[9])


def parse_control(f: list[Any]) -> Frame:
    """A control frame's fields checked (``RemoteProtocolError`` otherwise), as its ``NamedTuple``."""
    t = f[0]
    spec = CONTROL.get(t)
    if spec is None:
        raise bad(f"unknown frame type {t}; known: {', '.join(str(int(x)) for x in FrameType)}")
    cls, types, required = spec
    n = len(f) - 1
    if not required <= n <= len(types):
        want = str(required) if required == len(types) else f"{required} to {len(types)}"
        raise bad(f"{cls.__name__} frame has {n} fields, expected {want}")
    for i, (v, ok) in enumerate(zip(f[1:], types, strict=False)):
        if not isinstance(v, ok) or (isinstance(v, bool) and bool not in ok):  # not `is _BOOL`: compiled tuples
            raise bad(f"{cls.__name__} field {cls._fields[i]} has type {describe(v)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(f"{cls.__name__} field {cls._fields[i]} is not finite")
        if list in ok and not all(type(x) is int and x >= 0 for x in v):  # type: ignore[attr-defined]
            raise bad(f"{cls.__name__} field {cls._fields[i]} must be a list of sequence numbers")
    return cls(*f[1:])  # type: ignore[no-any-return]


def encode_control(frame: ControlFrame) -> bytes:
    return _pack((_TYPE_OF[type(frame)], *frame))


def encode_chunk(msg_id: int, offset: int, last: bool, data: bytes) -> bytes:
    """A slice of a larger frame: ``[8, msg_id, offset, last, data]``; the receiver reassembles it."""
    return _pack((FrameType.CHUNK, msg_id, offset, last, data))


def bad(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(msg, code="malformed_frame")


def check_time(v: Any, what: str) -> float:
    if type(v) is float:
        if not math.isfinite(v):
            raise bad(f"{what} is not finite")
        return v
    if type(v) is int:
        return float(v)
    raise bad(f"{what} must be a number, got {describe(v)}")
