"""``Stats`` is compiled with the core (mypyc, ``allow_interpreted_subclasses``) and stays subclassable: an
interpreted subclass's overrides are what the compiled scheduler and core call."""

from __future__ import annotations

import pytest

from dispatcher.qos import Scheduler
from dispatcher.qosconfig import SchedulerConfig
from dispatcher.stats import NullStats, Stats


class _Recording(Stats):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []

    def dropped(self, tier: int, name: str | None, reason: str) -> None:
        self.calls.append(("dropped", (tier, name, reason)))
        super().dropped(tier, name, reason)


@pytest.mark.parametrize(("pushes", "drops"), [(2, 0), (3, 1), (5, 3)])
def test_the_scheduler_calls_an_interpreted_subclass_override(pushes: int, drops: int) -> None:
    stats = _Recording()
    sched = Scheduler(SchedulerConfig.from_options({"budget": None, "queue_limits": {"BACKGROUND": 2}}), stats)
    for i in range(pushes):
        sched.push(b"x%d" % i, 3, 0.0, "Event.X.Y")
    assert [c for c in stats.calls if c[0] == "dropped"] == [("dropped", (3, "Event.X.Y", "queue_full"))] * drops
    assert stats.tiers[3].drops.get("queue_full", 0) == drops  # and the base class still counted them


@pytest.mark.parametrize(("cls", "kept"), [(Stats, 3), (NullStats, 0)])
def test_count_keeps_what_it_is_told(cls: type[Stats], kept: int) -> None:
    s = cls()
    s.count("bytes_in", 2)
    s.count("bytes_in")
    assert s.peer.get("bytes_in", 0) == kept
    assert s.enabled is (cls is Stats)
