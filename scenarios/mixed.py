"""All together, the QoS proof: CRITICAL skill use, calm and then under floods.

A calm phase measures CRITICAL unloaded; then snapshot floods, spammy deltas and entity deltas
saturate the link while skill use goes on. results.json has both phases' CRITICAL latency.

    locust -f scenarios/mixed.py --headless -u 50 -r 25 -t 20s            # embedded game server
    locust -f scenarios/mixed.py --host tcp://127.0.0.1:7777 --netharness-secret S   # a running one

Parameters (--param KEY=VALUE): see harness/runner/library.py.
"""

from harness.runner.library import MIXED
from harness.runner.users import ScenarioUser


class MixedPlayer(ScenarioUser):
    scenario = MIXED
