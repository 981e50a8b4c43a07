"""The TCP runtime: the core on real gevent sockets.

Cooperative all the way: it uses gevent's sockets, events and greenlets directly, so it runs inside Locust
(monkey-patched) and in plain scripts alike; a blocking ``promise.result()`` yields to the other greenlets.
Per connection a reader greenlet feeds the core and a writer greenlet sends what the core queued (woken
when the core marks the connection dirty, so writes never interleave); one timer greenlet per transport
drives ``handle_timer``.  A client whose connection drops reconnects with jittered exponential backoff and
resumes its session; a server keeps a lost player's session for the core's ``resume_grace``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import random
import socket as _stdsocket
import time
from collections.abc import Hashable
from typing import Any

import gevent
import gevent.event
import gevent.server
import gevent.socket

from ..core import SERVER_PEER, Dispatcher
from ..errors import ConnectionClosed, LocalProtocolError, RemoteProtocolError
from ..promise import Promise

__all__ = ["TcpClientRuntime", "TcpServerRuntime"]

log = logging.getLogger("dispatcher.tcp")
_READ = 65536
_LINGER_SECONDS = 1.0  # after our CLOSE, how long the peer has to close its side
_LINGER_BYTES = 4 << 20  # and how much of its input we read and discard meanwhile


class _Base:
    """Clock, flushing, timers and waits shared by both ends."""

    def __init__(self, core: Dispatcher) -> None:
        self.core = core
        self.closed = False
        self._conns: dict[Hashable, _Conn] = {}
        self._timer_wake = gevent.event.Event()
        self._timer_at: float | None = None
        self._timer = gevent.spawn(self._timer_loop)

    def now(self) -> float:
        return time.monotonic()

    def flush(self) -> None:
        for key in self.core.take_dirty():
            conn = self._conns.get(key)
            if conn is not None:
                conn.wake.set()
        nt = self.core.next_timer()
        if nt is not None and (self._timer_at is None or nt < self._timer_at):
            self._timer_wake.set()

    def wait(self, promise: Promise[Any], timeout: float | None) -> None:
        done = gevent.event.Event()
        promise.finally_(done.set)
        done.wait(timeout)

    def _timer_loop(self) -> None:
        while not self.closed:
            nt = self.core.next_timer()
            self._timer_at = nt
            self._timer_wake.wait(None if nt is None else max(0.0, nt - self.now()))
            self._timer_wake.clear()
            if self.closed:
                return
            self.core.handle_timer(self.now())
            self.flush()

    def _connection_done(self, conn: _Conn) -> None:
        """A connection's socket is gone: forget a closed session, detach an open one."""
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        try:
            closed = self.core.session(conn.key).closed
        except LocalProtocolError:
            return
        if closed:
            self.core.forget(conn.key)
        else:
            self.core.connection_lost(self.now(), conn.key)
        self.flush()


class _Conn:
    """One socket: a reader and a writer greenlet around the core's session ``key``.

    Closing is graceful: once the session is closed (either side sent CLOSE), the writer sends what is left
    (our CLOSE), half-closes, and gives the peer ``_LINGER_SECONDS`` to close its side, while the reader
    reads and discards what still arrives.  Closing a socket with unread input would reset the connection
    and could destroy our CLOSE frame (the reason) on its way.
    """

    def __init__(self, rt: _Base, sock: gevent.socket.socket, key: Hashable) -> None:
        self.rt = rt
        self.sock = sock
        self.key = key
        self.wake = gevent.event.Event()
        self.dead = False
        with contextlib.suppress(OSError):
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        rt._conns[key] = self
        self.writer = gevent.spawn(self._write_loop)
        self.wake.set()

    def read_loop(self) -> None:
        core, rt = self.rt.core, self.rt
        drained = 0
        try:
            while not self.dead:
                try:
                    data = self.sock.recv(_READ)
                except OSError:
                    break
                if not data:
                    break
                if self._session_closed():
                    drained += len(data)
                    if drained > _LINGER_BYTES:
                        break
                    continue
                # On a RemoteProtocolError the core closed the session and queued a CLOSE saying why.
                with contextlib.suppress(RemoteProtocolError):
                    core.receive_data(data, rt.now(), self.key)
                rt.flush()
                if self._session_closed():
                    self.wake.set()
        finally:
            self.kill()

    def _session_closed(self) -> bool:
        try:
            return self.rt.core.session(self.key).closed
        except LocalProtocolError:
            return True

    def _write_loop(self) -> None:
        core, rt = self.rt.core, self.rt
        try:
            while not self.dead:
                self.wake.wait()
                self.wake.clear()
                data = core.data_to_send(rt.now(), self.key)
                rt.flush()  # pulling may have armed the next tick's timer
                if data:
                    self.sock.sendall(data)
                if self._session_closed():
                    self.sock.shutdown(_stdsocket.SHUT_WR)
                    gevent.spawn_later(_LINGER_SECONDS, self.kill)
                    return
        except OSError:
            pass
        self.kill()

    def kill(self) -> None:
        if self.dead:
            return
        self.dead = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(_stdsocket.SHUT_RDWR)
        self.sock.close()
        self.wake.set()
        self.rt._connection_done(self)


def _same_host(sock: gevent.socket.socket) -> bool:
    """Both ends of a loopback connection run on one host, so they read the same CLOCK_MONOTONIC."""
    try:
        peer = sock.getpeername()[0]
    except OSError:
        return False
    return bool(peer.startswith("127.") or peer in ("::1", "::ffff:127.0.0.1"))


class TcpServerRuntime(_Base):
    """Accepts players on ``listen``; ``address`` is where it is bound."""

    def __init__(self, core: Dispatcher, listen: tuple[str, int], *, backlog: int = 1024) -> None:
        super().__init__(core)
        self._ids = itertools.count(1)
        try:
            self._server = gevent.server.StreamServer(listen, self._handle, backlog=backlog)
            self._server.start()
        except OSError as e:
            self.closed = True
            self._timer.kill()
            why = "the port is taken" if e.errno == errno.EADDRINUSE else e.strerror
            raise LocalProtocolError(f"cannot listen on {listen[0]}:{listen[1]}: {why}") from None
        self.address: tuple[str, int] = self._server.address[:2]

    def _handle(self, sock: gevent.socket.socket, addr: Any) -> None:
        key = f"conn-{next(self._ids)}@{addr[0]}:{addr[1]}"
        self.core.open_session(self.now(), key)
        conn = _Conn(self, sock, key)
        self.flush()
        conn.read_loop()
        conn.writer.join(timeout=5)

    def close(self, drain: float = 2.0) -> None:
        """Stop accepting, tell every player (CLOSE), give the writers ``drain`` seconds, close."""
        if self.closed:
            return
        self._server.stop(timeout=0)
        self.core.close(self.now())
        self.flush()
        writers = [c.writer for c in list(self._conns.values())]
        gevent.joinall(writers, timeout=drain)
        for c in list(self._conns.values()):
            c.kill()
        self.closed = True
        self._timer_wake.set()


class TcpClientRuntime(_Base):
    """One player's connection to ``address``; reconnects and resumes when it drops."""

    def __init__(self, core: Dispatcher, address: tuple[str, int], *, connect_timeout: float = 5.0,
                 reconnect: bool = True, reconnect_timeout: float = 30.0,
                 backoff: tuple[float, float] = (0.05, 2.0)) -> None:
        super().__init__(core)
        self.address = address
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.reconnect_timeout = reconnect_timeout
        self.backoff = backoff
        self.reconnects = 0
        self._rng = random.Random()
        self._reconnecting: gevent.Greenlet | None = None
        try:
            sock = self._dial()
        except OSError as e:
            self.closed = True
            self._timer.kill()
            raise ConnectionClosed("connect_failed", f"cannot connect to {address[0]}:{address[1]}: "
                                   f"{e.strerror or e}") from None
        if _same_host(sock):  # stop-gap until the handshake detects the clock domain: loopback = one host
            core.clock_domain = "shared"
            core.clock_offset = 0.0
        core.open_session(self.now())
        self._start(sock)
        s = core.session()
        deadline = self.now() + connect_timeout
        while s.handshaking and self.now() < deadline:
            gevent.sleep(0.001)
        if not s.open:
            self.close()
            if s.handshaking:
                raise ConnectionClosed("handshake_timeout", f"no WELCOME from {address[0]}:{address[1]} "
                                       f"within {connect_timeout:g}s")
            raise RemoteProtocolError(f"the server refused the connection: {s.close_code}: {s.close_message}",
                                      code=s.close_code or "handshake")

    def _dial(self) -> gevent.socket.socket:
        return gevent.socket.create_connection(self.address, timeout=self.connect_timeout)

    def _start(self, sock: gevent.socket.socket) -> None:
        sock.settimeout(None)
        conn = _Conn(self, sock, SERVER_PEER)
        self.flush()
        gevent.spawn(conn.read_loop)

    def _connection_done(self, conn: _Conn) -> None:
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        s = self.core.session()
        if self.closed or s.closed:
            return
        self.core.connection_lost(self.now())
        if self.reconnect and self._reconnecting is None:
            self._reconnecting = gevent.spawn(self._reconnect_loop)

    def _reconnect_loop(self) -> None:
        lo, hi = self.backoff
        give_up = self.now() + self.reconnect_timeout
        attempt = 0
        try:
            while not self.closed and self.now() < give_up:
                gevent.sleep(min(hi, lo * 2**attempt) * self._rng.uniform(0.5, 1.5))
                attempt += 1
                try:
                    sock = self._dial()
                except OSError:
                    continue
                self.reconnects += 1
                self.core.reopen(self.now())
                self._start(sock)
                return
            if not self.closed:
                self.core.close_session(SERVER_PEER, "reconnect_failed",
                                        f"could not reconnect to {self.address[0]}:{self.address[1]} "
                                        f"within {self.reconnect_timeout:g}s", notify=False)
        finally:
            self._reconnecting = None

    def drop(self) -> None:
        """Kill the socket as a network fault would (no CLOSE): the client reconnects and resumes."""
        conn = self._conns.get(SERVER_PEER)
        if conn is not None:
            conn.kill()

    def close(self) -> None:
        if self.closed:
            return
        conn = self._conns.get(SERVER_PEER)
        if conn is not None:
            self.flush()
            conn.writer.join(timeout=1.0)  # the CLOSE the transport queued
        self.closed = True
        if self._reconnecting is not None:
            self._reconnecting.kill()
        if conn is not None:
            conn.kill()
        self._timer_wake.set()
