"""A live "QoS" tab in Locust's web UI, the same figures as JSON at ``GET /netharness/qos``, and a page of them.

The tab uses Locust's documented extension points (``examples/extend_web_ui.py``): ``extended_tabs`` and
``extended_tables`` in ``web_ui.template_args`` declare it, and ``extended_stats`` added to the
``/stats/requests`` answer (which the UI polls every 2 s) fills it.  Per QoS tier:

* latency as the players measure it (the harness's histograms, microseconds): p50 and p99 over the run and
  p99 over the last few seconds; on a master, the workers' histograms merged;
* scheduling figures: saturation (share of scheduler ticks that ended with the tier's frames waiting, over
  the last few seconds), queue depth, sojourn and drops.  In the tab they are the server's when its
  dispatcher stats are available (the embedded server's stats file), else the players' own dispatchers'
  (what the players queue towards the server), else "n/a" (an external server); the page shows both;
* the scenario's current phase, CRITICAL p99 per phase (calm vs flood), and a link to the last report.

The figures come from ``harness.runner.qosview``.
``GET /netharness/`` is a plain server-rendered page of the same (it refreshes itself every 2 s).
"""

from __future__ import annotations

import html
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.runner.qosview import WINDOW_S, QosView, encode_tiers, players_tiers

if TYPE_CHECKING:
    from harness.runner.state import State

__all__ = ["TAB_KEY", "install", "page", "tab_rows"]

log = logging.getLogger("netharness")
TAB_KEY = "netharness-qos"
COLUMNS = (("tier", "Tier"), ("samples", "Samples"), ("p50", "p50 µs"), ("p99", "p99 µs"),
           ("p99_recent", f"p99 µs (last {WINDOW_S:.0f} s)"), ("saturation", "Saturation"),
           ("queue", "Queue depth"), ("sojourn_p50", "Sojourn p50 µs"), ("sojourn_p99", "Sojourn p99 µs"),
           ("drops", "Drops"), ("source", "Queues of"))


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


# -- presentation ---------------------------------------------------------------------------------------


def _phase_text(doc: dict[str, Any]) -> str:
    ph = doc["phase"]
    if ph is None:
        return "phase: not started" if doc["scenario"] else "phase: n/a (no scenario)"
    d = ph["duration_s"]
    of = f" of {d:g} s" if d is not None else ""
    return f"phase: {ph['name']} ({ph['elapsed_s']:.0f} s{of}, pass {ph['pass']})"


def _summary_text(s: dict[str, Any]) -> str:
    ratio = f" (x{s['ratio']:g})" if s["ratio"] is not None else ""
    return f"CRITICAL {s['kind']} p99, calm → flood: {_us(s['calm_p99_us'])} → {_us(s['flood_p99_us'])} µs{ratio}"


def tab_rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    """The QoS tab's rows: one per tier, then the phase, the calm-vs-flood lines and the report."""
    rows = []
    for name, t in doc["tiers"].items():
        rows.append({"tier": name, "samples": f"{t['count']:,}", "p50": _us(t["p50_us"]), "p99": _us(t["p99_us"]),
                     "p99_recent": _us(t["recent_p99_us"]), "saturation": _pct(t["saturation"]),
                     "queue": "-" if t["queue_depth"] is None else str(t["queue_depth"]),
                     "sojourn_p50": _us(t["sojourn_p50_us"]), "sojourn_p99": _us(t["sojourn_p99_us"]),
                     "drops": "-" if t["drops"] is None else f"{t['drops']:,}", "source": t["source"] or "n/a"})
    notes = [_phase_text(doc)] + [_summary_text(s) for s in doc["calm_vs_flood"]]
    notes.append(f"server stats: {doc['server_stats']}; full view: /netharness/ ; JSON: /netharness/qos")
    if doc["report"]:
        notes.append(f"last report: {doc['report']}")
    rows += [{"tier": n} for n in notes]
    return rows


_CSS = ("body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}"
        "th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}th{background:#f3f3f3}"
        "td:first-child,th:first-child{text-align:left}.grp{border-left:2px solid #bbb;text-align:center}"
        "td:nth-child(7),td:nth-child(12){border-left:2px solid #bbb}.na{color:#999}"
        "h1{font-size:20px}h2{font-size:16px}")


def page(doc: dict[str, Any]) -> str:
    """The standalone page (server-rendered; refreshes itself)."""
    e = html.escape

    def cell(v: Any, fmt: Any = _us) -> str:
        return '<td class="na">n/a</td>' if v is None else f"<td>{e(fmt(v))}</td>"

    sched = ("saturation", "queue", "sojourn p50 µs", "sojourn p99 µs", "drops")
    head = ('<tr><th colspan="6">latency, as the players measure it</th>'
            '<th colspan="5" class="grp">server queues (server → players)</th>'
            '<th colspan="5" class="grp">players\' queues (players → server)</th></tr>'
            "<tr><th>Tier</th><th>Samples</th><th>Failures</th><th>p50 µs</th><th>p99 µs</th>"
            f"<th>p99 µs, last {WINDOW_S:.0f} s</th>" + "".join(f"<th>{c}</th>" for c in sched * 2) + "</tr>")
    body = []
    for name, t in doc["tiers"].items():
        cells = [f"<td>{e(name)}</td>", f"<td>{t['count']:,}</td>", f"<td>{t['failures']:,}</td>",
                 cell(t["p50_us"]), cell(t["p99_us"]), cell(t["recent_p99_us"])]
        for who in ("server", "players"):
            s = t[who] or {}
            cells += [cell(s.get("saturation"), _pct), cell(s.get("queue_depth"), str), cell(s.get("sojourn_p50_us")),
                      cell(s.get("sojourn_p99_us")), cell(s.get("drops"), lambda v: f"{v:,}")]
        body.append(f'<tr data-tier="{e(name)}">{"".join(cells)}</tr>')
    kinds = "".join(f"<tr><td>{e(name)} {e(k)}</td><td>{v['count']:,}</td>{cell(v['p50_us'])}{cell(v['p99_us'])}</tr>"
                    for name, t in doc["tiers"].items() for k, v in sorted(t["kinds"].items()))
    phases = "".join(f"<tr><td>{e(r['phase'])}</td><td>{e(r['kind'])}</td><td>{r['count']:,}</td>"
                     f"{cell(r['p50_us'])}{cell(r['p99_us'])}</tr>" for r in doc["phases"])
    summary = ("".join(f"<li>{e(_summary_text(s))}</li>" for s in doc["calm_vs_flood"])
               or "<li>no calm and flood data yet</li>")
    report = ('<a href="/netharness/report/">the last report</a>' if doc["report"]
              else "no report yet (written when a run ends)")
    return f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>netharness QoS</title><style>{_CSS}</style></head><body>
<h1>netharness QoS — {e(doc["scenario"] or "no scenario")}, {e(str(doc["state"] or "no runner"))},
{doc["users"] or 0} users</h1>
<p id="phase">{e(_phase_text(doc))}. Server stats: {e(doc["server_stats"])}; players' stats: {e(doc["players_stats"])}.
<a href="/netharness/qos">JSON</a> · {report} · <a href="/">Locust</a></p>
<table id="tiers">{head}{"".join(body)}</table>
<h2>Calm vs flood</h2><ul id="calm-vs-flood">{summary}</ul>
<h2>CRITICAL per phase</h2><table id="phases"><tr><th>Phase</th><th>Kind</th><th>Samples</th><th>p50 µs</th>
<th>p99 µs</th></tr>{phases}</table>
<h2>Per tier and kind</h2><table id="kinds"><tr><th>Tier, kind</th><th>Samples</th><th>p50 µs</th><th>p99 µs</th></tr>
{kinds}</table></body></html>"""


# -- wiring ---------------------------------------------------------------------------------------------


def install(environment: Environment, st: State) -> QosView | None:
    """Add the tab and the routes to this process's web UI (master or local runner) and, on a worker, ship
    its players' live scheduling figures to the master with each stats report.  Idempotent."""
    view: QosView | None = getattr(environment, "_netharness_qos", None)
    if view is not None:
        return view
    view = QosView(environment, st)
    environment._netharness_qos = view  # type: ignore[attr-defined]
    if isinstance(environment.runner, WorkerRunner):
        def ship(client_id: str, data: dict[str, Any]) -> None:
            tiers = players_tiers(environment.runner)
            data["netharness_qos"] = None if tiers is None else encode_tiers(tiers)

        environment.events.report_to_master.add_listener(ship)
        return view
    if isinstance(environment.runner, MasterRunner):
        def received(client_id: str, data: dict[str, Any]) -> None:
            if "netharness_qos" in data:
                tiers = data["netharness_qos"]
                if tiers is None:
                    view.workers.pop(client_id, None)
                else:
                    view.workers[client_id] = (time.monotonic(), tiers)

        environment.events.worker_report.add_listener(received)
    if environment.web_ui is not None:
        _routes(environment, view)
    return view


def _routes(environment: Environment, view: QosView) -> None:
    from flask import Response, request, send_from_directory

    web = environment.web_ui
    assert web is not None
    app, auth = web.app, web.auth_required_if_enabled
    web.template_args["extended_tabs"] = [{"title": "QoS", "key": TAB_KEY}]
    web.template_args["extended_tables"] = [{"key": TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}]
    web.template_args["extended_csv_files"] = [
        {"href": "/netharness/qos", "title": "netharness QoS figures (JSON)"},
        {"href": "/netharness/", "title": "netharness QoS page"},
        {"href": "/netharness/report/", "title": "netharness report of the last run"}]

    @app.route("/netharness/qos")
    @auth
    def qos_json() -> Response:
        return Response(json.dumps(view.snapshot()), mimetype="application/json")  # tiers in QoS order

    @app.route("/netharness/")
    @auth
    def qos_page() -> Response:
        return Response(page(view.snapshot()), mimetype="text/html")

    @app.route("/netharness/runs")
    @auth
    def runs() -> Response:  # every finished swarm's results and report paths
        return Response(json.dumps(view.st.runs), mimetype="application/json")

    @app.route("/netharness/report", defaults={"name": "report.html"})
    @app.route("/netharness/report/", defaults={"name": "report.html"})
    @app.route("/netharness/report/<path:name>")
    @auth
    def report(name: str) -> Response:
        path = view.report_path()
        if path is None:
            return Response("no swarm has finished yet: its report is written when it stops\n", 404,
                            mimetype="text/plain")
        return send_from_directory(path.parent, path.name if name == "report.html" else name)

    @app.after_request
    def extend_stats(response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        data = response.get_json(silent=True)
        if not isinstance(data, dict):
            return response
        try:
            rows = tab_rows(view.snapshot())
        except Exception:  # the QoS tab must never break Locust's own stats polling
            log.exception("netharness: the QoS tab could not compute its figures")
            return response
        response.set_data(json.dumps({**data, "extended_stats": [{"key": TAB_KEY, "data": rows}]}))
        return response
