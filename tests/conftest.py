from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import dispatcher
from dispatcher import ChannelRegistry, LoopbackHub, SchemaRegistry, VirtualClock
from dispatcher import schema as s

from . import sharedruns, workers
from .sharedruns import MixedRun, SkillsCapture

#: The channel registry example of the seed (000_*.txt), verbatim in Python form.
SEED_REGISTRY: dict[str, Any] = {
    "Stats": {
        "remote": "StatsChannel",
        "qos": "LOW",
        "direction": "bidirectional",
        "intents": ["Intent.Stats.RequestSnapshot"],
        "events": ["Event.Stats.Updated"],
    },
    "Attributes": {
        "remote": "AttributesChannel",
        "qos": "CRITICAL",
        "direction": "bidirectional",
        "intents": ["Intent.Attributes.RequestSnapshot", "Intent.Attributes.SpendPoints"],
        "events": ["Event.Attributes.Updated"],
    },
}

#: The seed's registry plus the channels the game adds (Skills, Cooldowns, EntityInfo).
GAME_REGISTRY: dict[str, Any] = {
    **copy.deepcopy(SEED_REGISTRY),
    "Stats": {**SEED_REGISTRY["Stats"], "qos": "BACKGROUND"},
    "Skills": {
        "remote": "SkillsChannel",
        "qos": "CRITICAL",
        "direction": "bidirectional",
        "intents": ["Intent.Skills.Use"],
        "events": ["Event.Skills.Execution"],
        "reliable": True,
    },
    "Cooldowns": {
        "remote": "CooldownsChannel",
        "qos": "HIGH",
        "direction": "server_to_client",
        "events": ["Event.Cooldowns.Updated"],
    },
    "EntityInfo": {
        "remote": "EntityInfoChannel",
        "qos": "NORMAL",
        "direction": "server_to_client",
        "events": ["Event.EntityInfo.Delta"],
        "coalesce": ["Event.EntityInfo.Delta"],
    },
}

GAME_SCHEMAS = SchemaRegistry({
    "Intent.Skills.Use": s.table(skillId=s.string(min_len=1, max_len=64), target=s.optional(s.integer(min=0))),
    "Intent.Attributes.SpendPoints": s.table(attribute=s.string(choices=["str", "dex", "int"]),
                                             points=s.integer(min=1, max=100)),
    "Intent.Stats.RequestSnapshot": s.table(version=s.integer(min=0)),
    "Event.Attributes.Updated": s.map_of(s.string(), s.integer()),
})


def pytest_configure(config: pytest.Config) -> None:
    workers.import_locust_unpatched(config)  # an xdist worker's, before any test module imports Locust


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under xdist every test holds the shared lock while it runs; one marked ``alone`` holds it alone."""
    workers.unlock(item.config)  # a hold left over by an interrupted test
    workers.shared(item.config)
    try:
        if item.get_closest_marker("alone") is not None:
            with workers.alone(item.config):
                yield
        else:
            yield
    finally:
        workers.unlock(item.config)


@pytest.fixture
def browser() -> str:
    """Chromium for the tests that open a report in a real browser: without it they skip with one line
    naming the install command, unless ``NETHARNESS_REQUIRE_BROWSER=1`` (``.ci/run`` sets it after
    installing Chromium), which makes a missing browser a failure."""
    from reports.browser import BrowserError, chromium

    try:
        return chromium()
    except BrowserError:
        message = "no chromium on PATH: apt-get install chromium (or run bash .ci/run)"
        if os.environ.get("NETHARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{message}; NETHARNESS_REQUIRE_BROWSER=1 requires it")
        pytest.skip(message)


@pytest.fixture
def registry() -> ChannelRegistry:
    return ChannelRegistry.from_dict(GAME_REGISTRY)


@pytest.fixture
def seed_registry() -> ChannelRegistry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dispatcher.RegistryWarning)
        return ChannelRegistry.from_dict(SEED_REGISTRY)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(100.0)


@pytest.fixture
def hub(registry: ChannelRegistry, clock: VirtualClock) -> LoopbackHub:
    return LoopbackHub(registry, clock=clock, schemas=GAME_SCHEMAS)


def exact_percentile(values: Any, p: float) -> float:
    """The textbook inverted-CDF percentile: the ceil(p% of n)-th smallest value (rank 1 at least).

    numpy's ``method="inverted_cdf"`` is meant to be this, but computes the rank in floating point
    (0.999 * 2000 = 1998.0000000000002 -> rank 1999); here the rank is exact.
    """
    arr = np.sort(np.asarray(values, dtype=float))
    rank = max(math.ceil(p * len(arr) / 100 - 1e-9), 1)
    return float(arr[rank - 1])


# -- real Locust runs that several tests assert on (tests/sharedruns.py) ---------------------------------------


@pytest.fixture(scope="session")
def mixed_run(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> MixedRun:
    """mixed.py through the project's thresholds: test_gate.py gates it, test_reports.py renders it,
    test_locust_wiring.py reads its console."""
    return sharedruns.mixed_run(pytestconfig, tmp_path_factory)


@pytest.fixture(scope="session")
def skills_capture(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> SkillsCapture:
    """skills.py with --capture and --server-capture: test_locust.py replays it, test_replay_cmd.py exports it."""
    return sharedruns.skills_capture(pytestconfig, tmp_path_factory)
