"""The core's timer heap: what fires when, cancelled timers, and firing in bounded batches (a runtime lets
the sockets in between when thousands of watchdogs fall due together)."""

from __future__ import annotations

import pytest

from dispatcher import Dispatcher
from dispatcher.timers import Timers
from harness.game import load_registry


@pytest.mark.parametrize(("due", "cancelled", "limit", "fired", "more"), [
    (10, 0, None, 10, False),  # no limit: everything due
    (10, 0, 4, 4, True),  # a batch, more left
    (10, 0, 10, 10, False),  # exactly the due ones
    (10, 6, 4, 4, False),  # cancelled ones do not count against the batch
    (0, 0, 4, 0, False),  # nothing due
])
def test_fire_runs_at_most_limit_due_timers(due: int, cancelled: int, limit: int | None, fired: int,
                                            more: bool) -> None:
    t = Timers()
    seen: list[int] = []
    entries = [t.schedule(1.0 + i * 0.001, lambda arg, now: seen.append(arg), i) for i in range(due)]
    t.schedule(5.0, lambda arg, now: seen.append(arg), -1)  # not due
    for e in entries[:cancelled]:
        Timers.cancel(e)
    assert t.fire(2.0, limit) is more
    assert seen == list(range(cancelled, due))[:fired]
    while t.fire(2.0, limit):
        pass
    assert seen == list(range(cancelled, due)) and t.next() == 5.0  # in order, all of them, none twice


def test_handle_timer_in_batches_closes_every_handshake_that_timed_out() -> None:
    srv = Dispatcher("server", load_registry(), secret=b"s" * 32, limits={"handshake_timeout": 2.0})
    for i in range(100):
        srv.open_session(0.0, f"c{i}")
    turns = 1
    while srv.handle_timer(2.0, 16):
        turns += 1
    assert turns == 7  # 100 watchdogs, 16 a turn
    assert all(srv.session(f"c{i}").close_code == "handshake_timeout" for i in range(100))
