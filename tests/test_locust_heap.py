"""The Locust process's C heap settings (harness/runner/heap.py), on this process's real glibc."""

from __future__ import annotations

import sys

import pytest

from harness.game.memtrace import heap_info, rss_bytes
from harness.runner import heap

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not heap_info(),
                                 reason="glibc's mallopt/mallinfo2 only")


@linux_glibc
def test_trim_returns_the_heaps_free_pages() -> None:
    t = heap.Trimmer(every=5.0)
    t.once()
    blocks = [bytes(4000) + bytes([i % 256]) for i in range(4096)]  # 16 MiB of blocks in the heap, touched
    del blocks[:3072]  # 12 MiB freed below blocks still live: a hole glibc keeps resident
    before = rss_bytes()
    t.once()
    assert before - rss_bytes() >= 8 << 20
    assert t.count == 2 and 0 <= t.last_s <= t.most_s
    del blocks


@pytest.mark.parametrize("every", [0, -1.0])
def test_a_trim_interval_must_be_positive(every: float) -> None:
    with pytest.raises(ValueError, match="trim interval must be > 0 seconds"):
        heap.Trimmer(every=every)
