"""pytest-xdist workers (``-n``, pyproject.toml's addopts): what a worker needs that a serial run does not.

- ``import_locust_unpatched``: a worker imports Locust without gevent's monkey-patching (why: below).
- ``alone``: timing-sensitive work runs while the other workers run no test.
- ``once``: a value (a real Locust run's figures) made once per session, across workers.

Without xdist each is a no-op (``once`` just makes its value).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def import_locust_unpatched(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``), a worker imports Locust without its gevent monkey-patching.

    Importing ``locust`` runs ``gevent.monkey.patch_all()``.  In an xdist worker that happens at collection,
    after execnet started its real I/O thread and made the main thread's queue of tests: the main thread then
    waits on a patched (gevent) lock that only that other thread releases, gevent's hub sees nothing to wait
    for and raises LoopExit, and the controller fails with an INTERNALERROR in ``worker_workerfinished``.
    The variable is removed again at once, so the Locust processes the tests start patch as usual."""
    if not hasattr(config, "workerinput"):  # not an xdist worker
        return
    before = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    try:
        import locust  # noqa: F401
    finally:
        if before is None:
            del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
        else:
            os.environ["LOCUST_SKIP_MONKEY_PATCH"] = before


# -- alone: timing-sensitive work does not share the machine with the other xdist worker ----------------------
# Every test holds a shared lock while it runs (set-up, call, tear-down); ``alone()`` (and a test marked
# ``alone``) takes it exclusively, so it runs while no other worker runs a test: its timing assertions (absolute
# latency thresholds, "no send started late") see the same machine as in a serial run.  A turnstile lock lets
# a waiting exclusive holder in before new shared holders.  Without xdist both are no-ops.

_LOCK_FDS: dict[str, int] = {}


def _lock_fd(config: pytest.Config, name: str) -> int | None:
    if not hasattr(config, "workerinput") or not config.option.basetemp:
        return None
    if name not in _LOCK_FDS:  # one file shared by the workers of this run, beside their temporary folders
        path = Path(config.option.basetemp).parent / f"netharness-{name}.lock"
        _LOCK_FDS[name] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return _LOCK_FDS[name]


def shared(config: pytest.Config) -> None:
    rw, turnstile = _lock_fd(config, "rw"), _lock_fd(config, "turnstile")
    if rw is None or turnstile is None:
        return
    fcntl.flock(turnstile, fcntl.LOCK_EX)  # wait behind an exclusive holder that is waiting
    fcntl.flock(turnstile, fcntl.LOCK_UN)
    fcntl.flock(rw, fcntl.LOCK_SH)


def unlock(config: pytest.Config) -> None:
    rw = _lock_fd(config, "rw")
    if rw is not None:
        fcntl.flock(rw, fcntl.LOCK_UN)


@contextmanager
def alone(config: pytest.Config) -> Iterator[None]:
    """Run the block while no other xdist worker runs a test (this test's shared hold is given up meanwhile,
    so two workers that both want to be alone take turns instead of waiting for each other)."""
    rw, turnstile = _lock_fd(config, "rw"), _lock_fd(config, "turnstile")
    if rw is None or turnstile is None:
        yield
        return
    fcntl.flock(rw, fcntl.LOCK_UN)
    fcntl.flock(turnstile, fcntl.LOCK_EX)
    try:
        fcntl.flock(rw, fcntl.LOCK_EX)
    finally:
        fcntl.flock(turnstile, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(rw, fcntl.LOCK_SH)


# -- once: a value made once per session, across workers ----------------------------------------------------------
# The first worker that needs it makes it (the others wait on a lock, giving up their shared hold meanwhile)
# and leaves it beside the workers' temporary folders for the others.  (xdist's loadgroup cannot keep the tests
# that share a value on one worker: with pytest 9 its renamed node ids no longer take.)


def once(config: pytest.Config, factory: pytest.TempPathFactory, name: str,
          make: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """``make(folder)`` once per test session, across xdist workers; its JSON-able value for every caller."""
    fd = _lock_fd(config, f"once-{name}")
    if fd is None:
        return make(factory.mktemp(name))
    unlock(config)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        d = Path(config.option.basetemp).parent / f"once-{name}"
        done = d / "value.json"
        if done.exists():
            value: dict[str, Any] = json.loads(done.read_text())
            return value
        d.mkdir(exist_ok=True)
        value = make(d)
        done.write_text(json.dumps(value))
        return value
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        shared(config)
