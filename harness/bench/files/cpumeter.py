"""The CPU time a benchmark Locust process spends on its run, for the loadgen row's efficiency figure.

With ``NETHARNESS_BENCH_CPU=<path>`` in the environment, ``install()`` (called from a benchmark locustfile)
writes ``{"cpu_s", "wall_s", "requests"}`` to ``path`` when the test stops: the process's CPU seconds and the
requests Locust counted between ``test_start`` and ``test_stop`` (start-up imports and the end-of-run report
are outside that window).  Without the variable it does nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from locust import events

__all__ = ["ENV", "install"]

ENV = "NETHARNESS_BENCH_CPU"


def install() -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    start: dict[str, float] = {}

    def on_start(environment: Any, **_: Any) -> None:
        start.update(cpu=time.process_time(), wall=time.monotonic(), n=environment.stats.total.num_requests)

    def on_stop(environment: Any, **_: Any) -> None:
        if not start:
            return
        Path(path).write_text(json.dumps({
            "cpu_s": time.process_time() - start["cpu"], "wall_s": time.monotonic() - start["wall"],
            "requests": environment.stats.total.num_requests - start["n"]}))

    events.test_start.add_listener(on_start)
    events.test_stop.add_listener(on_stop)
