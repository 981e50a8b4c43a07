from __future__ import annotations

from typing import Any

import pytest

from dispatcher import Promise
from dispatcher.sequence import DUPLICATE, IN_ORDER, LATE, STALE, ReceiveWindow


def test_promise_chains_values_and_errors() -> None:
    p: Promise[int] = Promise()
    out: list[Any] = []
    p.and_then(lambda v: v + 1).and_then(lambda v: out.append(("ok", v)))
    p.and_then(lambda v: 1 / 0).catch(lambda e: out.append(("err", type(e).__name__)))
    assert out == []
    p.resolve(1)
    p.resolve(99)  # settled once
    assert out == [("ok", 2), ("err", "ZeroDivisionError")]
    assert p.result() == 1 and p.done()


def test_promise_adopts_returned_promise_and_recovers() -> None:
    inner: Promise[str] = Promise()
    p: Promise[int] = Promise.resolved(3)
    chained = p.and_then(lambda v: inner)
    assert not chained.done()
    inner.resolve("late")
    assert chained.result() == "late"
    failed = Promise.rejected(ValueError("x")).catch(lambda e: f"recovered {e}")
    assert failed.result() == "recovered x"


def test_pending_promise_without_runtime_times_out() -> None:
    with pytest.raises(TimeoutError, match="pending"):
        Promise().result(timeout=0)
    with pytest.raises(KeyError):
        Promise.rejected(KeyError("k")).result()


@pytest.mark.parametrize(
    ("seqs", "verdicts", "gaps"),
    [
        ([1, 2, 3], [IN_ORDER] * 3, [0, 0, 0]),
        ([1, 4, 2, 3], [IN_ORDER, IN_ORDER, LATE, LATE], [0, 2, 2, 2]),
        ([1, 2, 2], [IN_ORDER, IN_ORDER, DUPLICATE], [0, 0, 0]),
        ([1, 3, 3, 2, 2], [IN_ORDER, IN_ORDER, DUPLICATE, LATE, DUPLICATE], [0, 1, 1, 1, 1]),
        ([5000, 1], [IN_ORDER, STALE], [4999, 4999]),
    ],
)
def test_receive_window(seqs: list[int], verdicts: list[int], gaps: list[int]) -> None:
    w = ReceiveWindow(window=1024)
    got, gap = [], []
    for sq in seqs:
        got.append(w.check(sq))
        gap.append(w.gap)
    assert got == verdicts
    assert gap == gaps
    assert len(w.missing) <= 2 * 1024
