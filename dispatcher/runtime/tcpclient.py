"""The TCP client runtime: one player's connection; reconnects with jittered backoff and resumes."""

from __future__ import annotations

import random
import socket as _stdsocket
from typing import Any

import gevent
import gevent.event
import gevent.socket
from gevent import getcurrent

from ..core import SERVER_PEER, Dispatcher
from ..errors import ConnectionClosed, LocalProtocolError, RemoteProtocolError
from ..promise import Promise
from ..timers import Timers
from .tcpbase import TcpBase
from .tcpclientconn import ClientConn
from .tcpconn import Conn

__all__ = ["TcpClientRuntime"]


def _numeric_family(host: str) -> int | None:
    """``AF_INET``/``AF_INET6`` if ``host`` is an IP address literal, None if it is a name to resolve."""
    for family in (_stdsocket.AF_INET, _stdsocket.AF_INET6):
        try:
            _stdsocket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


class TcpClientRuntime(TcpBase):
    """One player's connection to ``address``; reconnects and resumes when it drops.

    A greenlet blocked in ``promise.result()`` reads the connection itself while it waits (``ClientConn``),
    so an answer costs no switch to a reader greenlet; the reader greenlet reads while nobody waits.

    Delayed acknowledgements: what the reader greenlet's read of the server's events queues in answer (the
    ACKs of reliable events, a NACK) leaves within ``ack_delay`` seconds, with whatever this side sends
    meanwhile, instead of one ``send`` per read: a player receiving its zone's skill executions read ~75
    events a second, each read answered by a send of one ACK that the server then had to read (issue 13's
    capacity row).  The server learns of delivery up to ``ack_delay`` later (its unacknowledged envelopes,
    kept for a resume, are that much older); nothing else waits for these acknowledgements.  A CLOSE, the
    handshake and whatever this side sends itself go at once.  ``ack_delay = 0`` sends after every read.
    """

    #: Seconds an acknowledgement of a read may wait for company (TCP's delayed ACK is 40 ms on Linux).
    ack_delay = 0.02

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
        self._conn: ClientConn | None = None
        self._welcome: gevent.event.Event | None = None
        self._later: Any = None  # the event loop's timer of a deferred flush (``flush_after_read``)
        self._later_delay = 0.0  # and the delay it was made with
        try:
            sock = self._dial()
        except OSError as e:
            self.closed = True
            self._timer.kill()
            raise ConnectionClosed("connect_failed", f"cannot connect to {address[0]}:{address[1]}: "
                                   f"{e.strerror or e}") from None
        core.open_session(self.now())
        self._welcome = gevent.event.Event()  # set whenever the handshake may have moved (no polling)
        self._start(sock)
        s = core.session()
        deadline = self.now() + connect_timeout
        while s.handshaking:
            left = deadline - self.now()
            if left <= 0:
                break
            self._welcome.wait(left)
            self._welcome.clear()
        self._welcome = None
        if not s.open:
            self.close()
            if s.handshaking:
                raise ConnectionClosed("handshake_timeout", f"no WELCOME from {address[0]}:{address[1]} "
                                       f"within {connect_timeout:g}s")
            raise RemoteProtocolError(f"the server refused the connection: {s.close_code}: {s.close_message}",
                                      code=s.close_code or "handshake")

    def _dial(self) -> gevent.socket.socket:
        host, port = self.address[0], self.address[1]
        family = _numeric_family(host)
        if family is None:  # a name: resolve it (gevent's resolver runs getaddrinfo in a thread pool)
            return gevent.socket.create_connection((host, port), timeout=self.connect_timeout)
        # An address already: no resolver round trip through a worker thread (a load generator connecting
        # hundreds of players paid one thread hand-off each, in the second they all connect).
        sock = gevent.socket.socket(family, _stdsocket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _start(self, sock: gevent.socket.socket) -> None:
        sock.settimeout(None)
        conn = self._conn = ClientConn(self, sock, SERVER_PEER)
        conn.handshake_moved = self._handshake_moved
        self.flush()
        gevent.spawn(conn.read_loop)

    def _handshake_moved(self) -> None:
        if self._welcome is not None:
            self._welcome.set()

    def flush(self) -> None:
        """As ``TcpBase.flush``, for the one connection a client has (a deferred flush still pending then has
        nothing left to do)."""
        later = self._later
        if later is not None and later.active:
            later.stop()
        core = self.core
        if core.take_dirty():
            conn = self._conn
            if conn is not None and not conn.dead:
                conn.flush()
        self._wake_timer()

    def flush_after_read(self) -> None:
        """After a read of the server's input: what the core queued in answer leaves within ``ack_delay``, or
        at once with ``ack_delay = 0``.  The deferred flush is this runtime's ``flush``, called by an event-loop
        timer (in the hub: it never blocks, ``Conn.flush`` hands what the socket does not take to a writer
        greenlet), so it also wakes the timer greenlet when the core needs it; a flush before it makes it moot."""
        delay = self.ack_delay
        if delay <= 0:
            self.flush()
            return
        if self.core.has_dirty():
            later = self._later
            if later is None or self._later_delay != delay:  # the first, or ``ack_delay`` changed
                if later is not None:
                    later.stop()
                later = self._later = self._hub.loop.timer(delay)
                self._later_delay = delay
            if not later.active:
                later.start(self.flush)
        self._wake_timer()

    def wait(self, promise: Promise[Any], timeout: float | None) -> None:
        """Block until ``promise`` settles or ``timeout`` passes, reading the connection in this greenlet
        when nobody else is (``ClientConn.read_until``); otherwise as ``TcpBase.wait``."""
        if promise._state:  # settled
            return
        conn = self._conn
        if conn is None or not conn.can_lend():
            super().wait(promise, timeout)
            return
        me = getcurrent()  # imported once: no lookup in the gevent module per wait
        if me is self._hub:
            raise LocalProtocolError("Promise.result() cannot block inside the gevent hub; use and_then/catch")
        deadline = timer = None
        if timeout is not None:
            deadline = self.now() + timeout
            timer = self.core.timers.schedule(deadline, conn.deadline, me)
            if self._timer_at is None or deadline < self._timer_at:
                self._timer_wake.set()
        promise._subscribe(conn.settled)
        try:
            conn.read_until(promise, deadline)
        finally:
            Timers.cancel(timer)
        if not promise._state:  # the connection stopped being readable here: wait for what is left
            left = None if deadline is None else deadline - self.now()
            if left is None or left > 0:
                super().wait(promise, left)

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
        if self._later is not None:
            self._later.stop()
        if self._reconnecting is not None:
            self._reconnecting.kill()
        if conn is not None:
            conn.kill()
        self._timer_wake.set()
