"""The scenarios of the project's locustfiles, built from shared actions.

Each scenario lists its parameters (override with ``--param KEY=VALUE``) and the game config its embedded
server starts with.  Rates are per player per second.
"""

from __future__ import annotations

import math
import random
from typing import Any

from harness.game.schemas import ATTRIBUTES, SKILLS
from harness.runner.scenario import Action, Params, Phase, Scenario

__all__ = ["CRITICAL", "DELTAS", "MIXED", "PARAM_HELP", "SKILLS_SCENARIO", "SNAPSHOTS"]


def skill_use(rng: random.Random, params: Params, n: int) -> dict[str, Any]:
    """A rotation through the skills, on a random target."""
    return {"skillId": SKILLS[n % len(SKILLS)], "target": rng.randrange(1000)}


def spend(rng: random.Random, params: Params, n: int) -> dict[str, Any]:
    return {"attribute": ATTRIBUTES[n % len(ATTRIBUTES)], "points": 1}


def snapshot_request(rng: random.Random, params: Params, n: int) -> dict[str, Any]:
    return {"version": n}


def use_skills(rate: str = "skill_rate") -> Action:
    return Action("Intent.Skills.Use", rate, "intent", skill_use)


def measure_skills(rate: str = "skill_request_rate") -> Action:
    return Action("Intent.Skills.Use", rate, "request", skill_use)


#: What each parameter means, shown by ``locust -f scenarios/X.py --list-params``.
PARAM_HELP = {
    "skill_rate": "Intent.Skills.Use intents (CRITICAL, reliable) per player per second",
    "skill_request_rate": "Intent.Skills.Use requests (CRITICAL, measured round trip) per player per second",
    "snapshot_request_rate": "Intent.Stats.RequestSnapshot requests (BACKGROUND) per player per second",
    "snapshot_bytes": "size in bytes of each stats snapshot the server sends",
    "snapshot_push_rate": "unrequested snapshots the server pushes to each player per second",
    "spend_rate": "Intent.Attributes.SpendPoints intents per player per second",
    "attributes_request_rate": "Intent.Attributes.RequestSnapshot requests per player per second",
    "entity_rate": "Event.EntityInfo.Delta events (NORMAL, coalesced) the server pushes per second",
    "calm_s": "seconds of the calm phase (CRITICAL traffic only)",
    "flood_s": "seconds of the flood phase (CRITICAL traffic under floods)",
    "scheduler_mode": "the server's outbound scheduler: priority (QoS tiers) or fifo (the pre-migration queue)",
}


def server_config(**overrides: Any) -> Any:
    def make(params: Params) -> dict[str, Any]:
        cfg: dict[str, Any] = {"cooldown": 0.0, "zones": 8, "snapshot_bytes": params.get("snapshot_bytes", 2048)}
        for k, v in overrides.items():
            cfg[k] = v(params) if callable(v) else params[v] if isinstance(v, str) and v in params else v
        return cfg

    return make


SKILLS_SCENARIO = Scenario(
    "skills",
    (Phase("rotation", math.inf, (use_skills(), measure_skills())),),
    params={"skill_rate": 4.0, "skill_request_rate": 1.0},
    server=server_config(),
    param_help=PARAM_HELP,
)

SNAPSHOTS = Scenario(
    "snapshots",
    (Phase("flood", math.inf, (
        Action("Intent.Stats.RequestSnapshot", "snapshot_request_rate", "request", snapshot_request, timeout=10.0),
        measure_skills(),
    )),),
    params={"snapshot_request_rate": 2.0, "skill_request_rate": 1.0, "snapshot_bytes": 8192,
            "snapshot_push_rate": 5.0},
    server=server_config(snapshot_rate="snapshot_push_rate"),
    param_help=PARAM_HELP,
)

DELTAS = Scenario(
    "deltas",
    (Phase("spam", math.inf, (
        Action("Intent.Attributes.SpendPoints", "spend_rate", "intent", spend),
        Action("Intent.Attributes.RequestSnapshot", "attributes_request_rate", "request", None),
        measure_skills(),
    )),),
    params={"spend_rate": 20.0, "attributes_request_rate": 1.0, "skill_request_rate": 1.0, "entity_rate": 60.0},
    server=server_config(entity_rate="entity_rate"),
    param_help=PARAM_HELP,
)

CRITICAL = Scenario(
    "critical",
    (
        Phase("calm", "calm_s", (use_skills(), measure_skills())),
        Phase("flood", "flood_s", (
            use_skills(), measure_skills(),
            Action("Intent.Stats.RequestSnapshot", "snapshot_request_rate", "request", snapshot_request,
                   timeout=10.0),
        )),
    ),
    params={"calm_s": 5.0, "flood_s": 10.0, "skill_rate": 4.0, "skill_request_rate": 4.0,
            "snapshot_request_rate": 10.0, "snapshot_bytes": 8192},
    server=server_config(),
    param_help=PARAM_HELP,
)

MIXED = Scenario(
    "mixed",
    (
        Phase("calm", "calm_s", (use_skills(), measure_skills())),
        Phase("flood", "flood_s", (
            use_skills(), measure_skills(),
            Action("Intent.Stats.RequestSnapshot", "snapshot_request_rate", "request", snapshot_request,
                   timeout=10.0),
            Action("Intent.Attributes.SpendPoints", "spend_rate", "intent", spend),
        )),
    ),
    params={"calm_s": 5.0, "flood_s": 10.0, "skill_rate": 4.0, "skill_request_rate": 4.0,
            "snapshot_request_rate": 10.0, "snapshot_bytes": 8192, "spend_rate": 10.0, "entity_rate": 30.0,
            "scheduler_mode": "priority"},
    server=server_config(entity_rate="entity_rate", scheduler=lambda p: {"mode": p["scheduler_mode"]}),
    param_help=PARAM_HELP,
)
