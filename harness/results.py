"""``results.json``: the contract between the harness, the gate and the reports (DESIGN.md).

One file per run, versioned: run metadata; per ``(kind, qos, name)`` counts, failures, bytes, sends behind
schedule and the latency histogram (microseconds, HdrHistogram V2 encoding, with its summary); per-second
series per ``(kind, qos)``; the dispatchers' stats (players merged, and the server's); and, once gated, the
threshold verdicts.  ``load_results`` is the one reader: a malformed, truncated or unknown file gets one
clear error naming the file and what is wrong.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher.histogram import Histogram, merged
from dispatcher.stats import format_us, text_table

if TYPE_CHECKING:
    from locust.env import Environment

    from .plugin import State
    from .scenario import Scenario

__all__ = ["FORMAT", "VERSION", "ResultsError", "build_results", "format_table", "load_results", "write_results"]

FORMAT = "netharness-results"
VERSION = 1
REQUIRED = ("meta", "entries", "series", "dispatcher")


class ResultsError(ValueError):
    """A results file that cannot be read; the message names the file and what is wrong."""


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def build_results(environment: Environment, st: State, client_stats: dict[str, Any] | None) -> dict[str, Any]:
    import locust

    opts = environment.parsed_options
    rec = st.recorder
    rec.fold()
    end = time.time()
    start = st.started_at
    entries = []
    for (kind, qos, name), e in sorted(rec.entries.items()):
        entries.append({"kind": kind, "qos": qos, "name": name, "count": e.count, "failures": e.failures,
                        "bytes": e.bytes, "behind": e.behind, "latency_us": e.hist.to_dict()})
    series = []
    for sec, slots in sorted(rec.series.items()):
        for skey, (count, failures, h) in sorted(slots.items()):
            kind, qos = skey.split("|", 1)
            h = Histogram.decode(h) if isinstance(h, str) else h
            p50, p99 = h.percentiles([50, 99])
            series.append({"t": sec - int(start), "kind": kind, "qos": qos, "count": count, "failures": failures,
                           "p50_us": p50, "p99_us": p99, "max_us": h.max, "hdr": h.encode()})
    scenario = st.scenario
    server_cfg = scenario.server(st.params) if scenario is not None and scenario.server else {}
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
            "start_time": _iso(start),
            "end_time": _iso(end),
            "duration_s": round(end - start, 3),
            "git_commit": _git_commit(),
            "target": st.target_url or environment.host,
            "embedded_server": st.server is not None,
            "hostname": platform.node(),
            "workers": workers,
            "locust": locust.__version__,
            "python": sys.version.split()[0],
            "timeline_origin_s": round((st.t0_wall or start) - int(start), 3),  # phase 0 starts, on the series' t
            "server_config": server_cfg,
            "scheduler": server_cfg.get("scheduler") or "default (priority, 50000 B/s, 60 Hz)",
        },
        "entries": entries,
        "series": series,
        "phases": phase_summary(series, scenario, st.params, (st.t0_wall or start) - int(start), end - int(start)),
        "dispatcher": {"client": client_stats, "server": st.server_stats},
        "connections": {"reconnects": st.reconnects, "connect_failures": st.connect_failures},
        "thresholds": None,
    }


def phase_summary(series: list[dict[str, Any]], scenario: Scenario | None, params: dict[str, Any],
                  origin: float, end: float) -> list[dict[str, Any]]:
    """Per phase of the timeline and (kind, qos): latency over every second spent in that phase (the
    timeline repeats its phases; a second belongs to the phase its middle falls in)."""
    if scenario is None:
        return []
    bounds = scenario.boundaries(params)
    cycle = sum(p.duration_in(params) for p in scenario.phases)

    def phase_at(t: float) -> str | None:
        if t < origin:
            return None
        off = t - origin
        if scenario.repeat and cycle != float("inf"):
            off %= cycle
        name = None
        for n, start in bounds:
            if off >= start:
                name = n
        return name

    groups: dict[tuple[str, str, str], list[Any]] = {}
    for row in series:
        ph = phase_at(row["t"] + 0.5)
        if ph is None:
            continue
        g = groups.setdefault((ph, row["kind"], row["qos"]), [0, 0, []])
        g[0] += row["count"]
        g[1] += row["failures"]
        g[2].append(Histogram.decode(row["hdr"]))
    order = {n: i for i, (n, _) in enumerate(bounds)}
    out = []
    for (ph, kind, qos), (count, failures, hists) in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0])):
        h = merged(hists)
        p50, p99 = h.percentiles([50, 99])
        out.append({"phase": ph, "kind": kind, "qos": qos, "count": count, "failures": failures,
                    "p50_us": p50, "p99_us": p99, "max_us": h.max, "hdr": h.encode()})
    return out


def write_results(results: dict[str, Any], path: str | None, scenario: Scenario | None) -> Path:
    if path:
        p = Path(path)
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        p = Path("results") / f"{stamp}-{scenario.name if scenario else 'run'}" / "results.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(results, indent=1))
    return p


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ResultsError(f"{p}: no such results file") from None
    except OSError as e:
        raise ResultsError(f"{p}: cannot read it: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        what = "truncated" if e.pos >= len(text.rstrip()) - 1 else "not valid JSON"
        raise ResultsError(f"{p}: {what} (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ResultsError(f"{p}: not a netharness results file (expected \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ResultsError(f"{p}: results version {doc.get('version')!r} is not supported (this reads {VERSION})")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ResultsError(f"{p}: missing {', '.join(missing)}")
    for i, row in enumerate(doc["entries"]):
        for k in ("kind", "qos", "name", "count", "failures", "latency_us"):
            if k not in row:
                raise ResultsError(f"{p}: entry {i} has no {k!r}")
    return doc


def format_table(results: dict[str, Any]) -> str:
    """The run's latencies, to the microsecond (Locust's own table rounds to whole milliseconds)."""
    rows = []
    for r in results["entries"]:
        lat = r["latency_us"]
        has = lat["count"] > 0
        cells = [format_us(lat[k]) if has else "-" for k in ("p50", "p90", "p99", "p99.9", "max")]
        rows.append((r["kind"], r["qos"], r["name"], r["count"], r["failures"], r["behind"], *cells))
    return "\nnetharness latency (microsecond resolution)\n" + text_table(
        ("kind", "qos", "name", "count", "fail", "behind", "p50", "p90", "p99", "p99.9", "max"), rows)
