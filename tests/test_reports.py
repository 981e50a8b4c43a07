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
from reports.aggregate import build_model, headline
from reports.plots import BASELINE_PLOTS, PLOTS, time_label
from reports.render import main as report_main
from reports.render import write_report

from .sharedruns import MixedRun
from .test_gate import make_results

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("verdicts", "latency", "plots", "counters", "meta")


@pytest.fixture
def recorded(mixed_run: MixedRun) -> Path:
    """A real run: mixed.py (calm, then floods) with the project's thresholds, its results.json and report
    (the session's ``mixed_run``, tests/sharedruns.py: test_gate.py gates the same run)."""
    assert mixed_run.returncode in (0, 1), mixed_run.output[-3000:]
    report = mixed_run.results.parent / "report.html"
    assert f"netharness: report written to {report}" in mixed_run.output  # written at the end of every run
    return mixed_run.results


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


def test_report_in_a_real_headless_chromium(browser: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from reports.browser import dump_dom, screenshot

    # Asked for only once the browser is there: pytest sets module fixtures up before function ones, so a
    # machine without Chromium would otherwise run the module's Locust run just to skip.
    recorded: Path = request.getfixturevalue("recorded")
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
        ["report.html", *(f"{s}.png" for s in [*PLOTS, *BASELINE_PLOTS])])
    html = (tmp_path / "r" / "report.html").read_text()
    # The baseline section names its file and overlays the baseline on this run.
    section = html[html.index('<section id="baseline">'):html.index('<section id="plots">')]
    assert f'<span id="baseline-name">{base}</span>' in section
    assert section.count('src="data:image/png;base64,') == len(BASELINE_PLOTS)


@pytest.mark.parametrize(("require", "code", "outcome"), [("", 0, "1 skipped"), ("1", 1, "1 error")])
def test_browser_test_without_chromium_skips_unless_required(tmp_path: Path, require: str, code: int,
                                                              outcome: str) -> None:
    """A fresh machine has no Chromium: the browser test skips with one line naming the install command
    (before the module's Locust run starts), unless NETHARNESS_REQUIRE_BROWSER=1 (CI) makes it fail."""
    env = {**os.environ, "PATH": str(tmp_path), "NETHARNESS_REQUIRE_BROWSER": require}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-n", "0",
                        "tests/test_reports.py::test_report_in_a_real_headless_chromium"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == code, p.stdout[-2000:]
    assert outcome in p.stdout
    lines = [line for line in p.stdout.splitlines() if "apt-get install chromium" in line]
    assert len(lines) == 1 if code == 0 else len(lines) >= 1, p.stdout[-2000:]


def test_dropped_summed_by_tier_equals_dropped_summed_by_name(recorded: Path, tmp_path: Path) -> None:
    """One definition of dropped (envelopes dropped and requests refused, every reason, both sides)."""
    from harness.gate.thresholds import evaluate, parse_thresholds
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


@pytest.mark.parametrize(("us", "label"), [(1, "1us"), (500, "500us"), (1000, "1ms"), (2000, "2ms"),
                                           (1500, "1.5ms"), (250_000, "250ms"), (2e6, "2s"), (0.5, "0.5us")])
def test_one_time_unit_formatter(us: float, label: str) -> None:
    assert time_label(us) == label


def _tick_labels(png_axis: Any) -> list[str]:
    return [t.get_text() for t in png_axis.get_ticklabels(minor=False) + png_axis.get_ticklabels(minor=True)]


def test_latency_axes_use_time_units_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every labelled tick of a latency axis is "<n>us|ms|s" -- no "2x10^3" minor labels, even on a narrow
    range (where matplotlib would label minor ticks in scientific notation)."""
    import matplotlib.pyplot as plt

    from reports import plots

    seen: list[list[str]] = []
    real = plots._png

    def capture(fig: Any) -> bytes:
        fig.canvas.draw()
        for ax in fig.axes:
            if ax.get_yscale() == "log" and "latency" in ax.get_ylabel():
                seen.append([t for t in _tick_labels(ax.yaxis) if t])
            if ax.get_xscale() == "log" and ax.get_xlabel() == "latency":
                seen.append([t for t in _tick_labels(ax.xaxis) if t])
        return real(fig)

    monkeypatch.setattr(plots, "_png", capture)
    results = _with_series(make_results())  # the series' latencies span under one decade: the narrow case
    model = build_model(results)
    for stem in ("latency_histogram", "latency_over_time"):
        plots.PLOTS[stem][1](model)
    plt.close("all")
    labelled = [labels for labels in seen if labels]
    assert labelled, seen
    for labels in labelled:
        assert len(labels) >= 2, labels  # a narrow range still gets labels
        for text in labels:
            assert re.fullmatch(r"[0-9.]+(us|ms|s)", text), (text, labels)


def _with_series(results: dict[str, Any]) -> dict[str, Any]:
    """Five seconds of CRITICAL requests between 1 and 3 ms (a narrow latency range); the last one partial."""
    for t in range(5):
        h = Histogram()
        h.record_many([1000 + 20 * i for i in range(100)])
        results["series"].append({"t": t, "kind": "request", "qos": "CRITICAL", "count": 100 if t < 4 else 30,
                                  "failures": 0, "hdr": h.encode()})
    return results


def _with_server_series(results: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    tiers = {"queued_msgs": 0, "queued_bytes": 0, "sent": 0, "dropped": 0, "saturated_ticks": 0, "ticks": 20,
             "sojourn_p50_us": 0, "sojourn_p99_us": 0}
    server = copy.deepcopy(results["dispatcher"]["client"])
    server["series"] = [{"t": 100.0 + i, **{t: {**tiers, **r.get(t, {})} for t in ("CRITICAL", "HIGH", "NORMAL",
                                                                                 "BACKGROUND")}}
                        for i, r in enumerate(rows)]
    results["dispatcher"]["server"] = server
    return results


def test_sojourn_has_gaps_where_a_tier_sent_nothing() -> None:
    rows = [{"CRITICAL": {"sent": 5, "sojourn_p99_us": 300}}, {"CRITICAL": {"sent": 5, "sojourn_p99_us": 400},
                                                               "BACKGROUND": {"queued_msgs": 3}},
            {"CRITICAL": {"sent": 5, "sojourn_p99_us": 500},
             "BACKGROUND": {"sent": 2, "queued_msgs": 1, "sojourn_p99_us": 90_000}}]
    model = build_model(_with_server_series(make_results(), rows))
    assert model.queue["CRITICAL"][2] == [300.0, 400.0, 500.0]
    assert model.queue["BACKGROUND"][2] == [None, None, 90_000.0]  # not drawn at 1 us before it has data


def test_queue_axis_starts_at_zero_when_every_queue_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    from reports import plots

    limits: list[tuple[float, float]] = []
    real = plots._png

    def capture(fig: Any) -> bytes:
        limits.append(fig.axes[0].get_ylim())
        return real(fig)

    monkeypatch.setattr(plots, "_png", capture)
    rows = [{"CRITICAL": {"sent": 5, "sojourn_p99_us": 300}}] * 4
    plots.queues_over_time(build_model(_with_server_series(make_results(), rows)))
    lo, hi = limits[0]
    assert lo == 0 and hi >= 1  # not -0.04..0.04


def test_last_partial_second_is_left_out_of_throughput(monkeypatch: pytest.MonkeyPatch) -> None:
    from reports import plots

    xs: list[list[float]] = []
    real = plots._png

    def capture(fig: Any) -> bytes:
        xs.extend(list(line.get_xdata()) for line in fig.axes[0].get_lines() if line.get_linestyle() == "-")
        return real(fig)

    monkeypatch.setattr(plots, "_png", capture)
    results = _with_series(make_results())
    model = build_model(results)
    last = max(r["t"] for r in results["series"])
    assert model.partial_t == last
    plots.throughput_over_time(model)
    assert xs and all(last not in x for x in xs)


def test_headline_params_server_config_and_bytes(tmp_path: Path) -> None:
    results = make_results()
    results["meta"]["params"] = {"calm_s": 5.0, "scheduler_mode": "priority"}
    results["meta"]["server_config"] = {"entity_rate": 30.0, "scheduler": {"mode": "priority"}}
    results["dispatcher"]["client"].setdefault("peer", {})["bytes_out"] = 12_345_678
    html = write_report(results, tmp_path).read_text()
    model = build_model(results)
    assert model.headline.count(".") >= 1 and "\n" not in model.headline
    assert model.headline.startswith(("PASSED", "FAILED", "Not gated")) and "CRITICAL p99" in model.headline
    assert html.index('id="headline"') < html.index('<section id="verdicts">')  # at the top
    assert "{'calm_s'" not in html  # params as a table, not a Python dict
    assert "<td>calm_s</td><td>5</td>" in html and "<td>scheduler_mode</td><td>priority</td>" in html
    assert "<td>scheduler.mode</td><td>priority</td>" in html
    assert "12.3 MB (12,345,678 B)" in html
    assert '<div class="scroll"><table id="counters-client" class="wide">' in html


def test_headline_of_an_empty_or_gated_run() -> None:
    results = make_results()
    results["thresholds"] = {"verdicts": [{"passed": False, "metric": "m", "expression": "e", "shown": "1"},
                                          {"passed": True, "metric": "m", "expression": "e", "shown": "1"}]}
    model = build_model(results)
    assert headline(model, results).startswith("FAILED: 1 of 2 thresholds missed")
