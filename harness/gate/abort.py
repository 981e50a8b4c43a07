"""Thresholds that stop a run early (k6's ``abortOnFail``): the decision, as a pure function.

A thresholds entry written as a table opts in::

    "latency{qos:CRITICAL}" = [{threshold = "p(99) < 50ms", abort_on_fail = true, delay_abort_eval = "5s"}]
    "dropped{qos:CRITICAL}" = [{threshold = "count == 0", abort_on_fail = true}]

``should_abort(thresholds, partial_results, elapsed_s)`` evaluates the ``abort_on_fail`` thresholds on the
results so far (the same ``results.json`` shape, built mid-run) and says whether the run must stop:

* a threshold that *can no longer pass* stops the run as soon as it is seen, delay or not: an upper bound
  on a figure that only grows (``max``, ``count``, ``longest_run``: ``<``, ``<=``, ``==``) that is already
  exceeded, or a lower bound on ``min`` (``>``, ``>=``, ``==``) already undercut;
* any other failing threshold (a percentile, an average, a rate, which later samples may still bring back)
  stops the run once ``delay_abort_eval`` seconds have passed, as k6 does;
* a threshold with no data yet never stops a run.

The caller (the Locust plugin) checks every second or so and, given an ``Abort``, prints ``abort.message``,
sets the exit code to 1 and stops the runner; the final gate then records the verdicts as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.gate.thresholds import Threshold, Verdict, evaluate

__all__ = ["Abort", "can_no_longer_pass", "should_abort"]

GROWING = ("max", "count", "longest_run")  # figures a run's later samples can only raise
UPPER = ("<", "<=", "==")
LOWER = (">", ">=", "==")


@dataclass(frozen=True)
class Abort:
    verdict: Verdict
    elapsed_s: float
    final: bool  # True: the threshold can no longer pass, whatever the rest of the run does

    @property
    def message(self) -> str:
        t = self.verdict.threshold
        why = "can no longer pass" if self.final else f"fails after {t.delay_abort_eval:g} s (delay_abort_eval)"
        return (f"netharness: aborting the run at {self.elapsed_s:.1f} s: threshold {t.key} {t.expression} {why} "
                f"(measured {self.verdict.shown}; abort_on_fail)")


def can_no_longer_pass(v: Verdict) -> bool:
    """A failed verdict that more samples cannot turn into a pass."""
    t = v.threshold
    if v.passed or v.measured is None:
        return False
    if t.agg in GROWING:
        return t.op in UPPER
    if t.agg == "min":
        return t.op in LOWER
    return False


def should_abort(thresholds: list[Threshold], partial_results: dict[str, Any], elapsed_s: float) -> Abort | None:
    """The first ``abort_on_fail`` threshold that stops the run now, or None to carry on."""
    armed = [t for t in thresholds if t.abort_on_fail]
    if not armed:
        return None
    for v in evaluate(armed, partial_results):
        if v.passed or v.measured is None:
            continue
        final = can_no_longer_pass(v)
        if final or elapsed_s >= v.threshold.delay_abort_eval:
            return Abort(v, elapsed_s, final)
    return None
