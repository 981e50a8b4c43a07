"""Every bad input to every netharness command: one line on standard error, exit code 2, no traceback (each
case a real subprocess); and the discoverability basics: --version, plain-text help."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from .test_gate import make_results

ROOT = Path(__file__).resolve().parents[1]
GOOD_THRESHOLDS = '[thresholds]\n"latency{qos:CRITICAL}" = ["p(99) < 100ms"]\n'


def _netharness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _corrupt_hdr(r: dict[str, Any]) -> None:
    r["entries"][0]["latency_us"]["hdr"] = "HISTFAAAAB" + "x" * 20


def _count_many(r: dict[str, Any]) -> None:
    r["entries"][1]["count"] = "many"


def _sojourn_not_a_string(r: dict[str, Any]) -> None:
    r["dispatcher"]["client"]["tiers"]["CRITICAL"]["sojourn_us"]["hdr"] = 12


RESULTS_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "bad_hdr": _corrupt_hdr, "count_many": _count_many, "sojourn_int": _sojourn_not_a_string}

# (argv with {dir} {res} {th} {file} placeholders, thresholds file text, expected part of the one line)
CASES: list[tuple[str, list[str], str, str]] = [
    ("report -o unwritable", ["report", "{res}", "-o", "/proc/nope"], GOOD_THRESHOLDS,
     "netharness report: error: -o /proc/nope: cannot create the report folder"),
    ("report -o a file", ["report", "{res}", "-o", "{file}"], GOOD_THRESHOLDS,
     "-o {file}: is a file; the report is a folder"),
    ("report corrupted hdr", ["report", "{dir}/bad_hdr.json", "-o", "{dir}/out"], GOOD_THRESHOLDS,
     "{dir}/bad_hdr.json: entries[0] (request CRITICAL Intent.Skills.Use): latency_us: the histogram ('hdr') "
     "does not decode"),
    ("report count many", ["report", "{dir}/count_many.json"], GOOD_THRESHOLDS,
     "entries[1] (event BACKGROUND Event.Stats.Updated): 'count' is 'many', expected a whole number >= 0"),
    ("report corrupted baseline", ["report", "{res}", "--baseline", "{dir}/bad_hdr.json", "-o", "{dir}/out"],
     GOOD_THRESHOLDS, "bad_hdr.json: entries[0]"),
    ("report missing results", ["report", "{dir}/none.json"], GOOD_THRESHOLDS, "none.json: no such results file"),
    ("gate junit unwritable", ["gate", "{res}", "--thresholds", "{th}", "--junit", "/proc/nope/g.xml"],
     GOOD_THRESHOLDS, "netharness gate: error: --junit /proc/nope/g.xml: folder /proc/nope does not exist"),
    ("gate junit a folder", ["gate", "{res}", "--thresholds", "{th}", "--junit", "{dir}"], GOOD_THRESHOLDS,
     "is a folder; give a file name"),
    ("gate corrupted hdr", ["gate", "{dir}/bad_hdr.json", "--thresholds", "{th}"], GOOD_THRESHOLDS,
     "latency_us: the histogram ('hdr') does not decode"),
    ("gate count many", ["gate", "{dir}/count_many.json", "--thresholds", "{th}"], GOOD_THRESHOLDS,
     "'count' is 'many', expected a whole number >= 0"),
    ("gate sojourn not a string", ["gate", "{dir}/sojourn_int.json", "--thresholds", "{th}"], GOOD_THRESHOLDS,
     "dispatcher.client.tiers.CRITICAL.sojourn_us: the histogram ('hdr') is int, expected an encoded string"),
    ("gate phase typo", ["gate", "{res}", "--thresholds", "{th}"],
     '[thresholds]\n"latency{phase:flod,qos:CRITICAL}" = ["p(99) < 50ms"]\n',
     "key 'latency{phase:flod,qos:CRITICAL}': phase 'flod' is not a phase of this run; its phases: flood"),
    ("gate unknown table", ["gate", "{res}", "--thresholds", "{th}"], GOOD_THRESHOLDS + "[extra]\nx = 1\n",
     "unknown table or key 'extra'; a thresholds file holds only the [thresholds] table"),
    ("gate bad abort option", ["gate", "{res}", "--thresholds", "{th}"],
     '[thresholds]\n"latency" = [{threshold = "max < 1s", abort_on_fail = "yes"}]\n',
     "key 'latency': abort_on_fail must be true or false, got 'yes'"),
    ("gate bad abort delay", ["gate", "{res}", "--thresholds", "{th}"],
     '[thresholds]\n"latency" = [{threshold = "max < 1s", abort_on_fail = true, delay_abort_eval = "soon"}]\n',
     "delay_abort_eval 'soon': expected a duration like \"5s\""),
    ("gate unknown option", ["gate", "{res}", "--thresholds", "{th}"],
     '[thresholds]\n"latency" = [{threshold = "max < 1s", abort = true}]\n',
     "unknown option(s) abort; allowed: threshold, abort_on_fail, delay_abort_eval"),
    ("gate no thresholds option", ["gate", "{res}"], GOOD_THRESHOLDS,
     "the following arguments are required: --thresholds"),
    ("serve port out of range", ["serve", "--port", "70000"], GOOD_THRESHOLDS,
     "netharness serve: error: argument --port: port 70000 is out of range; allowed: 0..65535"),
    ("serve port not a number", ["serve", "--port=http"], GOOD_THRESHOLDS, "port 'http' is not a number"),
    ("lint missing registry", ["lint", "--registry", "{dir}/none.toml"], GOOD_THRESHOLDS, "no such registry file"),
    ("replay missing capture", ["replay", "inspect", "{dir}/none.replay"], GOOD_THRESHOLDS, "no such replay file"),
    ("bench unknown option", ["bench", "--frobnicate"], GOOD_THRESHOLDS, "unrecognized arguments: --frobnicate"),
    ("unknown command", ["frobnicate"], GOOD_THRESHOLDS, "netharness: error: unknown command 'frobnicate'"),
    ("no command", [], GOOD_THRESHOLDS, "netharness: error: no command given; commands: serve, gate, report, lint"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "results.json").write_text(json.dumps(make_results()))
    for name, edit in RESULTS_EDITS.items():
        r = copy.deepcopy(make_results())
        edit(r)
        (d / f"{name}.json").write_text(json.dumps(r))
    (d / "a-file").write_text("not a folder")
    return d


@pytest.mark.parametrize(("case", "argv", "thresholds", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(files: Path, tmp_path: Path, case: str, argv: list[str],
                                          thresholds: str, message: str) -> None:
    th = tmp_path / "t.toml"
    th.write_text(thresholds)
    subst = {"{dir}": str(files), "{res}": str(files / "results.json"), "{th}": str(th),
             "{file}": str(files / "a-file")}

    def fill(s: str) -> str:
        for k, v in subst.items():
            s = s.replace(k, v)
        return s

    p = _netharness(*map(fill, argv))
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("netharness") and fill(message) in p.stderr, p.stderr


def test_version_comes_from_the_package_metadata() -> None:
    p = _netharness("--version")
    assert (p.returncode, p.stdout.strip()) == (0, f"netharness {version('netharness')}")


@pytest.mark.parametrize("command", [[], ["serve"], ["gate"], ["report"], ["lint"], ["replay"],
                                     ["replay", "export"], ["bench"]])
def test_help_is_plain_text(command: list[str]) -> None:
    p = _netharness(*command, "--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: netharness"), p.stderr
    assert "``" not in p.stdout
