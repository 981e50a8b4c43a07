"""Skill rotations: Intent.Skills.Use (CRITICAL, reliable) as intents and as measured requests.

The server broadcasts Event.Skills.Execution to each caster's zone.

    locust -f scenarios/skills.py --headless -u 50 -r 25 -t 20s            # embedded game server
    locust -f scenarios/skills.py --host tcp://127.0.0.1:7777 --netharness-secret S   # a running one

Parameters (--param KEY=VALUE): see harness/runner/library.py.
"""

from harness.runner.library import SKILLS_SCENARIO
from harness.runner.users import ScenarioUser


class SkillPlayer(ScenarioUser):
    scenario = SKILLS_SCENARIO
