"""The web UI's QoS tab: a real ``locust`` in web-UI mode (bounded, killed by PID), its HTTP API, headless
Chromium; and the figures behind it (``harness.runner.qosview``) from real recorders and dispatcher stats."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from locust.env import Environment

from dispatcher.stats import Stats
from harness.runner import qosview
from harness.runner.library import MIXED
from harness.runner.qosview import TIERS, QosView, _Window, encode_tiers, players_tiers
from harness.runner.state import State
from harness.runner.webui import page, tab_rows

ROOT = Path(__file__).resolve().parents[1]
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _qos(base: str) -> dict[str, Any]:
    status, body = _get(f"{base}/netharness/qos")
    assert status == 200, body[:500]
    doc: dict[str, Any] = json.loads(body)
    return doc


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``locust -f scenarios/mixed.py`` in web-UI mode (short phases), a swarm started through its HTTP API,
    and two reads of /netharness/qos 2.5 s apart.  The process is bounded (``timeout``) and killed by PID."""
    out = tmp_path_factory.mktemp("webui")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with (out / "locust.log").open("w+b") as log:
        proc = subprocess.Popen(["timeout", "120", sys.executable, "-m", "locust", "-f", "scenarios/mixed.py",
                                 "--web-host", "127.0.0.1", "--web-port", str(port), "--param", "calm_s=3,flood_s=4",
                                 "--results", str(out / "results.json"), "--report-dir", str(out / "report")],
                                cwd=ROOT, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if _get(f"{base}/", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"locust's web UI did not come up: {log.read().decode()[-2000:]}")
                time.sleep(0.3)
            assert _get(f"{base}/netharness/report/")[0] == 404  # no report before a run has ended
            form = urllib.parse.urlencode({"user_count": 10, "spawn_rate": 10}).encode()
            with urllib.request.urlopen(urllib.request.Request(f"{base}/swarm", data=form), timeout=10) as r:
                assert json.loads(r.read())["success"] is True
            time.sleep(4.0)
            first = _qos(base)
            time.sleep(2.5)
            second = _qos(base)
            yield base, first, second
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_qos_json_has_per_tier_numbers_that_change(swarm: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
    _, first, second = swarm
    assert first["scenario"] == "mixed" and first["state"] == "running" and first["users"] == 10
    assert list(first["tiers"]) == list(TIERS)
    for doc in (first, second):
        for t in doc["tiers"].values():
            assert {"p50_us", "p99_us", "saturation", "queue_depth", "sojourn_p50_us", "sojourn_p99_us",
                    "drops"} <= set(t)
    crit1, crit2 = first["tiers"]["CRITICAL"], second["tiers"]["CRITICAL"]
    assert crit1["count"] > 0 and 0 < crit1["p50_us"] <= crit1["p99_us"]
    assert crit2["count"] > crit1["count"]  # live: the numbers moved between the two reads
    assert second["phase"]["name"] in ("calm", "flood") and second["time"] > first["time"]
    # the embedded server's queues (its stats file is rewritten each second), else the players' own
    assert crit2["source"] in ("server", "players") and crit2["saturation"] is not None
    assert crit2["queue_depth"] is not None and crit2["drops"] is not None


def _chromium() -> str:
    from reports.browser import BrowserError, chromium

    try:
        return chromium()
    except BrowserError:
        if os.environ.get("NETHARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium on PATH and NETHARNESS_REQUIRE_BROWSER=1: apt-get install chromium")
        pytest.skip("no chromium on PATH: apt-get install chromium")


def _browser(url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory(prefix="netharness-chromium-") as profile:
        p = subprocess.run([_chromium(), *BROWSER_FLAGS, f"--user-data-dir={profile}", *extra, url],
                           capture_output=True, text=True, timeout=90, check=False)
    assert p.returncode == 0, p.stderr[-1000:]
    return p.stdout


def test_qos_tab_renders_in_headless_chromium(swarm: tuple[str, dict[str, Any], dict[str, Any]],
                                              tmp_path: Path) -> None:
    base, _, _ = swarm
    url = f"{base}/?tab=netharness-qos"
    dom = _browser(url, "--virtual-time-budget=6000", "--dump-dom")  # the UI polls /stats/requests every 2 s
    for title in ("QoS", "Saturation", "Queue depth", "Sojourn p99 µs"):
        assert f">{title}<" in dom, title
    for tier in TIERS:
        assert f">{tier}</td>" in dom, tier
    assert "phase: calm" in dom or "phase: flood" in dom
    shot = tmp_path / "qos-tab.png"
    _browser(url, "--virtual-time-budget=6000", "--window-size=1400,900", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
    if os.environ.get("NETHARNESS_KEEP_SCREENSHOT"):  # to look at it
        Path(os.environ["NETHARNESS_KEEP_SCREENSHOT"]).write_bytes(shot.read_bytes())


def test_qos_page_renders_in_headless_chromium(swarm: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
    base, _, _ = swarm
    dom = _browser(f"{base}/netharness/", "--dump-dom")
    for tier in TIERS:
        assert f'<tr data-tier="{tier}">' in dom, tier
    assert 'id="calm-vs-flood"' in dom and 'href="/netharness/qos"' in dom


# -- the figures, from real recorders and dispatcher stats -----------------------------------------------


def _view(t0: float, server: Any = None) -> QosView:
    env = Environment()
    st = State()
    st.scenario, st.params, st.t0_wall, st.server = MIXED, MIXED.with_params({}), t0, server
    return QosView(env, st)


@pytest.mark.parametrize(("offset", "phase", "elapsed", "npass"), [
    (-1.0, None, None, None),
    (0.0, "calm", 0.0, 1),
    (4.5, "calm", 4.5, 1),
    (5.0, "flood", 0.0, 1),
    (14.9, "flood", 9.9, 1),
    (15.5, "calm", 0.5, 2),
])
def test_phase_at(offset: float, phase: str | None, elapsed: float | None, npass: int | None) -> None:
    t0 = 1_000_000.0
    got = _view(t0)._phase_at(t0 + offset)
    if phase is None:
        assert got is None
    else:
        assert got is not None
        assert (got[0], got[3]) == (phase, npass) and got[1] == pytest.approx(elapsed)


def test_calm_vs_flood_and_tiers_from_a_recorder() -> None:
    t0 = float(int(time.time()) - 30)
    view = _view(t0)
    rec = view.st.recorder
    calm, flood = rec.entry("request", "CRITICAL", "Intent.Skills.Use"), rec.entry("request", "BACKGROUND", "X")
    for i in range(100):
        calm.record(0.002, now=t0 + 1 + i % 3)  # calm: 2 ms
        calm.record(0.008, now=t0 + 6 + i % 3)  # flood: 8 ms
        flood.record(1.5, now=t0 + 7)
    doc = view.snapshot()
    assert doc["calm_vs_flood"] == [{"kind": "request", "calm_p99_us": pytest.approx(2000, rel=0.01),
                                     "flood_p99_us": pytest.approx(8000, rel=0.01), "ratio": 4.0}]
    assert [(r["phase"], r["count"]) for r in doc["phases"]] == [("calm", 100), ("flood", 100)]
    crit = doc["tiers"]["CRITICAL"]
    assert crit["count"] == 200 and crit["p50_us"] == pytest.approx(2000, rel=0.01)
    assert crit["p99_us"] == pytest.approx(8000, rel=0.01) and crit["kinds"]["request"]["count"] == 200
    assert doc["tiers"]["BACKGROUND"]["p99_us"] == pytest.approx(1_500_000, rel=0.01)
    assert doc["tiers"]["HIGH"]["p50_us"] is None and doc["tiers"]["HIGH"]["count"] == 0
    assert doc["server_stats"] == "n/a" and doc["tiers"]["CRITICAL"]["source"] is None  # no dispatcher here
    assert doc["tiers"]["CRITICAL"]["saturation"] is None
    json.dumps(doc, allow_nan=False)  # strict JSON: a browser can parse it
    rows = tab_rows(doc)
    assert [r["tier"] for r in rows[:4]] == list(TIERS)
    assert rows[0]["p99"] == f"{crit['p99_us']:,}" and rows[1]["saturation"] == "-"
    assert any("calm → flood" in r["tier"] and "x4" in r["tier"] for r in rows[4:])
    assert '<tr data-tier="BACKGROUND">' in page(doc)


def _server_stats(tmp_path: Path) -> Path:
    """A real dispatcher ``Stats`` snapshot with tier figures, as the server writes to --stats-out."""
    s = Stats()
    s.depth(3, 7, 7000)  # BACKGROUND: 7 frames queued
    for i in range(10):
        s.saturation(3, i < 8, i + 1)  # saturated on 8 of 10 ticks
        s.saturation(0, False, 0)
    for _ in range(5):  # five CRITICAL frames that waited 0.4 ms each
        s.sojourn_tallies()[0].add(0.0004)
    s.sent([100, 0, 0, 0], [5, 0, 0, 0])
    s.dropped(3, "Event.Stats.Updated", "queue_full")
    path = tmp_path / "server-stats.json"
    path.write_text(json.dumps(s.snapshot()))
    return path


def test_server_figures_from_its_final_stats_file(tmp_path: Path) -> None:
    view = _view(time.time(), server=SimpleNamespace(stats_path=_server_stats(tmp_path)))
    doc = view.snapshot()
    assert doc["server_stats"] == "final"
    bg, crit = doc["tiers"]["BACKGROUND"], doc["tiers"]["CRITICAL"]
    assert (bg["source"], bg["saturation"], bg["queue_depth"], bg["drops"]) == ("server", 0.8, 7, 1)
    assert crit["saturation"] == 0.0 and crit["sojourn_p50_us"] == pytest.approx(400, rel=0.01)
    assert "80.0%" in page(doc)


@pytest.mark.parametrize(("points", "want"), [
    ([(0.0, 0, 0)], None),  # no tick yet
    ([(0.0, 10, 5)], 0.5),  # one read: cumulative
    ([(0.0, 10, 5), (1.0, 20, 15)], 1.0),  # then over the window: 10 of the 10 new ticks saturated
    ([(0.0, 10, 10), (6.0, 20, 10), (12.0, 30, 10)], 0.0),  # old points leave the window
    ([(0.0, 100, 50), (1.0, 10, 10)], 1.0),  # fewer connections (counters went down): start over
])
def test_saturation_window(points: list[tuple[float, int, int]], want: float | None) -> None:
    w, got = _Window(), None
    for now, ticks, sat in points:
        got = w.saturation("k", ticks, sat, now)
    assert got == (pytest.approx(want) if want is not None else None)


def test_players_tiers_shipped_by_workers_merge_on_the_master() -> None:
    """What a worker ships (its live players' dispatchers, encoded) adds up on the master."""
    from dispatcher.histogram import Histogram

    tiers = {t: {"queued_msgs": i, "dropped": 1, "sent": 2, "ticks": 10, "saturated_ticks": i,
                 "sojourn": Histogram()} for i, t in enumerate(TIERS)}
    tiers["CRITICAL"]["sojourn"].record(300)
    shipped = json.loads(json.dumps(encode_tiers(tiers)))
    view = _view(time.time())
    view.workers = {"w1": (time.monotonic(), shipped), "w2": (time.monotonic(), shipped),
                    "gone": (time.monotonic() - 60, shipped)}  # a worker silent for a minute is not counted
    assert players_tiers(SimpleNamespace()) is None  # a process with no players
    players = view.shipped(time.monotonic())
    assert players is not None
    assert players["BACKGROUND"]["queued_msgs"] == 6 and players["BACKGROUND"]["saturated_ticks"] == 6
    assert players["CRITICAL"]["sojourn"].count == 2


def test_routes_and_the_tab_in_locusts_flask_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Locust's own web UI app (not started: its Flask test client calls it in-process)."""
    from harness.runner.webui import TAB_KEY, install

    monkeypatch.setattr(sys, "argv", ["locust"])  # the web UI reads its extra options from the command line
    monkeypatch.setattr(qosview, "CACHE_S", 0.0)  # each call computes afresh
    env = Environment(user_classes=[], events=None)
    env.create_local_runner()
    web = env.create_web_ui("127.0.0.1", 0, delayed_start=True)
    view = install(env, _view(time.time()).st)
    assert install(env, view.st) is view  # idempotent
    assert web.template_args["extended_tabs"] == [{"title": "QoS", "key": TAB_KEY}]
    app = web.app.test_client()
    stats = app.get("/stats/requests").get_json()
    assert stats["extended_stats"][0]["key"] == TAB_KEY
    assert [r["tier"] for r in stats["extended_stats"][0]["data"][:4]] == list(TIERS)
    assert app.get("/netharness/report/").status_code == 404
    view.st.results_path = tmp_path / "results.json"
    (tmp_path / "report.html").write_text("<h1>the report</h1>")
    (tmp_path / "latency.png").write_bytes(b"png")
    assert app.get("/netharness/qos").get_json()["report"] == "/netharness/report/"
    assert b"the report" in app.get("/netharness/report/").data
    assert app.get("/netharness/report/latency.png").data == b"png"
    assert app.get("/netharness/report/../results.json").status_code == 404  # nothing outside the report's folder
    assert b'href="/netharness/report/"' in app.get("/netharness/").data


def test_server_figures_live_from_a_running_server(tmp_path: Path) -> None:
    """``netharness serve --stats-out F`` rewrites F.live each second while it runs; F on exit, F.live gone."""
    stats = tmp_path / "server-stats.json"
    live = tmp_path / "server-stats.json.live"
    srv = subprocess.Popen(["timeout", "60", sys.executable, "-m", "harness", "serve", "--port", "0", "--quiet",
                            "--stats-out", str(stats)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env={**os.environ, "NETHARNESS_SECRET": "s" * 64})
    try:
        deadline = time.monotonic() + 30
        while not live.exists() and srv.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        view = _view(time.time(), server=SimpleNamespace(stats_path=stats))
        doc = view.snapshot()
        assert doc["server_stats"] == "live", srv.stderr.read().decode()[-1000:] if srv.poll() is not None else ""
        assert all(t["source"] == "server" and t["queue_depth"] == 0 for t in doc["tiers"].values())
    finally:
        srv.terminate()
        srv.wait(30)
    assert srv.returncode == 0 and stats.exists() and not live.exists()
    view = _view(time.time(), server=SimpleNamespace(stats_path=stats))
    assert view.snapshot()["server_stats"] == "final"
