"""Reports from a recorded results.json: every PNG, every section, self-containment, a real browser."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image as mpimg

from dispatcher.histogram import Histogram
from reports.aggregate import build_model
from reports.plots import PLOTS
from reports.render import main as report_main
from reports.render import write_report

from .test_gate import make_results

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("verdicts", "latency", "plots", "counters", "meta")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: mixed.py (calm, then floods) with the project's thresholds, its results.json and report."""
    d = tmp_path_factory.mktemp("recorded")
    p = subprocess.run([sys.executable, "-m", "locust", "-f", "scenarios/mixed.py", "--headless", "-u", "10", "-r",
                        "10", "-t", "8s", "--only-summary", "--param", "calm_s=3", "--param", "flood_s=5",
                        "--thresholds", "scenarios/thresholds.toml", "--results", str(d / "results.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    assert f"netharness: report written to {d / 'report.html'}" in p.stdout  # written at the end of every run
    return d / "results.json"


def test_report_from_a_recorded_run(recorded: Path, tmp_path: Path) -> None:
    results = json.loads(recorded.read_text())
    page = write_report(results, tmp_path)
    for stem in PLOTS:
        png = tmp_path / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        img = mpimg.imread(png)
        assert img.shape[0] >= 250 and img.shape[1] >= 600, (stem, img.shape)
        assert float(np.std(img[..., :3])) > 0.02, f"{stem} looks blank"
    html = page.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert html.count('src="data:image/png;base64,') == len(PLOTS)
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)
    assert not re.search(r"<(script|link|iframe)\b|@import|url\(", html, re.I)
    assert "http://" not in html and "https://" not in html
    # The verdicts table comes first, failures first, and the per-name table has the recorded names.
    assert html.index('id="verdict-table"') < html.index('id="latency-table"')
    assert "Intent.Skills.Use" in html and "Intent.Stats.RequestSnapshot" in html
    assert "calm" in html and "flood" in html  # the per-phase table


def test_report_in_a_real_headless_chromium(browser: str, recorded: Path, tmp_path: Path) -> None:
    from reports.browser import dump_dom, screenshot

    page = write_report(json.loads(recorded.read_text()), tmp_path)
    shot = screenshot(page, tmp_path / "shot.png", width=1200, height=1600)
    img = mpimg.imread(shot)
    assert img.shape[:2] == (1600, 1200)
    non_white = float(np.mean(np.any(img[..., :3] < 0.9, axis=-1)))
    assert non_white > 0.05, f"the screenshot is almost blank ({non_white:.1%} non-white)"
    dom = dump_dom(page)
    assert 'id="verdict-table"' in dom and ("<td>pass</td>" in dom or "<td>FAIL</td>" in dom)
    assert dom.count("<img") == len(PLOTS)


def test_empty_run_still_renders_and_says_so(tmp_path: Path) -> None:
    results = make_results()
    for e in results["entries"]:
        e["count"] = e["failures"] = 0
        e["latency_us"] = Histogram().to_dict()
    results["phases"] = []
    results["dispatcher"] = {"client": None, "server": None}
    page = write_report(results, tmp_path)
    html = page.read_text()
    assert 'id="empty"' in html and "recorded no samples" in html
    assert all((tmp_path / f"{stem}.png").stat().st_size > 1000 for stem in PLOTS)


def test_baseline_highlights_regressions(tmp_path: Path) -> None:
    now, base = make_results(), make_results()
    faster = Histogram()
    faster.record_many(list(range(500, 50_500, 50)))  # the baseline was twice as fast
    base["entries"][0]["latency_us"] = faster.to_dict()
    model = build_model(now, base)
    assert model.regressions == 1 and model.baseline is not None
    row = model.baseline[0]
    assert row[2] == "Intent.Skills.Use" and row[-1] is True and row[5].startswith("+")
    page = write_report(now, tmp_path, base)
    assert 'id="baseline-table"' in page.read_text() and 'class="regressed"' in page.read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [("{\"format\": \"netharness-results\", \"version\": 1, \"meta\": {", "truncated"),
     ("[1, 2]", "not a netharness results file"),
     ('{"format": "netharness-results", "version": 2}', "results version 2 is not supported")],
)
def test_report_command_rejects_bad_results(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                            message: str) -> None:
    res = tmp_path / "results.json"
    res.write_text(content)
    assert report_main([str(res), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"netharness report: error: {res}:") and message in err[0]


def test_report_command_writes_html_and_pngs(recorded: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    other: dict[str, Any] = copy.deepcopy(json.loads(recorded.read_text()))
    base = tmp_path / "base.json"
    base.write_text(json.dumps(other))
    assert report_main([str(recorded), "-o", str(tmp_path / "r"), "--baseline", str(base)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'r' / 'report.html'}"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(
        ["report.html", *(f"{s}.png" for s in PLOTS)])


@pytest.mark.parametrize(("require", "code", "outcome"), [("", 0, "1 skipped"), ("1", 1, "1 error")])
def test_browser_test_without_chromium_skips_unless_required(tmp_path: Path, require: str, code: int,
                                                              outcome: str) -> None:
    """A fresh machine has no Chromium: the browser test skips with one line naming the install command
    (before the module's Locust run starts), unless NETHARNESS_REQUIRE_BROWSER=1 (CI) makes it fail."""
    env = {**os.environ, "PATH": str(tmp_path), "NETHARNESS_REQUIRE_BROWSER": require}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                        "tests/test_reports.py::test_report_in_a_real_headless_chromium"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == code, p.stdout[-2000:]
    assert outcome in p.stdout
    lines = [line for line in p.stdout.splitlines() if "apt-get install chromium" in line]
    assert len(lines) == 1 if code == 0 else len(lines) >= 1, p.stdout[-2000:]


def test_dropped_summed_by_tier_equals_dropped_summed_by_name(recorded: Path, tmp_path: Path) -> None:
    """One definition of dropped (envelopes dropped and requests refused, every reason, both sides)."""
    from harness.thresholds import evaluate, parse_thresholds
    from reports.aggregate import TIERS, dropped_by

    results = json.loads(recorded.read_text())
    by_tier, by_name = dropped_by(results, "qos"), dropped_by(results, "name")
    assert sum(by_tier.values()) == sum(by_name.values()) > 0  # mixed.py floods: snapshots are refused/dropped
    tier_of = {row["name"]: row["qos"] for row in results["dropped"]}
    for tier in TIERS:
        assert by_tier.get(tier, 0) == sum(n for name, n in by_name.items() if tier_of[name] == tier)
    # The gate sums the same table either way.
    table = {"thresholds": {f"dropped{{qos:{t}}}": ["count >= 0"] for t in TIERS}
             | {f"dropped{{name:{n}}}": ["count >= 0"] for n in by_name}}
    measured = {v.threshold.key: v.measured for v in evaluate(parse_thresholds(table), results)}
    assert sum(measured[f"dropped{{qos:{t}}}"] or 0 for t in TIERS) == sum(measured[f"dropped{{name:{n}}}"] or 0
                                                                           for n in by_name)
    # The report's tables and its saturation chart show the same figures.
    model = build_model(results)
    assert dict(model.dropped_tiers) == by_tier and dict(model.dropped_names) == by_name
    assert {t: v[2] for t, v in model.saturation.items() if v[2]} == by_tier
    html = write_report(results, tmp_path).read_text()
    assert f"<td>total</td><td>{sum(by_tier.values())}</td>" in html
