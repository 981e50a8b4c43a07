"""What a benchmark Locust process spends on its steady state, for the loadgen row's efficiency figure.

With ``NETHARNESS_BENCH_CPU=<path>`` and ``NETHARNESS_BENCH_WINDOW=<seconds>`` in the environment,
``install()`` (called by a benchmark locustfile) measures a window of that many seconds starting when every
user has been spawned, and writes ``{"cpu_s", "user_s", "sys_s", "wall_s", "requests", "cpus"}`` to
``path``: the process's CPU seconds (in all; in user space; in the kernel), the requests Locust counted in
the window and the CPUs it could run on (``NETHARNESS_BENCH_PIN=<cpu>`` pins it to one).
Start-up (imports, connecting) and shutdown (stopping users, end-of-run reports) are outside it, so it
compares what load generation itself costs.  Without the variables it does nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["ENV", "PIN_ENV", "WINDOW_ENV", "install"]

ENV = "NETHARNESS_BENCH_CPU"
WINDOW_ENV = "NETHARNESS_BENCH_WINDOW"
PIN_ENV = "NETHARNESS_BENCH_PIN"


def install() -> None:
    path, window = os.environ.get(ENV), float(os.environ.get(WINDOW_ENV) or 0)
    if not path or window <= 0:
        return
    pin = os.environ.get(PIN_ENV)
    if pin:
        os.sched_setaffinity(0, {int(pin)})
    import gevent  # here, not at import: the bench process imports ENV and must not load Locust or gevent
    from locust import events

    env: list[Any] = []

    def measure() -> None:
        total = env[0].stats.total
        t0, wall, n = os.times(), time.monotonic(), total.num_requests
        gevent.sleep(window)
        t1 = os.times()
        user, system = t1.user - t0.user, t1.system - t0.system
        Path(path).write_text(json.dumps({"cpu_s": user + system, "user_s": user, "sys_s": system,
                                          "wall_s": time.monotonic() - wall, "requests": total.num_requests - n,
                                          "cpus": sorted(os.sched_getaffinity(0))}))

    def on_init(environment: Any, **_: Any) -> None:
        env.append(environment)

    def on_spawned(**_: Any) -> None:
        if env:
            gevent.spawn(measure)

    events.init.add_listener(on_init)
    events.spawning_complete.add_listener(on_spawned)
