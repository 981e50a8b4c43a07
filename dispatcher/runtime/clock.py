"""Clocks for runtimes: the real monotonic clock and a virtual one for deterministic tests."""

from __future__ import annotations

import time

__all__ = ["Clock", "MonotonicClock", "VirtualClock"]


class Clock:
    virtual = False

    def now(self) -> float:
        raise NotImplementedError


class MonotonicClock(Clock):
    def now(self) -> float:
        return time.monotonic()


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
