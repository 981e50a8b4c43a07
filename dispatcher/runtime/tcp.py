"""The TCP runtime: the core on real gevent sockets.

Cooperative all the way: it uses gevent's sockets, events and greenlets directly, so it runs inside Locust
(monkey-patched) and in plain scripts alike; a blocking ``promise.result()`` yields to the other greenlets
(a ``gevent.hub.Waiter``; its deadline is a core timer, not a gevent ``Timeout``).  Per connection one
reader greenlet feeds the core; whoever flushes writes the core's bytes directly (non-blocking), and a
writer greenlet exists only while the socket's buffer is full; one timer greenlet per transport drives
``handle_timer``.  A client whose connection drops reconnects with jittered exponential backoff and
resumes its session; a server keeps a lost player's session for the core's ``resume_grace``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import gc
import itertools
import logging
import random
import socket as _stdsocket
import sys
import time
from collections.abc import Hashable
from typing import Any

import gevent
import gevent.event
import gevent.server
import gevent.socket
from gevent.hub import Waiter

from ..core import SERVER_PEER, Dispatcher
from ..errors import ConnectionClosed, LocalProtocolError, RemoteProtocolError
from ..promise import Promise
from ..timers import Timers
from ..wire import Close, encode_control
from .tcpconn import Conn

__all__ = ["TcpClientRuntime", "TcpServerRuntime"]

log = logging.getLogger("dispatcher.tcp")
# Freed memory goes back to the OS once connections stop closing for _TRIM_QUIET seconds (or every
# _TRIM_EVERY seconds while they keep closing): a collection and a trim stall the server for milliseconds,
# which must not recur during a flood of short connections.
_TRIM_QUIET = 1.0
_TRIM_EVERY = 10.0


def _libc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_trim() if sys.platform.startswith("linux") else None


class _Base:
    """Clock, flushing, timers and waits shared by both ends."""

    #: The share of the CPU one connection's input may take (``tcpconn`` fair reading); None on a client.
    fair_share: float | None = None

    def __init__(self, core: Dispatcher) -> None:
        self.core = core
        self.closed = False
        self._conns: dict[Hashable, Conn] = {}
        self._hub = gevent.get_hub()
        self._timer_wake = gevent.event.Event()
        self._timer_at: float | None = None
        self._timer = gevent.spawn(self._timer_loop)

    def now(self) -> float:
        return time.monotonic()

    def flush(self) -> None:
        """Write what the core queued, from the calling greenlet (never blocking: what the socket does not
        take at once goes to that connection's writer greenlet), and wake the timer greenlet if the core now
        needs waking earlier."""
        conns = self._conns
        for key in self.core.take_dirty():
            conn = conns.get(key)
            if conn is not None:
                conn.flush()
        nt = self.core.next_timer()
        if nt is not None and (self._timer_at is None or nt < self._timer_at):
            self._timer_wake.set()

    def wait(self, promise: Promise[Any], timeout: float | None) -> None:
        """Block the calling greenlet until ``promise`` settles or ``timeout`` passes.  No gevent ``Timeout``
        per call: the deadline is an entry in the core's timer heap, fired by the one timer greenlet."""
        if promise.done():
            return
        hub = self._hub
        if gevent.getcurrent() is hub:
            raise LocalProtocolError("Promise.result() cannot block inside the gevent hub; use and_then/catch")
        waiter: Waiter[Any] = Waiter(hub)
        run_callback = hub.loop.run_callback
        switch = waiter.switch

        def wake(*_: Any) -> None:
            run_callback(switch, None)

        promise._subscribe(wake)  # the runtime is part of the package: no finally_ wrapper per wait
        deadline = None
        if timeout is not None:
            deadline = self.core.timers.schedule(self.now() + timeout, wake, None)
            if self._timer_at is None or deadline[0] < self._timer_at:
                self._timer_wake.set()
        try:
            waiter.get()
        finally:
            Timers.cancel(deadline)

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

    def _connection_done(self, conn: Conn) -> None:
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


class TcpServerRuntime(_Base):
    """Accepts players on ``listen``; ``address`` is where it is bound."""

    fair_share: float | None = 0.25

    def __init__(self, core: Dispatcher, listen: tuple[str, int], *, backlog: int = 1024) -> None:
        super().__init__(core)
        self._ids = itertools.count(1)
        self._unauth: dict[str, set[Hashable]] = {}  # by remote address: connections still in the handshake
        self._host_of: dict[Hashable, str] = {}
        self._gone = 0.0  # when the last connection closed (memory is trimmed once they stop closing)
        self._trimmer: gevent.Greenlet | None = None
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
        refusal = self._admit(addr[0])
        if refusal is not None:
            self.core.stats.count("connections_refused")
            with contextlib.suppress(OSError):
                sock.sendall(encode_control(Close("server_busy", refusal)))
                sock.shutdown(_stdsocket.SHUT_WR)
            sock.close()
            return
        key = f"conn-{next(self._ids)}@{addr[0]}:{addr[1]}"
        self._unauth.setdefault(addr[0], set()).add(key)
        self._host_of[key] = addr[0]
        self.core.open_session(self.now(), key)
        conn = Conn(self, sock, key)
        self.flush()
        conn.read_loop()
        conn.join(timeout=5)

    def _admit(self, host: str) -> str | None:
        """Why a new connection from ``host`` is refused (the global cap, or too many connections from it
        that have not authenticated), or None."""
        lim = self.core.limits
        if len(self._conns) >= lim.max_connections:
            return f"the server holds its limit of {lim.max_connections} connections"
        keys = self._unauth.get(host)
        if keys:
            for key in [k for k in keys if not self._handshaking(k)]:
                keys.discard(key)
            if len(keys) >= lim.max_unauthenticated_per_address:
                return (f"{lim.max_unauthenticated_per_address} connections from this address are still "
                        "in their handshake")
        return None

    def _handshaking(self, key: Hashable) -> bool:
        try:
            return self.core.session(key).handshaking
        except LocalProtocolError:
            return False

    def _connection_done(self, conn: Conn) -> None:
        host = self._host_of.pop(conn.key, None)
        keys = self._unauth.get(host) if host is not None else None
        if keys is not None:
            keys.discard(conn.key)
            if not keys:
                del self._unauth[host]  # type: ignore[arg-type]
        super()._connection_done(conn)
        self._gone = time.monotonic()
        if self._trimmer is None:
            self._trimmer = gevent.spawn(self._trim)

    def _trim(self) -> None:
        """Give the memory of closed connections back to the OS (glibc keeps freed heap otherwise), once they
        stop closing for a moment."""
        start = time.monotonic()
        while True:
            t = time.monotonic()
            wake = min(self._gone + _TRIM_QUIET, start + _TRIM_EVERY)
            if t >= wake:
                break
            gevent.sleep(wake - t)
        self._trimmer = None
        self.core.timers.compact()  # the closed connections' cancelled watchdogs
        gc.collect()  # dead connections' reference cycles (greenlets, sockets) first
        if _malloc_trim is not None:
            _malloc_trim(0)

    def close(self, drain: float = 2.0) -> None:
        """Stop accepting, tell every player (CLOSE), give the writers ``drain`` seconds, close."""
        if self.closed:
            return
        self._server.stop(timeout=0)
        self.core.close(self.now())
        self.flush()
        writers = [c.writer for c in list(self._conns.values()) if c.writer is not None]
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
        conn = Conn(self, sock, SERVER_PEER)
        self.flush()
        gevent.spawn(conn.read_loop)

    def _connection_done(self, conn: Conn) -> None:
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
            conn.join(timeout=1.0)  # the CLOSE the transport queued
        self.closed = True
        if self._reconnecting is not None:
            self._reconnecting.kill()
        if conn is not None:
            conn.kill()
        self._timer_wake.set()
