"""``results.json``: the contract between the harness, the gate and the reports (DESIGN.md).

One file per run, versioned: run metadata (with the clock: domain, offset and its error bound); per
``(kind, qos, name)`` sends, counts, failures, ``lost`` (pending at the end: also failures), ``clock_skew``
(negative one-way samples), bytes, sends behind schedule and the latency histogram (microseconds,
HdrHistogram V2 encoding, with its summary); the schedule (tolerance and a histogram of how late every send
started); per-second series per ``(kind, qos)``; the dispatchers' stats (players merged, and the server's);
``dropped``: one table of what was dropped or refused, per side, name and tier, by reason (the gate and the
report sum it by tier or by name); connections (reconnects, resumes); and, once gated, the verdicts.
``latency.csv`` beside it has the same latencies in microseconds, per entry and per phase.  ``load_results``
is the one reader: a malformed, truncated or unknown file gets one clear error naming the file and what is
wrong.

This module knows nothing of Locust: ``harness.runner.runresults.build_results`` fills the contract from a Locust
run, and the gate and the reports read it with ``load_results``.
"""

from __future__ import annotations

import functools
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher.histogram import Histogram, merged
from dispatcher.stats import format_us, text_table

if TYPE_CHECKING:
    from harness.runner.scenario import Scenario

__all__ = ["FORMAT", "VERSION", "ResultsError", "calm_vs_flood_lines", "clock_meta", "dropped_rows", "format_table",
           "git_commit", "iso_time", "load_results", "phase_summary", "swarm_path", "write_latency_csv",
           "write_results"]

FORMAT = "netharness-results"
VERSION = 1
REQUIRED = ("meta", "entries", "series", "dispatcher")


class ResultsError(ValueError):
    """A results file that cannot be read; the message names the file and what is wrong."""


@functools.cache
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def clock_meta(clocks: dict[str, Any]) -> dict[str, Any] | None:
    """The players' clock domain(s), the offset range and the worst error bound (seconds)."""
    if not clocks:
        return None
    domains = clocks["domains"]
    return {"domain": next(iter(domains)) if len(domains) == 1 else "mixed", "domains": domains,
            "offset_s": clocks["offset_min_s"] if clocks["offset_min_s"] == clocks["offset_max_s"]
            else [clocks["offset_min_s"], clocks["offset_max_s"]],
            "error_bound_s": clocks["error_max_s"], "players": clocks["players"]}


def dropped_rows(sides: dict[str, dict[str, Any] | None], tier_of: Any) -> list[dict[str, Any]]:
    """The one definition of ``dropped``: every envelope a dispatcher dropped (a full queue, a rate limit, an
    invalid payload, a replay) and every request it refused (``overloaded``), per side and name, with the
    name's tier and the reasons.  Summed by tier or by name, the totals agree by construction."""
    rows = []
    for side, snap in sides.items():
        for name, c in sorted(((snap or {}).get("names") or {}).items()):
            if not c.get("sent") and not c.get("dropped"):
                continue
            try:
                qos = tier_of(name)
            except Exception:  # a name of another registry: keep the row, tier unknown
                qos = None
            rows.append({"side": side, "name": name, "qos": qos, "sent": c.get("sent", 0),
                         "dropped": c.get("dropped", 0), "drops": dict(c.get("drops") or {})})
    return rows


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


def swarm_path(path: str | None, scenario: Scenario | None, n: int) -> Path:
    """Web UI: where swarm ``n``'s results go (``--results DIR/F`` -> ``DIR/swarm-N/F``)."""
    if path:
        p = Path(path)
        return p.parent / f"swarm-{n}" / p.name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{stamp}-{scenario.name if scenario else 'run'}-swarm{n}" / "results.json"


CSV_COLUMNS = ("scope", "phase", "kind", "qos", "name", "sent", "count", "failures", "lost", "clock_skew", "behind",
               "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us")


def write_latency_csv(results: dict[str, Any], directory: Path) -> Path:
    """``latency.csv``: per entry and per phase, latencies in whole microseconds (Locust's own CSV rounds
    its percentiles to whole milliseconds)."""
    import csv

    out = directory / "latency.csv"
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for e in results["entries"]:
            lat = e["latency_us"]
            figs = [lat[k] for k in ("p50", "p90", "p99", "p99.9", "max")] if lat["count"] else [""] * 5
            w.writerow(["entry", "", e["kind"], e["qos"], e["name"], e.get("sent", ""), e["count"], e["failures"],
                        e.get("lost", 0), e.get("clock_skew", 0), e.get("behind", 0), *figs])
        for ph in results.get("phases", []):
            h = Histogram.decode(ph["hdr"])
            figs = [*h.percentiles([50, 90, 99, 99.9]), h.max] if h.count else [""] * 5
            w.writerow(["phase", ph["phase"], ph["kind"], ph["qos"], "", "", ph["count"], ph["failures"], "", "", "",
                        *figs])
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
    """The run's latencies, to the microsecond (Locust's own table rounds to whole milliseconds), with the
    delivery audit (lost), negative one-way samples (skew), the clock and the connections."""
    rows = []
    for r in results["entries"]:
        lat = r["latency_us"]
        has = lat["count"] > 0
        cells = [format_us(lat[k]) if has else "-" for k in ("p50", "p90", "p99", "p99.9", "max")]
        rows.append((r["kind"], r["qos"], r["name"], r.get("sent", "-") if r["kind"] != "event" else "-",
                     r["count"], r["failures"], r.get("lost", 0), r.get("clock_skew", 0), r["behind"], *cells))
    text = "\nnetharness latency (microsecond resolution)\n" + text_table(
        ("kind", "qos", "name", "sent", "count", "fail", "lost", "skew", "behind", "p50", "p90", "p99", "p99.9",
         "max"), rows)
    from reports.aggregate import summary_lines

    return text + "\n" + "\n".join([*summary_lines(results), *calm_vs_flood_lines(results)])


TICK_US = 1e6 / 60  # one 60 Hz game tick


def calm_vs_flood_lines(results: dict[str, Any]) -> list[str]:
    """For a run with ``calm`` and ``flood`` phases (``mixed.py``, ``critical.py``): CRITICAL p99 per kind,
    calm vs flood, the point of those scenarios.  No line for other runs."""
    by = {(r["phase"], r["kind"]): r for r in results.get("phases") or [] if r.get("qos") == "CRITICAL"}
    lines = []
    for kind in ("request", "intent", "event"):
        calm, flood = by.get(("calm", kind)), by.get(("flood", kind))
        if not calm or not flood or not calm["count"] or not flood["count"]:
            continue
        d = flood["p99_us"] - calm["p99_us"]
        lines.append(f"CRITICAL {kind} p99: calm {format_us(calm['p99_us'])} -> flood {format_us(flood['p99_us'])} "
                     f"({'+' if d >= 0 else '-'}{format_us(abs(d))}, {d / TICK_US:+.2f} of a 60 Hz tick; "
                     f"{calm['count']} and {flood['count']} samples)")
    return lines
