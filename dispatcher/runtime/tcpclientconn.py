"""The client's TCP connection: its input is read by whichever greenlet needs it.

A greenlet blocked in ``promise.result()`` reads the socket itself while it waits (``read_until``): the
answer it waits for is read, decoded and settled in that greenlet, with no switch to a reader greenlet and
back through the hub (a bare socket client's path).  The reader greenlet reads only while nobody waits
(events, answers that callbacks consume) and deals with the end of the connection.  One io watcher per
connection; ``_parked`` is the greenlet its readiness wakes, and at most one greenlet reads at a time.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import gevent
from gevent import getcurrent

from ..errors import RemoteProtocolError
from .tcpconn import _PREAUTH_READ, _READ, Conn, Owner, _monotonic

if TYPE_CHECKING:
    import gevent.socket

    from ..promise import Promise

greenlet = Any  # a greenlet (gevent ships no type stubs for it)

__all__ = ["ClientConn"]

_scratch = threading.local()  # one read buffer per thread: a read is copied out before anything else runs


def _view() -> memoryview:
    """This thread's read buffer: a read is ``bytes(view[:raw.recv_into(view, size)])``, the bytes read and
    no more.  ``recv`` takes a block of ``size`` bytes and shrinks it, and the 64 kB blocks a load generator's
    connections took that way left the C heap in holes that kept growing it (issue 13: 6 MB of a Locust
    process's growth).  A read is copied out before anything else runs, so one buffer serves every
    connection of the thread."""
    view = getattr(_scratch, "view", None)
    if view is None:
        view = _scratch.view = memoryview(bytearray(_READ))
    return view


class ClientConn(Conn):
    """A client's socket, read by a waiting greenlet while one waits and by the reader greenlet otherwise."""

    __slots__ = ("_buf", "_hub", "_hub_switch", "_io", "_io_on", "_parked", "_reader", "_reader_idle",
                 "_recv_into", "_user", "_user_waiting", "handshake_moved")

    def __init__(self, rt: Owner, sock: gevent.socket.socket, key: Hashable) -> None:
        super().__init__(rt, sock, key)
        self._hub = gevent.get_hub()
        self._io = self._hub.loop.io(self.raw.fileno(), 1)  # readable
        self._io_on = False  # whether ``_io`` is started (kept here: no read of the watcher's ``active`` per wait)
        self._buf = _view()  # this thread's read buffer (the connection is read in its hub's thread only)
        # Bound once (each wait for an answer uses both); ``Any``: mypyc makes no assumption about these callables.
        self._hub_switch: Any = self._hub.switch
        self._recv_into: Any = self.raw.recv_into
        self._parked: greenlet | None = None  # whom readiness wakes
        self._reader: greenlet | None = None  # the reader greenlet
        self._reader_idle = False  # it is suspended, waiting for readiness or for a waiting greenlet to finish
        self._user: greenlet | None = None  # a waiting greenlet that holds the reading
        self._user_waiting = False  # and is suspended, waiting for readiness, its promise or its deadline
        #: Called when input arrived before the session opened, and when the reading ends: who waits for the
        #: handshake looks again (no polling).
        self.handshake_moved: Callable[[], None] | None = None

    # -- writing ----------------------------------------------------------------------------------

    def _park(self, g: greenlet) -> None:
        self._parked = g
        if not self._io_on:
            self._io.start(self._readable)
            self._io_on = True

    def _readable(self) -> None:
        """The io watcher's callback (in the hub): wake whoever is parked on the socket."""
        self._io.stop()
        self._io_on = False
        g, self._parked = self._parked, None
        if g is not None:
            self._switch(g)

    def _switch(self, g: greenlet) -> None:
        try:
            g.switch()
        except BaseException:  # as gevent's Waiter: the hub must survive whatever the greenlet raised
            self._hub.handle_error(g, *sys.exc_info())

    def wake(self, g: greenlet) -> None:
        """A hub callback: resume ``g`` if it is still suspended here (a stale wake-up is ignored; an early
        one only makes the greenlet look again)."""
        if (g is self._user and self._user_waiting) or (g is self._reader and self._reader_idle):
            if self._parked is g:
                self._parked = None
            self._switch(g)

    def settled(self) -> None:
        """Subscribed to the promise the reading greenlet waits for: settled by another greenlet (a timer,
        a close), it wakes the waiting one."""
        g = self._user
        if g is not None and self._user_waiting and g is not getcurrent():
            self._hub.loop.run_callback(self.wake, g)

    def deadline(self, g: greenlet, _now: float) -> None:
        """A core timer (fired by the timer greenlet): the waiting greenlet's deadline passed."""
        self._hub.loop.run_callback(self.wake, g)

    # -- reading in a waiting greenlet ---------------------------------------------------------------

    def can_lend(self) -> bool:
        """Whether a waiting greenlet may read now: the reader greenlet is idle, nobody else reads, and the
        session is open (handshakes, closing and lingering stay with the reader greenlet)."""
        if self.dead or self._user is not None or not self._reader_idle:
            return False
        c = self.core.session_or_none(self.key)
        return c is not None and c.open

    def read_until(self, promise: Promise[Any], deadline: float | None) -> None:
        """Read in the calling greenlet until ``promise`` settles, ``deadline`` passes, or the connection
        stops being readable here (the caller then waits the ordinary way for what is left)."""
        me = getcurrent()
        self._user = me
        if self._parked is self._reader:
            self._parked = None
        rt, core, key = self.rt, self.core, self.key
        io, switch, recv_into = self._io, self._hub_switch, self._recv_into
        view = self._buf
        suspend = True  # the caller has just sent: wait for readiness before the first read
        try:
            while promise._state == 0 and not self.dead:  # 0: pending
                if deadline is not None and _monotonic() >= deadline:
                    return
                if suspend:
                    suspend = False
                    self._parked = me  # ``_park``, inline: once per answer
                    if not self._io_on:
                        io.start(self._readable)
                        self._io_on = True
                    self._user_waiting = True
                    try:
                        switch()
                    finally:
                        self._user_waiting = False
                        if self._parked is me:
                            self._parked = None
                    continue
                try:
                    data = bytes(view[:recv_into(view, _READ)])  # ``_recv``, inline
                except BlockingIOError:
                    suspend = True
                    continue
                except OSError:
                    return  # the reader greenlet meets the error again, and ends the connection
                if not data:
                    return  # the same: end of input stays readable for the reader greenlet
                try:  # noqa: SIM105  (a with-statement costs more on this hot path)
                    core.receive_data(data, _monotonic(), key)
                except RemoteProtocolError:
                    pass  # the core closed the session and queued a CLOSE saying why
                rt.flush()
                c = core.session_or_none(key)
                if c is None or not c.open:
                    if not self.shut and (c is None or c.closed):
                        self.flush()
                    return
                suspend = len(data) < _READ  # a short read took what there was: no recv that finds it empty
        finally:
            self._user = None
            reader = self._reader
            if reader is not None and self._reader_idle:
                if self.dead or self._parked is not None:
                    self._hub.loop.run_callback(self.wake, reader)
                else:
                    self._park(reader)

    # -- the reader greenlet ---------------------------------------------------------------------------

    def _idle(self, me: greenlet) -> None:
        """The reader greenlet waits: for readiness, or until the greenlet reading meanwhile is done."""
        if self._user is None:
            self._park(me)
        self._reader_idle = True
        try:
            self._hub.switch()
        finally:
            self._reader_idle = False
            if self._parked is me:
                self._parked = None

    def read_loop(self) -> None:
        core, key = self.core, self.key
        recv_into = self.raw.recv_into
        view = self._buf
        me = self._reader = getcurrent()
        drained = 0
        authed = False
        try:
            while not self.dead:
                if self._user is not None:
                    self._idle(me)
                    continue
                c = core.session_or_none(key)
                closed = c is None or c.closed
                opened = c is not None and c.open
                authed = authed or opened
                size = _READ if closed or opened else _PREAUTH_READ
                try:
                    # Small reads until the server welcomes us; input after our CLOSE is only discarded.
                    data = bytes(view[:recv_into(view, size)])  # ``_recv``, inline: once per read of events
                except BlockingIOError:
                    self._idle(me)
                    continue
                except OSError:
                    break
                if not data:
                    break
                if closed:
                    drained += len(data)
                    if not self._discarded(drained, authed):
                        break
                    continue
                # What the read queued in answer (acknowledgements) leaves within the runtime's ack delay;
                # during the handshake at once.
                self._deliver(data, at_once=not opened)
                if not opened and self.handshake_moved is not None:
                    self.handshake_moved()
                if len(data) < size and not self.dead:
                    # A short read took what there was: wait for readiness (level-triggered: more input
                    # that came meanwhile wakes us at once) instead of a recv that would find it empty.
                    self._idle(me)
        finally:
            self._reader = None
            self._reading_ended()
            if self.handshake_moved is not None:
                self.handshake_moved()

    def kill(self) -> None:
        if self.dead:
            return
        self._io.stop()  # before the socket closes: its descriptor may be reused at once
        self._io_on = False
        self._parked = None
        super().kill()
        for g in (self._reader, self._user):
            if g is not None and g is not getcurrent():
                self._hub.loop.run_callback(self.wake, g)
