"""``FrameDecoder``: one connection's incoming byte stream, decoded one frame at a time, within limits.

``receive(data)`` buffers bytes; ``next_frame()`` returns the next complete frame or None.  Frames come one
at a time so the connection can change state (and limits) between two frames of one packet: a HELLO and
the envelopes pipelined behind it are each admitted under the state they arrive in.  ``feed(data)`` does
both and returns every frame (for tools and tests).

Limits: ``limit`` is the largest frame (small before authentication), ``admits`` the frame types the
connection's state accepts (checked as soon as a frame's type is known, before its fields are),
``chunk_budget`` the bytes of partial CHUNKed messages held.  Any malformed input raises
``RemoteProtocolError`` and nothing else; after that the decoder stays broken (close the connection).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal, overload

import msgpack

from .envelope import QoS
from .errors import RemoteProtocolError
from .text import describe, escape
from .wire import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_PARTIALS,
    Bits,
    EnvelopeFrame,
    Frame,
    FrameType,
    bad,
    check_time,
    parse_control,
    record_envelope,
)

__all__ = ["ALL_TYPES", "FrameDecoder"]

# Module constants are ``Final``: compiled, each is a C static (or inlined), not a globals-dict lookup per use.
_FEED_CHUNK: Final = 65536
#: The unpacker's first buffer (it grows to what a frame needs): by default msgpack allocates the whole
#: ``max_buffer_size`` per connection up front.
_READ_SIZE = 4096
ALL_TYPES: frozenset[int] = frozenset(int(t) for t in FrameType)
#: The fewest bytes an envelope frame's fields other than the payload take (array header, six small ints;
#: a float ``ts_sent`` takes 8 more).
_MIN_HEAD: Final = 7
_TIERS: Final = tuple(QoS)
_NOTHING: Final = object()
_PAD: Final[list[None]] = [None, None, None, None]
_ALL_BITS: Final = Bits.ALL
_CHUNK: Final[int] = FrameType.CHUNK.value


def _num(v: Any) -> str:
    """An int as itself (bounded), anything else described."""
    if type(v) is int:
        r = str(v)
        return r if len(r) <= 40 else r[:40] + "..."
    return describe(v)


def _depth_over(v: Any, limit: int, depth: int = 1) -> bool:
    """Whether arrays and maps nest more than ``limit`` deep in ``v``, an array or map at ``depth``.  The
    recursion stops at ``limit`` (and msgpack unpacks nothing deeper than its own stack of 128)."""
    if depth > limit:
        return True
    if type(v) is dict:
        m: dict[Any, Any] = v  # typed: compiled, native iteration
        for y in m.values():
            if (type(y) is list or type(y) is dict) and _depth_over(y, limit, depth + 1):
                return True
    else:
        a: list[Any] = v
        for y in a:
            if (type(y) is list or type(y) is dict) and _depth_over(y, limit, depth + 1):
                return True
    return False


def _ext_hook(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


class FrameDecoder:
    """Incremental decoder for one connection's byte stream."""

    __slots__ = (
        "_error",
        "_fed",
        "_input",
        "_limits",
        "_max",
        "_names",
        "_partial_bytes",
        "_partials",
        "_queued",
        "_small",
        "_small_size",
        "_start",
        "_unpacker",
        "admits",
        "chunk_budget",
        "failure",
        "limit",
        "max_depth",
        "oversized",
        "player_id",
        "spoofed",
    )

    def __init__(self, names: Sequence[str], max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, *,
                 limit: int | None = None, admits: frozenset[int] = ALL_TYPES,
                 chunk_budget: int | None = None, max_depth: int = 32) -> None:
        self._names = names
        #: When set (a server's connection after the handshake), every envelope's player_id is stamped with
        #: it, whatever the peer wrote; ``spoofed`` counts envelopes that claimed another id.  This is the
        #: only place a player id is stamped.
        self.player_id: int | None = None
        self.spoofed = 0
        self.oversized = False  # the failure was a frame over the size limit (else: malformed)
        self.failure: RemoteProtocolError | None = None
        self._max = max_frame_size
        self.limit = max_frame_size if limit is None else min(limit, max_frame_size)
        self.admits = admits
        self.chunk_budget = 2 * max_frame_size if chunk_budget is None else chunk_budget
        self.max_depth = max_depth  # arrays/maps nested in a payload, at most
        self._partials: dict[int, bytearray] = {}
        self._partial_bytes = 0
        self._error: str | None = None
        self._input: deque[memoryview] = deque()
        self._queued = 0  # bytes in _input
        self._fed = 0  # bytes given to the unpacker
        self._start = 0  # where the frame being decoded starts (the unpacker's tell() runs ahead in a partial one)
        # The streaming unpacker is made when the limit first reaches the full frame size (a connection's
        # login): a msgpack Unpacker is a ~40 kB object, and an unauthenticated connection should cost little.
        # Until then (``limit`` below the maximum) frames are small and decoded whole from ``_small``.
        self._unpacker: Any = None
        self._small = bytearray()
        self._small_size = 0
        m = max_frame_size
        self._limits = {"max_str_len": m, "max_bin_len": m, "max_array_len": m, "max_map_len": m // 2,
                        "max_ext_len": m}

    # -- bytes in, frames out ----------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame (a partial frame), plus unread input."""
        return self._fed - self._start + self._queued + len(self._small)

    def _make_unpacker(self) -> Any:
        self._unpacker = msgpack.Unpacker(max_buffer_size=self._max + _FEED_CHUNK, read_size=_READ_SIZE, raw=False,
                                          strict_map_key=False, use_list=True, ext_hook=_ext_hook, **self._limits)
        self._fed = self._start = 0
        if self._small:  # what followed the last small frame goes first
            self._input.appendleft(memoryview(bytes(self._small)))
            self._queued += len(self._small)
            self._small = bytearray()
        return self._unpacker

    def _next_small(self) -> Any:
        """Small mode: the next whole object in the input, or ``_NOTHING`` (wait for more); the size is in
        ``_small_size``."""
        buf = self._small
        while self._input:
            piece = self._input.popleft()
            self._queued -= len(piece)
            buf += piece
        if not buf:
            return _NOTHING
        try:
            obj = msgpack.unpackb(buf, raw=False, strict_map_key=False, use_list=True, ext_hook=_ext_hook,
                                  **self._limits)
            rest = b""
        except msgpack.ExtraData as e:
            obj, rest = e.unpacked, e.extra
        except Exception as e:
            if "incomplete input" in str(e):
                if len(buf) > self.limit:  # the frame in progress is already too big
                    raise self._too_big("frame") from None
                return _NOTHING
            if "exceeds max_" in str(e):
                raise self._too_big("frame") from None
            raise bad(f"undecodable msgpack: {type(e).__name__}: {escape(str(e), 120)}") from None
        self._small_size = len(buf) - len(rest)
        self._small = bytearray(rest)
        return obj

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise bad(f"connection already failed: {self._error}")
        if data:
            self._input.append(data if type(data) is memoryview else memoryview(data))
            self._queued += len(data)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        self.receive(data)
        out: list[Frame] = []
        while (fr := self.next_frame()) is not None:
            out.append(fr)
        return out

    def next_frame(self) -> Frame | None:
        return next(self.frames(), None)

    @overload
    def frames(self) -> Iterator[Frame]: ...

    @overload
    def frames(self, records: Literal[True]) -> Iterator[Frame | list[Any]]: ...

    def frames(self, records: bool = False) -> Iterator[Frame | list[Any]]:
        """The complete frames buffered, one at a time and lazily: the connection may change state (and so
        what is admitted) between two.  All state is in the decoder: a generator left unfinished loses
        nothing.  A ``RemoteProtocolError`` is also kept as ``failure``.

        With ``records`` (the core's receive path) an envelope comes as its checked, compact record (a list,
        see ``_record``) instead of an ``EnvelopeFrame``: the core builds the ``Envelope`` only for a
        handler, a subscriber, the logger or the replay buffer."""
        if self._error is not None:
            raise bad(f"connection already failed: {self._error}")
        try:
            while self._unpacker is None and self.limit < self._max:  # small mode (before authentication)
                obj = self._next_small()
                if obj is _NOTHING:
                    return
                fr = self._whole(obj, self._small_size, records)
                if fr is not None:
                    yield fr
            up = self._unpacker if self._unpacker is not None else self._make_unpacker()
            while True:
                if self._start != self._fed:
                    try:
                        obj = next(up)
                    except StopIteration:
                        obj = _NOTHING
                    except Exception as e:
                        if "exceeds max_" in str(e):  # msgpack's per-object limits, set from max_frame_size
                            raise self._too_big("frame") from None
                        raise bad(f"undecodable msgpack: {type(e).__name__}: {escape(str(e), 120)}") from None
                    if obj is not _NOTHING:
                        end: int = up.tell()
                        size, self._start = end - self._start, end
                        fr = self._whole(obj, size, records)
                        if fr is not None:
                            yield fr
                        continue
                if self._fed - self._start > self.limit:  # the frame in progress is already too big
                    raise self._too_big("frame")
                if not self._input:
                    return
                self._feed_some()
        except RemoteProtocolError as e:
            self._error = str(e)
            self.failure = e
            raise

    def _feed_some(self) -> None:
        piece = self._input.popleft()
        step = min(_FEED_CHUNK, self.limit + 1)
        if len(piece) > step:
            self._input.appendleft(piece[step:])
            piece = piece[:step]
        n = len(piece)
        self._queued -= n
        try:
            self._unpacker.feed(piece)
        except msgpack.BufferFull:
            raise self._too_big("frame") from None
        self._fed += n

    def _too_big(self, what: str) -> RemoteProtocolError:
        self.oversized = True
        return bad(f"{what} larger than the {self.limit}-byte limit")

    def _whole(self, obj: Any, size: int, records: bool) -> Any:
        """A whole decoded object as a frame (None: a CHUNK of a message still incomplete)."""
        if size > self.limit:
            raise self._too_big(f"frame of {size} bytes is")
        if type(obj) is not list or not obj or type(obj[0]) is not int:
            raise bad(f"a frame is an array starting with its type, got {describe(obj)}")
        t: int = obj[0]  # typed (checked just above): native comparisons
        if t not in self.admits:
            self._admit(t)
        if t == _CHUNK:
            whole = self._chunk(obj)
            if whole is None:
                return None
            obj, size = whole
            t = obj[0]  # ``_chunk`` checked it
        if t == 0:
            return self._record(obj, size) if records else self._envelope(obj, size)
        return parse_control(obj)

    def _admit(self, t: int) -> None:
        if t not in self.admits:
            if t not in ALL_TYPES:
                raise bad(f"unknown frame type {_num(t)}; known: {', '.join(str(int(x)) for x in FrameType)}")
            raise RemoteProtocolError(f"{FrameType(t).name} is not accepted in this connection state",
                                      code="not_admitted")

    # -- CHUNK reassembly -----------------------------------------------------------------------------

    def _chunk(self, f: list[Any]) -> tuple[Any, int] | None:
        """Add a CHUNK to its message; the reassembled frame and its size once the last one is in."""
        if len(f) != 5 or type(f[1]) is not int or type(f[2]) is not int or type(f[3]) is not bool \
                or type(f[4]) is not bytes:
            raise bad("a CHUNK frame is [8, msg_id, offset, last, bytes]")
        msg_id, offset, last, data = f[1], f[2], f[3], f[4]
        buf = self._partials.get(msg_id)
        if buf is None:
            if offset != 0:
                raise bad(f"chunk of message {describe(msg_id)} starts at offset {describe(offset)}, not 0")
            if len(self._partials) >= MAX_PARTIALS:
                raise bad(f"more than {MAX_PARTIALS} chunked messages in flight")
            buf = self._partials[msg_id] = bytearray()
        elif offset != len(buf):
            raise bad(f"chunk at offset {describe(offset)}, expected {len(buf)}")
        buf += data
        self._partial_bytes += len(data)
        if len(buf) > self._max:
            raise self._too_big("chunked frame")
        if self._partial_bytes > self.chunk_budget:
            self.oversized = True
            raise bad(f"partial chunked messages over the {self.chunk_budget}-byte budget")
        if not last:
            return None
        del self._partials[msg_id]
        self._partial_bytes -= len(buf)
        m = self._max
        try:
            obj = msgpack.unpackb(bytes(buf), raw=False, strict_map_key=False, use_list=True, ext_hook=_ext_hook,
                                  max_str_len=m, max_bin_len=m, max_array_len=m, max_map_len=m // 2, max_ext_len=m)
        except Exception as e:
            raise bad(f"undecodable chunked frame: {type(e).__name__}: {escape(str(e), 120)}") from None
        if type(obj) is not list or not obj or type(obj[0]) is not int:
            raise bad(f"a chunked frame is an array starting with its type, got {describe(obj)}")
        if obj[0] == _CHUNK:
            raise bad("a chunked frame may not itself be a CHUNK")
        self._admit(obj[0])
        return obj, len(buf)

    # -- fields ------------------------------------------------------------------------------------------

    def _envelope(self, f: list[Any], size: int) -> EnvelopeFrame:
        r = self._record(f, size)
        return EnvelopeFrame(record_envelope(r, self._names[r[1]]), r[1], r[4], size)

    def _record(self, f: list[Any], size: int) -> list[Any]:
        """Check an envelope frame's fields and turn the list, in place, into the core's compact record::

            [size, wire_id, seq, qos (QoS), bits, ts_sent (float), payload, player_id, trace_id, reply_to, ts_ack]

        (always 11 items; ``player_id`` stamped when the connection has one)."""
        n = len(f)
        if n < 7 or n > 11:
            raise bad(f"envelope frame has {n} items, expected 7 to 11")
        wid, seq, qos, bits, ts = f[1], f[2], f[3], f[4], f[5]
        if type(wid) is not int or not 0 <= wid < len(self._names):
            raise bad(f"unknown wire id {_num(wid)}; this registry has ids 0..{len(self._names) - 1}")
        if type(seq) is not int or seq < 0:
            raise bad(f"sequence number must be a non-negative integer, got {_num(seq)}")
        if type(qos) is not int or not 0 <= qos <= 3:
            raise bad(f"qos must be 0..3, got {_num(qos)}")
        if type(bits) is not int or not 0 <= bits <= _ALL_BITS:
            raise bad(f"bits must be 0..{_ALL_BITS}, got {_num(bits)}")
        if type(ts) is float:
            if ts - ts != 0.0:  # inf or nan
                raise bad("ts_sent is not finite")
        else:
            f[5] = check_time(ts, "ts_sent")
        f[3] = _TIERS[qos]
        if n == 7:
            f.extend(_PAD)  # compiled, a list primitive (``+=`` is the generic in-place concat)
        else:
            if n < 11:
                f.extend(_PAD[:11 - n])
            player_id, trace_id, reply_to, ts_ack = f[7], f[8], f[9], f[10]
            if player_id is not None and type(player_id) is not int:
                raise bad(f"player_id must be an integer, got {describe(player_id)}")
            if trace_id is not None and type(trace_id) is not str:
                raise bad(f"trace_id must be a string, got {describe(trace_id)}")
            if reply_to is not None and (type(reply_to) is not int or reply_to < 0):
                raise bad(f"reply_to must be a sequence number, got {_num(reply_to)}")
            if ts_ack is not None:
                f[10] = check_time(ts_ack, "ts_ack")
        payload = f[6]
        # Each level of nesting costs the payload at least one byte, and the frame's other fields at least
        # _MIN_HEAD: a smaller frame cannot be too deep (most are), so it is not walked; a table of scalars
        # (most of the rest) costs one pass over its values.
        tp = type(payload)
        head = _MIN_HEAD + 8 if type(ts) is float else _MIN_HEAD
        if (tp is dict or tp is list) and size - head > self.max_depth and _depth_over(payload, self.max_depth):
            raise bad(f"payload nested deeper than {self.max_depth} levels")
        stamp = self.player_id
        if stamp is not None:
            if f[7] is not None and f[7] != stamp:
                self.spoofed += 1
            f[7] = stamp
        f[0] = size
        return f

