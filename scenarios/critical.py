"""CRITICAL intents during floods: a calm phase, then snapshot floods while skill use goes on.

    locust -f scenarios/critical.py --headless -u 50 -r 25 -t 20s            # embedded game server
    locust -f scenarios/critical.py --host tcp://127.0.0.1:7777 --netharness-secret S   # a running one

Parameters (--param KEY=VALUE): see harness/runner/library.py.
"""

from harness.runner.library import CRITICAL
from harness.runner.users import ScenarioUser


class CriticalPlayer(ScenarioUser):
    scenario = CRITICAL
