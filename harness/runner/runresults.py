"""``results.json`` from a Locust run: the Locust side of the results contract (``harness.results``).

``build_results`` reads what one Locust process holds (its ``Environment``, the harness ``State``) and
returns the versioned document that ``harness.results`` defines, writes and reads.
"""

from __future__ import annotations

import platform
import sys
import time
from typing import TYPE_CHECKING, Any

from dispatcher.histogram import Histogram
from harness.results import FORMAT, VERSION, clock_meta, dropped_rows, git_commit, iso_time, phase_summary

if TYPE_CHECKING:
    from locust.env import Environment

    from harness.runner.state import State

__all__ = ["build_results"]


def build_results(environment: Environment, st: State, client_stats: dict[str, Any] | None, *,
                  partial: bool = False) -> dict[str, Any]:
    """The run's ``results.json`` document.  ``partial``: built mid-run for the ``abort_on_fail`` checks (the
    same shape with the figures so far; no git call)."""
    import locust

    opts = environment.parsed_options
    rec = st.recorder
    rec.fold()
    end = time.time()
    start = st.started_at
    entries = []
    for (kind, qos, name), e in sorted(rec.entries.items()):
        entries.append({"kind": kind, "qos": qos, "name": name, "sent": e.sent, "count": e.count,
                        "failures": e.failures, "lost": e.lost, "clock_skew": e.clock_skew, "bytes": e.bytes,
                        "behind": e.behind, "latency_us": e.hist.to_dict()})
    series = []
    for sec, slots in sorted(rec.series.items()):
        for skey, (count, failures, h) in sorted(slots.items()):
            kind, qos = skey.split("|", 1)
            h = Histogram.decode(h) if isinstance(h, str) else h
            p50, p99 = h.percentiles([50, 99])
            series.append({"t": sec - int(start), "kind": kind, "qos": qos, "count": count, "failures": failures,
                           "p50_us": p50, "p99_us": p99, "max_us": h.max, "hdr": h.encode()})
    scenario = st.scenario
    server_cfg = st.server_config if st.server_config is not None else \
        scenario.server(st.params) if scenario is not None and scenario.server else {}
    workers = len(st.worker_reconnects)
    return {
        "format": FORMAT,
        "version": VERSION,
        "meta": {
            "scenario": scenario.name if scenario is not None else None,
            "params": st.params,
            "phases": scenario.boundaries(st.params) if scenario is not None else [],
            "cycle_s": scenario.cycle(st.params) if scenario is not None else None,
            "users": getattr(opts, "num_users", None),
            "spawn_rate": getattr(opts, "spawn_rate", None),
            "run_time_s": getattr(opts, "run_time", None),
            "start_time": iso_time(start),
            "end_time": iso_time(end),
            "duration_s": round(end - start, 3),
            "git_commit": None if partial else git_commit(),
            "target": st.target_url or environment.host,
            "embedded_server": st.server is not None,
            "hostname": platform.node(),
            "workers": workers,
            "locust": locust.__version__,
            "python": sys.version.split()[0],
            "timeline_origin_s": round((st.t0_wall or start) - int(start), 3),  # phase 0 starts, on the series' t
            "server_config": server_cfg,
            "scheduler": server_cfg.get("scheduler") or "default (priority, 50000 B/s, 60 Hz)",
            "clock": clock_meta(st.clocks),
        },
        "schedule": {
            "scenario": scenario.name if scenario is not None else None,
            "tolerance_s": scenario.behind_after if scenario is not None else None,
            "scheduled": rec.scheduled,
            "behind": sum(e.behind for e in rec.entries.values()),
            "lateness_us": rec.lateness.to_dict(),
        },
        "entries": entries,
        "series": series,
        "phases": phase_summary(series, scenario, st.params, (st.t0_wall or start) - int(start), end - int(start)),
        "dispatcher": {"client": client_stats, "server": st.server_stats},
        "dropped": dropped_rows({"client": client_stats, "server": st.server_stats},
                                lambda n: st.registry.channel_of(n).qos.name),
        "connections": {"reconnects": st.reconnects,
                        "resumes": ((client_stats or {}).get("peer") or {}).get("resumes", 0),
                        "disconnects": ((client_stats or {}).get("peer") or {}).get("disconnects", 0),
                        "connect_failures": st.connect_failures},
        "thresholds": None,
    }
