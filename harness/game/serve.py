"""``netharness serve``: the game server (Strongest Dungeon Crawler) as a standalone TCP server.

Prints ``listening on tcp://HOST:PORT`` once bound (the first line of standard output), then one load line
per second on standard error.  SIGTERM or SIGINT drains the queues, tells every player, and exits 0.

The game config: ``--scenario NAME`` (with ``--param KEY=VALUE``) runs a scenario's game, as its embedded
server would; ``--config FILE`` (TOML or JSON) sets keys on top.  Every key, its default and what it does:
``netharness serve --print-config``, and the sample ``harness/game/game.example.toml``.  Players are told
the config in the handshake, and a scenario run checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import gevent
import gevent.event
import numpy as np

import dispatcher
from dispatcher.histogram import Histogram
from harness.args import Parser, fail
from harness.args import port as port_type
from harness.game import load_registry, memtrace
from harness.game.configdoc import render_config
from harness.game.schemas import SCHEMAS
from harness.game.serverconfig import SCENARIOS, scenario_game_config
from harness.game.services import ConfigError, Game, GameConfig
from harness.runner.scenario import ScenarioError

SECRET_ENV = "NETHARNESS_SECRET"
CAPTURE_LIMIT = 1_000_000  # envelopes per channel the server capture keeps


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="netharness serve", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=port_type, default=7777, help="port to bind; 0 picks a free one (default 7777)")
    ap.add_argument("--secret", default=None,
                    help=f"the players' token secret (default: ${SECRET_ENV}, else a fresh one, printed)")
    ap.add_argument("--scenario", default=None, choices=sorted(SCENARIOS), metavar="NAME",
                    help=f"run this scenario's game config ({', '.join(SCENARIOS)})")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="with --scenario: a scenario parameter, as the Locust run passes it (repeatable)")
    ap.add_argument("--config", default=None,
                    help="game config (TOML or JSON): rates, sizes, costs, scheduler, limits; on top of --scenario")
    ap.add_argument("--print-config", action="store_true",
                    help="print every config key with its value and default (TOML), and exit")
    ap.add_argument("--stats-out", default=None,
                    help="write the dispatcher stats (JSON) here on exit, and tier figures to FILE.live each second")
    ap.add_argument("--capture", default=None,
                    help="record every intent the players sent, in arrival order, to this replay file on exit")
    ap.add_argument("--quiet", action="store_true", help="no per-second load lines")
    ap.add_argument("--mem-trace", default=None, help=argparse.SUPPRESS)  # diagnostic: harness/game/memtrace.py
    args = ap.parse_args(argv)

    prog = "netharness serve"
    if args.param and not args.scenario:
        return fail(prog, "--param needs --scenario NAME (the scenario whose parameters they are)")
    try:
        config = load_config(args.scenario, args.param, args.config)
    except (ConfigError, ScenarioError) as e:
        return fail(prog, str(e))
    if args.print_config:
        print(render_config(config), end="")
        return 0
    try:
        trace = memtrace.from_env(args.mem_trace)
    except (ValueError, OSError) as e:
        return fail(prog, f"memory trace: {e}")
    secret = args.secret or os.environ.get(SECRET_ENV)
    generated = secret is None
    if generated:
        secret = dispatcher.make_secret().hex()
    registry = load_registry()
    try:
        server = dispatcher.init(peer="server", channel_registry=registry, listen=(args.host, args.port),
                                 secret=secret, schemas=SCHEMAS, mode="release",
                                 scheduler=config.scheduler or None, rate_limits=config.rate_limits or None,
                                 limits=config.limits or None,
                                 replay={"buffer_size": CAPTURE_LIMIT} if args.capture else None,
                                 server_info={"game": config.info()})
    except (dispatcher.DispatcherError, ValueError) as e:  # ValueError: a scheduler or limits option
        return fail(prog, str(e))
    except OSError as e:
        return fail(prog, f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    game = Game(server, config)
    assert server.address is not None
    host, port = server.address
    print(f"listening on tcp://{host}:{port} (registry {registry.hash})", flush=True)
    if generated:
        print(f"secret: {secret}  (players' tokens: dispatcher.make_token(secret, player_id))", flush=True)

    stop = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    log_every = 0.0 if args.quiet else config.log_every
    series = TierSeries(server, live_out=f"{args.stats_out}.live" if args.stats_out else None)
    _run(server, game, stop, log_every, series, trace)

    stats = server.stats().snapshot()
    stats["series"] = series.rows
    server.close()
    if args.stats_out:
        Path(args.stats_out).write_text(json.dumps(stats))
        Path(f"{args.stats_out}.live").unlink(missing_ok=True)
    if args.capture:
        _dump_intents(server, args.capture)
    print(f"stopped: {stats['peer']['connections']} connections served, {game.handled} intents handled",
          file=sys.stderr, flush=True)
    return 0


def load_config(scenario: str | None, params: list[str], path: str | None) -> GameConfig:
    """The game config a server runs: a scenario's (with its parameters), then a config file's keys on top."""
    table: dict[str, object] = scenario_game_config(scenario, params) if scenario else {}
    where = "config"
    if path:
        table.update(GameConfig.read_table(path))
        where = path
    elif scenario:
        where = f"scenario {scenario}"
    return GameConfig.from_dict(table, where)


class TierSeries:
    """Once a second, per tier: queue depth, and what the second added (sent, dropped, saturated ticks,
    sojourn p50/p99 of the frames that left during it): the reports' "over time" plots."""

    def __init__(self, server: dispatcher.Transport, live_out: str | None = None) -> None:
        self.server = server
        self.live_out = live_out  # tier figures written here each second while running (stats on exit)
        self.rows: list[dict[str, object]] = []
        self._prev: dict[str, tuple[int, int, int, int, np.ndarray]] = {}
        self._last = time.time()

    def sample(self) -> None:
        now = time.time()
        if now - self._last < 1.0:
            return
        self._last = now
        row: dict[str, object] = {"t": round(now, 3)}
        live: dict[str, object] = {}
        for tier in dispatcher.QoS:
            t = self.server.stats().tiers[tier]
            counts = t.sojourn.counts.copy()
            prev = self._prev.get(tier.name)
            delta = Histogram.from_counts(counts if prev is None else counts - prev[4])
            prev = prev or (0, 0, 0, 0, counts)
            p50, p99 = delta.percentiles([50, 99])
            row[tier.name] = {"queued_msgs": t.queued_msgs, "queued_bytes": t.queued_bytes,
                              "sent": t.sent - prev[0], "dropped": t.dropped - prev[1],
                              "saturated_ticks": t.saturated_ticks - prev[2], "ticks": t.ticks - prev[3],
                              "sojourn_p50_us": p50, "sojourn_p99_us": p99}
            self._prev[tier.name] = (t.sent, t.dropped, t.saturated_ticks, t.ticks, counts)
            live[tier.name] = {"queued_msgs": t.queued_msgs, "sent": t.sent, "dropped": t.dropped, "ticks": t.ticks,
                               "saturated_ticks": t.saturated_ticks,
                               "sojourn_last_s": [p50, p99] if delta.count else None}
        self.rows.append(row)
        if self.live_out:  # cheap (counters, last second's sojourn), atomic: the web UI's QoS tab reads it
            tmp = Path(f"{self.live_out}.tmp")
            tmp.write_text(json.dumps({"version": 1, "live": True, "t": row["t"], "tiers": live}))
            os.replace(tmp, self.live_out)


def _run(server: dispatcher.Transport, game: Game, stop: gevent.event.Event, log_every: float,
         series: TierSeries, trace: memtrace.MemTrace | None = None) -> None:
    period = 1.0 / game.config.tick_hz
    st = server.stats()
    last_log, last = time.monotonic(), _load(server, game)
    t0 = last_log
    while not stop.wait(period):
        now = server.now()
        game.tick(now)
        server.flush()
        series.sample()
        if trace is not None:
            trace.sample()
        if log_every and now - last_log >= log_every:
            cur = _load(server, game)
            dt = now - last_log
            rates = {k: (cur[k] - last[k]) / dt for k in cur}
            queued = sum(t.queued_msgs for t in st.tiers)
            print(f"t={now - t0:6.1f}s players={len(server.players()):4d} "
                  f"intents/s={rates['handled']:8.0f} in={rates['bytes_in'] / 1e3:8.1f}kB/s "
                  f"out={rates['bytes_out'] / 1e3:8.1f}kB/s queued={queued} "
                  f"dropped={sum(t.dropped for t in st.tiers)} refused={game.refused}",
                  file=sys.stderr, flush=True)
            last_log, last = now, cur


def _load(server: dispatcher.Transport, game: Game) -> dict[str, float]:
    peer = server.stats().peer
    return {"handled": game.handled, "bytes_in": peer["bytes_in"], "bytes_out": peer["bytes_out"]}


def _dump_intents(server: dispatcher.Transport, path: str) -> None:
    """The intents players sent (arrival order, stamped player ids) as a replay file."""
    buf = server.replay_buffer
    captured = dispatcher.replay.ReplayBuffer(buf.registry_hash, buffer_size=CAPTURE_LIMIT)
    for e in buf.entries(direction="in"):
        if e.envelope.name.startswith("Intent.") and not e.envelope.meta.is_response:
            captured.push(e.envelope, "in", e.t)
    captured.dump(path)
