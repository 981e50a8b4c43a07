"""Snapshot floods: players request 8 kB stat snapshots (BACKGROUND) while the server pushes more.

CRITICAL skill requests are measured meanwhile.

    locust -f scenarios/snapshots.py --headless -u 50 -r 25 -t 20s            # embedded game server
    locust -f scenarios/snapshots.py --host tcp://127.0.0.1:7777 --netharness-secret S   # a running one

Parameters (--param KEY=VALUE): see harness/runner/library.py.
"""

from harness.runner.library import SNAPSHOTS
from harness.runner.users import ScenarioUser


class SnapshotPlayer(ScenarioUser):
    scenario = SNAPSHOTS
