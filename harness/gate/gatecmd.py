"""The CI threshold gate: netharness gate results.json --thresholds FILE [--junit out.xml], and the
same evaluation at the end of a Locust run (--thresholds FILE).

Prints a verdict table (failures first), records the verdicts in results.json (and re-renders the
report.html beside it, if there is one), and exits 1 if any threshold failed, 0 otherwise; --junit writes a
JUnit XML file (one test case per expression) that CI systems display.  Bad input is one line and exit
code 2: a malformed thresholds file (an unknown table, a phase the run does not have), a malformed results
file (a histogram that does not decode, a counter that is not a number), a --junit path that cannot be
written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from dispatcher.stats import text_table
from harness.args import CliError, Parser, fail
from harness.gate.thresholds import Threshold, ThresholdError, Verdict, evaluate, load_thresholds
from harness.resultcheck import check_results
from harness.results import ResultsError, load_results

__all__ = ["apply", "check_phases", "junit_xml", "main", "phases_of", "verdict_table"]


def verdict_table(verdicts: list[Verdict]) -> str:
    rows = [(("FAIL" if not v.passed else "pass"), v.threshold.key, v.threshold.expression, v.shown)
            for v in sorted(verdicts, key=lambda v: v.passed)]
    failed = sum(not v.passed for v in verdicts)
    head = f"thresholds: {len(verdicts) - failed} passed, {failed} failed"
    return head + "\n" + text_table(("verdict", "metric", "expression", "measured"), rows)


def apply(thresholds: list[Threshold], results: dict[str, Any], source: str) -> list[Verdict]:
    """Evaluate, and record the verdicts in ``results`` (under ``"thresholds"``)."""
    verdicts = evaluate(thresholds, results)
    results["thresholds"] = {"file": source, "passed": all(v.passed for v in verdicts),
                             "verdicts": [v.as_dict() for v in verdicts]}
    return verdicts


def junit_xml(verdicts: list[Verdict], suite: str = "netharness thresholds") -> str:
    failed = sum(not v.passed for v in verdicts)
    cases = []
    for v in verdicts:
        name = quoteattr(f"{v.threshold.key}: {v.threshold.expression}")
        body = "" if v.passed else (f"<failure message={quoteattr(f'measured {v.shown}')}>"
                                    f"{escape(v.threshold.expression)} measured {escape(v.shown)}</failure>")
        cases.append(f'  <testcase classname="{escape(v.threshold.metric)}" name={name}>{body}</testcase>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name={quoteattr(suite)} tests="{len(verdicts)}" '
            f'failures="{failed}" errors="0">\n' + "\n".join(cases) + "\n</testsuite>\n")


def phases_of(results: dict[str, Any]) -> list[str]:
    """The phases a run's ``results.json`` knows: its scenario's timeline and its per-phase rows."""
    names = [p[0] for p in (results.get("meta") or {}).get("phases") or [] if isinstance(p, list | tuple) and p]
    names += [p.get("phase") for p in results.get("phases") or [] if isinstance(p, dict)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


def check_phases(thresholds: list[Threshold], phases: list[str], where: str = "thresholds") -> None:
    """A ``phase:`` tag that names no phase of the run is a config error (not a FAIL "no data")."""
    for t in thresholds:
        phase = dict(t.tags).get("phase")
        if phase is not None and phase not in phases:
            known = f"its phases: {', '.join(phases)}" if phases else "the run has no phases"
            raise ThresholdError(f"{where}: key {t.key!r}: phase {phase!r} is not a phase of this run; {known}")


def _registry_names() -> tuple[str, ...]:
    from harness.game import load_registry

    return load_registry().names


def _writable_file(option: str, path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{option} {path}: is a folder; give a file name")
    if not p.parent.is_dir():
        raise CliError(f"{option} {path}: folder {p.parent} does not exist")


def _rerender(results: dict[str, Any], results_path: Path) -> str | None:
    """Re-render the report beside ``results.json`` (if one is there) so it shows the verdicts."""
    page = results_path.parent / "report.html"
    if not page.exists():
        return None
    from reports.render import write_report

    return str(write_report(results, results_path.parent))


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="netharness gate", description=__doc__)
    ap.add_argument("results", help="a results.json written by a run")
    ap.add_argument("--thresholds", required=True, help="the thresholds file (TOML)")
    ap.add_argument("--junit", default=None, help="also write a JUnit XML file here")
    ap.add_argument("--no-record", action="store_true",
                    help="do not write the verdicts into results.json (nor re-render its report)")
    args = ap.parse_args(argv)
    prog = "netharness gate"
    try:
        if args.junit:
            _writable_file("--junit", args.junit)
        results = load_results(args.results)
        check_results(results, args.results)
        thresholds = load_thresholds(args.thresholds, names=_registry_names())
        check_phases(thresholds, phases_of(results), args.thresholds)
    except (CliError, ResultsError, ThresholdError) as e:
        return fail(prog, str(e))
    try:
        verdicts = apply(thresholds, results, args.thresholds)
    except (KeyError, TypeError, ValueError) as e:  # a results file the checks above let through
        return fail(prog, f"{args.results}: malformed results ({type(e).__name__}: {e})")
    print(verdict_table(verdicts))
    try:
        if args.junit:
            Path(args.junit).write_text(junit_xml(verdicts))
        if not args.no_record:
            Path(args.results).write_text(json.dumps(results, indent=1))
    except OSError as e:
        return fail(prog, f"{e.filename}: cannot write it: {e.strerror or e}")
    if not args.no_record:
        try:
            page = _rerender(results, Path(args.results))
        except OSError as e:
            print(f"{prog}: warning: the report beside the results was not re-rendered: {e}", file=sys.stderr)
        else:
            if page:
                print(f"report re-rendered with the verdicts: {page}")
    return 0 if all(v.passed for v in verdicts) else 1
