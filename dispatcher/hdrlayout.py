"""HdrHistogram's bucket layout: which bucket (index in a histogram's counts) holds a value, and each bucket's
range of values, for a (highest trackable value, significant figures) pair."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from .hdrformat import HistogramError

__all__ = ["Layout", "index_of", "layout"]


class Layout:
    """HdrHistogram's index math for one (highest, figures) pair, vectorised."""

    def __init__(self, highest: int, figures: int) -> None:
        if not 1 <= figures <= 5:
            raise HistogramError(f"significant figures must be 1..5, got {figures}")
        if highest < 2:
            raise HistogramError(f"highest trackable value must be >= 2, got {highest}")
        self.highest = highest
        self.figures = figures
        mag = math.ceil(math.log2(2 * 10**figures))
        self.half_mag = max(mag, 1) - 1
        self.sub_count = 1 << (self.half_mag + 1)
        self.half_count = self.sub_count // 2
        self.mask = self.sub_count - 1
        smallest_untrackable, buckets = self.sub_count, 1
        while smallest_untrackable <= highest:
            smallest_untrackable <<= 1
            buckets += 1
        self.counts_len = (buckets + 1) * self.half_count
        idx = np.arange(self.counts_len, dtype=np.int64)
        bucket = (idx >> self.half_mag) - 1
        sub = (idx & (self.half_count - 1)) + self.half_count
        low = bucket < 0
        sub = np.where(low, sub - self.half_count, sub)
        bucket = np.where(low, 0, bucket)
        self.lowest_at = sub << bucket  # lowest value of each index
        self.highest_at = self.lowest_at + (np.int64(1) << bucket) - 1  # highest equivalent value
        self.mid_at = (self.lowest_at + self.highest_at) / 2.0

    def index(self, values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        v = values | self.mask
        # bit_length of v, exact for v < 2**53 (values are clamped to ``highest``).
        pow2ceiling = np.frexp(v.astype(np.float64))[1].astype(np.int64)
        bucket = pow2ceiling - (self.half_mag + 1)
        sub = values >> bucket
        return ((bucket + 1) << self.half_mag) + (sub - self.half_count)


@lru_cache(maxsize=16)
def layout(highest: int, figures: int) -> Layout:
    return Layout(highest, figures)


def index_of(lay: Layout, value: int) -> int:
    """HdrHistogram's index of one value in 0..highest (as ``Layout.index``, for a Python int)."""
    bucket = (value | lay.mask).bit_length() - (lay.half_mag + 1)
    return ((bucket + 1) << lay.half_mag) + (value >> bucket) - lay.half_count
