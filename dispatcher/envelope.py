"""Envelopes: what crosses the client/server boundary (seed: ``type Envelope``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = ["TIER_ALIASES", "Envelope", "Flags", "Meta", "QoS"]


class QoS(IntEnum):
    """QoS tiers, most urgent first (a lower value is served first)."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    BACKGROUND = 3

    @classmethod
    def parse(cls, value: str | int | QoS) -> QoS:
        """``QoS`` from a tier name (case-insensitive) or value; ``ValueError`` names the valid tiers."""
        if isinstance(value, QoS):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        elif isinstance(value, str):
            key = value.upper()
            if key in cls.__members__:
                return cls[key]
            if key in TIER_ALIASES:
                return TIER_ALIASES[key]
        raise ValueError(f"unknown qos tier {value!r}; valid tiers: {', '.join(cls.__members__)}")


#: Accepted spellings that are not tiers.  The seed's registry example says ``qos = "LOW"``.
TIER_ALIASES: dict[str, QoS] = {"LOW": QoS.BACKGROUND}


@dataclass(frozen=True, slots=True)
class Flags:
    """Per-envelope delivery flags; ``None`` means "the channel's default"."""

    replayable: bool | None = None
    reliable: bool | None = None

    @staticmethod
    def of(replayable: bool | None = None, reliable: bool | None = None) -> Flags:
        """Flags with these values; the shared empty instance when neither is set (the common case)."""
        return _NO_FLAGS if replayable is None and reliable is None else Flags(replayable, reliable)


_NO_FLAGS = Flags()


@dataclass(frozen=True, slots=True)
class Meta:
    """Envelope metadata, stamped by the sending dispatcher.

    ``seq`` is monotonic per channel and peer; ``ts_sent`` is the sender's clock (seconds);
    a response reuses its request's name with ``is_response=True`` and ``reply_to=<request seq>``.
    ``replayed`` marks envelopes re-injected from a replay buffer (never sent on the wire).
    """

    seq: int
    qos: QoS
    ts_sent: float
    ts_ack: float | None = None
    player_id: int | None = None
    trace_id: str | None = None
    flags: Flags = field(default=_NO_FLAGS)
    is_response: bool = False
    reply_to: int | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message: ``name`` (``Intent.<Channel>.<Verb>`` or ``Event.<Channel>.<Thing>``), payload, meta."""

    name: str
    payload: Any
    meta: Meta

    @property
    def channel(self) -> str:
        """The channel named in the envelope name (``Intent.Skills.Use`` -> ``Skills``)."""
        return self.name.split(".", 2)[1]
