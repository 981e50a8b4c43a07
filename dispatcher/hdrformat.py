"""HdrHistogram's V2 compressed format (base64 of a zlib-compressed payload of zigzag LEB128 counts), as
``Histogram.encode()`` writes and ``Histogram.decode()`` reads it: what HdrHistogram's own
``encode()``/``decode()`` (Java, C, Go, ``hdrhistogram`` on PyPI) speak."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = ["HistogramError", "pack", "unpack"]

_ENCODING_COOKIE = 0x1C849303 | 0x10
_COMPRESSION_COOKIE = 0x1C849304 | 0x10
_PAYLOAD_HEADER = struct.Struct(">iiiiqqd")
_EXTERNAL_HEADER = struct.Struct(">ii")


class HistogramError(ValueError):
    """An encoded histogram that cannot be decoded, or histograms that cannot be merged."""


def pack(counts: npt.NDArray[np.int64], highest: int, figures: int) -> str:
    """Base64 V2 compressed encoding of ``counts`` (lowest trackable value 1)."""
    nz = np.flatnonzero(counts)
    body = bytearray()
    i = 0
    for j in nz.tolist():
        if j > i:
            _zigzag_leb128(body, -(j - i))
        _zigzag_leb128(body, int(counts[j]))
        i = j + 1
    payload = _PAYLOAD_HEADER.pack(_ENCODING_COOKIE, len(body), 0, figures, 1, highest, 1.0) + body
    compressed = zlib.compress(payload)
    return base64.b64encode(_EXTERNAL_HEADER.pack(_COMPRESSION_COOKIE, len(compressed)) + compressed).decode()


def unpack(encoded: str | bytes) -> tuple[int, int, Iterable[int]]:
    """(highest, significant figures, the zigzag-decoded counts: negative ones are runs of zeros)."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, TypeError) as e:
        raise HistogramError(f"not base64: {e}") from None
    if len(raw) < _EXTERNAL_HEADER.size:
        raise HistogramError("encoded histogram is truncated")
    cookie, length = _EXTERNAL_HEADER.unpack_from(raw)
    if cookie & ~0xF0 != _COMPRESSION_COOKIE & ~0xF0:
        raise HistogramError(f"not an HdrHistogram V2 compressed histogram (cookie {cookie:#x})")
    try:
        payload = zlib.decompress(raw[_EXTERNAL_HEADER.size : _EXTERNAL_HEADER.size + length])
    except zlib.error as e:
        raise HistogramError(f"corrupt histogram payload: {e}") from None
    if len(payload) < _PAYLOAD_HEADER.size:
        raise HistogramError("histogram payload header is truncated")
    pcookie, plen, _norm, figures, lowest, highest, _ratio = _PAYLOAD_HEADER.unpack_from(payload)
    if pcookie & ~0xF0 != _ENCODING_COOKIE & ~0xF0:
        raise HistogramError(f"bad payload cookie {pcookie:#x}")
    if lowest != 1:
        raise HistogramError(f"only histograms with lowest trackable value 1 are supported, got {lowest}")
    return highest, figures, _read_zigzag_leb128(payload[_PAYLOAD_HEADER.size : _PAYLOAD_HEADER.size + plen])


def _zigzag_leb128(out: bytearray, v: int) -> None:
    z = (v << 1) ^ (v >> 63)
    z &= (1 << 64) - 1
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _read_zigzag_leb128(body: bytes) -> Iterable[int]:
    z = shift = 0
    for b in body:
        z |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
            if shift > 63:
                raise HistogramError("malformed varint in histogram counts")
            continue
        yield (z >> 1) ^ -(z & 1)
        z = shift = 0
    if shift:
        raise HistogramError("histogram counts end inside a varint")
