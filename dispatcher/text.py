"""Bounded, escaped text from hostile values: for CLOSE and NACK reasons and for log lines.

Nothing here calls ``repr`` on a container (a frame nested a thousand deep would raise ``RecursionError``);
strings are escaped (no newline can forge a log line) and cut to a length.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LogGate", "describe", "escape"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escape(text: Any, limit: int = 200) -> str:
    """``text`` (a str, else its type's description) with control and non-ASCII characters escaped, at most
    ``limit`` characters (a cut string ends with ``...``)."""
    if not isinstance(text, str):
        return describe(text, limit)
    out: list[str] = []
    n = 0
    for ch in text[: limit + 1]:
        if " " <= ch <= "~" and ch != "\\":
            piece = ch
        else:
            piece = _ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"[:6])
        n += len(piece)
        if n > limit:
            return "".join(out)[: max(0, limit - 3)] + "..."
        out.append(piece)
    if len(text) > limit:
        s = "".join(out)
        return s[: max(0, limit - 3)] + "..."
    return "".join(out)


def describe(v: Any, limit: int = 40) -> str:
    """A short description of a decoded value: its type and, for a scalar, its escaped start."""
    t = type(v).__name__
    if v is None or isinstance(v, bool | int | float):
        r = str(v)
        return f"{t} {r[:limit]}{'...' if len(r) > limit else ''}"
    if isinstance(v, str):
        return f"{t} '{escape(v, limit)}'"
    if isinstance(v, bytes | bytearray | list | tuple | dict):
        return f"{t} of length {len(v)}"
    return t


class LogGate:
    """A token bucket of log lines for one connection: ``allow(now)`` says whether to write one more;
    ``suppressed`` counts those that were not."""

    __slots__ = ("_per_s", "_t", "_tokens", "burst", "suppressed")

    def __init__(self, per_minute: float) -> None:
        self.burst = max(1.0, per_minute)
        self._per_s = per_minute / 60.0
        self._tokens = self.burst
        self._t: float | None = None
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if self._t is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self._per_s)
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False
