"""The recorder (harness/runner/recorder.py): samples land in the right second, and nothing piles up unfolded."""

from __future__ import annotations

import pytest

from harness.runner.recorder import FOLD_EVERY, Recorder


@pytest.mark.parametrize(("now", "second"), [(1000.0, 1000), (1000.999, 1000), (1001.0, 1001), (1234.5, 1234)])
def test_a_sample_is_counted_in_the_second_it_arrived(now: float, second: int) -> None:
    rec = Recorder()
    e = rec.entry("request", "CRITICAL", "Intent.Skills.Use")
    e.record(0.002, 10, now)
    rec.fold()
    assert list(rec.series) == [second] and rec.series[second]["request|CRITICAL"][0] == 1
    assert e.count == 1 and e.bytes == 10 and e.hist.count == 1


def test_failures_and_samples_stay_bounded_between_snapshots() -> None:
    """A local run never ships its recorder: pending failures used to pile up until the run's end."""
    rec = Recorder()
    e = rec.entry("request", "BACKGROUND", "Intent.Stats.RequestSnapshot")
    for i in range(3 * FOLD_EVERY + 5):
        rec.fail(e, 1000.0 + i / 1000)
        e.record(0.5, 0, 1000.0 + i / 1000)
    assert len(rec._fail_secs) < FOLD_EVERY and len(e._lat) < FOLD_EVERY
    rec.fold()
    assert sum(slot["request|BACKGROUND"][1] for slot in rec.series.values()) == 3 * FOLD_EVERY + 5
    assert sum(slot["request|BACKGROUND"][0] for slot in rec.series.values()) == 3 * FOLD_EVERY + 5
