"""The plugin's wiring in real ``locust`` processes (headless, short, bounded): abort_on_fail thresholds, the
phase check, ``--list-params``, and the console (Locust's type column, separate rows for intents and
requests, the calm-vs-flood line, the microsecond table printed last)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.runner.library import MIXED, PARAM_HELP
from harness.runner.plugin import OPTIONS, list_params, options_text
from harness.runner.users import INTENT_SUFFIX, LOCUST_TYPES, locust_name

from .sharedruns import MixedRun

ROOT = Path(__file__).resolve().parents[1]
LOCUST = [sys.executable, "-m", "locust"]


def _run(args: list[str], timeout: float = 90, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOCUST, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def test_an_impossible_abort_on_fail_threshold_stops_the_run_early_with_exit_1(tmp_path: Path) -> None:
    th = tmp_path / "abort.toml"
    th.write_text('[thresholds]\n"latency{qos:CRITICAL,kind:request}" = '
                  '[{threshold = "max < 1us", abort_on_fail = true}]\n')
    res = tmp_path / "results.json"
    p = _run(["-f", "scenarios/skills.py", "--headless", "-u", "4", "-r", "4", "-t", "40s", "--param",
              "skill_request_rate=4", "--thresholds", str(th), "--results", str(res)], timeout=90)
    assert p.returncode == 1, p.stderr[-3000:]
    aborts = [line for line in p.stderr.splitlines() if "aborting the run" in line]
    assert len(aborts) == 1 and "max < 1us can no longer pass" in aborts[0], p.stderr[-3000:]
    results = json.loads(res.read_text())
    assert results["meta"]["duration_s"] < 20  # stopped at the first check after a sample, not after 40 s
    verdicts = results["thresholds"]["verdicts"]
    assert results["thresholds"]["passed"] is False and not verdicts[0]["passed"]


def test_a_phase_the_scenario_lacks_is_one_line_and_exit_2(tmp_path: Path) -> None:
    th = tmp_path / "typo.toml"
    th.write_text('[thresholds]\n"latency{phase:flod}" = ["p(99) < 50ms"]\n')
    p = _run(["-f", "scenarios/mixed.py", "--headless", "-u", "1", "-r", "1", "-t", "3s", "--thresholds", str(th)],
             timeout=60)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("netharness: error:")]
    assert len(errors) == 1 and "phase 'flod' is not a phase of this run; its phases: calm, flood" in errors[0]
    assert "Traceback" not in p.stderr and "embedded game server on" not in p.stderr  # before the server starts


def test_list_params_prints_each_param_with_default_and_help_and_exits_0() -> None:
    p = _run(["-f", "scenarios/mixed.py", "--headless", "--list-params"], timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    for key, default in MIXED.params.items():
        row = next(line for line in lines if line.split()[:1] == [key])
        assert repr(default) in row and PARAM_HELP[key] in row
    assert "--accept-server-config" in p.stdout and "embedded game server on" not in p.stderr


def test_list_params_and_the_options_read_as_plain_text() -> None:
    text = list_params(MIXED) + options_text()
    assert "``" not in text and "`" not in "".join(str(kw.get("help")) for _, kw in OPTIONS)
    assert list_params(None).startswith("this locustfile plays no scenario")
    assert set(MIXED.params) <= set(MIXED.param_help)  # every parameter says what it does


@pytest.mark.parametrize(("kind", "name", "row"), [
    ("intent", "Intent.Skills.Use", "Intent.Skills.Use" + INTENT_SUFFIX),
    ("request", "Intent.Skills.Use", "Intent.Skills.Use"),
    ("event", "Event.Skills.Execution", "Event.Skills.Execution"),
])
def test_locust_row_names(kind: str, name: str, row: str) -> None:
    assert locust_name(kind, name) == row


def test_tier_names_fit_locusts_type_column() -> None:
    assert set(LOCUST_TYPES) == {"CRITICAL", "HIGH", "NORMAL", "BACKGROUND"}
    assert all(len(v) <= 8 for v in LOCUST_TYPES.values()) and len(set(LOCUST_TYPES.values())) == 4


def test_console_of_a_mixed_run(mixed_run: MixedRun) -> None:
    """Locust's rows use the short tier names and keep intents and requests apart; the harness prints the
    calm-vs-flood CRITICAL p99 lines and its microsecond table after Locust's final tables.  (The session's
    ``mixed_run``, tests/sharedruns.py: its stdout and stderr in written order.)"""
    assert mixed_run.returncode in (0, 1), mixed_run.output[-3000:]  # refused snapshots: failures to Locust
    out = mixed_run.output
    locust_rows = out[: out.index("netharness latency (microsecond resolution)")]
    assert "Response time percentiles" in locust_rows  # Locust's final tables came first
    assert "BACKGRND Intent.Stats.RequestSnapshot" in locust_rows
    assert not [line for line in locust_rows.splitlines() if line.startswith("BACKGROUND")]  # type column: 8
    assert "CRIT     Intent.Skills.Use [intent]" in locust_rows and "CRIT     Intent.Skills.Use " in locust_rows
    tail = out[out.index("netharness latency (microsecond resolution)"):]
    assert "CRITICAL request p99: calm " in tail and " -> flood " in tail
    last = [line for line in out.splitlines() if line.strip()][-1]
    assert last.startswith("CRITICAL ") and "p99: calm" in last, out[-2000:]  # nothing of Locust's after it
