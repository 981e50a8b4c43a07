"""What differs between a server and a client: the handshake, direction, rate limits, timers.

A ``Dispatcher`` holds one role object (``core.impl``); the receive and send paths ask it instead of
branching on a role name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import auth
from .connection import Bucket, Connection, State
from .envelope import Meta
from .errors import RemoteProtocolError
from .registry import Kind
from .text import escape
from .timers import Timer, Timers
from .wire import PROTOCOL_VERSION, Challenge, Close, Hello, Ping, Welcome, encode_control

if TYPE_CHECKING:
    from .base import CoreBase
    from .connection import NameInfo

__all__ = ["ClientRole", "RoleImpl", "ServerRole"]


class RoleImpl:
    name: str
    peer: str  # what the other side is
    incoming: Kind  # the kind of envelope this side subscribes to and receives

    def __init__(self, core: CoreBase) -> None:
        self.core = core

    def open(self, c: Connection, now: float) -> None:
        raise NotImplementedError

    def handshake(self, c: Connection, fr: object, now: float) -> Connection:
        """Handle a handshake frame; the connection now serving ``c.key`` (a resume swaps one in)."""
        raise NotImplementedError

    def expects(self, info: NameInfo, meta: Meta) -> bool:
        """Whether this side accepts ``info`` travelling towards it.  It may look only at ``info.kind`` and
        ``meta.is_response``: the core tabulates it once per wire id from two probe metas (``Dispatcher._accepts``)."""
        raise NotImplementedError

    def charge(self, c: Connection, info: NameInfo, now: float) -> bool:
        """Authorise one inbound envelope against the peer's budget (True: go on)."""
        return True

    def lost(self, c: Connection, now: float) -> None:
        """The connection under ``c`` is gone: ``c`` waits, detached, for a resume (the roles add what follows)."""
        core = self.core
        c.enter(State.DETACHED, core.limits)
        core.stats.count("disconnects")
        core._tick_at.pop(c.key, None)
        core._dirty.pop(c.key, None)

    def _version(self, version: int, peer: str) -> None:
        if version != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"protocol version mismatch: the {peer} speaks {version}, this side "
                                      f"{PROTOCOL_VERSION}", code="version_mismatch")


class ServerRole(RoleImpl):
    name = "server"
    peer = "client"
    incoming: Kind = "intent"

    def open(self, c: Connection, now: float) -> None:
        core = self.core
        c.nonce = auth.new_nonce()
        c.out.push_front(encode_control(Challenge(PROTOCOL_VERSION, c.nonce, now, core.clock_id)), now)
        core._dirty[c.key] = None
        c.watchdog = core._schedule(now + core.limits.handshake_timeout, self.watchdog, c)

    def expects(self, info: NameInfo, meta: Meta) -> bool:
        return info.kind == "intent" and not meta.is_response

    def charge(self, c: Connection, info: NameInfo, now: float) -> bool:
        return c.buckets[info.chan].take(now)

    # -- the handshake ---------------------------------------------------------------------------------

    def handshake(self, c: Connection, h: object, now: float) -> Connection:
        core = self.core
        if not isinstance(h, Hello) or c.state != State.AWAITING_AUTH or c.nonce is None:
            raise RemoteProtocolError("unexpected handshake frame", code="handshake")
        self._version(h.version, "client")
        if h.registry_hash != core.registry.hash:
            raise RemoteProtocolError(
                f"channel registry mismatch: client hash {escape(h.registry_hash, 80)}, server hash "
                f"{core.registry.hash}; both peers must load the same registry", code="registry_mismatch")
        pid = h.player_id
        if core.secret is not None:
            if pid is None or not auth.verify_proof(core.secret, pid, h.expires, c.nonce, h.proof):
                raise RemoteProtocolError(f"bad auth token for player {escape(str(pid), 24)}", code="bad_token")
            if h.expires is not None and h.expires < core.wall_clock():
                raise RemoteProtocolError(f"the token of player {pid} expired", code="token_expired")
        elif pid is None:
            pid = 1
            while pid in core._players:
                pid += 1
        c.peer_clock = h.clock_id
        old = core._players.get(pid)
        if old is not None and old is not c and h.resume is not None and old.session_id == h.resume:
            if old.resume_secret is None or not auth.verify_resume(old.resume_secret, pid, h.resume, c.nonce,
                                                                   h.resume_proof):
                raise RemoteProtocolError("resume refused: no valid proof of the session's resume secret",
                                          code="resume_refused")
            return self._resume(old, c, h, now)
        if old is not None and old is not c:
            core.stats.count("replaced")
            if old.state == State.DETACHED:
                core._end(old, "replaced", f"player {pid} connected again")
            else:
                core.close_session(old.key, "replaced", f"player {pid} connected again", now=now)
        Timers.cancel(c.watchdog)
        c.session_id = auth.new_session_id()
        c.resume_secret = auth.new_resume_secret()
        c.player_id = pid
        c.decoder.player_id = pid
        c.buckets = [Bucket(rate, rate, now) for rate in core._rates]
        c.enter(State.OPEN, core.limits)
        c.last_heard = now
        core._players[pid] = c
        core.stats.count("connections")
        c.out.push_front(encode_control(Welcome(PROTOCOL_VERSION, c.session_id, pid, now, h.ts, False,
                                                c.resume_secret, core.clock_id, core.server_info)), now)
        core._dirty[c.key] = None
        c.watchdog = core._schedule(now + self._period(), self.watchdog, c)
        return c

    def _resume(self, old: Connection, new: Connection, h: Hello, now: float) -> Connection:
        """Re-attach a player's session (windows, dedup cache, queues, unacked envelopes) to a new connection;
        a connection still serving it is told it was replaced."""
        core = self.core
        Timers.cancel(new.watchdog)
        Timers.cancel(old.watchdog)
        if old.state == State.OPEN:  # the old connection is not known dead yet: it is now
            stale = core._sessions.pop(old.key, None)
            core._tick_at.pop(old.key, None)
            if stale is old:  # a stand-in keeps the old key long enough to tell its socket why
                ghost = core._new_connection(old.key, now)
                why = "the session resumed on a new connection"
                ghost.close_frame = encode_control(Close("replaced", why))
                ghost.enter(State.CLOSING, core.limits)
                ghost.close_code, ghost.close_message = "replaced", why
                core._sessions[old.key] = ghost
                core._dirty[old.key] = None
        old.key = new.key
        old.decoder = new.decoder
        old.decoder.player_id = old.player_id
        old.peer_clock = h.clock_id
        old.nonce = new.nonce
        old.out.restart()
        old.answered.new_connection()
        old.enter(State.OPEN, core.limits)
        old.last_heard = now
        old.partial_since = None
        old.resume_secret = auth.new_resume_secret()
        core._sessions[new.key] = old
        core.stats.count("resumes")
        old.out.push_front(encode_control(Welcome(PROTOCOL_VERSION, old.session_id or "", old.player_id, now,
                                                  h.ts, True, old.resume_secret, core.clock_id,
                                                  core.server_info)), now)
        core._dirty[new.key] = None
        old.watchdog = core._schedule(now + self._period(), self.watchdog, old)
        core._resend(old, now)
        return old

    # -- timers --------------------------------------------------------------------------------------

    def _period(self) -> float:
        lim = self.core.limits
        periods = [t for t in (lim.idle_timeout, lim.stall_timeout) if t > 0]
        return min(periods) if periods else 3600.0

    def watchdog(self, c: Connection, now: float) -> None:
        """The handshake deadline, then (after login) the idle and stalled-frame timeouts."""
        core, lim = self.core, self.core.limits
        c.watchdog = None
        if c.state == State.AWAITING_AUTH:
            if now >= c.opened + lim.handshake_timeout:
                core.stats.count("handshake_failures")
                core.stats.count("handshake_timeouts")
                core.close_session(c.key, "handshake_timeout", f"no HELLO within {lim.handshake_timeout:g}s",
                                   now=now)
            else:
                c.watchdog = core._schedule(c.opened + lim.handshake_timeout, self.watchdog, c)
            return
        if c.state != State.OPEN:
            return
        if lim.idle_timeout > 0 and now >= c.last_heard + lim.idle_timeout:
            core.stats.count("idle_timeouts")
            core.close_session(c.key, "idle_timeout", f"nothing received for {lim.idle_timeout:g}s", now=now)
            return
        if lim.stall_timeout > 0 and c.partial_since is not None and now >= c.partial_since + lim.stall_timeout:
            core.stats.count("stalled")
            core.close_session(c.key, "stalled", f"a partial frame did not complete within {lim.stall_timeout:g}s",
                               now=now)
            return
        wake = [now + self._period()]
        if lim.idle_timeout > 0:
            wake.append(c.last_heard + lim.idle_timeout)
        if lim.stall_timeout > 0 and c.partial_since is not None:
            wake.append(c.partial_since + lim.stall_timeout)
        c.watchdog = core._schedule(min(wake), self.watchdog, c)

    def lost(self, c: Connection, now: float) -> None:
        super().lost(c, now)
        core = self.core
        del core._sessions[c.key]  # the player's entry in _players keeps it for a resume
        Timers.cancel(c.watchdog)
        c.watchdog = core._schedule(now + core.resume_grace, self._detached_expired, c)

    def _detached_expired(self, c: Connection, now: float) -> None:
        if c.state == State.DETACHED:
            self.core._end(c, "expired", f"not resumed within {self.core.resume_grace:g}s")
            c.out.close()


class ClientRole(RoleImpl):
    name = "client"
    peer = "server"
    incoming: Kind = "event"
    ping_timer: Timer | None = None

    def open(self, c: Connection, now: float) -> None:
        c.held = True  # until the server's CHALLENGE is answered

    def expects(self, info: NameInfo, meta: Meta) -> bool:
        return meta.is_response if info.kind == "intent" else not meta.is_response

    def handshake(self, c: Connection, fr: object, now: float) -> Connection:
        core = self.core
        if isinstance(fr, Challenge) and not c.hello_sent:
            self._version(fr.version, "server")
            c.nonce = fr.nonce
            c.peer_clock = fr.clock_id
            resume = resume_proof = None
            if c.resuming and c.session_id is not None and c.resume_secret is not None:
                resume = c.session_id
                resume_proof = auth.prove_resume(c.resume_secret, core.player_id, c.session_id, fr.nonce)
            token = core.token
            proof = auth.prove(token, core.player_id, fr.nonce) if token is not None else None
            expires = auth.token_expiry(token) if token is not None else None
            hello = Hello(PROTOCOL_VERSION, core.registry.hash, core.player_id, proof, now, resume, expires,
                          resume_proof, core.clock_id)
            c.out.push_front(encode_control(hello), now)
            c.hello_sent = True
            c.held = False
            core._dirty[c.key] = None
            if c.resuming:
                core._resend(c, now)
            return c
        if isinstance(fr, Welcome) and c.hello_sent:
            self._version(fr.version, "server")
            if c.session_id is not None and not fr.resumed:
                # A fresh server session (ours expired, or the server restarted): its sequence numbers restart.
                c.windows = []  # enter(OPEN) makes fresh ones
            elif fr.resumed:
                core.stats.count("resumes")
            c.enter(State.OPEN, core.limits)
            c.session_id = fr.session
            c.resume_secret = fr.resume_secret or None
            c.player_id = fr.player_id
            core.player_id = fr.player_id
            core.server_info = dict(fr.server_info or {})
            if core.clock_id and fr.clock_id == core.clock_id:
                core.clock.share()
            core.clock.sample(fr.echo, fr.ts, now)
            core.stats.count("connections")
            interval = self._ping_interval()
            if interval > 0:
                Timers.cancel(self.ping_timer)
                self.ping_timer = core._schedule(now + interval, self._ping, c)
            return c
        raise RemoteProtocolError(f"unexpected {type(fr).__name__.upper()} in the handshake", code="handshake")

    def _ping_interval(self) -> float:
        periods = [t for t in (self.core.clock_sync_interval, self.core.limits.keepalive_interval) if t > 0]
        return min(periods) if periods else 0.0

    def _ping(self, c: Connection, now: float) -> None:
        """Keepalive and clock sample."""
        self.ping_timer = None
        if c.state == State.OPEN:
            self.core._push(c, encode_control(Ping(now)), 0, now)
        if not c.closed:
            self.ping_timer = self.core._schedule(now + self._ping_interval(), self._ping, c)
