"""Clocks for runtimes: the real monotonic clock and a virtual one for deterministic tests."""

from __future__ import annotations

import functools
import time

__all__ = ["Clock", "MonotonicClock", "VirtualClock", "host_clock_id"]


@functools.cache
def host_clock_id() -> str:
    """The identity of this host's ``CLOCK_MONOTONIC`` (the kernel's boot id and the clock's name): two
    peers that report the same one read the same clock, so their offset is exactly 0.  Empty when the boot
    id cannot be read (then peers fall back to NTP-style estimation).  Read once per process (it changes only
    with a reboot): a load generator asked for it once per player it connected."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        return ""
    return f"{boot}/CLOCK_MONOTONIC" if boot else ""


class Clock:
    virtual = False

    def now(self) -> float:
        raise NotImplementedError

    @property
    def id(self) -> str:
        """Peers given clocks with one id share a clock (handshake: clock domain "shared")."""
        return f"clock-{id(self):x}"


class MonotonicClock(Clock):
    def now(self) -> float:
        return time.monotonic()

    @property
    def id(self) -> str:
        return host_clock_id()


class VirtualClock(Clock):
    """Time that moves only when told to (``set``/``advance``); runtimes jump it to their next timer."""

    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError(f"a clock does not go back: {t} < {self._t}")
        self._t = t

    def advance(self, dt: float) -> None:
        self.set(self._t + dt)
