"""The core's timer heap: what fires when, cancelled timers, and firing in bounded batches (a runtime lets
the sockets in between when thousands of watchdogs fall due together)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_cancelled_timers_do_not_pile_up() -> None:
    """A client answered in microseconds cancels each request's timeout long before its time: the heap keeps a
    bounded number of dead entries, not one per request of the last ``timeout`` seconds (issue 13)."""
    t = Timers()
    fired: list[int] = []
    keep = t.schedule(1000.0, lambda arg, now: fired.append(arg), -1)  # a live timer under the dead ones
    biggest = 0
    for i in range(20_000):
        e = t.schedule(10.0 + i * 0.001, lambda arg, now: fired.append(arg), i)
        Timers.cancel(e)
        biggest = max(biggest, len(t))
    assert biggest <= 200
    assert t.next() == 1000.0 and keep.fn is not None
    t.fire(2000.0)
    assert fired == [-1]


@pytest.mark.parametrize("when_cancelled", ["before", "after_fire", "twice", "after_compact", "after_clear"])
def test_cancel_counts_each_dead_entry_once(when_cancelled: str) -> None:
    """Cancelling a timer that already fired, or twice, or after it was dropped, changes nothing: the
    count of dead entries that drives compaction stays exact (a wrong count would compact too often or never)."""
    t = Timers()
    seen: list[int] = []
    entries = [t.schedule(float(i), lambda arg, now: seen.append(arg), i) for i in range(10)]
    if when_cancelled == "before":
        Timers.cancel(entries[3])
    elif when_cancelled == "after_fire":
        t.fire(3.0)
        Timers.cancel(entries[3])
    elif when_cancelled == "twice":
        Timers.cancel(entries[3])
        Timers.cancel(entries[3])
    elif when_cancelled == "after_compact":
        Timers.cancel(entries[3])
        t.compact()
        Timers.cancel(entries[3])
    else:
        t.clear()
        Timers.cancel(entries[3])
        assert t._dead[0] == 0 and len(t) == 0
        return
    live = sum(1 for e in t._heap if e.fn is not None)
    assert t._dead[0] == len(t) - live
    t.fire(100.0)
    assert t._dead[0] == 0 and len(t) == 0
    assert seen == [i for i in range(10) if i != 3 or when_cancelled == "after_fire"]


def test_a_timer_scheduled_while_firing_survives_compaction() -> None:
    """A fired timer that schedules another (a retransmit) may trigger a compaction mid-``fire``: the heap is
    compacted in place, so the timers still due run, in order, once each."""
    t = Timers()
    seen: list[int] = []

    def churn(arg: int, now: float) -> None:
        seen.append(arg)
        for _ in range(200):
            Timers.cancel(t.schedule(50.0, lambda a, n: seen.append(-1), None))

    for i in range(5):
        t.schedule(1.0 + i, churn, i)
    t.fire(10.0)
    assert seen == [0, 1, 2, 3, 4]
    assert t.next() is None


@given(ops=st.lists(st.tuples(st.sampled_from(["add", "cancel", "fire", "compact"]),
                              st.integers(0, 40), st.integers(0, 1000)), max_size=120))
@settings(max_examples=200, deadline=None)
def test_timers_fire_in_time_then_scheduling_order_like_a_sorted_list(ops: list[tuple[str, int, int]]) -> None:
    """The heap is written out (native comparisons, compiled): whatever the mix of scheduling, cancelling,
    firing and compacting, timers run as a sorted list of the live ones would, each once."""
    t = Timers()
    model: list[tuple[float, int]] = []  # (when, order) of live timers
    entries = []
    seen: list[int] = []
    order = 0
    for op, a, b in ops:
        if op == "add":
            order += 1
            entries.append(t.schedule(a / 4, lambda arg, now: seen.append(arg), order))
            model.append((a / 4, order))
        elif op == "cancel" and entries:
            e = entries[b % len(entries)]
            if e.fn is not None and e.dead is not None:
                model.remove((e.when, e.arg))
            Timers.cancel(e)
        elif op == "fire":
            now = a / 4
            due = sorted(m for m in model if m[0] <= now)
            seen.clear()
            t.fire(now)
            assert seen == [o for _, o in due]
            model = [m for m in model if m[0] > now]
        elif op == "compact":
            t.compact()
    seen.clear()
    t.fire(1e9)
    assert seen == [o for _, o in sorted(model)] and len(t) == 0 and t._dead[0] == 0
