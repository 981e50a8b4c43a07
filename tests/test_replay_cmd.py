"""netharness replay inspect|export|import: exact round trips (hypothesis), a real Locust capture, and one-line
errors for bad input."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dispatcher.envelope import Envelope, Flags, Meta, QoS
from dispatcher.replay import ReplayBuffer, read_entries
from harness.game import load_registry
from harness.tools.replaycmd import decode_value, encode_value, export_lines, import_lines, inspect
from harness.tools.replaycmd import main as replay_main

from .sharedruns import SkillsCapture

ROOT = Path(__file__).resolve().parents[1]
HASH = load_registry().hash
NAMES = ("Intent.Skills.Use", "Event.Skills.Execution", "Intent.Stats.RequestSnapshot", "Event.EntityInfo.Delta")

i64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
scalars = st.none() | st.booleans() | i64 | st.floats(allow_nan=True, allow_infinity=True) | st.text() | st.binary()
keys = st.text() | i64 | st.binary() | st.sampled_from(["$bytes", "$map", "$float"])
payloads = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                        max_leaves=12)
opt_int = st.none() | st.integers(min_value=0, max_value=2**40)
entries = st.tuples(
    st.floats(min_value=0, max_value=1e9), st.sampled_from(["in", "out"]), st.sampled_from(NAMES), payloads,
    st.integers(min_value=0, max_value=2**32), st.sampled_from(list(QoS)), st.floats(allow_nan=False),
    st.none() | st.floats(allow_nan=False), opt_int, st.none() | st.text(max_size=8), st.sampled_from([None, True]),
    st.none() | st.booleans(), st.booleans(), opt_int, st.sampled_from(["", "intent", "request", "event"]))


def _capture(path: Path, rows: list[tuple[Any, ...]]) -> Path:
    buf = ReplayBuffer(HASH, buffer_size=max(1, len(rows)))
    for t, d, name, payload, seq, qos, ts, ack, pid, trace, repl, rel, resp, reply, kind in rows:
        meta = Meta(seq, qos, ts, ack, pid, trace, Flags(repl, rel), resp, reply)
        buf.push(Envelope(name, payload, meta), d, t, kind)
    buf.dump(path)
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(entries, max_size=6))
def test_export_then_import_gives_back_the_same_bytes(tmp_path: Path, rows: list[tuple[Any, ...]]) -> None:
    cap = _capture(tmp_path / "c.replay", rows)
    lines = list(export_lines(cap))
    assert all("\n" not in line and json.loads(line) is not None for line in lines)  # JSON lines, strict JSON
    assert import_lines(iter(lines)) == cap.read_bytes()


@given(payloads)
@example(struct.unpack(">d", bytes.fromhex("7ff8000000000001"))[0])  # a NaN with payload bits
@example(struct.unpack(">d", bytes.fromhex("fff8000000000000"))[0])  # a negative NaN
def test_values_round_trip_through_json(v: Any) -> None:
    back = decode_value(json.loads(json.dumps(encode_value(v), allow_nan=False)))
    assert msgpack.packb(back, use_bin_type=True) == msgpack.packb(v, use_bin_type=True)  # NaN-safe equality


def test_types_json_cannot_hold_are_tagged() -> None:
    v = {1: b"\x00", "k": [math.inf, -0.0, 2**64 - 1], "$bytes": 1}
    assert encode_value({"k": v}) == {"k": {"$map": [[1, {"$bytes": "AA=="}], ["k", [{"$float": "inf"}, -0.0,
                                                                                   2**64 - 1]], ["$bytes", 1]]}}
    assert encode_value(msgpack.ExtType(5, b"x")) == {"$ext": [5, "eA=="]}


def test_commands_on_a_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [(10.0, "out", "Intent.Skills.Use", {"skillId": "Nova"}, 1, QoS.CRITICAL, 1.0, None, 7, None, None, None,
             False, None, "intent"),
            (11.5, "out", "Intent.Skills.Use", {"skillId": "Heal", 3: b"\xff"}, 2, QoS.CRITICAL, 1.1, None, 7, "t",
             None, True, False, None, "request"),
            (12.0, "in", "Event.EntityInfo.Delta", {"id": 1}, 1, QoS.NORMAL, 1.2, None, None, None, None, None,
             False, None, "")]
    cap = _capture(tmp_path / "c.replay", rows)
    s = inspect(cap)
    assert (s["envelopes"], s["span_s"], s["registry_hash"]) == (3, 2.0, HASH)
    assert s["channels"]["Skills"]["names"] == {"Intent.Skills.Use (intent)": 1, "Intent.Skills.Use (request)": 1}
    assert (s["players"]["7"]["out"], s["players"]["-"]["in"]) == (2, 1)
    assert replay_main(["inspect", str(cap)]) == 0
    out = capsys.readouterr().out
    assert "3 envelopes" in out and "time span: 2.000 s" in out and "per channel" in out and "per player" in out
    jl, back = tmp_path / "c.jsonl", tmp_path / "back.replay"
    assert replay_main(["export", str(cap), "-o", str(jl)]) == 0
    assert json.loads(jl.read_text().splitlines()[2])["payload"] == {"$map": [["skillId", "Heal"],
                                                                             [3, {"$bytes": "/w=="}]]}
    assert replay_main(["import", str(jl), "-o", str(back)]) == 0
    assert back.read_bytes() == cap.read_bytes()
    assert read_entries(back, HASH) == read_entries(cap, HASH)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "replay", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, input=stdin)


def test_a_real_locust_capture_survives_export_and_import(skills_capture: SkillsCapture, tmp_path: Path) -> None:
    cap = skills_capture.capture  # skills.py, 3 players, 4 s (tests/sharedruns.py; test_locust.py replays it)
    assert skills_capture.returncode == 0, skills_capture.stderr[-3000:]
    ex = _cli("export", str(cap))
    assert ex.returncode == 0, ex.stderr
    im = _cli("import", "-", "-o", str(tmp_path / "back.capture"), stdin=ex.stdout)
    assert im.returncode == 0, im.stderr
    assert (tmp_path / "back.capture").read_bytes() == cap.read_bytes()
    ins = _cli("inspect", str(cap), "--json")
    summary = json.loads(ins.stdout)
    assert len(summary["players"]) == 3 and set(summary["channels"]) == {"Skills"}
    assert summary["envelopes"] == len(ex.stdout.splitlines()) - 1 > 10


HEADER = json.dumps({"format": "netharness-replay", "version": 1, "registry_hash": HASH, "buffer_size": 4})
ROW = {"t": 1.0, "direction": "out", "name": "Intent.Skills.Use", "payload": {}, "seq": 1, "qos": "CRITICAL",
       "ts_sent": 1.0, "ts_ack": None, "player_id": 1, "trace_id": None, "replayable": None, "reliable": None,
       "is_response": False, "reply_to": None, "kind": "intent"}
BAD_IMPORTS = [
    ("", "empty; expected a header line"),
    ("[1]\n", ":1: expected a JSON object, got list"),
    ("{nope\n", ":1: not JSON"),
    (json.dumps(ROW) + "\n", ":1: the first line is not a netharness-replay header"),
    (HEADER.replace('"version": 1', '"version": 9') + "\n", "replay version 9 is not supported"),
    (HEADER + "\n" + json.dumps({**ROW, "qos": "LOW"}) + "\n", ":2: qos 'LOW' is not a tier"),
    (HEADER + "\n" + json.dumps({"t": 1.0, "name": "x"}) + "\n", ":2: expected the fields t, direction"),
    (HEADER + "\n" + json.dumps({**ROW, "payload": {"$bytes": "!!"}}) + "\n", ":2: payload: malformed $bytes"),
    (HEADER + "\n" + json.dumps({**ROW, "direction": "sideways"}) + "\n", "does not make a valid capture"),
]


@pytest.mark.parametrize(("text", "message"), BAD_IMPORTS)
def test_bad_imports_are_one_line_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.replay"
    src.write_text(text)
    p = _cli("import", str(src), "-o", str(out))
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("netharness replay import: error: ") and message in p.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [src]  # nothing half-written


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["inspect", "{dir}/none.replay"], "none.replay: no such replay file"),
     (["export", "{dir}/junk"], "not a replay file"),
     (["export", "{cap}", "-o", "{cap}"], "already exists; pass --force to replace it"),
     (["export", "{cap}", "-o", "/proc/nope/x.jsonl"], "folder /proc/nope does not exist"),
     (["import", "{cap}", "-o", "{dir}/x.replay"], "not text; import reads the JSON lines that export writes"),
     (["import", "{dir}/none.jsonl", "-o", "{dir}/x.replay"], "none.jsonl: no such file"),
     (["frobnicate"], "invalid choice: 'frobnicate'"),
     ([], "the following arguments are required")])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    cap = _capture(tmp_path / "c.replay", [])
    (tmp_path / "junk").write_bytes(b"\x93\x01\x02")
    p = _cli(*(a.replace("{dir}", str(tmp_path)).replace("{cap}", str(cap)) for a in argv))
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("netharness replay") and message in p.stderr
