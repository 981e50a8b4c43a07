"""netharness report results.json -o DIR [--baseline other.json] (also python -m reports).

Writes DIR/report.html (self-contained) and each plot as DIR/<plot>.png beside it.  Bad input is one line
and exit code 2: a malformed results file, an output folder that is a file or cannot be made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.args import CliError, Parser, fail
from harness.resultcheck import check_results
from harness.results import ResultsError, load_results

from .aggregate import build_model
from .html import render_html
from .plots import render_all

__all__ = ["main", "write_report"]


def write_report(results: dict[str, Any], out_dir: str | Path, baseline: dict[str, Any] | None = None,
                 baseline_name: str | None = None) -> Path:
    """Render ``results`` into ``out_dir`` (``baseline_name``: the baseline's file, named in the report);
    the path of report.html."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    model = build_model(results, baseline, baseline_name)
    pngs = render_all(model)
    for stem, png in pngs.items():
        (d / f"{stem}.png").write_bytes(png)
    page = d / "report.html"
    page.write_text(render_html(model, pngs))
    return page


def _output_dir(out: str) -> Path:
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise CliError(f"-o {out}: is a file; the report is a folder (report.html and its PNGs)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"-o {out}: cannot create the report folder: {e.strerror or e}") from None
    return d


def _load(path: str) -> dict[str, Any]:
    results = load_results(path)
    check_results(results, path)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="netharness report", description=__doc__)
    ap.add_argument("results", help="a results.json")
    ap.add_argument("-o", "--output", default=None, help="the report's folder (default: beside results.json)")
    ap.add_argument("--baseline", default=None, help="another results.json to compare with")
    ap.add_argument("--screenshot", default=None, help="also take a PNG screenshot of the page (headless Chromium)")
    args = ap.parse_args(argv)
    prog = "netharness report"
    try:
        results = _load(args.results)
        baseline = _load(args.baseline) if args.baseline else None
        out = _output_dir(args.output or str(Path(args.results).parent))
    except (CliError, ResultsError) as e:
        return fail(prog, str(e))
    try:
        page = write_report(results, out, baseline, args.baseline)
    except OSError as e:
        return fail(prog, f"-o {out}: cannot write the report: {e.strerror or e}")
    except (KeyError, TypeError, ValueError) as e:  # a results file the checks above let through
        return fail(prog, f"{args.results}: malformed results ({type(e).__name__}: {e})")
    print(f"report: {page}")
    if args.screenshot:
        from .browser import BrowserError, screenshot

        try:
            print(f"screenshot: {screenshot(page, args.screenshot)}")
        except BrowserError as e:
            return fail(prog, str(e))
    return 0
