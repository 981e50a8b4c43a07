"""What one Locust process of the harness holds (``State``, kept on the environment as
``environment.netharness``), and the target server it drives.

Nothing here registers a Locust listener or touches Locust's modules: ``harness.runner.plugin`` does the wiring in
Locust's init hooks; users, the web UI and the end of the run read and fill this state.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import dispatcher
from dispatcher.replay import ReplayBuffer, read_entries
from dispatcher.stats import merge_snapshots
from harness.game import load_registry
from harness.runner.recorder import Recorder

if TYPE_CHECKING:
    from locust.env import Environment

    from harness.game.embedded import EmbeddedServer
    from harness.gate.thresholds import Threshold
    from harness.runner.scenario import Scenario

__all__ = ["ATTR", "State", "Target", "fail_fast", "merge_clocks", "parse_host", "secret_of", "state"]

ATTR = "netharness"  # the attribute of Locust's Environment that holds the State


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
        self._client_stats: dict[str, Any] | None = None
        self._client_snaps: list[dict[str, Any]] = []  # stopping players' snapshots, merged when read
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
        self.playing = 0  # connected players not stopping yet (their answers may still be on the way)
        self.runs: list[dict[str, Any]] = []  # web UI: every finished swarm's results and report
        self.final = False  # worker: the report being sent is the last one of this run (users stopped)
        self.final_from: set[str] = set()  # master: workers whose last report of this run arrived
        self._replay: dict[int, list[Any]] | None = None
        self._replay_queue: list[int] = []
        self.thresholds: list[Threshold] | None = None
        self.server_info: dict[str, Any] = {}  # what the target server said about itself (the probe's view)
        self.server_config: dict[str, Any] | None = None  # the game config the server says it runs
        self.abort_watch: Any = None  # the greenlet checking abort_on_fail thresholds during a run
        self.aborted: str | None = None  # why an abort_on_fail threshold stopped the run
        self.console: list[str] = []  # headless: printed after Locust's final tables (Locust's quit event)

    @property
    def replay_players(self) -> int:
        """replay.py: the captured players, and those still waiting for a user (below)."""
        return len(self._replay or {})

    @property
    def replay_left(self) -> int:
        return len(self._replay_queue) if self._replay is not None else 0

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

    def add_client_stats(self, snap: dict[str, Any], reconnects: int = 0) -> None:
        """One stopping player's dispatcher stats and its reconnects.  The stats are merged into the players'
        total when ``client_stats`` is read, all that stopped since the last read in one merge; not here: a
        merge decodes, adds and re-encodes every histogram of the growing total, 0.1-0.3 s with the event loop
        blocked per player at 100 players, while the players that stop later still wait for answers (a capacity
        step's last second read p99s of 0.3-1 s)."""
        self._client_snaps.append(snap)
        self.reconnects += reconnects

    @property
    def client_stats(self) -> dict[str, Any] | None:
        """The stopped players' dispatcher stats, merged (None before any stopped)."""
        snaps, self._client_snaps = self._client_snaps, []
        if snaps:  # one merge of them all: each histogram decoded once, the total encoded once
            total = [] if self._client_stats is None else [self._client_stats]
            self._client_stats = merge_snapshots(*total, *snaps)
        return self._client_stats

    @client_stats.setter
    def client_stats(self, value: dict[str, Any] | None) -> None:
        self._client_snaps = []
        self._client_stats = value

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


def state(environment: Environment) -> State:
    """This Locust process's harness state, kept on its environment (``environment.netharness``)."""
    st: State | None = getattr(environment, ATTR, None)
    if st is None:
        st = State()
        setattr(environment, ATTR, st)
    return st


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


def merge_clocks(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two sets of players' clock views, merged: domains counted, offset range and worst error bound."""
    if not a:
        return dict(b)
    if not b:
        return dict(a)
    domains = dict(a["domains"])
    for k, n in b["domains"].items():
        domains[k] = domains.get(k, 0) + n
    return {"domains": domains, "offset_min_s": min(a["offset_min_s"], b["offset_min_s"]),
            "offset_max_s": max(a["offset_max_s"], b["offset_max_s"]),
            "error_max_s": max(a["error_max_s"], b["error_max_s"]), "players": a["players"] + b["players"]}
