from __future__ import annotations

import gc
import math
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import example, given, settings
from hypothesis import strategies as st

import dispatcher.histogram as histogram
from dispatcher.hdrlayout import layout as _layout
from dispatcher.histogram import DEFAULT_HIGHEST, Histogram, HistogramError, merged

from .conftest import exact_percentile

values = st.lists(st.integers(0, 10**9), min_size=1, max_size=300)
PCTS = [0, 1, 25, 50, 90, 99, 99.9, 100]



def _within_precision(got: int, want: float) -> bool:
    # 3 significant figures: a bucket spans at most 1/1024 of its values (HdrHistogram's guarantee is 1/1000).
    return abs(got - want) <= max(1.0, want / 1000)


@given(values)
@settings(deadline=None)  # a shared machine: no timed assertions in unit tests
def test_percentiles_match_numpy_within_precision(vs: list[int]) -> None:
    h = Histogram()
    for v in vs:
        h.record(v)
    arr = np.array(vs)
    for p in PCTS:
        want = exact_percentile(arr, p)
        assert _within_precision(h.percentile(p), want), (p, h.percentile(p), want)
    assert h.count == len(vs)
    assert _within_precision(h.min, arr.min()) and _within_precision(h.max, arr.max())


@given(values)
@settings(max_examples=50, deadline=None)
def test_same_answers_as_the_reference_hdrhistogram(vs: list[int]) -> None:
    ours, ref = Histogram(), HdrHistogram(1, DEFAULT_HIGHEST, 3)
    for v in vs:
        ours.record(v)
        ref.record_value(v)
    # The same buckets (the Python port ranks percentiles by rounding, current HdrHistogram and numpy by
    # ceiling, so the percentiles themselves are checked against numpy above).
    ref_counts = np.array([ref.get_count_at_index(i) for i in range(ref.counts_len)])
    assert np.array_equal(ours.counts[: ref.counts_len], ref_counts)
    assert ours.max == ref.get_max_value() and ours.min == ref.get_min_value()
    assert ours.percentile(100) == ref.get_value_at_percentile(100)
    # Each side decodes the other's encoding.
    theirs = HdrHistogram.decode(ours.encode())
    assert theirs.get_total_count() == len(vs)
    assert theirs.get_max_value() == ours.max
    back = Histogram.decode(ref.encode())
    assert np.array_equal(back.counts, ours.counts)


@given(values, values)
@settings(max_examples=50, deadline=None)
def test_merge_is_recording_everything(a: list[int], b: list[int]) -> None:
    ha, hb, hall = Histogram(), Histogram(), Histogram()
    ha.record_many(a)
    hb.record_many(b)
    hall.record_many(a + b)
    m = merged([Histogram.decode(ha.encode()), Histogram.decode(hb.encode())])
    assert np.array_equal(m.counts, hall.counts)
    assert m.percentiles(PCTS) == hall.percentiles(PCTS)


def test_overflow_negative_and_empty() -> None:
    h = Histogram(highest=1_000_000)
    h.record(-5)
    h.record(5_000_000)
    assert h.count == 2 and h.overflow == 1 and h.min == 0
    assert h.max >= 1_000_000
    empty = Histogram()
    assert empty.percentile(99) == 0 and empty.count == 0 and empty.summary()["max"] == 0
    assert Histogram.decode(empty.encode()).count == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("not base64!", "not base64"),
        ("AAAA", "truncated|not an HdrHistogram"),
        ("HIST" * 4, "not an HdrHistogram"),
    ],
)
def test_decode_errors(data: str, message: str) -> None:
    with pytest.raises(HistogramError, match=message):
        Histogram.decode(data)


def test_merge_refuses_other_layouts() -> None:
    with pytest.raises(HistogramError, match="different layouts"):
        Histogram(significant_figures=3).merge(Histogram(significant_figures=2))


def _reference_counts(seconds: np.ndarray, highest: int) -> tuple[np.ndarray, int]:
    """What recording ``seconds`` must count: microseconds rounded to the nearest, NaN and negatives as 0,
    above ``highest`` as ``highest`` (and in the overflow), placed by the layout's own index."""
    us = np.rint(np.nan_to_num(seconds, nan=0.0, posinf=2.0**60, neginf=0.0) * 1e6)
    over = int(np.count_nonzero(us > highest))
    ints = np.clip(us, 0, highest).astype(np.int64)
    lay = _layout(highest, 3)
    return np.bincount(lay.index(ints), minlength=lay.counts_len), over


# One value at a time, and batches around each stage: the list's (128), the buffer's (1024), numpy's
# bincount (16384) and a large batch folded straight from the list.
BATCHES = [[1], [7, 1], [127, 1, 128], [257, 3], [1023, 1, 1024], [2047, 16385], [4095, 1], [1, 9000, 300]]


@pytest.mark.parametrize("batches", BATCHES, ids=[str(b) for b in BATCHES])
@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_every_recording_path_counts_as_the_layout_index(batches: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    highest = 10_000_000  # 10 s: some values overflow
    n = sum(batches) * 2
    seconds = rng.lognormal(-7, 3, n)
    specials = np.array([0.0, -1e-3, -np.inf, np.inf, np.nan, 5e-7, 4.999e-7, 1e9, 2047e-6, 2048e-6, 10.0])
    seconds[rng.integers(0, n, 40)] = rng.choice(specials, 40)
    h = Histogram(highest=highest)
    values, i, k = seconds.tolist(), 0, 0
    while i < n:
        size = batches[k % len(batches)]
        chunk = values[i : i + size]
        if size == 1:
            h.record_seconds(chunk[0])
        else:
            h.record_many_seconds(chunk)
        i += size
        k += 1
        assert h.count == min(i, n)
    want, over = _reference_counts(seconds, highest)
    assert np.array_equal(h.counts, want)
    assert h.overflow == over


def test_values_waiting_to_be_folded_hold_little_memory() -> None:
    """A histogram recording a few values a second holds its values' memory until they are folded: that
    must stay a few kB (it was 128 kB, and a Locust process holds hundreds of histograms)."""
    h = Histogram()
    rng = np.random.default_rng(1)
    values = rng.lognormal(-7, 1, 20_000).tolist()
    h.record_seconds(max(values))
    assert h.max >= max(values) * 1e6 - 1  # read: folded, so the counts cover every value that follows
    rest = values[:]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak = 0
        for v in rest:
            h.record_seconds(v + 1e-9)  # a new float object, as a measured latency is
            peak = max(peak, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert h.count == len(values) + 1
    assert peak < 16_000, f"{peak} bytes held by values waiting to be folded"


def _histogram_allocations(fn: Callable[[], object]) -> int:
    """Bytes that ``histogram.py`` allocated during ``fn()`` and still holds (numpy's arrays included: traced
    where they are asked for).  Not the whole process's figure: under xdist, an earlier test's garbage in
    the same worker can be freed or reused meanwhile, which moved it by kilobytes."""
    mine = [tracemalloc.Filter(True, histogram.__file__)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.take_snapshot().filter_traces(mine)
        fn()
        gc.collect()
        grown = tracemalloc.take_snapshot().filter_traces(mine).compare_to(base, "filename")
    finally:
        tracemalloc.stop()
    return sum(d.size_diff for d in grown)


@pytest.mark.parametrize(("first_us", "most_kb"), [(1, 96), (900, 96), (40_000, 96), (3_600_000_000, 200)])
def test_counts_take_memory_for_the_values_seen(first_us: int, most_kb: int) -> None:
    """A histogram's counts cover the buckets up to its largest value, not all of an hour's: a latency of
    milliseconds costs tens of kB, not 188 (a load generator holds hundreds)."""
    h = Histogram()
    held = _histogram_allocations(lambda: h.record(first_us))
    assert held < most_kb * 1024, f"{held} bytes for one value of {first_us} us"
    assert h.max >= first_us and h.counts.shape == (h._layout.counts_len,)
    h.record(first_us * 3)  # larger values grow the counts, losing nothing
    assert h.count == 2 and h.percentile(0) <= first_us and h.max >= min(first_us * 3, h.highest)


@pytest.mark.parametrize("how", ["reserve", "first value", "first batch"])
def test_memory_is_taken_at_the_start_and_kept_across_resets(how: str) -> None:
    """``reserve()`` (a tier's sojourn, whose first value may come late) takes what a first value would, and
    so does a first batch however small (a transport's latency samples arrive in batches: a histogram that
    waited for 128 of them took its memory minutes into a run); after it, values and resets take nothing
    more."""
    h = Histogram()
    h.record_many_seconds([])
    assert h._counts is None  # nothing recorded, nothing taken
    if how == "reserve":
        h.reserve()
    elif how == "first value":
        h.record(500)
    else:
        h.record_many_seconds([500e-6])

    def rounds() -> None:
        for round_ in range(3):
            for i in range(3000):
                h.record(100 + (i * 37) % 90_000)
            assert h.percentile(100) >= 89_000
            h.reset()
            assert h.count == 0 and h.max == 0, round_

    held = _histogram_allocations(rounds)
    assert held < 4096, f"{held} bytes taken after the start"


# A tally's byte counts carry at 256: folds around that, and values of one bucket past several carries.
TALLY_FOLDS = [[1], [255, 1, 256], [600], [10, 5000, 3]]


@pytest.mark.parametrize("folds", TALLY_FOLDS, ids=[str(f) for f in TALLY_FOLDS])
@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_a_tally_counts_as_recording_each_value(folds: list[int], seed: int) -> None:
    """``Tally.add`` (the hot path's recorder, compiled in the compiled build) and ``record_tally`` count what
    ``record_seconds`` of each value counts: rounding half to even, NaN and negatives as 0, overflow."""
    rng = np.random.default_rng(seed)
    highest = 10_000_000
    n = sum(folds) * 2
    seconds = rng.lognormal(-7, 3, n)
    specials = np.array([0.0, -1e-3, -np.inf, np.inf, np.nan, 5e-7, 1.5e-6, 2.5e-6, 4.999e-7, 1e9, 2047e-6,
                         2048e-6, 10.0])
    seconds[rng.integers(0, n, 40)] = rng.choice(specials, 40)
    seconds[rng.integers(0, n, n // 3)] = 1e-3  # one bucket, many times: its byte carries
    h = Histogram(highest=highest)
    t = h.tally()
    values, i, k = seconds.tolist(), 0, 0
    while i < n:
        for v in values[i : i + folds[k % len(folds)]]:
            t.add(v)
        i += folds[k % len(folds)]
        k += 1
        assert t.n == min(i, n) - h.count
        h.record_tally(t)
        assert t.n == 0 and h.count == min(i, n)
    want, over = _reference_counts(seconds, highest)
    assert np.array_equal(h.counts, want)
    assert h.overflow == over


@given(runs=st.lists(st.tuples(st.one_of(st.floats(-1e12, 1e12),
                                         st.sampled_from([1e-3, 2.5e-6, 1e9, math.inf, -math.inf, math.nan])),
                               st.integers(-1, 700)), max_size=30))
@example(runs=[(1e-3, 256)]).via("a byte's count reaching 256 exactly")
@example(runs=[(1e-3, 1), (1e-3, 255), (1e-3, 512)]).via("carries on a bucket holding counts")
@settings(max_examples=60, deadline=None)
def test_a_tally_counts_runs_as_recording_each_frame(runs: list[tuple[float, int]]) -> None:
    """``Tally.add_run(seconds, k)`` (a tier's sojourns: frames queued at one time, sent together) counts what
    recording the value ``k`` times counts, carries and overflow included; a run of 0 frames (or fewer) counts
    nothing."""
    highest = 10_000_000
    want = Histogram(highest=highest)
    want.record_many_seconds([v for v, k in runs for _ in range(max(k, 0))])
    got = Histogram(highest=highest)
    t = got.tally()
    for v, k in runs:
        t.add_run(v, k)
    assert t.n == want.count
    got.record_tally(t)
    assert np.array_equal(got.counts, want.counts) and got.overflow == want.overflow


def test_a_tally_takes_a_byte_per_bucket_up_to_its_largest_value() -> None:
    h = Histogram()
    t = h.tally()
    for v in (1e-3, 5e-3, 20e-3):
        t.add(v)
    assert len(t.counts) <= 8 * 1024  # latencies up to 20 ms: 7 kB
    h.record_tally(t)
    t.add(3600.0)  # an hour: the whole layout, a byte per bucket
    assert len(t.counts) <= h.counts.size
    h.record_tally(t)
    assert h.count == 4 and h.max >= 3_600_000_000 - 3_600_000
    t.add(1e-3)
    with pytest.raises(HistogramError, match="another layout"):
        Histogram(highest=1000).record_tally(t)
