"""The web UI's view of the harness: where each swarm's report is.

``/netharness/report`` serves the last swarm's report page; ``/netharness/runs`` lists every swarm's results
and report paths (JSON).  Each report path is also logged (Locust's "Logs" tab shows it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from locust.env import Environment

    from .plugin import State

__all__ = ["add_routes"]


def add_routes(environment: Environment, st: State) -> None:
    web_ui = environment.web_ui
    if web_ui is None:
        return
    from flask import Response, jsonify

    def report() -> Any:
        if st.last_report is None or not Path(st.last_report).exists():
            return Response("no swarm has finished yet: its report is written when it stops\n", status=404,
                            mimetype="text/plain")
        return Response(Path(st.last_report).read_text(), mimetype="text/html")

    def listing() -> Any:
        return jsonify(st.runs)

    app = web_ui.app
    assert app is not None
    app.add_url_rule("/netharness/report", "netharness_report", web_ui.auth_required_if_enabled(report))  # type: ignore[no-untyped-call]
    app.add_url_rule("/netharness/runs", "netharness_runs", web_ui.auth_required_if_enabled(listing))  # type: ignore[no-untyped-call]
