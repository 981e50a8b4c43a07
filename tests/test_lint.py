"""netharness lint: clean on the game's registry; each governance mistake caught (exit 1, named); bad input
is one line and exit 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.tools.lint import DEFAULT_REGISTRY, DEFAULT_SOURCES, Finding, lint, scan_sources
from harness.tools.lint import main as lint_main

ROOT = Path(__file__).resolve().parents[1]
SERVICES, LIBRARY = (str(p) for p in DEFAULT_SOURCES)
REGISTRY_TEXT = DEFAULT_REGISTRY.read_text()


def test_lint_passes_on_the_game_registry_through_the_real_command(tmp_path: Path) -> None:
    junit = tmp_path / "lint.xml"
    p = subprocess.run([sys.executable, "-m", "harness", "lint", "--source", "scenarios", SERVICES, LIBRARY,
                        "--junit", str(junit)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stderr) == (0, ""), p.stdout
    assert p.stdout.strip() == "lint: clean"
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "0"
    assert {c.get("classname") for c in suite} == {f"lint.{r}" for r in
                                                   ("registry", "alias", "schema", "source", "instrumented", "lock")}


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)
    return edit


SCHEMAS_WITHOUT_RESPONSES = """
from dispatcher.schema import SchemaRegistry
from harness.game.schemas import SCHEMAS as GAME
SCHEMAS = SchemaRegistry({k: v for k, v in GAME.items() if not k.endswith("#response")})
"""
SCHEMAS_WITH_A_STRAY = """
from dispatcher.schema import SchemaRegistry, any_value
from harness.game.schemas import SCHEMAS as GAME
SCHEMAS = SchemaRegistry(dict(GAME))
SCHEMAS.register("Event.Skills.Ghost", any_value())
"""

# (case, registry edit, extra source, schemas module text, sources replace the defaults, expected lines)
CASES: list[tuple[str, Callable[[str], str] | None, str | None, str | None, bool, list[str]]] = [
    ("intent without a schema",
     _replace('intents = ["Intent.Skills.Use"]', 'intents = ["Intent.Skills.Use", "Intent.Skills.Cast"]'),
     'client.intent("Intent.Skills.Cast", {})', None, False,
     ["[schema] Intent.Skills.Cast: intent has no schema in harness.game.schemas; fix: add a validator"]),
    ("event without a schema",
     _replace('events = ["Event.Cooldowns.Updated"]', 'events = ["Event.Cooldowns.Updated", "Event.Cooldowns.Reset"]'),
     'server.emit("Event.Cooldowns.Reset", {})', None, False,
     ["[schema] Event.Cooldowns.Reset: event has no schema"]),
    ("name in another channel",
     _replace('intents = ["Intent.Skills.Use"]', 'intents = ["Intent.Skills.Use", "Intent.Stats.Peek"]'), None, None,
     False, ["[registry] Intent.Stats.Peek: sits in channel 'Skills' but its middle part names 'Stats'; "
             "fix: move it to channel 'Stats'"]),
    ("event listed as an intent",
     _replace('intents = ["Intent.Skills.Use"]', 'intents = ["Intent.Skills.Use", "Event.Skills.Cast"]'), None, None,
     False, ["[registry] Event.Skills.Cast: listed under Skills.intents but named Event.*"]),
    ("lowercase noun",
     _replace('events = ["Event.Skills.Execution"]', 'events = ["Event.Skills.Execution", "Event.Skills.crit"]'),
     None, None, False, ["[registry] Event.Skills.crit: the noun 'crit' is not PascalCase; fix: rename it "
                         "Event.Skills.Crit"]),
    ("the seed's LOW alias", _replace('qos = "BACKGROUND"', 'qos = "LOW"'), None, None, False,
     ["[alias] Stats: qos = 'LOW' is the seed's alias, not a tier; fix: write qos = \"BACKGROUND\""]),
    ("undeclared name emitted", None, 'server.emit("Event.Skills.Executon", {})', None, False,
     ["[source] emit(\"Event.Skills.Executon\"): 'Event.Skills.Executon' is not declared in the registry; "
      "fix: did you mean 'Event.Skills.Execution'?"]),
    ("event sent as an intent", None, 'client.intent("Event.Skills.Execution", {})', None, False,
     ["[source] intent(\"Event.Skills.Execution\"): sends 'Event.Skills.Execution', an event"]),
    ("intent emitted", None, 'server.emit("Intent.Skills.Use", {})', None, False,
     ["[source] emit(\"Intent.Skills.Use\"): emits 'Intent.Skills.Use', an intent"]),
    ("scenario action on an event", None, 'Action("Event.Stats.Updated", 1.0, "request")', None, False,
     ["[source] Action(\"Event.Stats.Updated\", kind='request'): sends 'Event.Stats.Updated', an event"]),
    ("latency recording off", None, 'dispatcher.init(peer="client", stats=False)', None, False,
     ["[instrumented] init(stats=False): turns latency recording off"]),
    ("CRITICAL intent no scenario sends", None, None, None, True,
     ["[instrumented] Intent.Skills.Use: a CRITICAL intent no source sends",
      "[instrumented] Intent.Attributes.SpendPoints: a CRITICAL intent no source sends"]),
    ("HIGH event nothing emits",
     _replace('events = ["Event.Cooldowns.Updated"]', 'events = ["Event.Cooldowns.Updated", "Event.Cooldowns.Reset"]'),
     None, None, False, ["[instrumented] Event.Cooldowns.Reset: a HIGH event no source emits"]),
    ("schema of an undeclared name", None, None, SCHEMAS_WITH_A_STRAY, False,
     ["[schema] Event.Skills.Ghost: a schema for a name"]),
    ("request without a response schema", None, None, SCHEMAS_WITHOUT_RESPONSES, False,
     ["[schema] Intent.Skills.Use: sent as a request", "has no response schema"]),
    ("registry changed, lock not updated",
     _replace('events = ["Event.Cooldowns.Updated"]', 'events = ["Event.Cooldowns.Updated", "Event.Cooldowns.Reset"]'),
     None, None, False, ["[lock] hash: the registry's hash is", "(changed: added Event.Cooldowns.Reset)",
                         "fix: review the registry change, then run netharness lint --registry"]),
]


@pytest.mark.parametrize(("case", "edit", "source", "schemas", "only_extra", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_governance_mistake_is_named_with_exit_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str,
        edit: Callable[[str], str] | None, source: str | None, schemas: str | None, only_extra: bool,
        expected: list[str]) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text(edit(REGISTRY_TEXT) if edit else REGISTRY_TEXT)
    shutil.copy(DEFAULT_REGISTRY.with_suffix(".lock"), tmp_path / "registry.lock")
    extra = tmp_path / "extra.py"
    extra.write_text(f"def f(client, server, dispatcher, Action):\n    {source or 'pass'}\n")
    argv = ["--registry", str(reg), "--source", *([] if only_extra else [SERVICES, LIBRARY]), str(extra)]
    if schemas is not None:
        module = "lint_schemas_" + "".join(c if c.isalnum() else "_" for c in case)  # one module per case
        (tmp_path / f"{module}.py").write_text(schemas)
        monkeypatch.syspath_prepend(str(tmp_path))
        argv += ["--schemas", module]
    rc = lint_main(argv)
    out = capsys.readouterr()
    assert (rc, out.err) == (1, ""), out.out
    for text in expected:
        assert text in out.out, f"{text!r} not in:\n{out.out}"
    assert out.out.rstrip().endswith("finding(s)")


def test_update_lock_records_a_reviewed_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY_TEXT.replace('qos = "HIGH"', 'qos = "CRITICAL"'))
    assert lint_main(["--registry", str(reg)]) == 1
    assert "[lock] hash: no lock file for registry hash" in capsys.readouterr().out
    assert lint_main(["--registry", str(reg), "--update-lock"]) == 0
    assert "lock written" in capsys.readouterr().out
    assert lint(reg) == []
    assert 'names = [\n  "Intent.Attributes.RequestSnapshot",' in (tmp_path / "registry.lock").read_text()


def test_findings_name_file_entry_and_fix() -> None:
    f = Finding("schema", "r.toml", "Intent.X.Y", "intent has no schema", "add one", 3)
    assert str(f) == "r.toml:3: [schema] Intent.X.Y: intent has no schema; fix: add one"


def test_the_scanner_reads_without_running(tmp_path: Path) -> None:
    src = tmp_path / "s.py"
    src.write_text('raise SystemExit("never run")\n'
                   'bus.on("Event.A.B", h); x.on("click", h); s.request("GET", u); t.emit(name)\n'
                   'Action(name="Intent.A.C", rate=1, kind="request")\n')
    uses = [(u.line, u.call, u.name, u.kind) for u in scan_sources([src])]
    assert uses == [(2, "on", "Event.A.B", ""), (3, "Action", "Intent.A.C", "request")]


BAD_INPUT = [
    (["--registry", "/nonexistent/registry.toml"], "/nonexistent/registry.toml: no such registry file"),
    (["--registry", "{bad}"], "not valid TOML"),
    (["--schemas", "no_such_module_xyz"], "schemas module 'no_such_module_xyz' does not import"),
    (["--schemas", "harness.game:NOPE"], "has no NOPE mapping"),
    (["--source", "/nonexistent/src.py"], "/nonexistent/src.py: no such source file or folder"),
    (["--source", "{broken}"], "cannot parse it as Python"),
    (["--junit", "/proc/nope/lint.xml"], "--junit /proc/nope/lint.xml: folder /proc/nope does not exist"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    bad_toml, broken = tmp_path / "bad.toml", tmp_path / "broken.py"
    bad_toml.write_text("[Stats\n")
    broken.write_text("def (:\n")
    argv = [a.replace("{bad}", str(bad_toml)).replace("{broken}", str(broken)) for a in argv]
    p = subprocess.run([sys.executable, "-m", "harness", "lint", *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("netharness lint: error: "), p.stderr
    assert message in p.stderr
