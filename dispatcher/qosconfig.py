"""``SchedulerConfig``: how one connection's outbound scheduler (``qos.Scheduler``) spends its link."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from .envelope import QoS
from .tally import Tally

__all__ = ["BACKGROUND", "CRITICAL", "HIGH", "NORMAL", "Reporter", "SchedulerConfig", "Sink"]

# ``Final`` literals: the compiled scheduler inlines them.
CRITICAL: Final = 0
HIGH: Final = 1
NORMAL: Final = 2
BACKGROUND: Final = 3


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Outbound scheduling, per connection.  ``budget=None`` means an unlimited link."""

    mode: Literal["priority", "fifo"] = "priority"
    tick_hz: float = 60.0
    budget: float | None = 50_000.0  # bytes per second
    max_rate: float | None = None  # messages per second
    weights: tuple[int, int, int] = (8, 4, 1)  # HIGH, NORMAL, BACKGROUND
    chunk_size: int = 1024
    critical_reserve: float = 0.25  # of a tick's budget, that only CRITICAL may spend
    queue_limits: Mapping[int, int] = field(default_factory=lambda: {NORMAL: 1024, BACKGROUND: 256})
    queue_bytes: Mapping[int, int] = field(default_factory=lambda: {NORMAL: 128_000, BACKGROUND: 64_000})

    @classmethod
    def from_options(cls, value: SchedulerConfig | str | Mapping[str, object] | None) -> SchedulerConfig:
        """From ``"priority"``/``"fifo"``, a dict of fields (tiers in ``queue_limits`` by name) or a config."""
        if value is None:
            return cls()
        if isinstance(value, SchedulerConfig):
            return value
        if isinstance(value, str):
            value = {"mode": value}
        opts = dict(value)
        allowed = cls.__dataclass_fields__
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise ValueError(f"unknown scheduler option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        for bound in ("queue_limits", "queue_bytes"):
            if bound in opts:
                limits = opts[bound]
                if not isinstance(limits, Mapping):
                    raise ValueError(f"{bound} maps tiers to limits, got {limits!r}")
                opts[bound] = {int(QoS.parse(k)): int(v) for k, v in limits.items()}
        if "weights" in opts:
            opts["weights"] = tuple(opts["weights"])  # type: ignore[arg-type]
        cfg = cls(**opts)  # type: ignore[arg-type]
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.mode not in ("priority", "fifo"):
            raise ValueError(f"scheduler mode is 'priority' or 'fifo', got {self.mode!r}")
        if self.tick_hz <= 0:
            raise ValueError(f"tick_hz must be > 0, got {self.tick_hz}")
        if self.budget is not None and self.budget <= 0:
            raise ValueError(f"budget must be > 0 bytes/s or None (unlimited), got {self.budget}")
        if self.max_rate is not None and self.max_rate <= 0:
            raise ValueError(f"max_rate must be > 0 messages/s or None, got {self.max_rate}")
        if len(self.weights) != 3 or min(self.weights) < 1:
            raise ValueError(f"weights are three integers >= 1 (HIGH, NORMAL, BACKGROUND), got {self.weights}")
        if self.chunk_size < 64:
            raise ValueError(f"chunk_size must be >= 64 bytes, got {self.chunk_size}")
        if not 0 <= self.critical_reserve < 1:
            raise ValueError(f"critical_reserve is a fraction of a tick's budget (0 to <1), "
                             f"got {self.critical_reserve}")


class Reporter(Protocol):
    def report(self) -> None: ...


class Sink(Protocol):
    """Where a scheduler reports what happens to frames (``stats.Stats`` implements it)."""

    enabled: bool

    def sent(self, nbytes: list[int], frames: list[int]) -> None:
        """Since the last report, per tier: bytes on the wire and frames that finished going out (their
        sojourns are counted in ``sojourn_tallies()`` as they leave).  Called every few hundred frames and at
        each tick; the lists are the scheduler's own, emptied after the call."""

    def sojourn_tallies(self) -> list[Tally]:
        """Per tier, the tally each frame's sojourn (enqueue -> on the wire, in seconds) is counted in as it
        leaves: the same list for the sink's life (its items may be replaced when the sink is reset)."""

    def watch(self, source: Reporter) -> object:
        """``source`` holds figures not yet reported: call its ``report()`` before the figures are read
        (hold it weakly); returns a handle the source keeps while it lives."""

    def dropped(self, tier: int, name: str | None, reason: str) -> None: ...

    def coalesced(self, tier: int, name: str | None) -> None: ...

    def depth(self, tier: int, dmsgs: int, dbytes: int) -> None: ...

    def saturation(self, tier: int, saturated: bool, run: int) -> None: ...
