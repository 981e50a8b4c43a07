"""One TCP connection of the TCP runtime (``tcp``): read by one greenlet, written directly by whichever
greenlet flushes; a writer greenlet only while the socket's buffer is full."""

from __future__ import annotations

import contextlib
import socket as _stdsocket
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Final, Protocol

import gevent
import gevent.socket

from ..errors import RemoteProtocolError
from ..timers import Timer, Timers

if TYPE_CHECKING:
    import gevent.event

    from ..core import Dispatcher

__all__ = ["Conn", "Owner"]

_READ = 65536
_PREAUTH_READ = 4096  # before authentication (a HELLO is far smaller)
_LINGER_SECONDS = 1.0  # after our CLOSE, how long the peer has to close its side
_LINGER_BYTES = 2 << 20  # and how much of its input we read and discard meanwhile (a largest frame and more)
_PREAUTH_LINGER_BYTES = 64 << 10  # the same for a peer that never authenticated (its frames are small)
# Fair reading (server side): a connection reads at most _FAIR_READ bytes per turn and lets the others run
# after each, and may spend at most ``fair_share`` of each _FAIR_WINDOW handling its input; past that its
# reader sleeps to the window's end (TCP pushes back on the sender), so one flooding peer cannot stall the
# honest ones.  An honest player uses a small fraction of a percent.
_FAIR_READ = 4096
_FAIR_WINDOW = 0.1
# Past _BUSY_SHARE of the window, a connection's reader yields through the event loop's poll (a short timer
# sleep) instead of only to the greenlets already runnable: gevent runs runnable greenlets for up to 50
# turns before it polls the sockets again, so a flooder yielding with sleep(0) would delay every other
# connection's input by several of its turns.  Its turns also shrink to _BUSY_READ bytes.
_BUSY_SHARE = 0.02
_BUSY_READ = 1024
_BUSY_YIELD = 0.0002
_BUSY_BUDGET = _FAIR_WINDOW * _BUSY_SHARE
#: The TCP runtime's clock (``TcpBase.now``), called directly on the per-read and per-send paths (a C static
#: once compiled: no method call through the runtime per use).  Both ends of a TCP connection on one host read
#: this one clock: the ``"shared"`` clock domain relies on it.
_monotonic: Final = time.monotonic


class Owner(Protocol):
    """What a connection needs of its runtime (``tcpbase.TcpBase``)."""

    core: Dispatcher
    _conns: dict[Hashable, Conn]
    _timer_at: float | None
    _timer_wake: gevent.event.Event
    #: The share of each _FAIR_WINDOW one connection may spend on its input (None: read as fast as it comes).
    fair_share: float | None
    def now(self) -> float: ...

    def flush(self) -> None: ...

    def flush_soon(self) -> None: ...

    def flush_after_read(self) -> None: ...

    def _connection_done(self, conn: Conn) -> None: ...


class Conn:
    """One socket around the core's session ``key``: read by one greenlet; written directly by whichever
    greenlet flushes (the socket is non-blocking underneath: a write never waits).  Only when the socket's
    buffer is full does a writer greenlet exist, to send the rest and whatever queues meanwhile, in order.

    Closing is graceful: once the session is closed (either side sent CLOSE) and what is left (our CLOSE) is
    written, the socket is half-closed and the peer gets ``_LINGER_SECONDS`` to close its side, while the
    reader reads and discards what still arrives.  Closing a socket with unread input would reset the
    connection and could destroy our CLOSE frame (the reason) on its way.
    """

    __slots__ = ("busy", "core", "dead", "eof", "key", "linger", "pending", "raw", "rt", "shut", "sock", "window",
                 "writer")

    def __init__(self, rt: Owner, sock: gevent.socket.socket, key: Hashable) -> None:
        self.rt = rt
        self.core: Dispatcher = rt.core  # the runtime's, read once: ``rt`` is a protocol (a lookup by name per use)
        self.sock = sock
        self.raw: Any = getattr(sock, "_sock", sock)  # the OS socket (non-blocking under gevent)
        self.window = 0.0  # fair reading: when the current window started, and the seconds spent in it
        self.busy = 0.0
        self.key = key
        self.dead = False
        self.eof = False
        self.shut = False  # our side is half-closed
        self.pending: bytes | memoryview = b""  # written by the writer greenlet
        self.writer: gevent.Greenlet | None = None
        self.linger: Timer | None = None  # after our half-close: when the peer's time to close is up
        with contextlib.suppress(OSError):
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        rt._conns[key] = self

    # -- writing ------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the core has for this connection now, from the calling greenlet, without blocking."""
        if self.dead or self.writer is not None or self.shut:
            return  # a writer greenlet is busy and pulls again when done
        data = self.core.data_to_send(_monotonic(), self.key)
        if data:
            try:
                n = self.raw.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.kill()
                return
            if n < len(data):
                self.pending = memoryview(data)[n:]
                self.writer = gevent.spawn(self._drain)
                return
        if self._session_closed():
            self._half_close()

    def _drain(self) -> None:
        """The writer greenlet: send what the socket did not take, then anything queued since, then exit."""
        core, rt = self.rt.core, self.rt
        try:
            while not self.dead:
                if self.pending:
                    self.sock.sendall(self.pending)
                    self.pending = b""
                data = core.data_to_send(rt.now(), self.key)
                if not data:
                    break
                self.pending = data
        except OSError:
            self.writer = None
            self.kill()
            return
        self.writer = None
        if not self.dead:
            nt = core.next_timer()  # pulling may have armed the next tick's timer
            if nt is not None and (rt._timer_at is None or nt < rt._timer_at):
                rt._timer_wake.set()
            if self._session_closed():
                self._half_close()

    def _half_close(self) -> None:
        if self.shut or self.dead:
            return
        self.shut = True
        try:
            self.sock.shutdown(_stdsocket.SHUT_WR)
        except OSError:
            self.kill()
            return
        if self.eof:  # the peer is done sending: nothing to wait for
            self.kill()
            return
        # An entry in the core's timer heap, fired by the runtime's one timer greenlet: no greenlet and no
        # event-loop timer per closing connection (a fired gevent timer leaves a small string in CPython's
        # type cache, allocated in the middle of the churn: see tcpserver._trim).
        rt = self.rt
        self.linger = rt.core.timers.schedule(rt.now() + _LINGER_SECONDS, _linger_over, self)
        if rt._timer_at is None or self.linger.when < rt._timer_at:
            rt._timer_wake.set()

    # -- reading ------------------------------------------------------------------------------------

    def read_loop(self) -> None:
        core, rt = self.rt.core, self.rt
        share = rt.fair_share
        full = _READ if share is None else _FAIR_READ
        wait = self.sock._wait  # gevent's wait for this socket's readiness (what its recv does on EAGAIN)
        drained = 0
        authed = False
        try:
            while not self.dead:
                c = core.session_or_none(self.key)
                closed = c is None or c.closed
                authed = authed or (c is not None and c.open)
                try:
                    # Small reads until the peer authenticates: a half-open handshake holds little.  Input
                    # after our CLOSE is only discarded: large reads, and a turn for the others after each.
                    if closed:
                        size = _READ
                    elif c is not None and c.open:
                        busy = self.busy > _BUSY_BUDGET and time.monotonic() - self.window < _FAIR_WINDOW
                        size = _BUSY_READ if busy else full  # small turns only while this window is busy
                    else:
                        size = _PREAUTH_READ
                    data = self.sock.recv(size)
                except OSError:
                    break
                if not data:
                    break
                if closed:
                    drained += len(data)
                    if not self._discarded(drained, authed):
                        break
                    continue
                t0 = time.monotonic() if share is not None else 0.0
                self._deliver(data)
                short = len(data) < size
                if share is not None:
                    self._pace(t0, share, short)
                if short and not self.dead:
                    # A short read took what there was: wait for readiness (level-triggered, so input that
                    # came meanwhile wakes us at once; the wait is this connection's yield) instead of a recv
                    # that finds the socket empty.  A close in another greenlet ends the wait with an OSError.
                    wait(self.sock._read_event)
        except OSError:
            pass
        finally:
            self._reading_ended()

    # -- what both ends' read loops share (``tcpclientconn`` reads the client's side) ------------------

    def _discarded(self, drained: int, authed: bool) -> bool:
        """Input after our CLOSE is only read and thrown away, with a turn for the others after each read;
        False once ``drained`` bytes are more than the linger allows (then stop reading)."""
        if drained > (_LINGER_BYTES if authed else _PREAUTH_LINGER_BYTES):
            return False
        gevent.sleep(0)
        return True

    def _deliver(self, data: bytes, at_once: bool = False) -> None:
        """Feed ``data`` to the core and write what it queued in answer: as the runtime's ``flush_after_read``
        has it (a server at the end of the event loop's turn, a client within its ack delay), or with
        ``at_once`` now (a client's handshake); a CLOSE at once, once the session closed."""
        rt = self.rt
        try:  # noqa: SIM105  (no context manager object per read on this hot path)
            self.core.receive_data(data, _monotonic(), self.key)
        except RemoteProtocolError:
            pass  # the core closed the session and queued a CLOSE saying why
        if at_once:
            rt.flush()
        else:
            rt.flush_after_read()
        if not self.shut and self._session_closed():
            self.flush()

    def _reading_ended(self) -> None:
        """The input ended: a CLOSE still queued goes out before the socket does (the peer may have
        half-closed right after the frame that made us close), then the connection is gone."""
        if self._session_closed() and not self.dead:
            self.eof = True
            self.flush()
            if self.writer is not None:
                self.writer.join(timeout=_LINGER_SECONDS)
        self.kill()

    def _pace(self, t0: float, share: float, short: bool = False) -> None:
        """Fair reading: yield after every read (a ``short`` read yields by waiting for readiness next);
        sleep out the window once this connection used its share."""
        t1 = time.monotonic()
        if t1 - self.window >= _FAIR_WINDOW:
            self.window, self.busy = t1, 0.0
        self.busy += t1 - t0
        if self.busy > _FAIR_WINDOW * share:
            self.rt.core.stats.count("reads_paced")
            gevent.sleep(self.window + _FAIR_WINDOW - t1)
        elif self.busy > _BUSY_BUDGET:
            gevent.sleep(_BUSY_YIELD)
        elif not short:
            gevent.sleep(0)

    def _session_closed(self) -> bool:
        c = self.core.session_or_none(self.key)
        return c is None or c.closed

    def join(self, timeout: float) -> None:
        """Wait until what is queued is written (the writer greenlet, if one is busy)."""
        if self.writer is not None:
            self.writer.join(timeout=timeout)

    def kill(self) -> None:
        if self.dead:
            return
        self.dead = True
        Timers.cancel(self.linger)
        self.linger = None
        with contextlib.suppress(OSError):
            self.sock.shutdown(_stdsocket.SHUT_RDWR)
        self.sock.close()
        if self.writer is not None and self.writer is not gevent.getcurrent():
            self.writer.kill(block=False)
        self.rt._connection_done(self)


def _linger_over(conn: Conn, now: float) -> None:
    conn.kill()
