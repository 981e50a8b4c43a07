"""Scenario-true runs: ``netharness serve --scenario NAME`` runs the scenario's game, tells the players in the
handshake, and a scenario's players against it see the flood they came for (real processes, bounded)."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import dispatcher
from harness.game import load_registry
from harness.game.configdoc import EXAMPLE_PATH, render_config
from harness.game.serverconfig import check_server_config, scenario_game_config, server_config
from harness.game.services import GameConfig
from harness.runner.library import MIXED, SNAPSHOTS

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serve(tmp: Path, *args: str) -> Iterator[tuple[str, tuple[str, int], str, Path]]:
    """A real ``netharness serve`` on 127.0.0.1 (a free port, at most 120 s, stopped by its PID)."""
    secret = secrets.token_hex(16)
    stats = tmp / f"server-stats-{secrets.token_hex(3)}.json"
    proc = subprocess.Popen(["timeout", "120", sys.executable, "-m", "harness", "serve", "--port", "0", "--quiet",
                             "--stats-out", str(stats), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "NETHARNESS_SECRET": secret})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("listening on tcp://"), line
        hostport = line.split("tcp://", 1)[1].split()[0]
        host, port = hostport.rsplit(":", 1)
        yield f"tcp://{hostport}", (host, int(port)), secret, stats
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the `timeout` wrapper passes it on; the server drains and exits
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _server_info(address: tuple[str, int], secret: str) -> dict[str, Any]:
    c = dispatcher.init(peer="client", channel_registry=load_registry(), connect=address, player_id=7,
                        token=dispatcher.make_token(secret, 7), reconnect=False, connect_timeout=10.0)
    try:
        return dict(c.server_info)
    finally:
        c.close()


MIXED_NEEDS = MIXED.server(MIXED.with_params({})) if MIXED.server else {}
PLAIN_INFO = {"game": GameConfig().info()}
MIXED_INFO = {"game": GameConfig.from_dict(MIXED_NEEDS).info()}

# (case, scenario needs, server_info, None or the parts the one line must name)
CHECKS: list[tuple[str, dict[str, Any], dict[str, Any], list[str] | None]] = [
    ("same config", MIXED_NEEDS, MIXED_INFO, None),
    ("plain server", MIXED_NEEDS, PLAIN_INFO, ["entity_rate=0 (needs 30)", "snapshot_bytes=2048 (needs 8192)",
                                               "netharness serve --scenario mixed", "--accept-server-config"]),
    ("scheduler mode", MIXED_NEEDS, {"game": {**MIXED_INFO["game"], "scheduler": {"mode": "fifo"}}},
     ["scheduler.mode='fifo' (needs 'priority')"]),
    ("default scheduler is priority", MIXED_NEEDS, {"game": {**MIXED_INFO["game"], "scheduler": {}}}, None),
    ("no server_info", MIXED_NEEDS, {}, ["does not say which game config it runs", "entity_rate=30"]),
    ("int vs float", {"entity_rate": 30}, MIXED_INFO, None),
    ("a key the scenario leaves alone", {"zones": 8}, {"game": {**PLAIN_INFO["game"], "entity_rate": 99.0}}, None),
    ("no needs", {}, PLAIN_INFO, None),
]


@pytest.mark.parametrize(("needs", "info", "expected"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_check_server_config(needs: dict[str, Any], info: dict[str, Any], expected: list[str] | None) -> None:
    got = check_server_config(needs, info, "mixed")
    if expected is None:
        assert got is None
    else:
        assert got is not None and "\n" not in got
        for part in expected:
            assert part in got, (part, got)


def test_scenario_game_config_is_the_library_one() -> None:
    assert scenario_game_config("mixed") == MIXED_NEEDS
    assert scenario_game_config("snapshots", ["snapshot_push_rate=9"])["snapshot_rate"] == 9.0
    assert SNAPSHOTS.server is not None
    with pytest.raises(ValueError, match="scenarios: skills, snapshots, deltas, critical, mixed"):
        scenario_game_config("nope")


def test_print_config_lists_every_key_and_the_sample_matches() -> None:
    p = subprocess.run([sys.executable, "-m", "harness", "serve", "--print-config"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == render_config() == EXAMPLE_PATH.read_text()  # the shipped sample is the printout
    game = tomllib.loads(p.stdout)["game"]
    for key in GameConfig.__dataclass_fields__:
        assert key in game, key
    assert GameConfig.from_dict(game) is not None  # the sample loads as it is
    help_text = subprocess.run([sys.executable, "-m", "harness", "serve", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60).stdout
    assert "--print-config" in help_text and "game.example.toml" in help_text and "``" not in help_text


def test_the_server_tells_players_what_it_runs(tmp_path: Path) -> None:
    with serve(tmp_path, "--scenario", "mixed") as (_, address, secret, _stats):
        info = _server_info(address, secret)
    runs = server_config(info)
    assert runs["entity_rate"] == 30.0 and runs["snapshot_bytes"] == 8192 and runs["scheduler"] == {"mode": "priority"}
    assert check_server_config(MIXED_NEEDS, info, "mixed") is None
    with serve(tmp_path, "--config", str(EXAMPLE_PATH)) as (_, address, secret, _stats):
        plain = _server_info(address, secret)  # the sample: every key at its default, and it fits the WELCOME
    problem = check_server_config(MIXED_NEEDS, plain, "mixed")
    assert problem is not None and "entity_rate=0 (needs 30)" in problem


def test_mixed_players_against_serve_scenario_mixed_see_the_flood(tmp_path: Path) -> None:
    res = tmp_path / "results.json"
    with serve(tmp_path, "--scenario", "mixed") as (url, _, secret, stats):
        p = subprocess.run([sys.executable, "-m", "locust", "-f", "scenarios/mixed.py", "--host", url,
                            "--netharness-secret", secret, "--headless", "-u", "10", "-r", "10", "-t", "9s",
                            "--only-summary", "--param", "calm_s=1", "--param", "flood_s=8", "--results", str(res)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode in (0, 1), p.stderr[-3000:]  # 1: a threshold may fail under the flood; not a crash
    results = json.loads(res.read_text())
    names = {(e["kind"], e["name"]): e for e in results["entries"]}
    assert names[("event", "Event.EntityInfo.Delta")]["count"] > 100  # the server pushes entity deltas
    server = json.loads(stats.read_text())
    bg = server["tiers"]["BACKGROUND"]
    assert bg["ticks"] > 0 and bg["saturated_ticks"] / bg["ticks"] > 0.5, bg  # BACKGROUND saturated most ticks


def _plugin_checks_the_server() -> bool:
    """The Locust side calls check_server_config (harness/runner/plugin.py, which adds --accept-server-config)."""
    return "check_server_config" in (ROOT / "harness" / "runner" / "plugin.py").read_text()


def test_mixed_against_a_plain_server_stops_with_one_line(tmp_path: Path) -> None:
    if not _plugin_checks_the_server():
        pytest.skip("harness/runner/plugin.py does not call check_server_config yet (no --accept-server-config)")
    res = tmp_path / "results.json"
    with serve(tmp_path) as (url, _, secret, _stats):
        common = ["-f", "scenarios/mixed.py", "--host", url, "--netharness-secret", secret, "--headless", "-u", "2",
                  "-r", "2", "-t", "3s", "--only-summary", "--results", str(res)]
        p = subprocess.run([sys.executable, "-m", "locust", *common], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2, p.stderr[-2000:]
        errors = [line for line in p.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and "entity_rate=0 (needs 30)" in errors[0], p.stderr[-2000:]
        assert "Traceback" not in p.stderr
        p = subprocess.run([sys.executable, "-m", "locust", *common, "--accept-server-config"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 1), p.stderr[-2000:]
    runs = json.loads(res.read_text())["meta"]["server_config"]
    assert runs["entity_rate"] == 0.0 and runs["snapshot_bytes"] == 2048  # what the server ran, not the scenario
