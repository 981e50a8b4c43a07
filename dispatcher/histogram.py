"""Latency histograms in microseconds, HdrHistogram-compatible.

The bucket layout is HdrHistogram's (lowest 1, highest ``highest``, ``significant_figures`` digits of
precision: a recorded value is off by at most 1 part in 10**figures), and ``encode()``/``decode()`` speak
its V2 compressed base64 format, so any HdrHistogram tool (Java, C, Go, ``hdrhistogram`` on PyPI) can read
what we write and the other way round.  Histograms merge by adding counts: that is how workers' and
processes' results combine.

Recording is cheap: ``record_seconds()`` appends to a list, so the hot path pays one call and a list
append.  Every ``_STAGE_EVERY`` values the list is copied into a float buffer taken with the counts (at the
first value), and the buffer is folded into the counts with numpy when full (or when a figure is read).  Two
stages because a value waiting in a list costs 32 bytes (a float object and its slot) and one in the buffer
8; a fold's fixed cost (a dozen numpy calls) is paid once per ``_FOLD_EVERY`` values, a copy's (one call)
once per 128.

Memory is what a load generator has hundreds of histograms of (a transport's stats keep one per name and
tier, and one per tier for queue sojourn): the counts hold only the buckets up to the largest value seen
(a few tens of kB for latencies of milliseconds; all of the layout, 188 kB, only past about half an hour),
growing when a larger value comes, and values waiting to be folded take at most 12 kB.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .hdrformat import HistogramError, pack, unpack
from .hdrlayout import Layout, index_of, layout
from .tally import Tally

__all__ = ["DEFAULT_HIGHEST", "Histogram", "HistogramError", "merged", "micros"]

DEFAULT_HIGHEST = 3_600_000_000  # one hour, in microseconds
#: Values a list holds before the copy into the buffer (4 kB), and the buffer's size (8 kB): a fold's batch.
_STAGE_EVERY = 128
_FOLD_EVERY = 1024
#: The counts first taken cover the values below this (microseconds: 131 ms, 72 kB of counts at 3 figures),
#: so that a latency's tail seldom grows them; past it they grow a range (a power of two of values) at a
#: time, with one spare.
_FIRST_US = 1 << 17
#: Below this many values a fold adds them one by one (``np.add.at``: no temporary), above it by
#: ``np.bincount`` (whose cost and 188 kB temporary are the layout's length however few values there are).
_BINCOUNT_FROM = 16384


def _floats(values: list[float]) -> npt.NDArray[np.float64]:
    """A list of floats as a read-only array: a ``Struct`` packs each in C (about 40 instructions, numpy's
    per-item conversion about 240); its own, since ``struct.pack`` caches every format it sees."""
    return np.frombuffer(struct.Struct(f"{len(values)}d").pack(*values), dtype=np.float64)


def micros(seconds: list[float]) -> npt.NDArray[np.float64]:
    """Durations in seconds as whole microseconds (rounded half to even), in a float array: what every
    recording path buckets, and what ``record_many`` takes."""
    values = _floats(seconds) * 1e6
    return np.rint(values, out=values)


class Histogram:
    """A mergeable latency histogram of integer microseconds."""

    __slots__ = ("_buffer", "_buffered", "_counts", "_layout", "_overflow", "_pending")

    def __init__(self, highest: int = DEFAULT_HIGHEST, significant_figures: int = 3) -> None:
        self._layout = layout(int(highest), int(significant_figures))
        self._counts: npt.NDArray[np.int64] | None = None  # the first buckets' counts, from the first value
        self._pending: list[float] = []  # seconds, not yet in the buffer
        self._buffer: npt.NDArray[np.float64] | None = None  # microseconds, not yet folded into the counts
        self._buffered = 0
        self._overflow = 0

    # -- recording -------------------------------------------------------------------------------

    def record(self, value_us: int) -> None:
        """Record one value in microseconds (negative values count as 0)."""
        self.record_seconds(value_us * 1e-6)

    def record_seconds(self, seconds: float) -> None:
        """Record a duration in seconds, at microsecond resolution (rounded to the nearest)."""
        p = self._pending
        p.append(seconds)
        if len(p) >= _STAGE_EVERY or self._counts is None:
            self._stage()  # also at the first value: a histogram's memory is taken when it starts, not later

    def record_many_seconds(self, seconds: list[float]) -> None:
        """Record several durations in seconds (as ``record_seconds`` each)."""
        p = self._pending
        p.extend(seconds)
        if len(p) >= _STAGE_EVERY or (p and self._counts is None):
            self._stage()  # at the first values too, as ``record_seconds``

    def reserve(self) -> None:
        """Take the histogram's memory now, as its first value would: for a histogram that is sure to be
        used but whose first value may come minutes into a run (a tier's queue sojourn), so that a
        process's memory is taken when it starts, not later."""
        if self._counts is None:
            self._grow(0)
        if self._buffer is None:
            self._buffer = np.empty(_FOLD_EVERY, dtype=np.float64)

    def record_many(self, values_us: Iterable[int] | npt.NDArray[Any]) -> None:
        """Record whole microseconds (ints, or a float array such as ``micros`` makes)."""
        self._fold()
        values = np.array(values_us, dtype=np.float64)  # a copy: ``_add_floats`` overwrites it
        if values.size:
            self._add_floats(values)

    def tally(self) -> Tally:
        """A ``Tally`` of this histogram's layout: a hot path's recorder, whose counts ``record_tally`` takes."""
        return Tally(self._layout.half_mag, self._layout.highest, self._layout.counts_len)

    def record_tally(self, t: Tally) -> None:
        """What ``t`` counted (as ``record_seconds`` of each value), and ``t`` emptied."""
        if t.n:
            lay = self._layout
            if (t.half_mag, t.highest) != (lay.half_mag, lay.highest):
                raise HistogramError(f"a tally of another layout (highest {t.highest}) into highest {lay.highest}")
            lo, hi = t.lo, t.hi + 1
            counts = self._grow(hi)
            counts[lo:hi] += np.frombuffer(memoryview(t.counts), dtype=np.uint8)[lo:hi]
            if t.carries:
                np.add.at(counts, np.asarray(t.carries, dtype=np.int64), 256)
            self._overflow += t.overflow
            t.clear()

    def _stage(self) -> None:
        """Move the pending list into the buffer, folding the buffer first if they do not fit."""
        p = self._pending
        self._pending = []
        n = len(p)
        buf = self._buffer
        if buf is None:
            self.reserve()
            buf = self._buffer
            assert buf is not None
        k = self._buffered
        if k + n > _FOLD_EVERY:
            self._fold_buffer()
            k = 0
        if n >= _FOLD_EVERY:  # a large batch: folded straight from the list
            self._add_floats(micros(p))
        elif n:
            buf[k : k + n] = _floats(p)
            self._buffered = k + n

    def _fold_buffer(self) -> None:
        k = self._buffered
        if k:
            assert self._buffer is not None
            self._buffered = 0
            values = self._buffer[:k]
            values *= 1e6
            np.rint(values, out=values)
            self._add_floats(values)

    def _fold(self) -> None:
        if self._pending:
            self._stage()
        self._fold_buffer()

    def _add_floats(self, values: npt.NDArray[np.float64]) -> None:
        """Count whole microseconds held as floats (exact below 2**53; negative ones and NaN count as 0,
        values above ``highest`` as ``highest`` and in ``overflow``).  ``values`` is overwritten."""
        lay = self._layout
        np.fmax(values, 0.0, out=values)  # fmax, not maximum: NaN becomes 0
        top = float(values.max())
        if top > lay.highest:
            over = values > lay.highest
            self._overflow += int(np.count_nonzero(over))
            values[over] = lay.highest
            top = lay.highest
        counts = self._grow(index_of(lay, int(top)) + 1)
        v = values.astype(np.int64)
        # HdrHistogram's index (as Layout.index): the bucket is the bit length of v | mask, less the
        # sub-bucket bits; frexp of a whole number below 2**53 is its bit length, and v | mask's is the larger
        # of v's and mask's.
        low = lay.half_mag + 1
        idx = np.frexp(values)[1].astype(np.int64)
        np.maximum(idx, low, out=idx)
        idx -= low
        sub = v >> idx
        idx += 1
        idx <<= lay.half_mag
        idx += sub
        idx -= lay.half_count
        if idx.size < _BINCOUNT_FROM:
            np.add.at(counts, idx, 1)
        else:
            counts += np.bincount(idx, minlength=counts.size)

    def _grow(self, need: int) -> npt.NDArray[np.int64]:
        """The counts, holding at least the first ``need`` buckets (taken, or grown by whole ranges)."""
        c = self._counts
        if c is not None and c.size >= need:
            return c
        lay = self._layout
        need = max(need, index_of(lay, min(_FIRST_US, lay.highest)))
        size = min((-(-need // lay.half_count) + 1) * lay.half_count, lay.counts_len)
        grown = np.zeros(size, dtype=np.int64)
        if c is not None:
            grown[: c.size] = c
        self._counts = grown
        return grown

    def _filled(self) -> npt.NDArray[np.int64]:
        """The counts held (the first buckets; the rest are 0), after folding what is pending."""
        self._fold()
        return self._counts if self._counts is not None else np.zeros(0, dtype=np.int64)

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """Every bucket's count, the layout's full length (a copy: change it and nothing changes here)."""
        c = self._filled()
        full = np.zeros(self._layout.counts_len, dtype=np.int64)
        full[: c.size] = c
        return full

    # -- reading ---------------------------------------------------------------------------------

    def buckets(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The non-empty buckets: (lowest value of each in microseconds, its count)."""
        nz = self._nonzero()
        return self._layout.lowest_at[nz], self._filled()[nz]

    @property
    def overflow(self) -> int:
        """Values above ``highest`` (recorded as ``highest``)."""
        self._fold()
        return self._overflow

    @property
    def significant_figures(self) -> int:
        return self._layout.figures

    @property
    def highest(self) -> int:
        return self._layout.highest

    @property
    def count(self) -> int:
        return len(self._pending) + self._buffered + (int(self._counts.sum()) if self._counts is not None else 0)

    def __len__(self) -> int:
        return self.count

    def _nonzero(self) -> npt.NDArray[np.intp]:
        return np.flatnonzero(self._filled())

    @property
    def min(self) -> int:
        nz = self._nonzero()
        return int(self._layout.lowest_at[nz[0]]) if nz.size else 0

    @property
    def max(self) -> int:
        nz = self._nonzero()
        return int(self._layout.highest_at[nz[-1]]) if nz.size else 0

    @property
    def mean(self) -> float:
        c = self._filled()
        total = int(c.sum())
        return float((c * self._layout.mid_at[: c.size]).sum() / total) if total else 0.0

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0..100), as HdrHistogram (Java) defines it: the highest value
        equivalent to the bucket holding the ``ceil(p% of count)``-th smallest value (numpy's
        ``inverted_cdf``, within the histogram's precision).  0 for an empty histogram."""
        return self.percentiles([p])[0]

    def percentiles(self, ps: Sequence[float]) -> list[int]:
        c = self._filled()
        total = int(c.sum())
        if not total:
            return [0 for _ in ps]
        cum = np.cumsum(c)
        out = []
        for p in ps:
            if not 0 <= p <= 100:
                raise ValueError(f"a percentile is 0..100, got {p}")
            target = max(math.ceil(p * total / 100 - 1e-9), 1)
            i = int(np.searchsorted(cum, target))
            out.append(int(self._layout.highest_at[i] if p else self._layout.lowest_at[i]))
        return out

    def summary(self) -> dict[str, float | int]:
        """count, min, mean, p50, p90, p99, p99.9, p99.99, max (microseconds)."""
        p50, p90, p99, p999, p9999 = self.percentiles([50, 90, 99, 99.9, 99.99])
        return {"count": self.count, "min": self.min, "mean": round(self.mean, 1), "p50": p50, "p90": p90,
                "p99": p99, "p99.9": p999, "p99.99": p9999, "max": self.max}

    # -- combining -------------------------------------------------------------------------------

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts into this one (same layout); returns self."""
        if (other._layout.highest, other._layout.figures) != (self._layout.highest, self._layout.figures):
            raise HistogramError(
                f"cannot merge histograms of different layouts: highest {other.highest} / "
                f"{other.significant_figures} figures into highest {self.highest} / {self.significant_figures}"
            )
        theirs = other._filled()
        if theirs.size:
            self._fold()
            self._grow(theirs.size)[: theirs.size] += theirs
        self._overflow += other.overflow
        return self

    @classmethod
    def from_counts(cls, counts: npt.NDArray[np.int64], highest: int = DEFAULT_HIGHEST,
                    significant_figures: int = 3) -> Histogram:
        """A histogram holding ``counts`` (e.g. the difference of two snapshots of one histogram)."""
        h = cls(highest, significant_figures)
        if counts.shape != (h._layout.counts_len,):
            raise HistogramError(f"counts of length {counts.shape} do not fit this layout ({h._layout.counts_len})")
        h._counts = _trimmed(counts.astype(np.int64, copy=True), h._layout)
        return h

    def copy(self) -> Histogram:
        h = Histogram(self.highest, self.significant_figures)
        return h.merge(self)

    def reset(self) -> None:
        """Empty it, keeping the memory it took (zeroed in place)."""
        self._pending = []
        self._buffered = 0
        if self._counts is not None:
            self._counts[:] = 0
        self._overflow = 0

    # -- the HdrHistogram V2 compressed format ---------------------------------------------------

    def encode(self) -> str:
        """Base64 HdrHistogram V2 compressed encoding (what ``HdrHistogram.encode()`` produces)."""
        return pack(self._filled(), self._layout.highest, self._layout.figures)

    @classmethod
    def decode(cls, encoded: str | bytes) -> Histogram:
        """A histogram from ``encode()`` output (or any HdrHistogram V2 compressed base64 with lowest 1)."""
        highest, figures, values = unpack(encoded)
        h = cls(highest, figures)
        counts = np.zeros(h._layout.counts_len, dtype=np.int64)
        i = 0
        for v in values:
            if v < 0:
                i += -v
            else:
                if i >= counts.size:
                    raise HistogramError("histogram counts run past its layout")
                counts[i] = v
                i += 1
        h._counts = _trimmed(counts, h._layout)
        return h

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the summary plus the encoded histogram and its precision."""
        return {**self.summary(), "figures": self.significant_figures, "hdr": self.encode()}

    def __repr__(self) -> str:
        s = self.summary()
        return f"<Histogram n={s['count']} p50={s['p50']}us p99={s['p99']}us max={s['max']}us>"


def _trimmed(counts: npt.NDArray[np.int64], lay: Layout) -> npt.NDArray[np.int64] | None:
    """``counts`` cut after its last non-empty range (None if all are empty): what a histogram holds."""
    nz = np.flatnonzero(counts)
    if not nz.size:
        return None
    size = min((int(nz[-1]) // lay.half_count + 2) * lay.half_count, lay.counts_len)
    return counts[:size].copy() if size < counts.size else counts


def merged(histograms: Iterable[Histogram]) -> Histogram:
    """One histogram holding all of ``histograms`` (an empty default one if there are none)."""
    out: Histogram | None = None
    for h in histograms:
        out = h.copy() if out is None else out.merge(h)
    return out if out is not None else Histogram()


