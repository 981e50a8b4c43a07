"""The CI threshold gate: ``netharness gate results.json --thresholds FILE [--junit out.xml]``, and the
same evaluation at the end of a Locust run (``--thresholds FILE``).

Prints a verdict table (failures first), records the verdicts in ``results.json``, and exits 1 if any
threshold failed, 0 otherwise; ``--junit`` writes a JUnit XML file (one test case per expression) that CI
systems display.  A malformed thresholds file or results file is one clear line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from dispatcher.stats import text_table

from .results import ResultsError, load_results
from .thresholds import Threshold, ThresholdError, Verdict, evaluate, load_thresholds

__all__ = ["apply", "junit_xml", "main", "verdict_table"]


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


def _registry_names() -> tuple[str, ...]:
    from .game import load_registry

    return load_registry().names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netharness gate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a results.json written by a run")
    ap.add_argument("--thresholds", required=True, help="the thresholds file (TOML)")
    ap.add_argument("--junit", default=None, help="also write a JUnit XML file here")
    ap.add_argument("--no-record", action="store_true", help="do not write the verdicts into results.json")
    args = ap.parse_args(argv)
    try:
        results = load_results(args.results)
        thresholds = load_thresholds(args.thresholds, names=_registry_names())
    except (ResultsError, ThresholdError) as e:
        print(f"netharness gate: error: {e}", file=sys.stderr)
        return 2
    verdicts = apply(thresholds, results, args.thresholds)
    print(verdict_table(verdicts))
    if not args.no_record:
        Path(args.results).write_text(json.dumps(results, indent=1))
    if args.junit:
        Path(args.junit).write_text(junit_xml(verdicts))
    return 0 if all(v.passed for v in verdicts) else 1
