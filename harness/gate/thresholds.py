"""QoS assertions: k6-style thresholds evaluated against ``results.json``.

A thresholds file (TOML) maps a metric with optional tag filters to a list of expressions::

    [thresholds]
    "latency{qos:CRITICAL}" = ["p(99) < 50ms", "max < 250ms"]
    "latency{name:Intent.Stats.RequestSnapshot}" = ["p(95) < 400ms"]
    "failures" = ["rate < 0.1%"]
    "dropped{qos:CRITICAL}" = ["count == 0"]
    "saturation{qos:HIGH}" = ["ratio < 1%"]
    "behind_schedule" = ["rate < 1%"]

Metrics, their aggregations, and where the figures come from:

=================  ==========================================  ==============================================
metric             aggregations                                source
=================  ==========================================  ==============================================
latency            p(N), avg, med, min, max, count             the harness's histograms (tags: kind, qos,
                                                               name, phase)
failures           rate, count                                 failed / all sends and events
behind_schedule    rate, count                                 sends that started late / all sends
lost               rate, count                                 sends never acknowledged or answered by the
                                                               end / all sends (tags: kind, qos, name)
clock_skew         rate, count                                 negative one-way samples / all samples
throughput         rate (per second), count                    samples / run duration
timeouts, retries  rate, count                                 the players' dispatchers (tag: name)
dropped            rate, count                                 both dispatchers: envelopes dropped and
                                                               requests refused, any reason (tags: qos,
                                                               name; the same rows summed either way)
saturation         ratio, longest_run                          scheduler ticks that ended with the tier's
                                                               frames waiting (tag: qos; both sides)
sojourn            p(N), avg, med, max, count                  enqueue -> wire, both sides (tag: qos)
=================  ==========================================  ==============================================

Units: durations take ``us``, ``ms`` or ``s`` (a bare number is milliseconds, as in k6); rates and ratios
take ``%`` (a bare number is a fraction).  Operators: ``<  <=  >  >=  ==  !=``.

An expression may also be a table, to stop a run early when it fails (k6's ``abortOnFail``; see
``harness/gate/abort.py``)::

    "latency{qos:CRITICAL}" = [{threshold = "p(99) < 50ms", abort_on_fail = true, delay_abort_eval = "5s"}]

A file holds only the ``[thresholds]`` table.
"""

from __future__ import annotations

import math
import operator
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dispatcher.envelope import QoS
from dispatcher.histogram import Histogram, merged
from dispatcher.stats import format_us

__all__ = ["Threshold", "ThresholdError", "Verdict", "evaluate", "load_thresholds", "parse_thresholds"]


class ThresholdError(ValueError):
    """A thresholds file that cannot be used: the message names the file, key, expression and what is allowed."""


OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
}
TIME_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6}  # to microseconds
DURATION_AGGS = ("avg", "med", "min", "max")
METRICS: dict[str, dict[str, Any]] = {
    "latency": {"aggs": ("p", *DURATION_AGGS, "count"), "tags": ("kind", "qos", "name", "phase")},
    "failures": {"aggs": ("rate", "count"), "tags": ("kind", "qos", "name", "phase")},
    "behind_schedule": {"aggs": ("rate", "count"), "tags": ("kind", "qos", "name")},
    "lost": {"aggs": ("rate", "count"), "tags": ("kind", "qos", "name")},
    "clock_skew": {"aggs": ("rate", "count"), "tags": ("kind", "qos", "name")},
    "throughput": {"aggs": ("rate", "count"), "tags": ("kind", "qos", "name")},
    "timeouts": {"aggs": ("rate", "count"), "tags": ("name",)},
    "retries": {"aggs": ("rate", "count"), "tags": ("name",)},
    "dropped": {"aggs": ("rate", "count"), "tags": ("qos", "name")},
    "saturation": {"aggs": ("ratio", "longest_run"), "tags": ("qos",)},
    "sojourn": {"aggs": ("p", "avg", "med", "max", "count"), "tags": ("qos",)},
}
KINDS = ("request", "intent", "event")
_KEY_RE = re.compile(r"^(?P<metric>[a-z_]+)(\{(?P<tags>[^}]*)\})?$")
_EXPR_RE = re.compile(r"^\s*(?P<agg>[a-z_]+(\(\s*(?P<arg>[0-9.]+)\s*\))?)\s*(?P<op><=|>=|==|!=|<|>)\s*"
                      r"(?P<value>-?[0-9]*\.?[0-9]+)\s*(?P<unit>[a-z%]*)\s*$")


@dataclass(frozen=True)
class Threshold:
    key: str  # as written: 'latency{qos:CRITICAL}'
    metric: str
    tags: tuple[tuple[str, str], ...]
    expression: str  # as written: 'p(99) < 50ms'
    agg: str  # 'p', 'avg', ..., 'rate'
    arg: float | None  # the percentile of p(N)
    op: str
    value: float  # in base units: microseconds for durations, a fraction for rates and ratios, else a number
    unit: str  # 'us' | 'fraction' | 'number'
    abort_on_fail: bool = False  # stop the run when it fails (harness/gate/abort.py)
    delay_abort_eval: float = 0.0  # seconds into the run before abort_on_fail is evaluated


@dataclass(frozen=True)
class Verdict:
    threshold: Threshold
    measured: float | None  # in base units; None: no data
    passed: bool
    shown: str  # the measured value, readable

    def as_dict(self) -> dict[str, Any]:
        t = self.threshold
        return {"metric": t.key, "expression": t.expression, "measured": self.measured, "shown": self.shown,
                "passed": self.passed}


def load_thresholds(path: str | Path, names: tuple[str, ...] = ()) -> list[Threshold]:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ThresholdError(f"{p}: no such thresholds file") from None
    except tomllib.TOMLDecodeError as e:
        raise ThresholdError(f"{p}: not valid TOML: {e}") from None
    return parse_thresholds(doc, str(p), names)


def parse_thresholds(doc: dict[str, Any], where: str = "thresholds", names: tuple[str, ...] = ()) -> list[Threshold]:
    unknown = [k for k in doc if k != "thresholds"]
    if unknown:
        raise ThresholdError(f"{where}: unknown table or key {', '.join(map(repr, unknown))}; a thresholds file "
                             "holds only the [thresholds] table")
    table = doc.get("thresholds")
    if not isinstance(table, dict) or not table:
        raise ThresholdError(f"{where}: expected a [thresholds] table of metric = [expressions]")
    out = []
    for key, exprs in table.items():
        if isinstance(exprs, str | dict):
            exprs = [exprs]
        if not isinstance(exprs, list) or not all(isinstance(e, str | dict) for e in exprs) or not exprs:
            raise ThresholdError(f"{where}: key {key!r}: expected a list of expressions like [\"p(99) < 50ms\"]")
        metric, tags = _parse_key(key, where, names)
        for expr in exprs:
            if isinstance(expr, dict):
                text, abort, delay = _parse_options(key, expr, where)
                out.append(replace(_parse_expr(key, metric, tags, text, where), abort_on_fail=abort,
                                   delay_abort_eval=delay))
            else:
                out.append(_parse_expr(key, metric, tags, expr, where))
    return out


_OPTIONS = ("threshold", "abort_on_fail", "delay_abort_eval")


def _parse_options(key: str, entry: dict[str, Any], where: str) -> tuple[str, bool, float]:
    """``{threshold = "p(99) < 50ms", abort_on_fail = true, delay_abort_eval = "5s"}``."""
    at = f"{where}: key {key!r}"
    unknown = sorted(set(entry) - set(_OPTIONS))
    if unknown:
        raise ThresholdError(f"{at}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(_OPTIONS)}")
    text = entry.get("threshold")
    if not isinstance(text, str):
        raise ThresholdError(f"{at}: a table entry needs threshold = \"EXPRESSION\", like \"p(99) < 50ms\"")
    abort = entry.get("abort_on_fail", False)
    if not isinstance(abort, bool):
        raise ThresholdError(f"{at}: abort_on_fail must be true or false, got {abort!r}")
    raw = entry.get("delay_abort_eval", "0s")
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", raw) if isinstance(raw, str) else None
    if m is None or isinstance(raw, bool):
        raise ThresholdError(f"{at}: delay_abort_eval {raw!r}: expected a duration like \"5s\", \"500ms\" or \"1m\"")
    delay = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2) or "s"]
    if delay and not abort:
        raise ThresholdError(f"{at}: delay_abort_eval is set but abort_on_fail is not; add abort_on_fail = true")
    return text, abort, delay


def _parse_key(key: str, where: str, names: tuple[str, ...]) -> tuple[str, tuple[tuple[str, str], ...]]:
    m = _KEY_RE.match(key.strip())
    if m is None:
        raise ThresholdError(f"{where}: key {key!r}: expected METRIC or METRIC{{tag:value,...}}")
    metric = m.group("metric")
    if metric not in METRICS:
        raise ThresholdError(f"{where}: key {key!r}: unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
    tags: list[tuple[str, str]] = []
    for part in filter(None, (t.strip() for t in (m.group("tags") or "").split(","))):
        if ":" not in part:
            raise ThresholdError(f"{where}: key {key!r}: tag {part!r} must be tag:value")
        tag, value = (x.strip() for x in part.split(":", 1))
        allowed = METRICS[metric]["tags"]
        if tag not in allowed:
            raise ThresholdError(f"{where}: key {key!r}: {metric} has no tag {tag!r}; its tags: {', '.join(allowed)}")
        if tag == "qos" and value not in QoS.__members__:
            raise ThresholdError(f"{where}: key {key!r}: unknown qos {value!r}; tiers: {', '.join(QoS.__members__)}")
        if tag == "kind" and value not in KINDS:
            raise ThresholdError(f"{where}: key {key!r}: unknown kind {value!r}; kinds: {', '.join(KINDS)}")
        if tag == "name" and names and value not in names:
            raise ThresholdError(f"{where}: key {key!r}: {value!r} is not an envelope name of the registry")
        tags.append((tag, value))
    return metric, tuple(tags)


def _parse_expr(key: str, metric: str, tags: tuple[tuple[str, str], ...], expr: str, where: str) -> Threshold:
    at = f"{where}: key {key!r}: expression {expr!r}"
    m = _EXPR_RE.match(expr)
    if m is None:
        raise ThresholdError(f"{at}: expected AGGREGATION OPERATOR VALUE[UNIT], like \"p(99) < 50ms\"; "
                             f"operators: {' '.join(OPS)}")
    agg_text, op, unit = m.group("agg"), m.group("op"), m.group("unit")
    agg = agg_text.split("(")[0]
    allowed = METRICS[metric]["aggs"]
    if agg not in allowed:
        shown = ", ".join("p(N)" if a == "p" else a for a in allowed)
        raise ThresholdError(f"{at}: {metric} has no aggregation {agg_text!r}; allowed: {shown}")
    arg = None
    if agg == "p":
        if m.group("arg") is None:
            raise ThresholdError(f"{at}: a percentile is written p(N), N in 0..100")
        arg = float(m.group("arg"))
        if not 0 <= arg <= 100:
            raise ThresholdError(f"{at}: percentile {arg:g} is not in 0..100")
    elif "(" in agg_text:
        raise ThresholdError(f"{at}: {agg} takes no argument")
    value = float(m.group("value"))
    if agg in ("p", *DURATION_AGGS) and metric in ("latency", "sojourn"):
        if unit not in ("", *TIME_UNITS):
            raise ThresholdError(f"{at}: unknown unit {unit!r} for a duration; allowed: us, ms, s")
        return Threshold(key, metric, tags, expr, agg, arg, op, value * TIME_UNITS[unit or "ms"], "us")
    if agg in ("rate", "ratio") and metric != "throughput":
        if unit not in ("", "%"):
            raise ThresholdError(f"{at}: unknown unit {unit!r} for a {agg}; allowed: % or none (a fraction)")
        return Threshold(key, metric, tags, expr, agg, arg, op, value / 100 if unit == "%" else value, "fraction")
    if unit:
        raise ThresholdError(f"{at}: {agg} takes a plain number, not {unit!r}")
    return Threshold(key, metric, tags, expr, agg, arg, op, value, "number")


# -- evaluation -----------------------------------------------------------------------------------


def evaluate(thresholds: list[Threshold], results: dict[str, Any]) -> list[Verdict]:
    return [_verdict(t, results) for t in thresholds]


def _match(row: dict[str, Any], tags: tuple[tuple[str, str], ...]) -> bool:
    return all(row.get(tag) == value for tag, value in tags)


def _verdict(t: Threshold, results: dict[str, Any]) -> Verdict:
    measured = _measure(t, results)
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return Verdict(t, None, False, "no data")
    passed = OPS[t.op](measured, t.value)
    if t.unit == "us":
        shown = format_us(measured)
    elif t.unit == "fraction":
        shown = f"{100 * measured:.3g}%"
    else:
        shown = f"{measured:g}"
    return Verdict(t, measured, passed, shown)


def _hist_figure(t: Threshold, h: Histogram) -> float | None:
    if t.agg == "count":
        return float(h.count)
    if not h.count:
        return None
    if t.agg == "p":
        assert t.arg is not None
        return float(h.percentile(t.arg))
    return float({"avg": h.mean, "med": h.percentile(50), "min": h.min, "max": h.max}[t.agg])


def _measure(t: Threshold, r: dict[str, Any]) -> float | None:
    metric, tags = t.metric, t.tags
    phase = dict(tags).get("phase")
    plain = tuple(x for x in tags if x[0] != "phase")
    if metric == "latency":
        if phase is not None:
            rows = [p for p in r.get("phases", []) if p["phase"] == phase and _match(p, plain) and "hdr" in p]
            return _hist_figure(t, merged(Histogram.decode(p["hdr"]) for p in rows))
        rows = [e for e in r["entries"] if _match(e, plain)]
        return _hist_figure(t, merged(Histogram.decode(e["latency_us"]["hdr"]) for e in rows))
    if metric in ("lost", "clock_skew"):
        rows = [e for e in r["entries"] if _match(e, plain)]
        part = sum(e.get(metric, 0) for e in rows)
        total = sum(e.get("sent", e["count"]) if metric == "lost" else e["count"] for e in rows)
        return float(part) if t.agg == "count" else (part / total if total else 0.0)
    if metric in ("failures", "behind_schedule", "throughput"):
        rows = [e for e in r["entries"] if _match(e, plain)] if phase is None else \
            [p for p in r.get("phases", []) if p["phase"] == phase and _match(p, plain)]
        total = sum(e["count"] for e in rows)
        part = sum(e["failures"] if metric == "failures" else e.get("behind", 0) if metric == "behind_schedule"
                   else e["count"] for e in rows)
        if t.agg == "count":
            return float(part)
        if metric == "throughput":
            duration = r["meta"].get("duration_s") or 0
            return part / duration if duration else None
        return part / total if total else None
    sides = [s for s in (r["dispatcher"].get("client"), r["dispatcher"].get("server")) if s]
    if metric in ("timeouts", "retries"):
        client = r["dispatcher"].get("client") or {}
        names = [n for name, n in client.get("names", {}).items() if _match({"name": name}, tags)]
        part = sum(n.get(metric, 0) for n in names)
        sent = sum(n.get("sent", 0) for n in names)
        return float(part) if t.agg == "count" else (part / sent if sent else None)
    if metric == "dropped" and r.get("dropped") is not None:  # one table, summed by tier or by name alike
        rows = [d for d in r["dropped"] if _match(d, tags)]
        part, sent = sum(d["dropped"] for d in rows), sum(d["sent"] for d in rows)
        return float(part) if t.agg == "count" else (part / (part + sent) if part + sent else 0.0)
    if metric == "dropped":  # a results file from before the "dropped" table
        name = dict(tags).get("name")
        qos = dict(tags).get("qos")
        if name is not None:
            rows = [s["names"][name] for s in sides if name in s.get("names", {})]
            part, sent = sum(x["dropped"] for x in rows), sum(x["sent"] for x in rows)
        else:
            tiers = [s["tiers"][q] for s in sides for q in s.get("tiers", {}) if qos in (None, q)]
            part, sent = sum(x["dropped"] for x in tiers), sum(x["sent"] for x in tiers)
        return float(part) if t.agg == "count" else (part / (part + sent) if part + sent else 0.0)
    tiers = [s["tiers"][q] for s in sides for q in s.get("tiers", {}) if dict(tags).get("qos") in (None, q)]
    if metric == "saturation":
        if t.agg == "longest_run":
            return float(max((x["longest_saturated_run"] for x in tiers), default=0))
        ticks = sum(x["ticks"] for x in tiers)
        return sum(x["saturated_ticks"] for x in tiers) / ticks if ticks else 0.0
    # sojourn
    return _hist_figure(t, merged(Histogram.decode(x["sojourn_us"]["hdr"]) for x in tiers))
