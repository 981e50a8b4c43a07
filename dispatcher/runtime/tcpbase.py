"""What both ends of the TCP runtime share: the clock, flushing, the timer greenlet and blocking waits."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import gevent
import gevent.event
from gevent.hub import Waiter

from ..core import Dispatcher
from ..errors import LocalProtocolError
from ..promise import Promise
from ..timers import Timers
from .tcpconn import Conn, _monotonic

__all__ = ["TcpBase"]

#: Timers run per turn of the timer greenlet; with more due, it yields through the event loop's poll.
_TIMERS_PER_TURN = 64
_TIMER_YIELD = 0.0002


class TcpBase:
    """Clock, flushing, timers and waits shared by both ends."""

    #: The share of the CPU one connection's input may take (``tcpconn`` fair reading); None on a client.
    fair_share: float | None = None
    #: Whether ``flush_soon`` writes once per turn of the event loop (a server: what the handlers of every
    #: input read in one turn queued leaves in one ``send`` per connection) or at once (a client).
    coalesce = False

    def __init__(self, core: Dispatcher) -> None:
        self.core = core
        self.closed = False
        self._conns: dict[Hashable, Conn] = {}
        self._hub = gevent.get_hub()
        self._timer_wake = gevent.event.Event()
        self._timer_at: float | None = None
        self._flush_queued = False
        self._timer = gevent.spawn(self._timer_loop)

    def now(self) -> float:
        """The clock: ``time.monotonic`` (every send and read asks for it)."""
        return _monotonic()

    def flush(self) -> None:
        """Write what the core queued, from the calling greenlet (never blocking: what the socket does not
        take at once goes to that connection's writer greenlet), and wake the timer greenlet if the core now
        needs waking earlier."""
        conns = self._conns
        for key in self.core.take_dirty():
            conn = conns.get(key)
            if conn is not None:
                conn.flush()
        self._wake_timer()

    def _wake_timer(self) -> None:
        """Wake the timer greenlet if the core now needs waking before the time it sleeps until."""
        nt = self.core.next_timer()
        if nt is not None and (self._timer_at is None or nt < self._timer_at):
            self._timer_wake.set()

    def flush_soon(self) -> None:
        """What the transport's sends and each read of input call: ``flush`` now, or, with ``coalesce``, once
        at the end of this turn of the event loop (a hub callback, run before the loop polls the sockets
        again), so that the envelopes queued meanwhile for one player leave in one ``send``."""
        if not self.coalesce:
            self.flush()
        elif not self._flush_queued:
            self._flush_queued = True
            self._hub.loop.run_callback(self._flush_queued_now)

    def flush_after_read(self) -> None:
        """What a read of input queued in answer is written as ``flush_soon`` has it (a client defers its
        acknowledgements instead: ``TcpClientRuntime.flush_after_read``)."""
        self.flush_soon()

    def _flush_queued_now(self) -> None:
        self._flush_queued = False
        if not self.closed:
            self.flush()

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
            if self._timer_at is None or deadline.when < self._timer_at:
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
            more = self.core.handle_timer(self.now(), _TIMERS_PER_TURN)
            self.flush()
            if more:  # thousands due at once (a flood's handshake watchdogs): poll the sockets in between
                gevent.sleep(_TIMER_YIELD)

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
