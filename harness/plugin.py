"""The harness's Locust hooks: options, the embedded server, shipping and merging results, results.json.

Importing this module (the users do) registers the listeners on ``locust.events``, as Locust plugins do.
A headless run writes its results when Locust quits; with the web UI, each swarm (start -> stop) gets its
own results directory and report, written at ``test_stop``, and the recorder starts over with every swarm
and whenever Locust's stats are reset.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from locust import events
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

import dispatcher
from dispatcher.replay import ReplayBuffer, ReplayFileError, read_entries
from dispatcher.stats import merge_snapshots

from . import webui
from .embedded import EmbeddedServer, EmbeddedServerError
from .game import load_registry
from .locust_patches import install
from .recorder import Recorder
from .runend import await_final_reports, finish_or_fail, merge_clocks, write_samples
from .scenario import Scenario, ScenarioError, parse_params
from .thresholds import Threshold, ThresholdError, load_thresholds

__all__ = ["State", "state"]

_ENVS: list[Environment] = []

log = logging.getLogger("netharness")
PROBE_PLAYER = 2**31 - 1  # the id the master uses to check the target before the players connect
CAPTURE_LIMIT = 1_000_000
install()  # Locust's statistics at sub-millisecond resolution (harness/locust_patches.py)
def fail_fast(message: str) -> None:
    """One clear line and exit, instead of a failure per player."""
    print(f"netharness: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


@dataclass
class Target:
    address: tuple[str, int]
    secret: str
    url: str


class State:
    """What one Locust process of the harness holds."""

    def __init__(self) -> None:
        self.registry = load_registry()
        self.recorder = Recorder()
        self.scenario: Scenario | None = None
        self.params: dict[str, Any] = {}
        self.server: EmbeddedServer | None = None
        self.server_stats: dict[str, Any] | None = None
        self._target: Target | None = None
        self.client_stats: dict[str, Any] | None = None
        self.worker_client_stats: dict[str, dict[str, Any]] = {}
        self.worker_reconnects: dict[str, int] = {}  # by worker: every worker that reported is a key
        self.worker_clocks: dict[str, dict[str, Any]] = {}
        self.worker_connect_failures: dict[str, int] = {}
        self.capture_buffer: ReplayBuffer | None = None
        self.reconnects = 0
        self.connect_failures = 0
        self.started_at = time.time()
        self._t0: float | None = None
        self.t0_wall: float | None = None  # wall-clock time of the timeline origin (phase 0 starts)
        self.results_path: Path | None = None
        self.samples: list[tuple[str, str, str, float]] | None = None  # --sample-log: raw, for verification
        self.sends: list[tuple[str, str, str, float, float]] | None = None  # --sample-log: (.., intended, actual)
        self.clocks: dict[str, Any] = {}  # the players' clock domains, offsets and error bounds
        self.swarms = 0  # web UI: swarms started in this process
        self.last_report: Path | None = None
        self.stopping_at: float | None = None  # monotonic: when Locust began stopping the users
        self.draining = 0  # stopping players still waiting for their answers and acknowledgements
        self.runs: list[dict[str, Any]] = []  # web UI: every finished swarm's results and report
        self.final = False  # worker: the report being sent is the last one of this run (users stopped)
        self.final_from: set[str] = set()  # master: workers whose last report of this run arrived
        self._replay: dict[int, list[Any]] | None = None
        self._replay_queue: list[int] = []
        self.thresholds: list[Threshold] | None = None

    # -- users call these ------------------------------------------------------------------------

    def target(self, environment: Environment) -> Target:
        if self._target is None:
            address, url = parse_host(environment.host)
            self._target = Target(address, secret_of(environment), url)
        return self._target

    @property
    def target_url(self) -> str | None:
        return self._target.url if self._target is not None else None

    def start_time(self, environment: Environment) -> float:
        """One timeline origin for every player of this process (monotonic clock)."""
        if self._t0 is None:
            self._t0 = time.monotonic()
            self.t0_wall = time.time()
        return self._t0

    def _load_replay(self, environment: Environment) -> dict[int, list[Any]]:
        """The capture's outgoing envelopes per player, times relative to the capture's first one."""
        if self._replay is None:
            path = getattr(environment.parsed_options, "replay_file", "")
            if not path:
                fail_fast("replay.py needs --replay-file FILE (a capture made with --capture)")
            entries = [e for e in read_entries(path, self.registry.hash) if e.direction == "out"]
            t_first = min((e.t for e in entries), default=0.0)
            self._replay = {}
            for e in entries:
                self._replay.setdefault(e.envelope.meta.player_id or 0, []).append(e._replace(t=e.t - t_first))
            self._replay_queue = sorted(self._replay)
        return self._replay

    def next_replay_player(self, environment: Environment) -> int | None:
        self._load_replay(environment)
        return self._replay_queue.pop(0) if self._replay_queue else None

    def replay_script(self, environment: Environment, player_id: int) -> list[Any]:
        return self._load_replay(environment).get(player_id, [])

    def add_client_stats(self, snap: dict[str, Any], runtime: Any) -> None:
        self.client_stats = snap if self.client_stats is None else merge_snapshots(self.client_stats, snap)
        self.reconnects += getattr(runtime, "reconnects", 0)

    def add_clock(self, domain: str, offset: float, error: float) -> None:
        """One player's view of the server's clock, as its transport has it at the end."""
        self.clocks = merge_clocks(self.clocks, {"domains": {domain: 1}, "offset_min_s": offset,
                                                 "offset_max_s": offset, "error_max_s": error, "players": 1})

    def reset(self) -> None:
        """A new swarm, or Locust's stats were reset: the measurements start over."""
        self.recorder.reset()
        self.client_stats = None
        self.worker_client_stats = {}
        self.worker_reconnects = {}
        self.worker_clocks = {}
        self.worker_connect_failures = {}
        self.reconnects = self.connect_failures = 0
        self.clocks = {}
        self.final_from = set()
        self.started_at = time.time()
        self._t0 = self.t0_wall = None
        self.stopping_at = None

    def capture(self, player_id: int, env: dispatcher.Envelope, kind: str) -> None:
        if self.capture_buffer is not None:
            meta = env.meta
            stamped = dispatcher.Envelope(env.name, env.payload, dispatcher.Meta(
                meta.seq, meta.qos, meta.ts_sent, player_id=player_id, trace_id=meta.trace_id, flags=meta.flags))
            self.capture_buffer.push(stamped, "out", time.monotonic(), kind)


_STATE: dict[int, State] = {}


def state(environment: Environment) -> State:
    return _STATE.setdefault(id(environment), State())


def secret_of(environment: Environment) -> str:
    opts = environment.parsed_options
    secret = getattr(opts, "netharness_secret", None) if opts is not None else None
    if not secret:
        fail_fast("no secret for the target server: pass --netharness-secret or set NETHARNESS_SECRET "
                  "(the one `netharness serve` printed)")
    return str(secret)


def parse_host(host: str | None) -> tuple[tuple[str, int], str]:
    if not host:
        fail_fast("no --host, and no embedded server was started")
    u = urlparse(host or "")
    try:
        port = u.port
    except ValueError:
        port = None
    if u.scheme != "tcp" or not u.hostname or not port:
        fail_fast(f"--host must be tcp://HOST:PORT (a `netharness serve` address), got {host!r}")
    assert u.hostname is not None and port is not None
    return (u.hostname, port), f"tcp://{u.hostname}:{port}"


def probe(target: Target, registry: dispatcher.ChannelRegistry) -> None:
    """Connect once as a throwaway player: a wrong host, secret or registry fails here, once."""
    try:
        c = dispatcher.init(peer="client", channel_registry=registry, connect=target.address,
                            player_id=PROBE_PLAYER, token=dispatcher.make_token(target.secret, PROBE_PLAYER),
                            reconnect=False, connect_timeout=5.0)
    except dispatcher.ConnectionClosed as e:
        fail_fast(f"{target.url}: {e.message} (is `netharness serve` running there?)")
    except dispatcher.RemoteProtocolError as e:
        hint = " (wrong --netharness-secret?)" if e.code == "bad_token" else ""
        fail_fast(f"{target.url} refused the connection: {e}{hint}")
    else:
        c.close()


def scenario_of(environment: Environment) -> Scenario | None:
    for cls in environment.user_classes:
        sc = getattr(cls, "scenario", None)
        if isinstance(sc, Scenario):
            return sc
    return None


# -- listeners ----------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser  # Locust's own parser: its options reach the web UI and the workers
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario parameter (repeatable, or KEY=VALUE,KEY=VALUE)")
    g.add_argument("--netharness-secret", default="", env_var="NETHARNESS_SECRET", include_in_web_ui=False,
                   help="the target server's secret (set for you with the embedded server)")
    g.add_argument("--results", default="", help="where to write results.json (default: results/<time>-<scenario>/)")
    g.add_argument("--capture", default="", help="record the players' envelopes to this replay file")
    g.add_argument("--server-capture", default="", include_in_web_ui=False,
                   help="embedded server only: record the intents it received to this replay file")
    g.add_argument("--replay-file", default="", help="replay.py: the capture to replay")
    g.add_argument("--time-scale", type=float, default=1.0, help="replay.py: >1 replays faster")
    g.add_argument("--report-dir", default="", help="where to write the HTML/PNG report (default: beside results.json)")
    g.add_argument("--thresholds", default="",
                   help="evaluate these thresholds (TOML) at the end; the exit code is 1 if any fails")
    g.add_argument("--sample-log", default="", include_in_web_ui=False,
                   help="also write every raw latency sample here (a directory; for verifying the histograms)")


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    _ENVS.append(environment)
    st = state(environment)
    opts = environment.parsed_options
    st.scenario = scenario_of(environment)
    if st.scenario is not None:
        try:
            st.params = st.scenario.with_params(parse_params(getattr(opts, "param", None)))
        except ScenarioError as e:
            fail_fast(str(e))
    if opts is not None and getattr(opts, "thresholds", ""):
        try:
            st.thresholds = load_thresholds(opts.thresholds, names=st.registry.names)
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
    probe(st.target(environment), st.registry)


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any]) -> None:
    env = _env_of_worker()
    if env is None:
        return
    st = state(env)
    data["netharness"] = {"recorder": st.recorder.take(), "client_stats": st.client_stats, "final": st.final,
                          "reconnects": st.reconnects, "t0_wall": st.t0_wall, "clocks": st.clocks,
                          "connect_failures": st.connect_failures}


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any]) -> None:
    part = data.get("netharness")
    env = _master_env()
    if part is None or env is None:
        return
    st = state(env)
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


@events.test_start.add_listener
def _test_start(environment: Environment, **_: Any) -> None:
    st = state(environment)
    st.reset()  # a new swarm measures from zero, as Locust's own stats do
    if environment.web_ui is not None and not isinstance(environment.runner, WorkerRunner):
        st.swarms += 1


@events.test_stopping.add_listener
def _test_stopping(environment: Environment, **_: Any) -> None:
    state(environment).stopping_at = time.monotonic()


@events.reset_stats.add_listener
def _reset_stats() -> None:
    for environment in _ENVS:
        state(environment).recorder.reset()


@events.spawning_complete.add_listener
def _spawning_complete(user_count: int, **_: Any) -> None:
    for environment in _ENVS:  # --reset-stats: Locust starts its stats over once every player joined
        if environment.reset_stats:
            state(environment).recorder.reset()


@events.test_stop.add_listener
def _test_stop(environment: Environment, **_: Any) -> None:
    st = state(environment)
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


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    st = state(environment)
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
    if st._replay is not None and st._replay_queue:
        print(f"netharness: {len(st._replay_queue)} captured players were not replayed: run with -u "
              f"{len(st._replay)} to replay all of them", file=sys.stderr, flush=True)
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


def _env_of_worker() -> Environment | None:
    return next((e for e in _ENVS if isinstance(e.runner, WorkerRunner)), None)


def _master_env() -> Environment | None:
    return next((e for e in _ENVS if isinstance(e.runner, MasterRunner | LocalRunner)), None)
