"""The TCP server runtime: accepts players, caps connections, trims memory once connections stop closing."""

from __future__ import annotations

import contextlib
import errno
import gc
import itertools
import logging
import socket as _stdsocket
import sys
import time
from collections.abc import Hashable
from typing import Any

import gevent
import gevent.server
import gevent.socket

from ..core import Dispatcher
from ..errors import LocalProtocolError
from ..wire import Close, encode_control
from .libc import malloc_trim
from .tcpbase import TcpBase
from .tcpconn import Conn

__all__ = ["TcpServerRuntime"]

log = logging.getLogger("dispatcher.tcp")
# Freed memory goes back to the OS once connections stop closing for _TRIM_QUIET seconds (or every
# _TRIM_EVERY seconds while they keep closing): a collection and a trim stall the server for milliseconds,
# which must not recur during a flood of short connections.
_TRIM_QUIET = 1.0
#: Connections accepted per turn of the event loop (gevent's default is 100): a flood of connects waits its
#: turn between the players' input.
_ACCEPTS_PER_TURN = 16
_TRIM_EVERY = 10.0


class TcpServerRuntime(TcpBase):
    """Accepts players on ``listen``; ``address`` is where it is bound."""

    fair_share: float | None = 0.25
    coalesce = True

    def __init__(self, core: Dispatcher, listen: tuple[str, int], *, backlog: int = 1024) -> None:
        super().__init__(core)
        self._ids = itertools.count(1)
        self._unauth: dict[str, set[Hashable]] = {}  # by remote address: connections still in the handshake
        self._host_of: dict[Hashable, str] = {}
        self._gone = 0.0  # when the last connection closed (memory is trimmed once they stop closing)
        self._trimmer: gevent.Greenlet | None = None
        try:
            self._server = gevent.server.StreamServer(listen, self._handle, backlog=backlog)
            self._server.max_accept = _ACCEPTS_PER_TURN
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
        # CPython's type attribute cache holds a reference to the name string of each cached lookup, keyed
        # by the string's address; gevent's C code looks up ``watcher.stop`` with a fresh string each time a
        # timer fires, so up to 4,096 such strings, each allocated at some moment of the churn, would pin
        # the allocator's arenas (1 MiB each) long after the connections are gone.
        sys._clear_type_cache()
        gc.collect()  # dead connections' reference cycles (greenlets, sockets) first
        malloc_trim()

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
