"""netharness lint: governance checks of the channel registry, its schemas and the code that uses them.

    netharness lint [--registry FILE] [--schemas MODULE[:ATTR]] [--source PATH ...] [--junit FILE]
                    [--update-lock]

Checks (roadmap: "lint/test checks that prevent new channels or intents from skipping registry/validation/
instrumentation requirements"):

  registry      the registry loads; names are Intent.<Channel>.<Verb> / Event.<Channel>.<Noun> (PascalCase
                last part) and sit in the channel their middle part names; intents under "intents",
                events under "events"
  alias         qos = "LOW" (the seed's alias of BACKGROUND) is flagged: write the tier's name
  schema        every intent and event has a schema in the schemas module, every schema names a declared
                name, and every intent sent as a request has a response schema ("NAME#response")
  source        calls found in the --source files (read with ast, never run): .on("..."), .emit("..."),
                .intent("..."), .request("...") and Action("...") of the scenario library use declared names
                in the right direction (emit: events; intent, request, Action: intents; on: either)
  instrumented  every CRITICAL and HIGH name has latency samples in a run: an intent is sent by some
                .intent/.request/Action call of the sources (the harness records the latency of every send),
                an event is emitted by some .emit call (the harness records every event it receives), and no
                source turns recording off (a call with stats=False)
  lock          the registry's hash matches its lock file (registry.lock beside it): a contract change is
                reviewed, then recorded with --update-lock

Defaults: the game's registry (harness/game/registry.toml), harness.game.schemas (its SCHEMAS), and as
sources the game's services and the scenario library.  Exit codes: 0 clean, 1 findings (one line each:
file, entry, what is wrong, the fix), 2 bad input (one line).
"""

from __future__ import annotations

import difflib
import importlib
import re
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from dispatcher import ChannelRegistry
from dispatcher.envelope import TIER_ALIASES, QoS
from dispatcher.errors import RegistryError
from harness.args import Parser, fail
from harness.tools.lintscan import LintError, Use, scan_sources

__all__ = ["RULES", "Finding", "LintError", "Use", "junit_xml", "lint", "main", "scan_sources", "write_lock"]

RULES = ("registry", "alias", "schema", "source", "instrumented", "lock")
HARNESS = Path(__file__).resolve().parents[1]
DEFAULT_REGISTRY = HARNESS / "game" / "registry.toml"
DEFAULT_SCHEMAS = "harness.game.schemas"
DEFAULT_SOURCES = (HARNESS / "game" / "services.py", HARNESS / "runner" / "library.py")
SENDS = ("intent", "request", "Action")
_LAST = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_RESPONSE = "#response"


@dataclass(frozen=True)
class Finding:
    rule: str
    file: str
    entry: str  # the channel, name or call the finding is about
    message: str
    fix: str
    line: int | None = None

    def __str__(self) -> str:
        at = f"{self.file}:{self.line}" if self.line else self.file
        return f"{at}: [{self.rule}] {self.entry}: {self.message}; fix: {self.fix}"


def _shown(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# -- registry ---------------------------------------------------------------------------------------


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LintError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LintError(f"{path}: cannot read it: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise LintError(f"{path}: not valid TOML: {e}") from None


def _check_names(file: str, channel: str, spec: Mapping[str, Any]) -> list[Finding]:
    out = []
    for key, prefix, other, what in (("intents", "Intent", "events", "Verb"), ("events", "Event", "intents", "Noun")):
        names = spec.get(key, [])
        if not isinstance(names, list):
            out.append(Finding("registry", file, channel, f"{key!r} is not a list of names",
                               f'write {key} = ["{prefix}.{channel}.<{what}>", ...]'))
            continue
        for n in names:
            parts = n.split(".") if isinstance(n, str) else []
            if len(parts) != 3 or not all(parts):
                out.append(Finding("registry", file, repr(n), f"in channel {channel!r}: not a {prefix}.<Channel>."
                                   f"<{what}> name", f"rename it {prefix}.{channel}.<{what}>"))
            elif parts[0] != prefix:
                out.append(Finding("registry", file, n, f"listed under {channel}.{key} but named {parts[0]}.*",
                                   f"rename it {prefix}.{channel}.{parts[2]} or move it to {channel}.{other}"))
            elif parts[1] != channel:
                out.append(Finding("registry", file, n, f"sits in channel {channel!r} but its middle part names "
                                   f"{parts[1]!r}", f"move it to channel {parts[1]!r} or rename it "
                                   f"{prefix}.{channel}.{parts[2]}"))
            elif not _LAST.match(parts[2]):
                out.append(Finding("registry", file, n, f"the {what.lower()} {parts[2]!r} is not PascalCase",
                                   f"rename it {prefix}.{channel}.{parts[2][:1].upper()}{parts[2][1:]}"))
    return out


def _check_registry(path: Path, raw: dict[str, Any]) -> tuple[list[Finding], ChannelRegistry | None]:
    file = _shown(path)
    out: list[Finding] = []
    for channel, spec in raw.items():
        if not isinstance(spec, dict):
            out.append(Finding("registry", file, channel, "is not a table", f"write [{channel}] with its keys"))
            continue
        out += _check_names(file, channel, spec)
        qos = spec.get("qos")
        if isinstance(qos, str) and qos.upper() in TIER_ALIASES:
            tier = TIER_ALIASES[qos.upper()].name
            out.append(Finding("alias", file, channel, f"qos = {qos!r} is the seed's alias, not a tier",
                               f'write qos = "{tier}"'))
    reg = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reg = ChannelRegistry.from_dict(raw)
        except RegistryError as e:
            if not out:
                out.append(Finding("registry", file, "registry", f"does not load: {e}",
                                   "correct the entry the message names"))
    return out, reg


# -- schemas ----------------------------------------------------------------------------------------


def load_schemas(spec: str) -> Mapping[str, Any]:
    module, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # an import that fails for any reason is bad input, said in one line
        raise LintError(f"schemas module {module!r} does not import: {type(e).__name__}: {e}") from None
    schemas = getattr(mod, attr or "SCHEMAS", None)
    if not isinstance(schemas, Mapping):
        raise LintError(f"schemas module {module!r} has no {attr or 'SCHEMAS'} mapping of envelope name -> "
                        "validator (name it with --schemas MODULE:ATTR)")
    return schemas


def _check_schemas(file: str, spec: str, names: dict[str, str], schemas: Mapping[str, Any],
                   requested: dict[str, Use]) -> list[Finding]:
    out = []
    for n, kind in names.items():
        if n not in schemas:
            out.append(Finding("schema", file, n, f"{kind} has no schema in {spec}",
                               f"add a validator for {n!r} to {spec}"))
    for key in schemas:
        base = key.removesuffix(_RESPONSE)
        if base not in names:
            out.append(Finding("schema", spec, key, f"a schema for a name {file} does not declare",
                               f"declare {base!r} in the registry or remove the schema"))
    for n, use in requested.items():
        if n in names and n + _RESPONSE not in schemas:
            out.append(Finding("schema", spec, n, f"sent as a request ({use.file}:{use.line}) but has no response "
                               "schema", f"register one with SCHEMAS.register({n!r}, ..., response=True)"))
    return out


# -- sources against the registry -------------------------------------------------------------------


def _check_uses(names: dict[str, str], uses: list[Use]) -> list[Finding]:
    out = []
    for u in uses:
        if u.call == "stats_off":
            out.append(Finding("instrumented", u.file, f"{u.name}(stats=False)", "turns latency recording off",
                               "remove stats=False (recording is the default)", u.line))
            continue
        call = f'{u.call}("{u.name}")' if u.call != "Action" else f'Action("{u.name}", kind={u.kind!r})'
        kind = names.get(u.name)
        if kind is None:
            close = difflib.get_close_matches(u.name, list(names), n=1)
            fix = f"did you mean {close[0]!r}?" if close else "declare it in the registry or use a declared name"
            out.append(Finding("source", u.file, call, f"{u.name!r} is not declared in the registry", fix, u.line))
        elif u.call in SENDS and kind != "intent":
            out.append(Finding("source", u.file, call, f"sends {u.name!r}, an event (server -> client)",
                               "a client sends intents; the server emits events", u.line))
        elif u.call == "emit" and kind != "event":
            out.append(Finding("source", u.file, call, f"emits {u.name!r}, an intent (client -> server)",
                               "the server emits events; a client sends intents", u.line))
    return out


def _check_instrumented(file: str, raw: dict[str, Any], uses: list[Use]) -> list[Finding]:
    sent = {u.name for u in uses if u.call in SENDS}
    emitted = {u.name for u in uses if u.call == "emit"}
    out = []
    for spec in raw.values():
        if not isinstance(spec, dict):
            continue
        try:
            tier = QoS.parse(spec.get("qos", "NORMAL"))
        except ValueError:
            continue  # the registry check says so
        if tier > QoS.HIGH:
            continue
        for n in spec.get("intents", []) if isinstance(spec.get("intents"), list) else []:
            if isinstance(n, str) and n not in sent:
                out.append(Finding("instrumented", file, n, f"a {tier.name} intent no source sends, so no run "
                                   "records its latency", f'send it from a scenario: Action("{n}", rate, ...)'))
        for n in spec.get("events", []) if isinstance(spec.get("events"), list) else []:
            if isinstance(n, str) and n not in emitted:
                out.append(Finding("instrumented", file, n, f"a {tier.name} event no source emits, so no run "
                                   "records its latency", f'emit it from a service: server.emit("{n}", ...)'))
    return out


# -- lock -------------------------------------------------------------------------------------------


def lock_path(registry: Path) -> Path:
    return registry.with_suffix(".lock")


def write_lock(registry: Path, reg: ChannelRegistry) -> Path:
    p = lock_path(registry)
    names = "".join(f'  "{n}",\n' for n in reg.names)
    p.write_text(f"# The reviewed contract of {registry.name}: `netharness lint` fails when the registry's hash\n"
                 "# differs from this one.  After reviewing a registry change: netharness lint --update-lock\n"
                 f'hash = "{reg.hash}"\nnames = [\n{names}]\n')
    return p


def _check_lock(registry: Path, reg: ChannelRegistry | None) -> list[Finding]:
    if reg is None:
        return []
    p = lock_path(registry)
    file = _shown(p)
    fix = f"review the registry change, then run netharness lint --registry {_shown(registry)} --update-lock"
    try:
        lock = tomllib.loads(p.read_text())
    except FileNotFoundError:
        return [Finding("lock", file, "hash", f"no lock file for registry hash {reg.hash}", fix)]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return [Finding("lock", file, "hash", f"unreadable lock file ({e})", fix)]
    if lock.get("hash") == reg.hash:
        return []
    listed = lock.get("names")
    old: list[Any] = listed if isinstance(listed, list) else []
    added = [n for n in reg.names if n not in old]
    removed = [n for n in old if n not in reg.names]
    change = "; ".join(x for x in (f"added {', '.join(added)}" if added else "",
                                   f"removed {', '.join(removed)}" if removed else "") if x) or "channel settings"
    return [Finding("lock", file, "hash", f"the registry's hash is {reg.hash}, the lock says {lock.get('hash')!r} "
                    f"(changed: {change})", fix)]


# -- the whole lint ---------------------------------------------------------------------------------


def lint(registry: str | Path = DEFAULT_REGISTRY, schemas: str = DEFAULT_SCHEMAS,
         sources: Iterable[str | Path] = DEFAULT_SOURCES, update_lock: bool = False) -> list[Finding]:
    """Every finding, in rule order.  Raises ``LintError`` for input it cannot check."""
    path = Path(registry)
    raw = _read_toml(path, "registry")
    file = _shown(path)
    findings, reg = _check_registry(path, raw)
    validators = load_schemas(schemas)
    uses = scan_sources(sources)
    names: dict[str, str] = {}
    for spec in raw.values():
        if isinstance(spec, dict):
            for key, kind in (("intents", "intent"), ("events", "event")):
                lst = spec.get(key)
                names.update({n: kind for n in lst if isinstance(n, str)} if isinstance(lst, list) else {})
    requested = {u.name: u for u in uses if u.call == "request" or (u.call == "Action" and u.kind == "request")}
    findings += _check_schemas(file, schemas, names, validators, requested)
    findings += _check_uses(names, uses)
    findings += _check_instrumented(file, raw, uses)
    if update_lock and reg is not None:
        write_lock(path, reg)
    elif update_lock:
        findings.append(Finding("lock", _shown(lock_path(path)), "hash", "not written: the registry does not load",
                                "correct the registry first"))
    findings += _check_lock(path, reg)
    return sorted(findings, key=lambda f: RULES.index(f.rule))


def junit_xml(findings: list[Finding], suite: str = "netharness lint") -> str:
    cases = []
    for rule in RULES:
        mine = [f for f in findings if f.rule == rule]
        for f in mine:
            cases.append(f'  <testcase classname="lint.{rule}" name={quoteattr(f"{f.file}: {f.entry}")}>'
                         f"<failure message={quoteattr(f.message)}>{escape(str(f))}</failure></testcase>")
        if not mine:
            cases.append(f'  <testcase classname="lint.{rule}" name="{rule}"></testcase>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name={quoteattr(suite)} tests="{len(cases)}" '
            f'failures="{len(findings)}" errors="0">\n' + "\n".join(cases) + "\n</testsuite>\n")


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="netharness lint", description=__doc__)
    ap.add_argument("--registry", default=str(DEFAULT_REGISTRY), help="the channel registry (TOML)")
    ap.add_argument("--schemas", default=DEFAULT_SCHEMAS,
                    help="module holding SCHEMAS (or MODULE:ATTR), a mapping of envelope name -> validator")
    ap.add_argument("--source", nargs="+", default=None, metavar="PATH",
                    help="Python files or folders to check (default: the game's services and the scenario library)")
    ap.add_argument("--junit", default=None, help="also write a JUnit XML file here")
    ap.add_argument("--update-lock", action="store_true",
                    help="record the registry's current hash in its lock file (after reviewing the change)")
    args = ap.parse_args(argv)
    prog = "netharness lint"
    if args.junit and not Path(args.junit).parent.is_dir():
        return fail(prog, f"--junit {args.junit}: folder {Path(args.junit).parent} does not exist")
    try:
        findings = lint(args.registry, args.schemas, args.source or DEFAULT_SOURCES, args.update_lock)
    except LintError as e:
        return fail(prog, str(e))
    if args.update_lock and not any(f.rule == "lock" for f in findings):
        print(f"lint: lock written: {_shown(lock_path(Path(args.registry)))}")
    for f in findings:
        print(f)
    if args.junit:
        try:
            Path(args.junit).write_text(junit_xml(findings))
        except OSError as e:
            return fail(prog, f"--junit {args.junit}: cannot write it: {e.strerror or e}")
    print(f"lint: {len(findings)} finding(s)" if findings else "lint: clean")
    return 1 if findings else 0
