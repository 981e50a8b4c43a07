"""The recorder (harness/runner/recorder.py): samples land in the right second, and nothing piles up unfolded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.histogram import Histogram
from harness.runner.recorder import FOLD_EVERY, SERIES_FIGURES, Recorder


@pytest.mark.parametrize(("now", "second"), [(1000.0, 1000), (1000.999, 1000), (1001.0, 1001), (1234.5, 1234)])
def test_a_sample_is_counted_in_the_second_it_arrived(now: float, second: int) -> None:
    rec = Recorder()
    e = rec.entry("request", "CRITICAL", "Intent.Skills.Use")
    e.record(0.002, 10, now)
    rec.fold()
    assert list(rec.series) == [second] and rec.series[second]["request|CRITICAL"][0] == 1
    assert e.count == 1 and e.bytes == 10 and e.hist.count == 1


def test_a_late_sample_lands_in_its_own_second_and_bytes_add_up() -> None:
    """Samples from greenlets that read the clock before a second ended arrive after the next one began."""
    rec = Recorder()
    e = rec.entry("event", "HIGH", "Event.World.Snapshot")
    for now, nbytes in [(1000.5, 3), (1001.2, 4), (1000.9, 5), (1001.3, 0), (1003.0, 1)]:
        e.record(0.004, nbytes, now)
    assert e.count == 5 and e.bytes == 13
    rec.fold()
    assert {sec: slots["event|HIGH"][0] for sec, slots in rec.series.items()} == {1000: 2, 1001: 2, 1003: 1}
    assert e.hist.count == 5 and e.log.run.n == 0
    e.reset()
    assert e.count == 0 and e.bytes == 0 and e.log.sec == -1


def test_failures_and_samples_stay_bounded_between_snapshots() -> None:
    """A local run never ships its recorder: pending failures used to pile up until the run's end."""
    rec = Recorder()
    e = rec.entry("request", "BACKGROUND", "Intent.Stats.RequestSnapshot")
    for i in range(3 * FOLD_EVERY + 5):
        rec.fail(e, 1000.0 + i / 1000)
        e.record(0.5, 0, 1000.0 + i / 1000)
    assert len(rec._fail_secs) < FOLD_EVERY and e.log.run.n < FOLD_EVERY
    rec.fold()
    assert sum(slot["request|BACKGROUND"][1] for slot in rec.series.values()) == 3 * FOLD_EVERY + 5
    assert sum(slot["request|BACKGROUND"][0] for slot in rec.series.values()) == 3 * FOLD_EVERY + 5


@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 100, FOLD_EVERY - 1, FOLD_EVERY + 7]))
@settings(max_examples=10, deadline=None)
def test_the_run_and_its_seconds_count_as_recording_each_sample(seed: int, n: int) -> None:
    """Each sample is bucketed at once (``Timeline``) for the run's histogram and the per-second ones:
    they hold what ``record_seconds`` of each sample holds, the odd values (NaN, negative, huge) included."""
    rng = np.random.default_rng(seed)
    seconds = rng.lognormal(-7, 2, n)
    seconds[rng.integers(0, n, max(1, n // 50))] = rng.choice([np.nan, -1e-3, 0.0, 2.5e-6, 1e9], max(1, n // 50))
    times = 1000.0 + np.sort(rng.uniform(0.0, 3.0, n))
    rec = Recorder()
    e = rec.entry("request", "HIGH", "Intent.Skills.Use")
    for s, t in zip(seconds.tolist(), times.tolist(), strict=True):
        e.record(s, 0, t)
    rec.fold()
    run, per_second = Histogram(), {sec: Histogram(significant_figures=SERIES_FIGURES) for sec in range(1000, 1004)}
    for s, t in zip(seconds.tolist(), times.tolist(), strict=True):
        run.record_seconds(s)
        per_second[int(t)].record_seconds(s)
    assert np.array_equal(e.hist.counts, run.counts) and e.hist.overflow == run.overflow
    assert set(rec.series) == {sec for sec, h in per_second.items() if h.count}  # no second lost or made up
    for sec, slot in rec.series.items():
        h = slot["request|HIGH"][2]
        h = Histogram.decode(h) if isinstance(h, str) else h
        assert slot["request|HIGH"][0] == per_second[sec].count
        assert np.array_equal(h.counts, per_second[sec].counts)
