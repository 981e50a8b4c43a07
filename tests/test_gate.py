"""Thresholds and the CI gate: expressions, verdicts, exit codes, JUnit, and real Locust runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from dispatcher.histogram import Histogram
from harness.gate.abort import should_abort
from harness.gate.gatecmd import main as gate_main
from harness.gate.thresholds import ThresholdError, evaluate, parse_thresholds

from .sharedruns import MixedRun

ROOT = Path(__file__).resolve().parents[1]


def _hist(values_us: list[int]) -> dict[str, Any]:
    h = Histogram()
    h.record_many(values_us)
    return h.to_dict()


def make_results() -> dict[str, Any]:
    """A results.json with known figures: CRITICAL requests 1..100 ms, one failure in 1000 sends."""
    crit = list(range(1000, 101_000, 100))  # 1000 samples: p(99) = 99.9 ms
    tier = {"sent": 100, "dropped": 0, "ticks": 200, "saturated_ticks": 1, "longest_saturated_run": 1,
            "sojourn_us": _hist([0] * 99 + [16_000])}
    bg = {**tier, "dropped": 25, "saturated_ticks": 150, "longest_saturated_run": 90,
          "sojourn_us": _hist([400_000] * 100)}
    return {
        "format": "netharness-results", "version": 1,
        "meta": {"duration_s": 10.0},
        "entries": [
            {"kind": "request", "qos": "CRITICAL", "name": "Intent.Skills.Use", "sent": 1001, "count": 1001,
             "failures": 1, "lost": 1, "clock_skew": 0, "bytes": 0, "behind": 5, "latency_us": _hist(crit)},
            {"kind": "event", "qos": "BACKGROUND", "name": "Event.Stats.Updated", "sent": 0, "count": 104,
             "failures": 0, "lost": 0, "clock_skew": 4, "bytes": 0, "behind": 0,
             "latency_us": _hist([300_000] * 100)},
        ],
        "series": [],
        "phases": [{"phase": "flood", "kind": "request", "qos": "CRITICAL", "count": 10, "failures": 0,
                    "hdr": Histogram.decode(_hist([5000] * 10)["hdr"]).encode()}],
        "dispatcher": {
            "client": {"names": {"Intent.Skills.Use": {"sent": 1001, "timeouts": 1, "retries": 3, "dropped": 0}},
                       "tiers": {"CRITICAL": tier, "BACKGROUND": bg}},
            "server": None,
        },
    }


def _verdicts(table: dict[str, list[str]]) -> list[tuple[str, str, bool, str]]:
    out = evaluate(parse_thresholds({"thresholds": table}), make_results())
    return [(v.threshold.key, v.threshold.expression, v.passed, v.shown) for v in out]


@pytest.mark.parametrize(
    ("key", "expr", "passed", "shown"),
    [
        ("latency{qos:CRITICAL}", "p(99) < 100ms", True, "99.9ms"),
        ("latency{qos:CRITICAL}", "p(99) < 50ms", False, "99.9ms"),
        ("latency{qos:CRITICAL}", "max <= 101ms", True, "100.9ms"),
        ("latency{qos:CRITICAL}", "p(50) < 51000us", True, "50.91ms"),
        ("latency{name:Event.Stats.Updated}", "avg < 1s", True, "299.9ms"),
        ("latency{phase:flood,qos:CRITICAL}", "p(99) < 6ms", True, "5.003ms"),
        ("latency{qos:HIGH}", "p(99) < 50ms", False, "no data"),
        ("failures", "rate < 0.1%", True, "0.0905%"),
        ("failures", "count == 0", False, "1"),
        ("behind_schedule", "rate < 1%", True, "0.452%"),
        ("lost", "count == 0", False, "1"),
        ("lost{kind:request,qos:CRITICAL}", "rate < 0.1%", True, "0.0999%"),
        ("lost{kind:event}", "count == 0", True, "0"),
        ("clock_skew{kind:event}", "count == 0", False, "4"),
        ("clock_skew", "rate < 1%", True, "0.362%"),
        ("throughput{qos:CRITICAL}", "rate > 100", True, "100.1"),
        ("timeouts", "count == 0", False, "1"),
        ("retries", "rate < 1%", True, "0.3%"),
        ("dropped{qos:CRITICAL}", "count == 0", True, "0"),
        ("dropped{qos:BACKGROUND}", "rate < 10%", False, "20%"),
        ("saturation{qos:CRITICAL}", "ratio < 1%", True, "0.5%"),
        ("saturation{qos:BACKGROUND}", "longest_run < 60", False, "90"),
        ("sojourn{qos:CRITICAL}", "p(99) < 1ms", True, "0us"),
        ("sojourn{qos:BACKGROUND}", "p(50) < 100ms", False, "400.1ms"),
    ],
)
def test_verdicts(key: str, expr: str, passed: bool, shown: str) -> None:
    [(_, _, ok, measured)] = _verdicts({key: [expr]})
    assert (ok, measured) == (passed, shown)


def test_dropped_is_one_table_summed_by_tier_or_by_name() -> None:
    """Envelopes dropped and requests refused, every reason: the same rows whichever way they are summed."""
    results = make_results()
    results["dropped"] = [
        {"side": "server", "name": "Intent.Stats.RequestSnapshot", "qos": "BACKGROUND", "sent": 0, "dropped": 776,
         "drops": {"overloaded": 776}},
        {"side": "server", "name": "Event.Stats.Updated", "qos": "BACKGROUND", "sent": 200, "dropped": 24,
         "drops": {"queue_full": 24}},
        {"side": "client", "name": "Intent.Skills.Use", "qos": "CRITICAL", "sent": 1001, "dropped": 0, "drops": {}},
    ]
    table = {"dropped{qos:BACKGROUND}": ["count == 800"],
             "dropped{name:Intent.Stats.RequestSnapshot}": ["count == 776"],
             "dropped{name:Event.Stats.Updated}": ["rate < 11%"], "dropped{qos:CRITICAL}": ["count == 0"],
             "dropped": ["count == 800"]}
    verdicts = evaluate(parse_thresholds({"thresholds": table}), results)
    assert [(v.threshold.key, v.passed) for v in verdicts if not v.passed] == []


MALFORMED = [
    ({"latency{qos:CRITICAL}": ["p99 < 50ms"]}, r"expected AGGREGATION OPERATOR VALUE\[UNIT\]"),
    ({"latency{qos:CRITICAL}": ["p(99) << 50ms"]}, r"expected AGGREGATION OPERATOR VALUE"),
    ({"latency{qos:CRITICAL}": ["p(99) < 50parsecs"]}, r"unknown unit 'parsecs' for a duration; allowed: us, ms, s"),
    ({"latency{qos:CRITICAL}": ["p(150) < 50ms"]}, r"percentile 150 is not in 0..100"),
    ({"latency{qos:CRITICAL}": ["rate < 1%"]}, r"latency has no aggregation 'rate'; allowed: p\(N\), avg"),
    ({"failures": ["rate < 1s"]}, r"unknown unit 's' for a rate; allowed: % or none"),
    ({"failures": ["max(3) < 1"]}, r"failures has no aggregation 'max\(3\)'"),
    ({"latency{qos:SUPER}": ["max < 1ms"]}, r"unknown qos 'SUPER'; tiers: CRITICAL, HIGH, NORMAL, BACKGROUND"),
    ({"latency{tier:CRITICAL}": ["max < 1ms"]}, r"latency has no tag 'tier'; its tags: kind, qos, name, phase"),
    ({"latency{kind:rpc}": ["max < 1ms"]}, r"unknown kind 'rpc'; kinds: request, intent, event"),
    ({"latenzy": ["max < 1ms"]}, r"unknown metric 'latenzy'; metrics: latency, failures"),
    ({"latency{qos=CRITICAL}": ["max < 1ms"]}, r"tag 'qos=CRITICAL' must be tag:value"),
    ({"latency": "max < 1ms"}, None),  # a single string is accepted
    ({"latency": 5}, r"expected a list of expressions"),
]


@pytest.mark.parametrize(("table", "message"), MALFORMED)
def test_malformed_thresholds_say_file_key_expression_and_what_is_allowed(table: dict[str, Any],
                                                                         message: str | None) -> None:
    if message is None:
        assert parse_thresholds({"thresholds": table}, "t.toml")
        return
    with pytest.raises(ThresholdError, match=message) as e:
        parse_thresholds({"thresholds": table}, "t.toml")
    assert str(e.value).startswith("t.toml: key ")


def test_unknown_name_and_empty_file() -> None:
    with pytest.raises(ThresholdError, match=r"'Intent.Skill.Use' is not an envelope name of the registry"):
        parse_thresholds({"thresholds": {"latency{name:Intent.Skill.Use}": ["max < 1s"]}}, "t", ("Intent.Skills.Use",))
    with pytest.raises(ThresholdError, match=r"expected a \[thresholds\] table"):
        parse_thresholds({}, "t")


def test_gate_command_exit_codes_table_and_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = tmp_path / "results.json"
    res.write_text(json.dumps(make_results()))
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('[thresholds]\n"latency{qos:CRITICAL}" = ["p(99) < 100ms"]\n"failures" = ["rate < 0.1%"]\n')
    bad.write_text('[thresholds]\n"latency{qos:CRITICAL}" = ["p(99) < 50ms", "max < 1s"]\n')
    assert gate_main([str(res), "--thresholds", str(good)]) == 0
    out = capsys.readouterr().out
    assert "thresholds: 2 passed, 0 failed" in out and "FAIL" not in out
    assert json.loads(res.read_text())["thresholds"]["passed"] is True  # recorded in results.json
    junit = tmp_path / "gate.xml"
    assert gate_main([str(res), "--thresholds", str(bad), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "thresholds: 1 passed, 1 failed" in lines[0]
    assert lines[3].startswith("FAIL") and "p(99) < 50ms" in lines[3] and "99.9ms" in lines[3]  # failures first
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert json.loads(res.read_text())["thresholds"]["passed"] is False


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "truncated|not valid JSON"), ('{"format": "other"}', "not a netharness results file"),
     ('{"format": "netharness-results", "version": 9}', "results version 9 is not supported")],
)
def test_gate_rejects_bad_results(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                  message: str) -> None:
    res = tmp_path / "results.json"
    res.write_text(content)
    th = tmp_path / "t.toml"
    th.write_text('[thresholds]\n"failures" = ["rate < 1%"]\n')
    assert gate_main([str(res), "--thresholds", str(th)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"netharness gate: error: {res}:") and any(m in err for m in message.split("|"))


def _locust(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "locust", "--headless", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_locust_run_with_an_impossible_threshold_exits_1(tmp_path: Path) -> None:
    th = tmp_path / "impossible.toml"
    th.write_text('[thresholds]\n"latency{qos:CRITICAL}" = ["p(99) < 1us"]\n')
    p = _locust("-f", "scenarios/skills.py", "-u", "5", "-r", "5", "-t", "4s", "--thresholds", str(th),
                "--results", str(tmp_path / "r.json"))
    assert p.returncode == 1, p.stderr[-2000:]
    assert "thresholds: 0 passed, 1 failed" in p.stdout
    assert json.loads((tmp_path / "r.json").read_text())["thresholds"]["passed"] is False


def test_locust_mixed_run_passes_the_project_defaults(mixed_run: MixedRun) -> None:
    """Why this failed once on a busy machine: the CRITICAL latency thresholds (absolute, p99 < 50 ms) failed
    while other engineers' runs held both cores (p99 85-148 ms measured so; 4 ms on an idle machine), and the
    assertion showed only the tail of stdout, Locust's error table of refused snapshots, not the verdicts.
    (A second way to the same symptom is fixed in the plugin: an exception at the end of the run made Locust
    fall back to "any failure -> exit 1".)  So the verdicts are in the message, and a run whose only
    failures are timing thresholds (latency, behind_schedule) while the CPU was contended is run again, twice
    at most (``mixed_run``, tests/sharedruns.py); any other failure fails at once."""
    out = mixed_run.output
    at = out.find("thresholds:")
    verdicts = out[at:][:3000] if at >= 0 else "(no thresholds line in the output)"
    assert mixed_run.returncode == 0, "; ".join(mixed_run.attempts) + "\n" + verdicts + "\n" + out[-2000:]
    assert re.search(r"thresholds: \d+ passed, 0 failed", out), verdicts


def test_locust_rejects_a_malformed_thresholds_file_at_start(tmp_path: Path) -> None:
    th = tmp_path / "bad.toml"
    th.write_text('[thresholds]\n"latency" = ["p(99) < 50 parsecs"]\n')
    p = _locust("-f", "scenarios/skills.py", "-u", "1", "-t", "3s", "--thresholds", str(th))
    assert p.returncode == 2
    assert f"netharness: error: {th}: key 'latency': expression 'p(99) < 50 parsecs': unknown unit" in p.stderr


# -- abort_on_fail ------------------------------------------------------------------------------------


def test_abort_on_fail_entries_parse_with_their_options() -> None:
    [plain, armed, delayed] = parse_thresholds({"thresholds": {"latency{qos:CRITICAL}": [
        "p(99) < 50ms",
        {"threshold": "max < 1s", "abort_on_fail": True},
        {"threshold": "p(99) < 50ms", "abort_on_fail": True, "delay_abort_eval": "1.5m"},
    ]}})
    assert (plain.abort_on_fail, plain.delay_abort_eval) == (False, 0.0)
    assert (armed.abort_on_fail, armed.delay_abort_eval, armed.value) == (True, 0.0, 1e6)
    assert (delayed.abort_on_fail, delayed.delay_abort_eval) == (True, 90.0)
    [solo] = parse_thresholds({"thresholds": {"failures": {"threshold": "rate < 1%", "abort_on_fail": True}}})
    assert solo.abort_on_fail and solo.value == 0.01


@pytest.mark.parametrize(
    ("entry", "message"),
    [({"abort_on_fail": True}, r"a table entry needs threshold = \"EXPRESSION\""),
     ({"threshold": "max < 1s", "abort_on_fail": 1}, "abort_on_fail must be true or false, got 1"),
     ({"threshold": "max < 1s", "abort_on_fail": True, "delay_abort_eval": 5},
      "delay_abort_eval 5: expected a duration like"),
     ({"threshold": "max < 1s", "delay_abort_eval": "5s"}, "delay_abort_eval is set but abort_on_fail is not"),
     ({"threshold": "max < 1parsec", "abort_on_fail": True}, "unknown unit 'parsec'"),
     ({"threshold": "max < 1s", "abortOnFail": True}, r"unknown option\(s\) abortOnFail; allowed: threshold")],
)
def test_abort_on_fail_entries_are_validated(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ThresholdError, match=message):
        parse_thresholds({"thresholds": {"latency": [entry]}}, "t.toml")


def test_a_thresholds_file_holds_only_the_thresholds_table() -> None:
    with pytest.raises(ThresholdError, match=r"unknown table or key 'extra'; a thresholds file holds only"):
        parse_thresholds({"thresholds": {"failures": ["rate < 1%"]}, "extra": {"x": 1}}, "t.toml")


def _armed(key: str, expr: str, delay: str = "0s") -> list[Any]:
    return parse_thresholds({"thresholds": {key: [{"threshold": expr, "abort_on_fail": True,
                                                   **({"delay_abort_eval": delay} if delay != "0s" else {})}]}})


# (threshold key, expression, delay, elapsed seconds, aborts?, can no longer pass?) on make_results():
# CRITICAL request p(99) 99.9 ms, max 100.9 ms, 1 failure in 1001, 1 timeout, BACKGROUND longest run 90.
ABORTS = [
    ("latency{qos:CRITICAL}", "max < 50ms", "10s", 1.0, True, True),  # exceeded: no later sample lowers a max
    ("timeouts", "count == 0", "0s", 0.5, True, True),
    ("saturation{qos:BACKGROUND}", "longest_run <= 60", "30s", 2.0, True, True),
    ("latency{qos:CRITICAL}", "min > 5ms", "10s", 1.0, True, True),  # min 1 ms: can only go lower
    ("latency{qos:CRITICAL}", "p(99) < 50ms", "10s", 5.0, False, False),  # may recover: wait for the delay
    ("latency{qos:CRITICAL}", "p(99) < 50ms", "10s", 10.0, True, False),
    ("failures", "rate < 0.01%", "0s", 0.0, True, False),
    ("latency{qos:CRITICAL}", "p(99) < 200ms", "0s", 60.0, False, False),  # passing
    ("latency{qos:CRITICAL}", "max < 1s", "0s", 60.0, False, False),
    ("latency{qos:HIGH}", "max < 1ms", "0s", 60.0, False, False),  # no data yet: never aborts
    ("failures", "count > 5", "0s", 60.0, True, False),  # a lower bound on a growing count may still pass
]


@pytest.mark.parametrize(("key", "expr", "delay", "elapsed", "aborts", "final"), ABORTS)
def test_should_abort(key: str, expr: str, delay: str, elapsed: float, aborts: bool, final: bool) -> None:
    a = should_abort(_armed(key, expr, delay), make_results(), elapsed)
    assert (a is not None) == aborts
    if a is not None:
        assert a.final == final
        assert a.message.startswith(f"netharness: aborting the run at {elapsed:.1f} s: threshold {key} {expr} ")
        assert ("can no longer pass" in a.message) == final


def test_only_abort_on_fail_thresholds_stop_a_run() -> None:
    th = parse_thresholds({"thresholds": {"latency{qos:CRITICAL}": ["max < 1ms"]}})  # failing, not armed
    assert should_abort(th, make_results(), 100.0) is None


# -- gate + report --------------------------------------------------------------------------------------


def test_gate_re_renders_the_report_beside_the_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reports.render import write_report

    res = tmp_path / "results.json"
    res.write_text(json.dumps(make_results()))
    page = write_report(make_results(), tmp_path)
    assert "not gated" in page.read_text()
    th = tmp_path / "t.toml"
    th.write_text('[thresholds]\n"latency{qos:CRITICAL}" = ["p(99) < 50ms"]\n')
    assert gate_main([str(res), "--thresholds", str(th)]) == 1
    assert f"report re-rendered with the verdicts: {page}" in capsys.readouterr().out
    html = page.read_text()
    assert "not gated" not in html and "FAILED" in html and "p(99) &lt; 50ms" in html
