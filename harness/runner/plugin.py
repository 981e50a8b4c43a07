"""The harness's Locust hooks: options, the embedded server, shipping and merging results, results.json.

Importing this module (the users do) adds two listeners to ``locust.events``, as Locust plugins do: one adds
the harness's command-line options, the other (Locust's ``init`` event) configures everything else for that
environment: Locust's sub-millisecond statistics (``harness.runner.locust_patches``), the harness ``State`` (kept
on the environment as ``environment.netharness``), the per-run listeners, the web UI's QoS tab and the
embedded server.  Nothing is patched or started at import.

A headless run writes its results when Locust quits and prints the harness's microsecond table after
Locust's own final tables; with the web UI, each swarm (start -> stop) gets its own results directory and
report, written at ``test_stop``, and the recorder starts over with every swarm and whenever Locust's stats
are reset.  ``abort_on_fail`` thresholds are checked about once a second during a run (``harness.gate.abort``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

import dispatcher
from dispatcher.replay import ReplayBuffer, ReplayFileError, read_entries
from harness.game.embedded import EmbeddedServer, EmbeddedServerError
from harness.game.serverconfig import check_server_config, server_config
from harness.gate.abort import should_abort
from harness.gate.gatecmd import check_phases
from harness.gate.thresholds import ThresholdError, load_thresholds
from harness.runner import heap, memwatch, webui
from harness.runner.locust_patches import install as install_patches
from harness.runner.locust_patches import per_name_cache_off
from harness.runner.runend import await_final_reports, finish_or_fail, write_samples
from harness.runner.runresults import build_results
from harness.runner.scenario import Scenario, ScenarioError, parse_params
from harness.runner.state import State, Target, fail_fast, state

__all__ = ["ABORT_EVERY_S", "OPTIONS", "State", "list_params", "options_text", "probe", "scenario_of", "state"]

log = logging.getLogger("netharness")
PROBE_PLAYER = 2**31 - 1  # the id the master uses to check the target before the players connect
CAPTURE_LIMIT = 1_000_000
ABORT_EVERY_S = 1.0  # how often abort_on_fail thresholds are checked during a run


def probe(target: Target, registry: dispatcher.ChannelRegistry) -> dict[str, Any]:
    """Connect once as a throwaway player: a wrong host, secret or registry fails here, once.  Returns what
    the server said about itself (``transport.server_info``)."""
    try:
        c = dispatcher.init(peer="client", channel_registry=registry, connect=target.address,
                            player_id=PROBE_PLAYER, token=dispatcher.make_token(target.secret, PROBE_PLAYER),
                            reconnect=False, connect_timeout=5.0)
    except dispatcher.ConnectionClosed as e:
        fail_fast(f"{target.url}: {e.message} (is `netharness serve` running there?)")
    except dispatcher.RemoteProtocolError as e:
        hint = " (wrong --netharness-secret?)" if e.code == "bad_token" else ""
        fail_fast(f"{target.url} refused the connection: {e}{hint}")
    info = dict(c.server_info or {})
    c.close()
    return info


def scenario_of(environment: Environment) -> Scenario | None:
    for cls in environment.user_classes:
        sc = getattr(cls, "scenario", None)
        if isinstance(sc, Scenario):
            return sc
    return None


def list_params(scenario: Scenario | None) -> str:
    """``--list-params``: each parameter of the scenario, its default and what it does (plain text)."""
    if scenario is None:
        return "this locustfile plays no scenario: it has no parameters"
    rows = [(k, repr(v), scenario.param_help.get(k, "")) for k, v in scenario.params.items()]
    if not rows:
        return f"scenario {scenario.name!r} has no parameters"
    wk = max(len(r[0]) for r in rows)
    wv = max(len(r[1]) for r in rows)
    lines = [f"parameters of scenario {scenario.name!r} (override with --param KEY=VALUE):"]
    lines += [f"  {k.ljust(wk)}  {v.ljust(wv)}  {h}".rstrip() for k, v, h in rows]
    return "\n".join(lines)


# -- options ------------------------------------------------------------------------------------


#: The harness's options: (flag, argparse keywords).  Locust 2.x prints ``--help`` before it imports the
#: locustfile (locustio/locust#2917), so they cannot appear there; ``--list-params`` lists them too.
OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--param", {"action": "append", "default": [], "metavar": "KEY=VALUE",
                 "help": "override a scenario parameter (repeatable, or KEY=VALUE,KEY=VALUE); see --list-params"}),
    ("--list-params", {"action": "store_true", "default": False, "include_in_web_ui": False,
                       "help": "print the scenario's parameters (name, default, meaning) and these options, and exit"}),
    ("--netharness-secret", {"default": "", "env_var": "NETHARNESS_SECRET", "include_in_web_ui": False,
                             "help": "the target server's secret (set for you with the embedded server)"}),
    ("--accept-server-config", {"action": "store_true", "default": False, "include_in_web_ui": False,
                                "help": "run even if the target server's game config is not what the scenario needs"}),
    ("--results", {"default": "", "help": "where to write results.json (default: results/<time>-<scenario>/)"}),
    ("--capture", {"default": "", "help": "record the players' envelopes to this replay file"}),
    ("--server-capture", {"default": "", "include_in_web_ui": False,
                          "help": "embedded server only: record the intents it received to this replay file"}),
    ("--replay-file", {"default": "", "help": "replay.py: the capture to replay"}),
    ("--time-scale", {"type": float, "default": 1.0, "help": "replay.py: >1 replays faster"}),
    ("--report-dir", {"default": "", "help": "where to write the HTML/PNG report (default: beside results.json)"}),
    ("--thresholds", {"default": "", "help": "evaluate these thresholds (TOML) at the end (exit code 1 if any fails); "
                                             "abort_on_fail ones are checked every second and stop the run"}),
    ("--sample-log", {"default": "", "include_in_web_ui": False,
                      "help": "also write every raw latency sample here (a directory; for verifying the histograms)"}),
)


def options_text() -> str:
    """The harness's options, plain text (``--list-params`` prints it after the parameters)."""
    rows = [(flag + (f" {kw['metavar']}" if "metavar" in kw else "" if kw.get("action") == "store_true" else " X"),
             kw["help"]) for flag, kw in OPTIONS]
    w = max(len(r[0]) for r in rows)
    return "\n".join(["netharness options (locust -f scenarios/X.py [locust options] [these]):",
                      *(f"  {f.ljust(w)}  {h}" for f, h in rows)])


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    """The harness's options, on Locust's own parser (not in an argument group: Locust's web UI shows only
    ungrouped custom arguments), so they reach the web UI and the workers."""
    for flag, kw in OPTIONS:
        parser.add_argument(flag, **kw)


# -- init: everything is configured here, per environment -----------------------------------------


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    install_patches()  # Locust's statistics at sub-millisecond resolution (harness/runner/locust_patches.py)
    st = state(environment)
    opts = environment.parsed_options
    if environment.stats is not None and not getattr(opts, "stats_history_enabled", False):
        per_name_cache_off(environment.stats)  # only --csv-full-history reads per-name current percentiles
    st.scenario = scenario_of(environment)
    if opts is not None and getattr(opts, "list_params", False):
        print(list_params(st.scenario) + "\n\n" + options_text(), flush=True)
        sys.exit(0)
    if st.scenario is not None:
        try:
            st.params = st.scenario.with_params(parse_params(getattr(opts, "param", None)))
        except ScenarioError as e:
            fail_fast(str(e))
    if opts is not None and getattr(opts, "thresholds", ""):
        try:
            st.thresholds = load_thresholds(opts.thresholds, names=st.registry.names)
            phases = [p.name for p in st.scenario.phases] if st.scenario is not None else []
            check_phases(st.thresholds, phases, opts.thresholds)
        except ThresholdError as e:
            fail_fast(str(e))
    if opts is not None and getattr(opts, "sample_log", ""):
        st.samples = []
        st.sends = []
    if opts is not None and getattr(opts, "capture", ""):
        st.capture_buffer = ReplayBuffer(st.registry.hash, buffer_size=CAPTURE_LIMIT)
    if opts is not None and getattr(opts, "replay_file", ""):
        try:
            read_entries(opts.replay_file, st.registry.hash)
        except ReplayFileError as e:
            fail_fast(str(e))
    _listen(environment, st)
    trimmer = _keep_heap_flat()
    memwatch.install(environment, st, trimmer)  # NETHARNESS_LOCUST_MEMTRACE=FILE: a diagnostic
    webui.install(environment, st)  # the web UI's QoS tab (master/local), live figures shipped (workers)
    if isinstance(environment.runner, WorkerRunner) or environment.runner is None:
        return
    if not environment.host:
        config = st.scenario.server(st.params) if st.scenario is not None and st.scenario.server else {}
        try:
            st.server = EmbeddedServer(config, capture=getattr(opts, "server_capture", "") or None)
        except EmbeddedServerError as e:
            fail_fast(str(e))
        assert st.server is not None
        environment.host = st.server.url
        if opts is not None:
            opts.netharness_secret = st.server.secret  # sent to the workers with the host
            opts.host = st.server.url
        log.info("embedded game server on %s (pid %d)", st.server.url, st.server.proc.pid)
    st.server_info = probe(st.target(environment), st.registry)
    _check_server(st, bool(getattr(opts, "accept_server_config", False)))


def _keep_heap_flat() -> heap.Trimmer:
    """This process's C heap goes back to the OS every few seconds (``harness.runner.heap``)."""
    import gevent

    trimmer = heap.Trimmer()
    gevent.spawn(trimmer.run)
    return trimmer


def _check_server(st: State, accept: bool) -> None:
    """Scenario-true runs (issue 14): the target server must run the game config the scenario needs (one
    line and exit 2 otherwise, unless --accept-server-config); results.json records what it runs."""
    sc = st.scenario
    needs = sc.server(st.params) if sc is not None and sc.server is not None else None
    problem = check_server_config(needs, st.server_info, sc.name if sc is not None else None)
    if problem is not None and not accept:
        fail_fast(problem)
    if problem is not None:
        log.warning("netharness: %s (running anyway: --accept-server-config)", problem)
    st.server_config = server_config(st.server_info)


def _listen(environment: Environment, st: State) -> None:
    """This environment's listeners: closures over it, so no module keeps a registry of environments."""
    ev = environment.events
    runner = environment.runner
    worker = isinstance(runner, WorkerRunner)

    def report(client_id: str, data: dict[str, Any]) -> None:  # worker -> master, every few seconds
        data["netharness"] = {"recorder": st.recorder.take(), "client_stats": st.client_stats, "final": st.final,
                              "reconnects": st.reconnects, "t0_wall": st.t0_wall, "clocks": st.clocks,
                              "connect_failures": st.connect_failures}

    def worker_report(client_id: str, data: dict[str, Any]) -> None:  # master: a worker's report arrived
        part = data.get("netharness")
        if part is None:
            return
        st.recorder.merge(part["recorder"])
        if part.get("client_stats") is not None:
            st.worker_client_stats[client_id] = part["client_stats"]  # cumulative: the latest replaces
        st.worker_reconnects[client_id] = part.get("reconnects", 0)
        if part.get("final"):
            st.final_from.add(client_id)
        st.worker_clocks[client_id] = part.get("clocks") or {}
        st.worker_connect_failures[client_id] = part.get("connect_failures", 0)
        if part.get("t0_wall") is not None:
            st.t0_wall = part["t0_wall"] if st.t0_wall is None else min(st.t0_wall, part["t0_wall"])

    def test_start(**_: Any) -> None:
        st.reset()  # a new swarm measures from zero, as Locust's own stats do
        if environment.web_ui is not None and not worker:
            st.swarms += 1
        if st.thresholds and not worker and any(t.abort_on_fail for t in st.thresholds):
            import gevent

            st.abort_watch = gevent.spawn(_watch_aborts, environment, st)

    def test_stopping(**_: Any) -> None:
        st.stopping_at = time.monotonic()

    def reset_stats() -> None:
        st.recorder.reset()

    def spawning_complete(user_count: int, **_: Any) -> None:
        if environment.reset_stats:  # --reset-stats: Locust starts its stats over once every player joined
            st.recorder.reset()

    def test_stop(**_: Any) -> None:
        if st.abort_watch is not None:
            st.abort_watch.kill(block=False)
            st.abort_watch = None
        if isinstance(environment.runner, WorkerRunner):
            st.final = True
            environment.runner._send_stats()  # what the users recorded up to their stop, before the quit
            st.final = False
            return
        if isinstance(environment.runner, MasterRunner):
            await_final_reports(environment.runner, st)
        if environment.web_ui is not None and environment.runner is not None:
            import gevent

            gevent.spawn(finish_or_fail, environment, st, f"swarm {st.swarms}")

    def quitting(**_: Any) -> None:
        _quitting(environment, st)

    def quit(exit_code: int, **_: Any) -> None:  # after Locust printed its final tables: ours come last
        if st.console:
            print("\n".join(st.console), flush=True)
            st.console = []

    if worker:
        ev.report_to_master.add_listener(report)
    if isinstance(runner, MasterRunner):
        ev.worker_report.add_listener(worker_report)
    ev.test_start.add_listener(test_start)
    ev.test_stopping.add_listener(test_stopping)
    ev.reset_stats.add_listener(reset_stats)
    ev.spawning_complete.add_listener(spawning_complete)
    ev.test_stop.add_listener(test_stop)
    ev.quitting.add_listener(quitting)
    ev.quit.add_listener(quit)


def _watch_aborts(environment: Environment, st: State) -> None:
    """About once a second: evaluate the ``abort_on_fail`` thresholds on the results so far; stop the run
    (exit code 1) when one says so."""
    import gevent

    assert st.thresholds is not None
    started = time.monotonic()
    while True:
        gevent.sleep(ABORT_EVERY_S)
        try:
            partial = build_results(environment, st, st.client_stats, partial=True)
            abort = should_abort(st.thresholds, partial, time.monotonic() - started)
        except Exception:  # a bug in the check must not end the run
            log.exception("netharness: abort_on_fail thresholds could not be checked")
            continue
        if abort is not None:
            st.aborted = abort.message
            print(abort.message, file=sys.stderr, flush=True)
            environment.process_exit_code = 1
            st.abort_watch = None
            if environment.runner is not None:
                environment.runner.quit()
            return


def _quitting(environment: Environment, st: State) -> None:
    opts = environment.parsed_options
    if st.capture_buffer is not None and opts is not None:
        path = opts.capture
        if isinstance(environment.runner, WorkerRunner):
            path = f"{path}.worker{environment.runner.worker_index}"
        n = st.capture_buffer.dump(path)
        print(f"netharness: captured {n} envelopes to {path}", file=sys.stderr, flush=True)
    if st.samples is not None and opts is not None and not isinstance(environment.runner, MasterRunner):
        write_samples(opts.sample_log, "samples", st.samples)
        write_samples(opts.sample_log, "sends", st.sends or [])
    if st.replay_left:
        print(f"netharness: {st.replay_left} captured players were not replayed: run with -u "
              f"{st.replay_players} to replay all of them", file=sys.stderr, flush=True)
    if isinstance(environment.runner, WorkerRunner) or environment.runner is None:
        return
    if st.server is not None:
        try:
            st.server_stats = st.server.stop()
        except (OSError, ValueError) as e:  # e.g. a stats file cut short: the run's results still count
            print(f"netharness: the embedded server's stats are unreadable ({e}); results without them",
                  file=sys.stderr, flush=True)
    if environment.web_ui is None:  # web UI runs wrote each swarm's results at its test_stop
        finish_or_fail(environment, st, None)
