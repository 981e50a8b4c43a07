"""``netharness report results.json -o DIR [--baseline other.json]`` (also ``python -m reports``).

Writes ``DIR/report.html`` (self-contained) and each plot as ``DIR/<plot>.png`` beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.results import ResultsError, load_results

from .aggregate import build_model
from .html import render_html
from .plots import render_all

__all__ = ["main", "write_report"]


def write_report(results: dict[str, Any], out_dir: str | Path, baseline: dict[str, Any] | None = None) -> Path:
    """Render ``results`` into ``out_dir``; the path of report.html."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    model = build_model(results, baseline)
    pngs = render_all(model)
    for stem, png in pngs.items():
        (d / f"{stem}.png").write_bytes(png)
    page = d / "report.html"
    page.write_text(render_html(model, pngs))
    return page


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netharness report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a results.json")
    ap.add_argument("-o", "--output", default=None, help="the report's folder (default: beside results.json)")
    ap.add_argument("--baseline", default=None, help="another results.json to compare with")
    ap.add_argument("--screenshot", default=None, help="also take a PNG screenshot of the page (headless Chromium)")
    args = ap.parse_args(argv)
    try:
        results = load_results(args.results)
        baseline = load_results(args.baseline) if args.baseline else None
    except ResultsError as e:
        print(f"netharness report: error: {e}", file=sys.stderr)
        return 2
    out = args.output or str(Path(args.results).parent)
    page = write_report(results, out, baseline)
    print(f"report: {page}")
    if args.screenshot:
        from .browser import BrowserError, screenshot

        try:
            print(f"screenshot: {screenshot(page, args.screenshot)}")
        except BrowserError as e:
            print(f"netharness report: error: {e}", file=sys.stderr)
            return 2
    return 0
