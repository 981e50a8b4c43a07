"""``harness.runner.locust_patches.bucket_response_time``: Locust's response-time buckets to 2 significant
digits below 100 ms, computed without a string round trip where that is exact: the same value as
``float(f"{ms:.2g}")`` for every input, ties and their neighbours included."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.runner.locust_patches import bucket_response_time


def _reference(ms: float) -> float:
    return float(f"{ms:.2g}")


@given(st.floats(min_value=1e-9, max_value=99.999, allow_nan=False, allow_infinity=False))
def test_same_bucket_as_two_significant_digits(ms: float) -> None:
    assert bucket_response_time(ms) == _reference(ms)


def test_ties_and_their_neighbours() -> None:
    """Every multiple of 0.05 ms below 100 (the ties of both scales) and a few more, each with the floats on
    either side: one test, not 2,000 (their setup cost more than the checks)."""
    for base in [n / 20 for n in range(1, 2000)] + [0.105, 1.05, 1.15, 9.95, 10.5, 99.5, 0.0995]:
        for ms in (math.nextafter(base, 0.0), base, math.nextafter(base, 200.0)):
            if 0 < ms < 100:
                assert bucket_response_time(ms) == _reference(ms), ms


@pytest.mark.parametrize(("ms", "bucket"), [(0, 0), (-1.0, 0), (0.873, 0.87), (4.56, 4.6), (45.6, 46.0),
                                            (99.6, 100), (123.4, 120), (1234, 1200)])
def test_examples(ms: float, bucket: float) -> None:
    assert bucket_response_time(ms) == bucket
