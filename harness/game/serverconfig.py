"""Scenario-true runs: which game config a scenario needs, what a server says it runs, and whether they match.

A ``netharness serve`` tells every player its game config in the handshake (the WELCOME's ``server_info``,
``{"game": GameConfig.info()}``).  ``server_config(server_info)`` is what ``results.json`` records as
``meta.server_config``; ``check_server_config(needs, server_info)`` is the one-line mismatch (or None) that
stops a scenario run against a server that does not run the scenario's game (``--accept-server-config``
runs it anyway); ``scenario_game_config(name, overrides)`` is the game config ``serve --scenario NAME``
applies: the scenario's own, imported from ``harness.runner.library``, never copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dispatcher.qos import SchedulerConfig
from harness.game.services import ConfigError, GameConfig
from harness.runner.library import CRITICAL, DELTAS, MIXED, SKILLS_SCENARIO, SNAPSHOTS
from harness.runner.scenario import Scenario, ScenarioError, parse_params

__all__ = ["SCENARIOS", "check_server_config", "scenario_game_config", "server_config"]

#: The scenarios whose game config ``serve --scenario NAME`` can apply, by name.
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SKILLS_SCENARIO, SNAPSHOTS, DELTAS, CRITICAL, MIXED)}


def scenario_game_config(name: str, overrides: list[str] | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The game config scenario ``name`` runs with (its params, with ``KEY=VALUE`` overrides applied);
    ``ScenarioError`` naming the known scenarios or the scenario's parameters."""
    sc = SCENARIOS.get(name)
    if sc is None:
        raise ScenarioError(f"unknown scenario {name!r}; scenarios: {', '.join(SCENARIOS)}")
    given = dict(overrides) if isinstance(overrides, Mapping) else parse_params(overrides)
    params = sc.with_params(given)
    return sc.server(params) if sc.server is not None else {}


def server_config(server_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the server says it runs (its WELCOME ``server_info``), as ``results.json``'s
    ``meta.server_config``; ``{}`` from a server that says nothing."""
    game = (server_info or {}).get("game")
    return dict(game) if isinstance(game, Mapping) else {}


def _fmt(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(value.items())) + "}"
    return repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def _scheduler_value(sched: Mapping[str, Any], key: str) -> Any:
    if key in sched:
        return sched[key]
    return getattr(SchedulerConfig(), key, None)  # a key the server leaves at its default


def check_server_config(scenario_needs: Mapping[str, Any] | None, server_info: Mapping[str, Any] | None,
                        scenario: str | None = None) -> str | None:
    """None when the server runs the game config the scenario needs (every key the scenario sets, at the
    server's values, defaults included); otherwise one line naming the keys that differ, both values, and
    the fix."""
    if not scenario_needs:
        return None
    who = f"scenario {scenario}" if scenario else "the scenario"
    fix = (f"start it with `netharness serve --scenario {scenario or 'NAME'}` (and the same --param values), "
           "or pass --accept-server-config")
    try:
        needs = GameConfig.from_dict(scenario_needs, f"{who}'s game config").info()
    except ConfigError as e:
        return str(e)
    needs["scheduler"] = dict(scenario_needs.get("scheduler") or {})
    runs = server_config(server_info)
    if not runs:
        return (f"the server does not say which game config it runs (no server_info), and {who} needs "
                f"{_fmt({k: needs[k] for k in scenario_needs if k in needs})}; {fix}")
    diffs = []
    for key in scenario_needs:
        if key == "scheduler":
            have = runs.get("scheduler") or {}
            for sk, want in sorted(needs["scheduler"].items()):
                got = _scheduler_value(have, sk)
                if got != want:
                    diffs.append(f"scheduler.{sk}={_fmt(got)} (needs {_fmt(want)})")
        elif key in needs and key in runs and runs[key] != needs[key]:
            diffs.append(f"{key}={_fmt(runs[key])} (needs {_fmt(needs[key])})")
    if not diffs:
        return None
    return f"the server's game config does not match {who}: it runs {', '.join(diffs)}; {fix}"
