"""Every bound the core and the TCP runtime enforce on a peer, in one place (README: "Security model and
limits").  The defaults keep an honest player far from every bound; a peer that crosses one is refused,
counted and, where the bound protects memory, disconnected with a reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection (and, for the TCP runtime, per-server) limits.  Times in seconds, sizes in bytes."""

    #: Largest frame before authentication (a CHALLENGE, HELLO or WELCOME is far smaller).
    preauth_frame_size: int = 4096
    #: Seconds a new connection has to complete the handshake.
    handshake_timeout: float = 10.0
    #: Arrays and maps nested in a payload, at most (deeper: the frame is malformed).
    payload_depth: int = 32
    #: Bytes of partially received CHUNKed messages one connection may hold (reassembly is after auth only).
    chunk_budget: int = 2 << 20
    #: Frames and bytes the CRITICAL queue to one peer may hold; past either the peer is disconnected.
    critical_frames: int = 4096
    critical_bytes: int = 4 << 20
    #: PINGs per second a peer may send (burst: one second's worth); more are dropped and counted.
    ping_rate: float = 10.0
    #: NACKs per second this side sends to one peer (refusals); more are dropped and counted.
    nack_rate: float = 200.0
    #: A retried request's cached answer is sent again at most once per this many seconds.
    answer_resend_interval: float = 0.25
    #: After login: close a connection that sent nothing for this long (clients ping every keepalive).
    idle_timeout: float = 30.0
    #: Client: seconds between keepalive PINGs (also clock samples); 0 turns them off.
    keepalive_interval: float = 5.0
    #: Close a connection holding a partial frame that has not completed for this long.
    stall_timeout: float = 10.0
    #: Warning log lines per connection per minute (burst); more are counted, not written.
    log_lines_per_minute: float = 10.0
    #: Warning log lines per minute for all connections still in their handshake together (a client that
    #: reconnects for every bad frame gets a fresh per-connection budget each time, not this one).
    handshake_log_lines_per_minute: float = 60.0
    #: Longest reason in a CLOSE or NACK, and longest log line fragment taken from a peer.
    reason_chars: int = 200
    #: Bytes of ``server_info`` (packed) a server may send in its WELCOME.
    server_info_bytes: int = 2048
    #: TCP runtime: connections a server holds at once, and unauthenticated ones per remote address.
    max_connections: int = 10_000
    max_unauthenticated_per_address: int = 128

    @classmethod
    def from_options(cls, value: Limits | Mapping[str, Any] | None) -> Limits:
        """From a ``Limits`` or a dict of its fields (``ValueError`` naming an unknown field)."""
        if value is None:
            return cls()
        if isinstance(value, Limits):
            return value
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"unknown limit(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        out = replace(cls(), **dict(value))
        for f in fields(out):
            v = getattr(out, f.name)
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise ValueError(f"limit {f.name} must be a number >= 0, got {v!r}")
        return out
