"""A deeper check of a loaded ``results.json`` than its format and version: every encoded histogram decodes
and every counter is a whole number, so the gate and the report fail with one line naming the place
(``entries[3] (request CRITICAL Intent.Skills.Use): "count" is 'many', expected a whole number >= 0``),
never with a traceback or a wrong verdict."""

from __future__ import annotations

from typing import Any

from dispatcher.histogram import Histogram, HistogramError
from harness.results import ResultsError

__all__ = ["check_results"]

ENTRY_COUNTERS = ("count", "failures", "bytes", "behind")
TIER_COUNTERS = ("sent", "dropped", "ticks", "saturated_ticks", "longest_saturated_run")
NAME_COUNTERS = ("sent", "timeouts", "retries", "dropped")


def _count(row: dict[str, Any], key: str, at: str, required: bool = False) -> None:
    if key not in row:
        if required:
            raise ResultsError(f"{at}: has no {key!r}")
        return
    v = row[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ResultsError(f"{at}: {key!r} is {v!r}, expected a whole number >= 0")


def _hdr(encoded: Any, at: str) -> None:
    if not isinstance(encoded, str):
        raise ResultsError(f"{at}: the histogram ('hdr') is {type(encoded).__name__}, expected an encoded string")
    try:
        Histogram.decode(encoded)
    except HistogramError as e:
        raise ResultsError(f"{at}: the histogram ('hdr') does not decode: {e}") from None


def _table(value: Any, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ResultsError(f"{at}: expected an object, got {type(value).__name__}")
    return value


def check_results(results: dict[str, Any], where: str = "results") -> None:
    """Raise ``ResultsError`` (naming ``where`` and the place) for a histogram that does not decode or a
    counter that is not a whole number."""
    if not isinstance(results.get("entries"), list):
        raise ResultsError(f"{where}: 'entries' must be a list")
    for i, e in enumerate(results["entries"]):
        e = _table(e, f"{where}: entries[{i}]")
        at = f"{where}: entries[{i}] ({e.get('kind')} {e.get('qos')} {e.get('name')})"
        for k in ENTRY_COUNTERS:
            _count(e, k, at, required=k in ("count", "failures"))
        lat = _table(e.get("latency_us"), f"{at}: latency_us")
        _hdr(lat.get("hdr"), f"{at}: latency_us")
    for i, p in enumerate(results.get("phases") or []):
        p = _table(p, f"{where}: phases[{i}]")
        at = f"{where}: phases[{i}] ({p.get('phase')} {p.get('kind')} {p.get('qos')})"
        for k in ("count", "failures", "behind"):
            _count(p, k, at)
        if "hdr" in p:
            _hdr(p["hdr"], at)
    for i, s in enumerate(results.get("series") or []):
        s = _table(s, f"{where}: series[{i}]")
        _count(s, "count", f"{where}: series[{i}]")
        if "hdr" in s:
            _hdr(s["hdr"], f"{where}: series[{i}]")
    sides = _table(results.get("dispatcher", {}), f"{where}: dispatcher")
    for side, stats in sides.items():
        if stats is None:
            continue
        stats = _table(stats, f"{where}: dispatcher.{side}")
        for tier, t in _table(stats.get("tiers", {}), f"{where}: dispatcher.{side}.tiers").items():
            at = f"{where}: dispatcher.{side}.tiers.{tier}"
            t = _table(t, at)
            for k in TIER_COUNTERS:
                _count(t, k, at)
            if isinstance(t.get("sojourn_us"), dict):
                _hdr(t["sojourn_us"].get("hdr"), f"{at}.sojourn_us")
        for name, n in _table(stats.get("names", {}), f"{where}: dispatcher.{side}.names").items():
            at = f"{where}: dispatcher.{side}.names.{name}"
            n = _table(n, at)
            for k in NAME_COUNTERS:
                _count(n, k, at)
