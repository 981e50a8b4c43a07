"""The wire format: msgpack frames in a compact array form.

Every frame is one msgpack array whose first item is its ``FrameType``.  An envelope travels as::

    [0, wire_id, seq, qos, bits, ts_sent, payload, player_id?, trace_id?, reply_to?, ts_ack?]

with the registry's wire id instead of the name string and trailing nils left off.  ``bits`` holds the
envelope's flags (response, reliable, replayable) and transport bits (request, retransmit,
require_subscriber).  The protocol version travels in the HELLO/WELCOME handshake.

``FrameDecoder`` decodes a byte stream incrementally (``msgpack.Unpacker`` with ``max_buffer_size`` and
per-object limits, so untrusted input cannot make it allocate without bound).  Any malformed input raises
``RemoteProtocolError`` and nothing else; after that the decoder stays broken (close the connection).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, NamedTuple

import msgpack

from .envelope import Envelope, Flags, Meta, QoS
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "Ack",
    "Bits",
    "Close",
    "EnvelopeFrame",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "Hello",
    "Nack",
    "Ping",
    "Pong",
    "Welcome",
    "encode_chunk",
    "encode_control",
    "encode_envelope",
    "pack_payload",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 1 << 20
_FEED_CHUNK = 1 << 16
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


class Bits:
    RESPONSE = 1
    REQUEST = 2
    RETRANSMIT = 4
    REQUIRE_SUBSCRIBER = 8
    RELIABLE_SET = 16
    RELIABLE = 32
    REPLAYABLE_SET = 64
    REPLAYABLE = 128
    ACK_REQUESTED = 256  # reliable: the receiver acknowledges it; the sender re-sends it until then
    ALL = 511


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


class Hello(NamedTuple):
    """The client's first frame.  ``resume``: the session id of a connection that was lost."""

    version: int
    registry_hash: str
    player_id: int | None
    token: str | None
    ts: float
    resume: str | None = None


class Welcome(NamedTuple):
    """The server's answer to HELLO; ``resumed`` when it re-attached the session named in ``resume``."""

    version: int
    session: str
    player_id: int | None
    ts: float
    echo: float
    resumed: bool = False


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


Frame = EnvelopeFrame | Nack | Hello | Welcome | Close | Ping | Pong | Ack

_NUM = (int, float)
_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))
_BOOL = (bool,)
_INTS = (list,)  # a list of ints (checked item by item)
_CONTROL: dict[int, tuple[type[Any], tuple[tuple[type, ...], ...]]] = {
    FrameType.NACK: (Nack, ((int,), (int,), (str,), (str,))),
    FrameType.HELLO: (Hello, ((int,), (str,), _OPT_INT, _OPT_STR, _NUM, _OPT_STR)),
    FrameType.WELCOME: (Welcome, ((int,), (str,), _OPT_INT, _NUM, _NUM, _BOOL)),
    FrameType.CLOSE: (Close, ((str,), (str,))),
    FrameType.PING: (Ping, (_NUM,)),
    FrameType.PONG: (Pong, (_NUM, _NUM)),
    FrameType.ACK: (Ack, ((int,), _INTS)),
}
_TYPE_OF: dict[type[Any], int] = {cls: t for t, (cls, _) in _CONTROL.items()}

_packb: Callable[..., bytes] = msgpack.packb


def pack_payload(payload: Any) -> bytes:
    """msgpack bytes of a payload; ``LocalProtocolError`` when it holds something msgpack cannot carry."""
    try:
        return _packb(payload, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise LocalProtocolError(
            f"payload cannot be encoded ({e}); allowed: nil, booleans, numbers, strings, bytes, "
            "arrays and tables of those"
        ) from None


def flag_bits(env: Envelope) -> int:
    m = env.meta
    bits = Bits.RESPONSE if m.is_response else 0
    f = m.flags
    if f.reliable is not None:
        bits |= Bits.RELIABLE_SET | (Bits.RELIABLE if f.reliable else 0)
    if f.replayable is not None:
        bits |= Bits.REPLAYABLE_SET | (Bits.REPLAYABLE if f.replayable else 0)
    return bits


def encode_envelope(env: Envelope, wire_id: int, bits: int = 0, payload_bytes: bytes | None = None) -> bytes:
    """One envelope frame.  ``payload_bytes`` (from ``pack_payload``) lets a broadcast pack once."""
    m = env.meta
    if payload_bytes is None:
        payload_bytes = pack_payload(env.payload)
    head = _packb((0, wire_id, m.seq, int(m.qos), bits | flag_bits(env), m.ts_sent))
    tail: tuple[Any, ...] = (m.player_id, m.trace_id, m.reply_to, m.ts_ack)
    n = 4
    while n and tail[n - 1] is None:
        n -= 1
    if n:
        tail_bytes = _packb(tail[:n])[1:]  # drop the fixarray header: the items join the frame's array
        return bytes((0x90 | (7 + n),)) + head[1:] + payload_bytes + tail_bytes
    return bytes((0x97,)) + head[1:] + payload_bytes


def encode_control(frame: Nack | Hello | Welcome | Close | Ping | Pong | Ack) -> bytes:
    return _packb((_TYPE_OF[type(frame)], *frame))


def encode_chunk(msg_id: int, offset: int, last: bool, data: bytes) -> bytes:
    """A slice of a larger frame: ``[8, msg_id, offset, last, data]``; the receiver reassembles it."""
    return _packb((FrameType.CHUNK, msg_id, offset, last, data), use_bin_type=True)


def _bad(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(msg, code="malformed_frame")


def _ext_hook(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


class FrameDecoder:
    """Incremental decoder for one connection's byte stream.

    ``feed(data)`` returns the frames completed by ``data``.  Frames over ``max_frame_size`` bytes, unknown
    frame types, unknown wire ids and ill-typed fields raise ``RemoteProtocolError``.
    """

    __slots__ = ("_error", "_max", "_names", "_partials", "_unpacker", "oversized", "player_id", "spoofed")

    def __init__(self, names: Sequence[str], max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._names = names
        #: When set (a server's session after the handshake), every envelope's player_id is stamped with
        #: it, whatever the peer wrote; ``spoofed`` counts envelopes that claimed another id.
        self.player_id: int | None = None
        self.spoofed = 0
        self.oversized = False  # the failure was a frame over the size limit (else: malformed)
        self._partials: dict[int, bytearray] = {}
        self._max = max_frame_size
        self._error: str | None = None
        self._unpacker = msgpack.Unpacker(max_buffer_size=max_frame_size + _FEED_CHUNK, **self._limits())

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._error is not None:
            raise _bad(f"connection already failed: {self._error}")
        out: list[Frame] = []
        view = memoryview(data)
        for i in range(0, len(view), _FEED_CHUNK):
            try:
                self._unpacker.feed(view[i : i + _FEED_CHUNK])
            except msgpack.BufferFull:
                self._fail(f"frame larger than the {self._max}-byte limit", oversized=True)
            self._drain(out)
        return out

    def _fail(self, msg: str, *, oversized: bool = False) -> None:
        self._error = msg
        self.oversized = self.oversized or oversized
        raise _bad(msg)

    def _drain(self, out: list[Frame]) -> None:
        up = self._unpacker
        while True:
            start = up.tell()
            try:
                obj = next(up)
            except StopIteration:
                return
            except Exception as e:
                if "exceeds max_" in str(e):  # msgpack's per-object limits, set from max_frame_size
                    self._fail(f"frame larger than the {self._max}-byte limit ({e})", oversized=True)
                self._fail(f"undecodable msgpack: {type(e).__name__}: {e}")
            size = up.tell() - start
            if size > self._max:
                self._fail(f"frame of {size} bytes exceeds the {self._max}-byte limit", oversized=True)
            try:
                if type(obj) is list and obj and obj[0] == FrameType.CHUNK and type(obj[0]) is int:
                    whole = self._chunk(obj)
                    if whole is None:
                        continue
                    obj, size = whole
                out.append(self._parse(obj, size))
            except RemoteProtocolError as e:
                self._fail(str(e))

    def _chunk(self, f: list[Any]) -> tuple[Any, int] | None:
        """Add a CHUNK to its message; the reassembled frame and its size once the last one is in."""
        if len(f) != 5 or type(f[1]) is not int or type(f[2]) is not int or type(f[3]) is not bool \
                or type(f[4]) is not bytes:
            raise _bad("a CHUNK frame is [8, msg_id, offset, last, bytes]")
        msg_id, offset, last, data = f[1], f[2], f[3], f[4]
        buf = self._partials.get(msg_id)
        if buf is None:
            if offset != 0:
                raise _bad(f"chunk of message {msg_id} starts at offset {offset}, not 0")
            if len(self._partials) >= MAX_PARTIALS:
                raise _bad(f"more than {MAX_PARTIALS} chunked messages in flight")
            buf = self._partials[msg_id] = bytearray()
        elif offset != len(buf):
            raise _bad(f"chunk of message {msg_id} at offset {offset}, expected {len(buf)}")
        buf += data
        if len(buf) > self._max:
            self.oversized = True
            raise _bad(f"chunked frame larger than the {self._max}-byte limit")
        if not last:
            return None
        del self._partials[msg_id]
        try:
            obj = msgpack.unpackb(bytes(buf), **self._limits())
        except Exception as e:
            raise _bad(f"undecodable chunked frame: {type(e).__name__}: {e}") from None
        if type(obj) is list and obj and obj[0] == FrameType.CHUNK:
            raise _bad("a chunked frame may not itself be a CHUNK")
        return obj, len(buf)

    def _limits(self) -> dict[str, Any]:
        m = self._max
        return {"raw": False, "strict_map_key": False, "use_list": True, "ext_hook": _ext_hook,
                "max_str_len": m, "max_bin_len": m, "max_array_len": m, "max_map_len": m // 2, "max_ext_len": m}

    def _parse(self, f: Any, size: int) -> Frame:
        if type(f) is not list or not f or type(f[0]) is not int:
            raise _bad(f"a frame is an array starting with its type, got {_describe(f)}")
        t = f[0]
        if t == 0:
            return self._envelope(f, size)
        spec = _CONTROL.get(t)
        if spec is None:
            raise _bad(f"unknown frame type {t}; known: {', '.join(str(int(x)) for x in FrameType)}")
        cls, types = spec
        if len(f) != len(types) + 1:
            raise _bad(f"{cls.__name__} frame has {len(f) - 1} fields, expected {len(types)}")
        for i, (v, ok) in enumerate(zip(f[1:], types, strict=True)):
            if not isinstance(v, ok) or (isinstance(v, bool) and ok is not _BOOL):
                raise _bad(f"{cls.__name__} field {cls._fields[i]} has type {_describe(v)}")
            if isinstance(v, float) and not math.isfinite(v):
                raise _bad(f"{cls.__name__} field {cls._fields[i]} is not finite")
            if ok is _INTS and not all(type(x) is int and x >= 0 for x in v):  # type: ignore[attr-defined]
                raise _bad(f"{cls.__name__} field {cls._fields[i]} must be a list of sequence numbers")
        return cls(*f[1:])  # type: ignore[no-any-return]

    def _envelope(self, f: list[Any], size: int) -> EnvelopeFrame:
        n = len(f)
        if n < 7 or n > 11:
            raise _bad(f"envelope frame has {n} items, expected 7 to 11")
        wid, seq, qos, bits, ts = f[1], f[2], f[3], f[4], f[5]
        if type(wid) is not int or not 0 <= wid < len(self._names):
            raise _bad(f"unknown wire id {wid!r}; this registry has ids 0..{len(self._names) - 1}")
        if type(seq) is not int or seq < 0:
            raise _bad(f"sequence number must be a non-negative integer, got {seq!r}")
        if type(qos) is not int or not 0 <= qos <= 3:
            raise _bad(f"qos must be 0..3, got {qos!r}")
        if type(bits) is not int or not 0 <= bits <= Bits.ALL:
            raise _bad(f"bits must be 0..{Bits.ALL}, got {bits!r}")
        ts_sent = _time(ts, "ts_sent")
        player_id = trace_id = reply_to = None
        ts_ack: float | None = None
        if n > 7:
            player_id = f[7]
            if player_id is not None and type(player_id) is not int:
                raise _bad(f"player_id must be an integer, got {_describe(player_id)}")
            if n > 8:
                trace_id = f[8]
                if trace_id is not None and type(trace_id) is not str:
                    raise _bad(f"trace_id must be a string, got {_describe(trace_id)}")
                if n > 9:
                    reply_to = f[9]
                    if reply_to is not None and (type(reply_to) is not int or reply_to < 0):
                        raise _bad(f"reply_to must be a sequence number, got {reply_to!r}")
                    if n > 10 and f[10] is not None:
                        ts_ack = _time(f[10], "ts_ack")
        stamp = self.player_id
        if stamp is not None:
            if player_id is not None and player_id != stamp:
                self.spoofed += 1
            player_id = stamp
        flags = Flags.of(
            replayable=bool(bits & Bits.REPLAYABLE) if bits & Bits.REPLAYABLE_SET else None,
            reliable=bool(bits & Bits.RELIABLE) if bits & Bits.RELIABLE_SET else None,
        )
        meta = Meta(seq, QoS(qos), ts_sent, ts_ack, player_id, trace_id, flags, bool(bits & Bits.RESPONSE), reply_to)
        return EnvelopeFrame(Envelope(self._names[wid], f[6], meta), wid, bits, size)



def _time(v: Any, what: str) -> float:
    if type(v) is float:
        if not math.isfinite(v):
            raise _bad(f"{what} is not finite")
        return v
    if type(v) is int:
        return float(v)
    raise _bad(f"{what} must be a number, got {_describe(v)}")


def _describe(v: Any) -> str:
    r = repr(v)
    return f"{type(v).__name__} {r[:40]}{'...' if len(r) > 40 else ''}"
