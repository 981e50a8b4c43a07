"""A probe for the measurement tests: the skills scenario, plus an independent log of every
``Event.Skills.Execution`` one-way latency measured on the shared host clock (arrival minus the server's
``ts_sent``; both peers read the same CLOCK_MONOTONIC, so no offset is involved), next to what the
offset-corrected estimate of the transport gives.

    PROBE_LOG=/tmp/probe locust -f tests/locustfiles/probe.py --headless -u 10 -r 10 -t 8s

Each process writes ``$PROBE_LOG/probe-<pid>.csv`` with rows ``truth_s,estimate_s`` at exit.
"""

from __future__ import annotations

import atexit
import csv
import os
import time
from pathlib import Path
from typing import Any

from harness.runner.library import SKILLS_SCENARIO
from harness.runner.users import ScenarioUser

_rows: list[tuple[float, float]] = []


def _dump() -> None:
    d = Path(os.environ.get("PROBE_LOG", "probe-log"))
    d.mkdir(parents=True, exist_ok=True)
    with (d / f"probe-{os.getpid()}.csv").open("w", newline="") as f:
        csv.writer(f).writerows(_rows)


atexit.register(_dump)


class ProbedSkillPlayer(ScenarioUser):
    """Wraps the harness's event handler: the probe reads the clock first, in the same place, so the two
    measurements differ only in how they turn a clock reading into a latency."""

    scenario = SKILLS_SCENARIO

    def _event_recorder(self, name: str) -> Any:
        inner = super()._event_recorder(name)
        if name != "Event.Skills.Execution":
            return inner

        def probe(payload: Any, meta: Any) -> None:
            arrival = time.monotonic()
            client = self.client
            if client is not None:
                offset = getattr(client, "clock_offset", None)
                if offset is None:  # the code before issue 11 had no public member
                    offset = client.core.clock_offset
                _rows.append((arrival - meta.ts_sent, arrival + offset - meta.ts_sent))
            inner(payload, meta)

        return probe
