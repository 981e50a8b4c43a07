"""Scripted scenarios: per-player timelines of phases, paced as an open model.

A ``Scenario`` is a list of ``Phase``s (a duration and the ``Action``s each player performs at given rates)
plus ``params`` that the Locust command line may override (``--param skill_rate=8``) and the game config
the embedded server starts with.  Pacing is open-model, as wrk2 does it: every send has an intended time
(the phase start plus k / rate, with a random per-player offset), latency is measured from that intended
time, not from when the send actually happened (no coordinated omission), and a send that starts more than
``behind_after`` (default ``BEHIND_AFTER``, 50 ms: three 60 Hz ticks) after its intended time, measured
after the wait (a sleep that overran, a frozen process), is counted as behind schedule, never skipped.
Requests never block the timeline: their answers are recorded when they arrive.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BEHIND_AFTER", "Action", "Params", "Phase", "Scenario", "ScenarioError", "parse_params"]

Params = dict[str, Any]
#: Seconds late (actual start minus intended time) before a send counts as behind schedule.
BEHIND_AFTER = 0.050
Payload = Callable[[random.Random, Params, int], Any] | Mapping[str, Any] | None


class ScenarioError(ValueError):
    """A scenario or a parameter override that cannot be used; the message says what is allowed."""


@dataclass(frozen=True)
class Action:
    """Send ``name`` ``rate`` times a second (a number, or a param's name) as an intent or a request."""

    name: str
    rate: float | str
    kind: Literal["intent", "request"] = "intent"
    payload: Payload = None  # a constant, or fn(rng, params, n) -> payload
    qos: str | None = None  # a qos_override
    timeout: float = 5.0  # requests

    def rate_in(self, params: Params) -> float:
        r = params[self.rate] if isinstance(self.rate, str) else self.rate
        return float(r)

    def make_payload(self, rng: random.Random, params: Params, n: int) -> Any:
        if callable(self.payload):
            return self.payload(rng, params, n)
        return self.payload


@dataclass(frozen=True)
class Phase:
    name: str
    duration: float | str  # seconds (or a param's name); math.inf: until the run ends
    actions: tuple[Action, ...] = ()

    def duration_in(self, params: Params) -> float:
        d = params[self.duration] if isinstance(self.duration, str) else self.duration
        return float(d)


@dataclass(frozen=True)
class Scenario:
    name: str
    phases: tuple[Phase, ...]
    params: Params = field(default_factory=dict)
    server: Callable[[Params], dict[str, Any]] | None = None  # the embedded server's game config
    repeat: bool = True  # start over after the last phase
    behind_after: float = BEHIND_AFTER  # seconds late before a send counts as behind schedule
    param_help: Mapping[str, str] = field(default_factory=dict)  # what each parameter does (--list-params)

    def with_params(self, overrides: Mapping[str, Any]) -> Params:
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            raise ScenarioError(
                f"scenario {self.name!r} has no parameter {', '.join(unknown)}; "
                f"its parameters: {', '.join(f'{k}={v!r}' for k, v in self.params.items()) or 'none'}"
            )
        out = dict(self.params)
        for k, v in overrides.items():
            default = self.params[k]
            try:
                out[k] = str(v).lower() in ("1", "true", "yes") if isinstance(default, bool) else type(default)(v)
            except (TypeError, ValueError):
                want = type(default).__name__
                raise ScenarioError(f"parameter {k}={v!r}: expected {want} like {default!r}") from None
        for phase in self.phases:
            if phase.duration_in(out) <= 0:
                raise ScenarioError(f"phase {phase.name!r}: duration must be > 0, got {phase.duration_in(out)}")
            for a in phase.actions:
                if a.rate_in(out) < 0:
                    raise ScenarioError(f"phase {phase.name!r}: {a.name} rate must be >= 0, got {a.rate_in(out)}")
        return out

    def boundaries(self, params: Params) -> list[tuple[str, float]]:
        """(phase name, start offset in seconds) of one pass through the timeline."""
        out, t = [], 0.0
        for p in self.phases:
            out.append((p.name, t))
            t += p.duration_in(params)
        return out

    def cycle(self, params: Params) -> float | None:
        """Seconds of one pass through the phases, when it repeats; None when it does not (or never ends)."""
        total = sum(p.duration_in(params) for p in self.phases)
        return total if self.repeat and math.isfinite(total) else None

    def timeline(self, params: Params, rng: random.Random, start: float
                 ) -> Any:
        """Yield ``(intended_time, phase, action, n)`` for one player, forever if ``repeat``."""
        t0 = start
        while True:
            for phase in self.phases:
                end = t0 + phase.duration_in(params)
                heap: list[tuple[float, int, Action]] = []
                for i, a in enumerate(phase.actions):
                    rate = a.rate_in(params)
                    if rate > 0:
                        heap.append((t0 + rng.uniform(0, 1 / rate), i, a))
                heapq.heapify(heap)
                n = 0
                while heap and heap[0][0] < end:
                    t, i, a = heapq.heappop(heap)
                    yield t, phase, a, n
                    n += 1
                    heapq.heappush(heap, (t + 1 / a.rate_in(params), i, a))
                t0 = end
                if math.isinf(end):
                    return
            if not self.repeat:
                return


def parse_params(items: list[str] | str | None) -> dict[str, str]:
    """``["a=1", "b=x"]`` or ``"a=1,b=x"`` -> ``{"a": "1", "b": "x"}``."""
    if not items:
        return {}
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ScenarioError(f"--param {part!r}: expected KEY=VALUE")
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out
