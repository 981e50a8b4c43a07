"""What a benchmark Locust process spends on its steady state, for the loadgen row's efficiency figure.

With ``NETHARNESS_BENCH_CPU=<path>`` and ``NETHARNESS_BENCH_WINDOW=<seconds>`` in the environment,
``install()`` (called by a benchmark locustfile) measures a window of that many seconds starting when every
user has been spawned, and writes ``{"cpu_s", "wall_s", "requests"}`` to ``path``: the process's CPU seconds
and the requests Locust counted in the window.  Start-up (imports, connecting) and shutdown (stopping users,
end-of-run reports) are outside it, so it compares what load generation itself costs.  Without the variables
it does nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["ENV", "WINDOW_ENV", "install"]

ENV = "NETHARNESS_BENCH_CPU"
WINDOW_ENV = "NETHARNESS_BENCH_WINDOW"


def install() -> None:
    path, window = os.environ.get(ENV), float(os.environ.get(WINDOW_ENV) or 0)
    if not path or window <= 0:
        return
    import gevent  # here, not at import: the bench process imports ENV and must not load Locust or gevent
    from locust import events

    env: list[Any] = []

    def measure() -> None:
        total = env[0].stats.total
        cpu, wall, n = time.process_time(), time.monotonic(), total.num_requests
        gevent.sleep(window)
        Path(path).write_text(json.dumps({"cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall,
                                          "requests": total.num_requests - n}))

    def on_init(environment: Any, **_: Any) -> None:
        env.append(environment)

    def on_spawned(**_: Any) -> None:
        if env:
            gevent.spawn(measure)

    events.init.add_listener(on_init)
    events.spawning_complete.add_listener(on_spawned)
