"""Pure aggregation: ``results.json`` -> the tables and series a report shows.  No drawing here.

Everything is derived from the results file alone (DESIGN.md: the gate and the report read only it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dispatcher.envelope import QoS
from dispatcher.histogram import Histogram, merged
from dispatcher.stats import format_us

__all__ = ["TIERS", "Model", "Series", "build_model", "dropped_by", "headline", "human_bytes", "summary_lines"]

TIERS = tuple(q.name for q in QoS)
PERCENTILES = (50, 90, 99, 99.9)
SPECTRUM = tuple(float(p) for p in np.concatenate([np.linspace(0, 90, 19), [95, 97.5, 99, 99.5, 99.75, 99.9,
                                                                             99.95, 99.99, 99.995, 99.999]]))
COUNTERS = ("sent", "received", "retries", "timeouts", "failures", "dropped", "coalesced", "seq_regressions",
            "seq_gaps", "validation_errors", "handler_errors", "wrong_direction", "qos_deviations")
REGRESSION = 0.10  # a p50/p99 more than 10% worse than the baseline's (and 100 us or more) is a regression


@dataclass
class Series:
    """Per-second points of one tier."""

    t: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)  # microseconds
    p99: list[float] = field(default_factory=list)
    count: list[int] = field(default_factory=list)


@dataclass
class Model:
    title: str
    empty: bool
    meta: list[tuple[str, str]]
    verdicts: list[tuple[str, str, str, str]] | None  # (verdict, metric, expression, measured), failures first
    entries: list[tuple[Any, ...]]  # kind, tier, name, sent, count, failures, lost, skew, behind, p50..max
    summary: list[str]  # clock, schedule, delivery, connections: one line each
    phases_table: list[tuple[Any, ...]]  # phase, kind, tier, count, p50, p99, max
    counters: dict[str, list[tuple[Any, ...]]]  # side -> rows (name, *COUNTERS, drops by reason)
    peer: dict[str, list[tuple[str, Any]]]  # side -> connection-level counters (byte counts humanised)
    tier_hist: dict[str, tuple[list[float], list[int]]]  # tier -> (bucket values us, counts)
    spectrum: dict[str, tuple[list[float], list[float]]]  # tier -> (1/(1-p), value us)
    over_time: dict[str, Series]  # tier -> per-second latency and throughput
    phase_marks: list[tuple[str, float]]  # (phase name, t on the series' axis)
    queue: dict[str, tuple[list[float], list[int], list[float | None]]]  # tier -> (t, queued, sojourn p99 us
    # or None: no frame of the tier left in that second)
    saturation: dict[str, tuple[float, int, int]]  # tier -> (ratio, longest run, dropped: dropped_by("qos"))
    dropped_tiers: list[tuple[str, int]]  # the same "dropped" table summed by tier ...
    dropped_names: list[tuple[str, int]]  # ... and by name: equal totals
    baseline: list[tuple[Any, ...]] | None  # kind, tier, name, p50, base p50, d%, p99, base p99, d%, regressed
    regressions: int = 0
    partial_t: float | None = None  # the series' last second: the run ended inside it (throughput leaves it out)
    headline: str = ""  # one sentence: the verdict, CRITICAL's p99 (calm vs flood), what was lost or dropped
    params: list[tuple[str, str]] = field(default_factory=list)  # the scenario's parameters
    server_config: list[tuple[str, str]] = field(default_factory=list)  # the game config the server ran
    baseline_name: str | None = None  # the baseline's file
    baseline_spectrum: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    baseline_over_time: dict[str, Series] = field(default_factory=dict)


def _fmt_us(v: float | None) -> str:
    return "-" if v is None else format_us(v)


def build_model(results: dict[str, Any], baseline: dict[str, Any] | None = None,
                baseline_name: str | None = None) -> Model:
    meta = results["meta"]
    hists = [(e, Histogram.decode(e["latency_us"]["hdr"])) for e in results["entries"]]
    sides = {side: s for side, s in results["dispatcher"].items() if s}
    base = _baseline(hists, baseline) if baseline is not None else None
    base_hists = ([(e, Histogram.decode(e["latency_us"]["hdr"])) for e in baseline["entries"]]
                  if baseline is not None else [])
    series = results.get("series", [])
    model = Model(
        title=f"netharness report: {meta.get('scenario') or 'run'}",
        empty=not any(h.count for _, h in hists),
        meta=_meta_rows(meta, results),
        verdicts=_verdicts(results.get("thresholds")),
        entries=_entry_rows(hists),
        summary=summary_lines(results),
        phases_table=[(p["phase"], p["kind"], p["qos"], p["count"], _fmt_us(p.get("p50_us")),
                       _fmt_us(p.get("p99_us")), _fmt_us(p.get("max_us"))) for p in results.get("phases", [])],
        counters={side: _counter_rows(s) for side, s in sides.items()},
        peer={side: [(k, f"{human_bytes(v)} ({v:,} B)" if "bytes" in k and isinstance(v, int | float) else v)
                     for k, v in s.get("peer", {}).items() if v] for side, s in sides.items()},
        tier_hist=_tier_hist(hists),
        spectrum=_spectrum(hists),
        over_time=_over_time(results.get("series", [])),
        phase_marks=_phase_marks(meta),
        queue=_queue(sides.get("server")),
        saturation=_saturation(sides, dropped_by(results, "qos")),
        dropped_tiers=sorted(dropped_by(results, "qos").items(), key=lambda kv: TIERS.index(kv[0])
                             if kv[0] in TIERS else len(TIERS)),
        dropped_names=sorted(dropped_by(results, "name").items()),
        baseline=base,
        regressions=sum(1 for row in base or [] if row[-1]),
        partial_t=float(max(r["t"] for r in series)) if series else None,
        params=[(str(k), _value(v)) for k, v in (meta.get("params") or {}).items()],
        server_config=_flat(meta.get("server_config") or {}),
        baseline_name=baseline_name,
        baseline_spectrum=_spectrum(base_hists),
        baseline_over_time=_over_time(baseline.get("series", [])) if baseline is not None else {},
    )
    model.headline = headline(model, results)
    return model


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v) or "-"
    return str(v)


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``{"scheduler": {"mode": "fifo"}}`` -> ``[("scheduler.mode", "fifo")]``."""
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", _value(v)))
    return out


def human_bytes(n: float) -> str:
    """1234567 -> "1.2 MB" (decimal units, as network figures are)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def headline(m: Model, results: dict[str, Any]) -> str:
    """One sentence at the top of the report: did it keep its promises, CRITICAL's p99 (per phase when the
    timeline has several), and what was lost, dropped or refused."""
    if m.empty:
        return "This run recorded no samples: nothing to judge."
    if m.verdicts is None:
        verdict = "Not gated"
    else:
        failed = sum(1 for v in m.verdicts if v[0] == "FAIL")
        verdict = (f"FAILED: {failed} of {len(m.verdicts)} thresholds missed" if failed
                   else f"PASSED: all {len(m.verdicts)} thresholds held")
    crit = [h for e, h in _decoded(results) if e["qos"] == "CRITICAL" and e["kind"] != "event" and h.count]
    parts = [verdict]
    if crit:
        phases = [p for p in results.get("phases") or [] if p["qos"] == "CRITICAL" and p["kind"] == "request"
                  and p.get("p99_us") is not None]
        p99 = format_us(merged(crit).percentile(99))
        if len(phases) > 1:
            parts.append(f"CRITICAL p99 {p99} (" + ", ".join(f"{p['phase']} {format_us(p['p99_us'])}"
                                                             for p in phases) + ")")
        else:
            parts.append(f"CRITICAL p99 {p99}")
    lost = sum(e.get("lost", 0) for e in results["entries"])
    dropped = sum(n for _, n in m.dropped_tiers)
    worst = max(m.dropped_tiers, key=lambda kv: kv[1])[0] if m.dropped_tiers else None
    parts.append(f"{lost:,} lost, {dropped:,} dropped or refused" + (f" (mostly {worst})" if worst else ""))
    return "; ".join(parts) + "."


def _decoded(results: dict[str, Any]) -> list[tuple[dict[str, Any], Histogram]]:
    return [(e, Histogram.decode(e["latency_us"]["hdr"])) for e in results["entries"]]


def _meta_rows(meta: dict[str, Any], results: dict[str, Any]) -> list[tuple[str, str]]:
    keys = ("scenario", "users", "spawn_rate", "run_time_s", "duration_s", "start_time", "end_time",
            "target", "embedded_server", "workers", "scheduler", "clock", "git_commit", "hostname", "locust",
            "python")  # params and the server's game config: tables of their own
    rows = [(k, _value(meta.get(k))) for k in keys if meta.get(k) not in (None, "", {})]
    conn = results.get("connections") or {}
    rows += [(k, str(v)) for k, v in conn.items()]
    return rows


def _verdicts(th: dict[str, Any] | None) -> list[tuple[str, str, str, str]] | None:
    if not th:
        return None
    rows = [("pass" if v["passed"] else "FAIL", v["metric"], v["expression"], v["shown"]) for v in th["verdicts"]]
    return sorted(rows, key=lambda r: r[0] != "FAIL")


def _entry_rows(hists: list[tuple[dict[str, Any], Histogram]]) -> list[tuple[Any, ...]]:
    rows = []
    for e, h in hists:
        figs = [_fmt_us(v) for v in h.percentiles(PERCENTILES)] + [_fmt_us(h.max)] if h.count else ["-"] * 5
        sent = e.get("sent", "-") if e["kind"] != "event" else "-"
        rows.append((e["kind"], e["qos"], e["name"], sent, e["count"], e["failures"], e.get("lost", 0),
                     e.get("clock_skew", 0), e.get("behind", 0), *figs))
    return rows


def _counter_rows(stats: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for name, c in sorted(stats.get("names", {}).items()):
        drops = ", ".join(f"{k}={v}" for k, v in sorted(c.get("drops", {}).items())) or "-"
        rows.append((name, *(c.get(k, 0) for k in COUNTERS), drops))
    return rows


def _by_tier(hists: list[tuple[dict[str, Any], Histogram]]) -> dict[str, Histogram]:
    out = {}
    for tier in TIERS:
        hs = [h for e, h in hists if e["qos"] == tier and h.count]
        if hs:
            out[tier] = merged(hs)
    return out


LOG_BINS = np.logspace(0, 10, 201)  # 1 us .. 10^4 s, 20 bins per decade: what a reader can see


def _tier_hist(hists: list[tuple[dict[str, Any], Histogram]]) -> dict[str, tuple[list[float], list[int]]]:
    """Per tier: samples in log-spaced bins (20 per decade; a value under 1 us counts in the first bin),
    as (bin left edges in us, counts), empty bins left out."""
    out = {}
    for tier, h in _by_tier(hists).items():
        lows, counts = h.buckets()
        binned, edges = np.histogram(np.maximum(lows, 1), bins=LOG_BINS, weights=counts)
        keep = np.flatnonzero(binned)
        out[tier] = (edges[keep].tolist(), binned[keep].astype(int).tolist())
    return out


def _spectrum(hists: list[tuple[dict[str, Any], Histogram]]) -> dict[str, tuple[list[float], list[float]]]:
    out = {}
    for tier, h in _by_tier(hists).items():
        ps = [p for p in SPECTRUM if p < 100]
        out[tier] = ([1.0 / (1.0 - p / 100.0) for p in ps], [float(max(1, v)) for v in h.percentiles(ps)])
    return out


def _over_time(series: list[dict[str, Any]]) -> dict[str, Series]:
    per: dict[str, dict[int, list[Any]]] = {}
    for row in series:
        slot = per.setdefault(row["qos"], {}).setdefault(row["t"], [0, []])
        slot[0] += row["count"]
        slot[1].append(Histogram.decode(row["hdr"]))
    out = {}
    for tier in TIERS:
        if tier not in per:
            continue
        s = Series()
        for t, (count, hs) in sorted(per[tier].items()):
            h = merged(hs)
            p50, p99 = h.percentiles([50, 99])
            s.t.append(float(t))
            s.p50.append(float(p50))
            s.p99.append(float(p99))
            s.count.append(count)
        out[tier] = s
    return out


def _phase_marks(meta: dict[str, Any]) -> list[tuple[str, float]]:
    """Where each phase starts on the series' time axis, every cycle of a repeating timeline."""
    phases = meta.get("phases") or []
    if len(phases) < 2:
        return []
    t = float(meta.get("timeline_origin_s") or 0.0)
    end = float(meta.get("duration_s") or 0.0)
    cycle = meta.get("cycle_s")
    marks = []
    while t <= end:
        marks += [(name, t + float(start)) for name, start in phases if t + float(start) <= end]
        if not cycle:
            break
        t += float(cycle)
    return marks


def _queue(server: dict[str, Any] | None) -> dict[str, tuple[list[float], list[int], list[float | None]]]:
    """Per tier: (t, frames queued, sojourn p99 in us, or None for a second in which none of its frames left)."""
    rows = (server or {}).get("series") or []
    if not rows:
        return {}
    t0 = rows[0]["t"] - 1.0
    out: dict[str, tuple[list[float], list[int], list[float | None]]] = {}
    for tier in TIERS:
        pts = [(r["t"] - t0, r[tier]["queued_msgs"],
                float(r[tier]["sojourn_p99_us"]) if r[tier].get("sent", 1) or r[tier]["sojourn_p99_us"] else None)
               for r in rows if tier in r]
        if any(q or s for _, q, s in pts):
            out[tier] = ([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts])
    return out


def _saturation(sides: dict[str, Any], dropped: dict[str, int]) -> dict[str, tuple[float, int, int]]:
    out = {}
    for tier in TIERS:
        ts = [s["tiers"][tier] for s in sides.values() if s and tier in s.get("tiers", {})]
        ticks = sum(t["ticks"] for t in ts)
        sat = sum(t["saturated_ticks"] for t in ts)
        out[tier] = (sat / ticks if ticks else 0.0, max((t["longest_saturated_run"] for t in ts), default=0),
                     dropped.get(tier, 0))
    return out


def dropped_by(results: dict[str, Any], key: str) -> dict[str, int]:
    """``dropped`` (envelopes dropped and requests refused, every reason, both sides) summed by ``"qos"`` or
    ``"name"``: from the one ``dropped`` table of results.json, so both sums have the same total.  A results
    file from before that table falls back to the dispatchers' per-name counters, named by their entries'
    tiers."""
    rows = results.get("dropped")
    if rows is None:
        tiers = {e["name"]: e["qos"] for e in results["entries"]}
        rows = [{"name": n, "qos": tiers.get(n), "dropped": c.get("dropped", 0)}
                for s in results["dispatcher"].values() if s for n, c in s.get("names", {}).items()]
    out: dict[str, int] = {}
    for row in rows:
        if row["dropped"] and row.get(key) is not None:
            out[row[key]] = out.get(row[key], 0) + row["dropped"]
    return out


def summary_lines(results: dict[str, Any]) -> list[str]:
    """Clock, schedule, delivery and connections, one line each (console and report)."""
    lines = []
    clock = results["meta"].get("clock")
    if clock:
        off = clock["offset_s"]
        shown = f"{off[0] * 1e6:+.0f}us .. {off[1] * 1e6:+.0f}us" if isinstance(off, list) else f"{off * 1e6:+.0f}us"
        lines.append(f"clock: {clock['domain']} domain, offset {shown}, error bound "
                     f"+/-{format_us(clock['error_bound_s'] * 1e6)} ({clock['players']} players)")
    sch = results.get("schedule") or {}
    if sch.get("scheduled"):
        lat = sch["lateness_us"]
        lines.append(f"schedule: {sch['behind']} of {sch['scheduled']} sends started more than "
                     f"{format_us((sch['tolerance_s'] or 0) * 1e6)} late (lateness p99 {format_us(lat['p99'])}, "
                     f"max {format_us(lat['max'])})")
    ents = [e for e in results["entries"] if e["kind"] != "event"]
    lost = sum(e.get("lost", 0) for e in ents)
    lines.append(f"delivery: {sum(e.get('sent', 0) for e in ents)} sent, "
                 f"{sum(e['count'] - e['failures'] for e in ents)} acknowledged or answered, "
                 f"{sum(e['failures'] for e in ents) - lost} failed, {lost} lost")
    conn = results.get("connections") or {}
    lines.append("connections: " + ", ".join(f"{k}={v}" for k, v in conn.items()))
    return lines


def _baseline(hists: list[tuple[dict[str, Any], Histogram]], baseline: dict[str, Any]) -> list[tuple[Any, ...]]:
    base = {(e["kind"], e["qos"], e["name"]): Histogram.decode(e["latency_us"]["hdr"]) for e in baseline["entries"]}
    rows = []
    for e, h in hists:
        b = base.get((e["kind"], e["qos"], e["name"]))
        if b is None or not h.count or not b.count:
            continue
        cells: list[Any] = [e["kind"], e["qos"], e["name"]]
        regressed = False
        for p in (50, 99):
            now, then = h.percentile(p), b.percentile(p)
            delta = (now - then) / then if then else math.inf
            regressed |= delta > REGRESSION and now - then >= 100
            cells += [_fmt_us(now), _fmt_us(then), f"{100 * delta:+.1f}%"]
        rows.append((*cells, regressed))
    return rows
