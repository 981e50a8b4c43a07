from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.histogram import DEFAULT_HIGHEST, Histogram, HistogramError, merged

from .conftest import exact_percentile

values = st.lists(st.integers(0, 10**9), min_size=1, max_size=300)
PCTS = [0, 1, 25, 50, 90, 99, 99.9, 100]



def _within_precision(got: int, want: float) -> bool:
    # 3 significant figures: a bucket spans at most 1/1024 of its values (HdrHistogram's guarantee is 1/1000).
    return abs(got - want) <= max(1.0, want / 1000)


@given(values)
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
@settings(max_examples=50)
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
@settings(max_examples=50)
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
