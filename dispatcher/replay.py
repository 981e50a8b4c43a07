"""Replay buffers (roadmap: "Replay Buffer"): per-channel rings of envelopes with their timestamps.

A transport started with ``replay={"enabled": True, "buffer_size": 256, "max_age": 60.0}`` keeps, per
channel, the last ``buffer_size`` envelopes it sent ("out") and accepted ("in"), newer than ``max_age``
seconds.  ``transport.replay(channel, since=t)`` re-injects the buffered incoming envelopes into the local
handlers and bus, marked ``meta.replayed``.  ``dump(path)`` / ``load(path)`` persist a buffer in a
versioned msgpack file that carries the registry hash: a buffer captured under another registry is refused.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgpack

from .envelope import Envelope, Flags, Meta, QoS
from .errors import DispatcherError

__all__ = ["FORMAT", "VERSION", "Entry", "ReplayBuffer", "ReplayFileError"]

FORMAT = "netharness-replay"
VERSION = 1
Direction = Literal["in", "out"]


class ReplayFileError(DispatcherError):
    """A replay file that cannot be loaded: unreadable, of another format/version, or another registry."""


class Entry(NamedTuple):
    t: float  # the local clock when it was sent or accepted
    direction: Direction
    envelope: Envelope
    kind: str = ""  # how it was sent, when the capturer knows: "intent", "request", "event"


class ReplayBuffer:
    """Ring buffers of envelopes, one per channel."""

    def __init__(self, registry_hash: str, *, buffer_size: int = 256, max_age: float | None = None) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if max_age is not None and max_age <= 0:
            raise ValueError(f"max_age must be > 0 seconds or None, got {max_age}")
        self.registry_hash = registry_hash
        self.buffer_size = buffer_size
        self.max_age = max_age
        self._rings: dict[str, deque[Entry]] = {}

    @classmethod
    def from_options(cls, registry_hash: str, options: bool | dict[str, Any] | None) -> ReplayBuffer | None:
        """From init's ``replay=`` option: None/False (off), True, or ``{"enabled", "buffer_size", "max_age"}``."""
        if not options:
            return None
        if options is True:
            return cls(registry_hash)
        opts = dict(options)
        if not opts.pop("enabled", True):
            return None
        unknown = sorted(set(opts) - {"buffer_size", "max_age"})
        if unknown:
            raise ValueError(f"unknown replay option(s) {', '.join(unknown)}; allowed: enabled, buffer_size, max_age")
        return cls(registry_hash, **opts)

    def push(self, env: Envelope, direction: Direction, now: float, kind: str = "") -> None:
        if env.meta.flags.replayable is False:
            return
        channel = env.name.split(".", 2)[1]
        ring = self._rings.get(channel)
        if ring is None:
            ring = self._rings[channel] = deque(maxlen=self.buffer_size)
        ring.append(Entry(now, direction, env, kind))
        if self.max_age is not None:
            floor = now - self.max_age
            while ring and ring[0].t < floor:
                ring.popleft()

    def entries(self, channel: str | None = None, *, since: float | None = None,
                direction: Direction | None = None) -> list[Entry]:
        """Buffered entries, oldest first (across channels when ``channel`` is None)."""
        rings = [self._rings.get(channel, deque())] if channel is not None else list(self._rings.values())
        out = [e for ring in rings for e in ring
               if (since is None or e.t >= since) and (direction is None or e.direction == direction)]
        if channel is None:
            out.sort(key=lambda e: e.t)
        return out

    @property
    def channels(self) -> list[str]:
        return sorted(self._rings)

    def __len__(self) -> int:
        return sum(len(r) for r in self._rings.values())

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def clear(self) -> None:
        self._rings.clear()

    # -- files -----------------------------------------------------------------------------------

    def dump(self, path: str | os.PathLike[str]) -> int:
        """Write every buffered entry to ``path``; returns how many."""
        entries = self.entries()
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "registry_hash": self.registry_hash,
            "buffer_size": self.buffer_size,
            "entries": [_entry_row(e) for e in entries],
        }
        Path(path).write_bytes(msgpack.packb(doc, use_bin_type=True))
        return len(entries)

    def load(self, path: str | os.PathLike[str]) -> int:
        """Replace the buffer's content with the file's; returns how many entries were loaded."""
        entries = read_entries(path, self.registry_hash)
        self.clear()
        for e in entries:
            channel = e.envelope.name.split(".", 2)[1]
            ring = self._rings.get(channel)
            if ring is None:
                ring = self._rings[channel] = deque(maxlen=max(self.buffer_size, len(entries)))
            ring.append(e)
        return len(entries)


def read_entries(path: str | os.PathLike[str], registry_hash: str | None = None) -> list[Entry]:
    """The entries of a replay file, checked against ``registry_hash`` when given."""
    p = Path(path)
    try:
        doc = msgpack.unpackb(p.read_bytes(), raw=False, strict_map_key=False)
    except FileNotFoundError:
        raise ReplayFileError(f"{p}: no such replay file") from None
    except Exception as e:
        raise ReplayFileError(f"{p}: not a replay file (undecodable: {type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReplayFileError(f"{p}: not a replay file (expected format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ReplayFileError(f"{p}: replay file version {doc.get('version')!r} is not supported (this is {VERSION})")
    if registry_hash is not None and doc.get("registry_hash") != registry_hash:
        raise ReplayFileError(
            f"{p}: captured with channel registry {doc.get('registry_hash')}, but this dispatcher's registry is "
            f"{registry_hash}; load it with the registry it was captured with"
        )
    try:
        return [_row_entry(r) for r in doc["entries"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ReplayFileError(f"{p}: malformed entry: {type(e).__name__}: {e}") from None


def _entry_row(e: Entry) -> list[Any]:
    m = e.envelope.meta
    return [e.t, e.direction, e.envelope.name, e.envelope.payload, m.seq, int(m.qos), m.ts_sent, m.ts_ack,
            m.player_id, m.trace_id, m.flags.replayable, m.flags.reliable, m.is_response, m.reply_to, e.kind]


def _row_entry(r: list[Any]) -> Entry:
    t, direction, name, payload, seq, qos, ts_sent, ts_ack, pid, trace, replayable, reliable, is_resp, reply = r[:14]
    if direction not in ("in", "out"):
        raise ValueError(f"direction {direction!r}")
    meta = Meta(seq, QoS(qos), ts_sent, ts_ack, pid, trace, Flags(replayable, reliable), is_resp, reply)
    return Entry(float(t), direction, Envelope(name, payload, meta), str(r[14]) if len(r) > 14 else "")
