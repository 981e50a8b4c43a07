"""The figures of the web UI's QoS view (``harness.runner.webui``), computed from one Locust process's ``State``.

Per QoS tier: latency as the players measure it (the harness's histograms, microseconds; on a master the
workers' merged) and the scheduling figures of the dispatchers' queues (saturation over the last
``WINDOW_S`` seconds, queue depth, sojourn, drops): the server's when its stats file is there (the
embedded server rewrites it each second; its final stats once the run ended), and the players' own
(this process's live connections, or what the workers ship with their stats reports).  Plus the scenario's
current phase, CRITICAL latency per phase (calm vs flood) and the last report's path.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
import numpy as np
import numpy.typing as npt
from locust.env import Environment
from locust.runners import MasterRunner

from dispatcher import QoS
from dispatcher.histogram import Histogram

if TYPE_CHECKING:
    from harness.runner.state import State

__all__ = ["TIERS", "WINDOW_S", "QosView", "encode_tiers", "players_tiers"]

TIERS = tuple(t.name for t in QoS)
WINDOW_S = 5.0  # "recent" figures: the last seconds
SETTLE_S = 10  # a second this old has all its samples (workers report every 3 s): its phase tally is final
STALE_WORKER_S = 15.0
YIELD_EVERY = 50  # players per step when summing this process's players' dispatchers
CACHE_S = 1.0  # the tab, the page and the JSON polled together compute the figures once


# -- the dispatchers' scheduling figures ------------------------------------------------------------


def _empty_tiers() -> dict[str, dict[str, Any]]:
    return {t: {"queued_msgs": 0, "dropped": 0, "sent": 0, "ticks": 0, "saturated_ticks": 0,
                "sojourn": Histogram()} for t in TIERS}


def players_tiers(runner: Any) -> dict[str, dict[str, Any]] | None:
    """The live players' dispatchers of this process, summed per tier (None: no player connected).  Every
    ``YIELD_EVERY`` players it lets the others run: a big swarm's players are not held up by the view."""
    out, seen = _empty_tiers(), False
    sojourn: dict[str, npt.NDArray[np.int64]] = {}
    for i, g in enumerate(list(getattr(runner, "user_greenlets", None) or ())):
        if i and i % YIELD_EVERY == 0:
            gevent.sleep(0)
        client = getattr(g.args[0], "client", None) if g.args else None
        stats = client.stats() if client is not None else None
        if stats is None:
            continue
        seen = True
        for name, t in zip(TIERS, stats.tiers, strict=True):
            o = out[name]
            for k in ("queued_msgs", "dropped", "sent", "ticks", "saturated_ticks"):
                o[k] += getattr(t, k)
            if t.sent:  # counts added directly: a merge per player and tier would cost more
                c = t.sojourn.counts
                if name in sojourn:
                    sojourn[name] += c
                else:
                    sojourn[name] = c.copy()
    for name, c in sojourn.items():
        out[name]["sojourn"] = Histogram.from_counts(c)
    return out if seen else None


def encode_tiers(tiers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: {**t, "sojourn": t["sojourn"].encode()} for n, t in tiers.items()}


def _add(into: dict[str, dict[str, Any]], tiers: dict[str, dict[str, Any]]) -> None:
    """Add tier figures into ``into``: shipped by a worker (``encode_tiers``), a dispatcher's
    ``Stats.snapshot()["tiers"]``, or the server's live file (``sojourn_last_s``: the last second's p50, p99)."""
    for name in TIERS:
        t, o = tiers.get(name) or {}, into[name]
        for k in ("queued_msgs", "dropped", "sent", "ticks", "saturated_ticks"):
            o[k] += int(t.get(k, 0))
        soj = t.get("sojourn", (t.get("sojourn_us") or {}).get("hdr"))
        if soj:
            o["sojourn"].merge(Histogram.decode(soj))
        if "sojourn_last_s" in t:
            o["sojourn_last_s"] = t["sojourn_last_s"]


class _Window:
    """Saturation over the last ``WINDOW_S`` seconds from cumulative tick counters (cumulative at first)."""

    def __init__(self) -> None:
        self._points: dict[str, deque[tuple[float, int, int]]] = {}

    def saturation(self, key: str, ticks: int, saturated: int, now: float) -> float | None:
        dq = self._points.setdefault(key, deque())
        if dq and ticks < dq[-1][1]:  # fewer connections than before: start over
            dq.clear()
        dq.append((now, ticks, saturated))
        while len(dq) > 2 and now - dq[1][0] >= WINDOW_S:
            dq.popleft()
        _, t0, s0 = dq[0]
        if ticks > t0:
            return (saturated - s0) / (ticks - t0)
        return saturated / ticks if ticks else None


def _sched_row(t: dict[str, Any], sat: float | None) -> dict[str, Any]:
    if "sojourn_last_s" in t:  # the server's live figures: the frames that left in the last second
        p50, p99 = t["sojourn_last_s"] or (None, None)
    else:
        has = t["sojourn"].count > 0
        p50, p99 = t["sojourn"].percentiles([50, 99]) if has else (None, None)
    return {"saturation": None if sat is None else round(sat, 4), "queue_depth": t["queued_msgs"],
            "sojourn_p50_us": p50, "sojourn_p99_us": p99, "drops": t["dropped"], "sent": t["sent"]}


# -- the view -----------------------------------------------------------------------------------------


class QosView:
    """What the tab, the JSON endpoint and the page show, computed from one process's ``State``."""

    def __init__(self, environment: Environment, st: State) -> None:
        self.environment = environment
        self.st = st
        self.workers: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}  # master: shipped players' tiers
        self._window = _Window()
        self._phase_done: dict[tuple[str, str], Histogram] = {}
        self._phase_upto = -math.inf
        self._cached: tuple[float, dict[str, Any]] | None = None

    # -- sources ------------------------------------------------------------------------------------

    def _players(self, now: float) -> dict[str, dict[str, Any]] | None:
        runner = self.environment.runner
        return self.shipped(now) if isinstance(runner, MasterRunner) else players_tiers(runner)

    def shipped(self, now: float) -> dict[str, dict[str, Any]] | None:
        """The workers' players, as their last reports shipped them (a silent worker is left out)."""
        live = [t for at, t in self.workers.values() if now - at < STALE_WORKER_S]
        if not live:
            return None
        out = _empty_tiers()
        for tiers in live:
            _add(out, tiers)
        return out

    def _server(self) -> tuple[dict[str, dict[str, Any]] | None, str]:
        """The server's tier figures: its final stats once the run ended, else its live file (the embedded
        server rewrites ``<stats file>.live`` each second), else none ("n/a": e.g. an external server)."""
        snap, how = self.st.server_stats, "final"
        path = getattr(self.st.server, "stats_path", None)
        if snap is None and isinstance(path, Path):
            for p, kind in ((path, "final"), (path.with_name(f"{path.name}.live"), "live")):
                try:
                    snap, how = json.loads(p.read_text()), kind
                    break
                except (OSError, ValueError):
                    continue
        if not isinstance(snap, dict) or not isinstance(snap.get("tiers"), dict):
            return None, "n/a"
        out = _empty_tiers()
        _add(out, snap["tiers"])
        return out, how

    # -- phases ---------------------------------------------------------------------------------------

    def _phase_at(self, wall: float) -> tuple[str, float, float, int] | None:
        """(phase, seconds into it, its duration, pass number) at wall-clock ``wall``."""
        sc, t0 = self.st.scenario, self.st.t0_wall
        if sc is None or t0 is None or wall < t0:
            return None
        off, n = wall - t0, 0
        cycle = sc.cycle(self.st.params)
        if cycle:
            n, off = int(off // cycle), off % cycle
        found = None
        for phase, (name, start) in zip(sc.phases, sc.boundaries(self.st.params), strict=True):
            if off >= start:
                found = (name, off - start, phase.duration_in(self.st.params), n + 1)
        return found

    def _phase_tally(self, now: float) -> dict[tuple[str, str], Histogram]:
        """CRITICAL latency per (phase, kind) over every second spent in that phase."""
        final = int(now) - SETTLE_S
        series = self.st.recorder.series

        def add(into: dict[tuple[str, str], Histogram], sec: int) -> None:
            ph = self._phase_at(sec + 0.5)
            if ph is None:
                return
            for skey, slot in series[sec].items():
                kind, qos = skey.split("|", 1)
                if qos == "CRITICAL" and slot[0]:
                    h = Histogram.decode(slot[2]) if isinstance(slot[2], str) else slot[2]
                    into[(ph[0], kind)] = into[(ph[0], kind)].merge(h) if (ph[0], kind) in into else h.copy()

        for sec in sorted(s for s in series if self._phase_upto < s <= final):
            add(self._phase_done, sec)
        self._phase_upto = max(self._phase_upto, final)
        out = {k: h.copy() for k, h in self._phase_done.items()}
        for sec in [s for s in series if s > final]:
            add(out, sec)
        return out

    def _phases(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        tally = self._phase_tally(now)
        rows = []
        for (phase, kind), h in tally.items():
            p50, p99 = h.percentiles([50, 99])
            rows.append({"phase": phase, "kind": kind, "count": h.count, "p50_us": p50, "p99_us": p99})
        order = {p.name: i for i, p in enumerate(self.st.scenario.phases if self.st.scenario else ())}
        rows.sort(key=lambda r: (order.get(r["phase"], 99), r["kind"]))
        summary = []
        for kind in ("request", "intent", "event"):
            calm, flood = tally.get(("calm", kind)), tally.get(("flood", kind))
            if calm is not None and flood is not None and calm.count and flood.count:
                c99, f99 = calm.percentile(99), flood.percentile(99)
                summary.append({"kind": kind, "calm_p99_us": c99, "flood_p99_us": f99,
                                "ratio": round(f99 / c99, 2) if c99 else None})
        return rows, summary

    # -- the whole -----------------------------------------------------------------------------------

    def report_path(self) -> Path | None:
        """The last report written, if any (``State.last_report`` when set, else beside results.json)."""
        st, opts = self.st, self.environment.parsed_options
        candidates = [st.last_report]
        if opts is not None and getattr(opts, "report_dir", ""):
            candidates.append(Path(opts.report_dir) / "report.html")
        if st.results_path is not None:
            candidates.append(Path(st.results_path).parent / "report.html")
        for c in candidates:
            if c is not None and Path(c).is_file():
                return Path(c).resolve()
        return None

    def snapshot(self) -> dict[str, Any]:
        """The figures (computed at most once every ``CACHE_S`` seconds)."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] >= CACHE_S:
            self._cached = (now, self._compute(now))
        return self._cached[1]

    def _compute(self, now: float) -> dict[str, Any]:
        now_wall = time.time()
        st, runner = self.st, self.environment.runner
        rec = st.recorder
        rec.fold()
        server, server_how = self._server()
        players = self._players(now)
        recent_secs = [s for s in rec.series if now_wall - 1 - WINDOW_S <= s < now_wall - 1]
        tiers: dict[str, Any] = {}
        for name in TIERS:
            kinds: dict[str, Any] = {}
            hists = []
            for (kind, qos, _), e in rec.entries.items():
                if qos == name and e.hist.count:
                    hists.append(e.hist)
                    k = kinds.setdefault(kind, {"count": 0, "failures": 0, "hist": Histogram()})
                    k["hist"].merge(e.hist)
            failures = sum(e.failures for (_, qos, _), e in rec.entries.items() if qos == name)
            for k in kinds.values():
                h = k.pop("hist")
                k["count"] = h.count
                k["p50_us"], k["p99_us"] = h.percentiles([50, 99])
            all_h = Histogram()
            for h in hists:
                all_h.merge(h)
            recent = None
            for sec in recent_secs:
                for skey, slot in rec.series[sec].items():
                    if skey.endswith(f"|{name}") and slot[0]:
                        h = Histogram.decode(slot[2]) if isinstance(slot[2], str) else slot[2]
                        recent = h.copy() if recent is None else recent.merge(h)
            has = all_h.count > 0
            p50, p99 = all_h.percentiles([50, 99])
            row: dict[str, Any] = {
                "count": all_h.count, "failures": failures, "p50_us": p50 if has else None,
                "p99_us": p99 if has else None, "recent_p99_us": recent.percentile(99) if recent else None,
                "kinds": kinds,
                "server": None if server is None else _sched_row(
                    server[name], self._window.saturation(f"server|{name}", server[name]["ticks"],
                                                          server[name]["saturated_ticks"], now)),
                "players": None if players is None else _sched_row(
                    players[name], self._window.saturation(f"players|{name}", players[name]["ticks"],
                                                           players[name]["saturated_ticks"], now)),
            }
            source = "server" if server is not None else "players" if players is not None else None
            sched = row[source] if source else {}
            for k in ("saturation", "queue_depth", "sojourn_p50_us", "sojourn_p99_us", "drops"):
                row[k] = sched.get(k)
            row["source"] = source
            tiers[name] = row
        phase = self._phase_at(now_wall)
        phases, summary = self._phases(now_wall)
        report = self.report_path()
        return {
            "version": 1,
            "time": round(now_wall, 3),
            "state": getattr(runner, "state", None),
            "users": getattr(runner, "user_count", None),
            "scenario": st.scenario.name if st.scenario is not None else None,
            "phase": None if phase is None else {"name": phase[0], "elapsed_s": round(phase[1], 1),
                                                 "duration_s": phase[2] if math.isfinite(phase[2]) else None,
                                                 "pass": phase[3]},
            "tiers": tiers,
            "phases": phases,
            "calm_vs_flood": summary,
            "server_stats": server_how,
            "players_stats": "n/a" if players is None else "live",
            "report": "/netharness/report/" if report is not None else None,
        }
