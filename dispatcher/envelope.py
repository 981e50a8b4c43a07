"""Envelopes: what crosses the client/server boundary (seed: ``type Envelope``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = ["TIER_ALIASES", "Envelope", "Flags", "Meta", "QoS", "envelope_of", "make_envelope", "make_meta"]


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


class _MetaSlots:
    """``Meta``'s storage.  It lives in a base class so that ``make_meta`` can fill an instance of a plain twin
    class (``_MetaDraft``, same layout) and then turn it into a ``Meta``: a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``, which costs several times more."""

    __slots__ = ("flags", "is_response", "player_id", "qos", "replayed", "reply_to", "seq", "trace_id", "ts_ack",
                 "ts_sent")


@dataclass(frozen=True, slots=True)
class Meta(_MetaSlots):
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


class _EnvelopeSlots:
    """``Envelope``'s storage (see ``_MetaSlots``)."""

    __slots__ = ("meta", "name", "payload")


@dataclass(frozen=True, slots=True)
class Envelope(_EnvelopeSlots):
    """One message: ``name`` (``Intent.<Channel>.<Verb>`` or ``Event.<Channel>.<Thing>``), payload, meta."""

    name: str
    payload: Any
    meta: Meta

    @property
    def channel(self) -> str:
        """The channel named in the envelope name (``Intent.Skills.Use`` -> ``Skills``)."""
        return self.name.split(".", 2)[1]


# -- fast construction for the core's hot path ------------------------------------------------------------
# ``Meta(...)`` and ``Envelope(...)`` stay the public constructors.  The core builds thousands a second, so it
# fills a mutable twin of the same layout (plain attribute stores) and then sets its class: the result is an
# ordinary frozen ``Meta`` / ``Envelope`` (equal, hashable, ``dataclasses.replace``-able, immutable).  A draft
# is made by calling its class (no ``__init__``: a quarter faster than ``object.__new__(cls)``).


class _MetaDraft(_MetaSlots):
    __slots__ = ()
    seq: int
    qos: QoS
    ts_sent: float
    ts_ack: float | None
    player_id: int | None
    trace_id: str | None
    flags: Flags
    is_response: bool
    reply_to: int | None
    replayed: bool


class _EnvelopeDraft(_EnvelopeSlots):
    __slots__ = ()
    name: str
    payload: Any
    meta: Meta


def make_meta(seq: int, qos: QoS, ts_sent: float, ts_ack: float | None = None, player_id: int | None = None,
              trace_id: str | None = None, flags: Flags = _NO_FLAGS, is_response: bool = False,
              reply_to: int | None = None, replayed: bool = False) -> Meta:
    """``Meta(...)`` with the same arguments, several times faster (no field checks: the core's own values).
    Cold paths only: the hot paths build the envelope and its meta together with ``envelope_of``."""
    return envelope_of("", None, seq, qos, ts_sent, ts_ack, player_id, trace_id, flags, is_response, reply_to,
                       replayed).meta


def make_envelope(name: str, payload: Any, meta: Meta) -> Envelope:
    """``Envelope(name, payload, meta)``, several times faster."""
    e = _EnvelopeDraft()
    e.name = name
    e.payload = payload
    e.meta = meta
    e.__class__ = Envelope  # type: ignore[assignment]
    return e  # type: ignore[return-value]


def envelope_of(name: str, payload: Any, seq: int, qos: QoS, ts_sent: float, ts_ack: float | None = None,
                player_id: int | None = None, trace_id: str | None = None, flags: Flags = _NO_FLAGS,
                is_response: bool = False, reply_to: int | None = None, replayed: bool = False) -> Envelope:
    """``Envelope(name, payload, Meta(seq, qos, ts_sent, ...))`` in one step: ``make_envelope`` of
    ``make_meta``, inline (two envelopes per envelope sent and received: one call instead of three)."""
    m = _MetaDraft()
    m.seq = seq
    m.qos = qos
    m.ts_sent = ts_sent
    m.ts_ack = ts_ack
    m.player_id = player_id
    m.trace_id = trace_id
    m.flags = flags
    m.is_response = is_response
    m.reply_to = reply_to
    m.replayed = replayed
    m.__class__ = Meta  # type: ignore[assignment]
    e = _EnvelopeDraft()
    e.name = name
    e.payload = payload
    e.meta = m  # type: ignore[assignment]
    e.__class__ = Envelope  # type: ignore[assignment]
    return e  # type: ignore[return-value]
