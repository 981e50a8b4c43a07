"""Replay a capture with its original timing: the roadmap's "replay capture and reinjection".

    locust -f scenarios/skills.py --headless -u 5 -r 5 -t 20s --capture skills.capture
    locust -f scenarios/replay.py --headless -u 5 -r 5 -t 25s --replay-file skills.capture [--time-scale 2]

Each user becomes one captured player (same player id) and sends that player's intents and requests when
the capture did (scaled); use as many users as the capture has players.
"""

from harness.runner.users import ReplayUser


class ReplayPlayer(ReplayUser):
    pass
