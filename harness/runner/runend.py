"""The end of a run (or of a web-UI swarm): the workers' last reports, then results.json, latency.csv, the
verdicts, the report; and the raw sample logs of ``--sample-log``."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher.stats import merge_snapshots
from harness.gate.gatecmd import apply, verdict_table
from harness.results import format_table, swarm_path, write_latency_csv, write_results
from harness.runner.runresults import build_results
from harness.runner.state import merge_clocks

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.runners import MasterRunner

    from harness.runner.state import State

__all__ = ["await_final_reports", "finish_or_fail", "merge_clocks", "write_samples"]

log = logging.getLogger("netharness")


def await_final_reports(runner: MasterRunner, st: State, timeout: float = 20.0) -> None:
    """Every worker's last report (sent when its users have stopped) before the master writes results.

    Quitting, Locust's master tells the workers to quit and waits a fixed 0.5 s for their final stats; a worker
    whose users take longer to stop (a busy machine, requests still in flight) would be cut short.  So the
    master asks still-running workers to stop first, and waits for each one's final report."""
    import gevent
    from locust.rpc import Message

    ids = [c.id for c in runner.clients.all]
    if runner.user_count > 0:
        for client_id in ids:
            if client_id not in st.final_from:
                runner.server.send_to_client(Message("stop", None, client_id))
    deadline = time.monotonic() + timeout
    while not st.final_from.issuperset(ids) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if not st.final_from.issuperset(ids):
        log.warning("netharness: no final report from %d worker(s) within %gs; their last seconds are missing",
                    len(set(ids) - st.final_from), timeout)


def finish_or_fail(environment: Environment, st: State, swarm: str | None) -> None:
    """An exception in a quitting listener is only logged by Locust, which then takes its exit code from the
    failures (a mixed.py run's refused snapshots: exit 1 although every threshold held).  So the end of the
    run never raises: a harness error is one line on stderr and exit code 1."""
    try:
        _finish(environment, st, swarm)
    except Exception as e:
        log.exception("netharness: the results could not be written")
        print(f"netharness: error: the results could not be written: {e!r}", file=sys.stderr, flush=True)
        environment.process_exit_code = 1


def _finish(environment: Environment, st: State, swarm: str | None) -> None:
    """Build, gate, write and print one run's (or one web-UI swarm's) results and report."""
    opts = environment.parsed_options
    snaps = [s for s in (st.client_stats, *st.worker_client_stats.values()) if s is not None]
    client = merge_snapshots(*snaps) if snaps else None
    for clocks in st.worker_clocks.values():
        st.clocks = merge_clocks(st.clocks, clocks)
    reconnects, failures = st.reconnects, st.connect_failures
    st.reconnects += sum(st.worker_reconnects.values())
    st.connect_failures += sum(st.worker_connect_failures.values())
    try:
        results = build_results(environment, st, client)
    finally:
        st.reconnects, st.connect_failures = reconnects, failures
    verdicts = apply(st.thresholds, results, opts.thresholds) if st.thresholds and opts is not None else None
    path = getattr(opts, "results", "") or None
    if swarm is not None:
        path = str(swarm_path(path, st.scenario, st.swarms))
    st.results_path = write_results(results, path, st.scenario)
    csv_path = write_latency_csv(results, st.results_path.parent)
    table = format_table(results)
    shown = None
    if verdicts is not None:  # workers never evaluate: only the master (or a local runner) gets here
        shown = "\n" + verdict_table(verdicts)
        passed = all(v.passed for v in verdicts) and st.aborted is None
        if swarm is None or not passed:  # with the web UI, a failed swarm makes the process exit 1
            environment.process_exit_code = 0 if passed else 1
    from reports.render import write_report  # matplotlib is imported only now, at the end

    report_dir = getattr(opts, "report_dir", "") or st.results_path.parent
    if swarm is not None and getattr(opts, "report_dir", ""):
        report_dir = Path(report_dir) / st.results_path.parent.name
    report = write_report(results, report_dir)
    st.last_report = report
    lines = [f"netharness: report written to {report}",
             f"netharness: results written to {st.results_path} (latency in microseconds: {csv_path})"]
    if st.aborted is not None:
        lines.append(st.aborted)
    lines += [x for x in (shown, table) if x is not None]  # the microsecond table last
    if swarm is None:
        st.console = lines  # headless: printed after Locust's own final tables (Locust's quit event)
    else:
        print("\n".join(lines), flush=True)
    if swarm is not None:
        st.runs.append({"swarm": st.swarms, "results": str(st.results_path), "report": str(report)})
        log.info("netharness: %s report: %s (served at /netharness/report)", swarm, report)


def write_samples(directory: str, stem: str, rows: list[Any]) -> None:
    """``samples-<pid>.csv``: kind, qos, name, latency in seconds (raw: a negative one-way sample stays
    negative); ``sends-<pid>.csv``: kind, qos, name, intended and actual start (monotonic seconds)."""
    import csv
    import os

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with (d / f"{stem}-{os.getpid()}.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
