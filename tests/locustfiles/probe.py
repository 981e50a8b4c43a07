"""A probe for the measurement tests: the skills scenario, plus an independent log of every
``Event.Skills.Execution`` one-way latency measured on the shared host clock (arrival minus the server's
``ts_sent``; both peers read the same CLOCK_MONOTONIC), next to what the offset-corrected estimate gives.

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

from harness.library import SKILLS_SCENARIO
from harness.users import ScenarioUser

_rows: list[tuple[float, float]] = []


def _dump() -> None:
    d = Path(os.environ.get("PROBE_LOG", "probe-log"))
    d.mkdir(parents=True, exist_ok=True)
    with (d / f"probe-{os.getpid()}.csv").open("w", newline="") as f:
        csv.writer(f).writerows(_rows)


atexit.register(_dump)


class ProbedSkillPlayer(ScenarioUser):
    scenario = SKILLS_SCENARIO

    def on_start(self) -> None:
        super().on_start()
        client = self.client
        assert client is not None

        def probe(payload: Any, meta: Any) -> None:
            arrival = time.monotonic()
            offset = getattr(client, "clock_offset", None)
            if offset is None:  # the code before issue 11 had no public member
                offset = client.core.clock_offset
            _rows.append((arrival - meta.ts_sent, arrival + offset - meta.ts_sent))

        client.bus.on("Event.Skills.Execution", probe)
