"""Spammy deltas: attribute spending (CRITICAL intents) from every player.

Entity-info deltas (NORMAL, coalesced per entity) are pushed by the server.

    locust -f scenarios/deltas.py --headless -u 50 -r 25 -t 20s            # embedded game server
    locust -f scenarios/deltas.py --host tcp://127.0.0.1:7777 --netharness-secret S   # a running one

Parameters (--param KEY=VALUE): see harness/runner/library.py.
"""

from harness.runner.library import DELTAS
from harness.runner.users import ScenarioUser


class DeltaPlayer(ScenarioUser):
    scenario = DELTAS
