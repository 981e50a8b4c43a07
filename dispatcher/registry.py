"""The declarative channel registry (seed: ``ChannelRegistry.luau``).

A registry is a table of channels, each with its remote name, default QoS tier, direction and the
intent and event names it carries.  It is validated when loaded, assigns every envelope name a
compact wire id, and has a hash that both peers must agree on before they talk.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from .envelope import TIER_ALIASES, QoS
from .errors import RegistryError, RegistryWarning

__all__ = ["Channel", "ChannelRegistry", "Direction"]

Kind = Literal["intent", "event"]


class Direction(StrEnum):
    BIDIRECTIONAL = "bidirectional"
    SERVER_TO_CLIENT = "server_to_client"
    CLIENT_TO_SERVER = "client_to_server"


_IDENT = r"[A-Za-z][A-Za-z0-9_]*"
_CHANNEL_RE = re.compile(rf"^{_IDENT}$")
_KNOWN_KEYS = ("remote", "qos", "direction", "intents", "events", "reliable", "coalesce")
_TIERS = ", ".join(QoS.__members__)


@dataclass(frozen=True, slots=True)
class Channel:
    """One channel of the registry.

    ``reliable``: envelopes on this channel are re-sent after a reconnect until acknowledged
    (overridable per envelope with ``Flags.reliable``).  ``coalesce``: names whose queued envelopes
    keep only the latest value when the link is saturated (most-recent-state semantics).
    """

    name: str
    remote: str
    qos: QoS
    direction: Direction
    intents: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    reliable: bool = False
    coalesce: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return self.intents + self.events


class ChannelRegistry:
    """A validated channel registry with wire ids and a hash."""

    __slots__ = ("_by_name", "_channels", "_hash", "_ids", "_kinds", "_names")

    def __init__(self, channels: Mapping[str, Channel]) -> None:
        self._channels: dict[str, Channel] = dict(sorted(channels.items()))
        self._by_name: dict[str, Channel] = {}
        self._kinds: dict[str, Kind] = {}
        for ch in self._channels.values():
            for n in ch.intents:
                self._by_name[n] = ch
                self._kinds[n] = "intent"
            for n in ch.events:
                self._by_name[n] = ch
                self._kinds[n] = "event"
        # Wire ids follow the canonical order (channels sorted by name, intents then events as declared),
        # which the hash covers: two peers with the same hash assign the same ids.
        self._names: tuple[str, ...] = tuple(n for ch in self._channels.values() for n in ch.names)
        self._ids: dict[str, int] = {n: i for i, n in enumerate(self._names)}
        canonical = {
            name: {
                "remote": ch.remote,
                "qos": ch.qos.name,
                "direction": ch.direction.value,
                "intents": list(ch.intents),
                "events": list(ch.events),
                "reliable": ch.reliable,
                "coalesce": list(ch.coalesce),
            }
            for name, ch in self._channels.items()
        }
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        self._hash = hashlib.sha256(blob).hexdigest()[:16]

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> ChannelRegistry:
        """Build from the seed-shaped table ``{ChannelName: {remote, qos, direction, intents, events}}``."""
        if not isinstance(table, Mapping):
            raise RegistryError(f"a channel registry is a table of channels, got {type(table).__name__}")
        if "channels" in table and isinstance(table["channels"], Mapping) and len(table) == 1:
            table = table["channels"]
        if not table:
            raise RegistryError("the channel registry declares no channels")
        _check_unique_names(table)
        channels: dict[str, Channel] = {}
        remotes: dict[str, str] = {}
        for name, spec in table.items():
            ch = _parse_channel(name, spec)
            if ch.remote in remotes:
                raise RegistryError(
                    f"channels {remotes[ch.remote]!r} and {name!r} both use remote {ch.remote!r}; "
                    "remote names must be unique"
                )
            remotes[ch.remote] = name
            channels[name] = ch
        return cls(channels)

    @classmethod
    def load(cls, path: str | Path) -> ChannelRegistry:
        """Load a TOML registry: one ``[ChannelName]`` table per channel."""
        p = Path(path)
        try:
            with p.open("rb") as f:
                table = tomllib.load(f)
        except FileNotFoundError:
            raise RegistryError(f"{p}: no such registry file") from None
        except tomllib.TOMLDecodeError as e:
            raise RegistryError(f"{p}: not valid TOML: {e}") from None
        try:
            return cls.from_dict(table)
        except RegistryError as e:
            raise RegistryError(f"{p}: {e}") from None

    # -- queries ------------------------------------------------------------------------------

    @property
    def hash(self) -> str:
        """Hex digest of the canonical registry; peers refuse to talk when theirs differ."""
        return self._hash

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self._channels

    @property
    def names(self) -> tuple[str, ...]:
        """Every envelope name, in wire-id order."""
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._channels.values())

    def __len__(self) -> int:
        return len(self._channels)

    def channel_of(self, name: str) -> Channel:
        try:
            return self._by_name[name]
        except KeyError:
            raise RegistryError(self._unknown(name)) from None

    def kind(self, name: str) -> Kind:
        try:
            return self._kinds[name]
        except KeyError:
            raise RegistryError(self._unknown(name)) from None

    def wire_id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise RegistryError(self._unknown(name)) from None

    def name_of(self, wire_id: int) -> str:
        return self._names[wire_id]

    def _unknown(self, name: str) -> str:
        close = [n for n in self._names if n.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
        hint = f"; did you mean {close[0]!r}?" if close else f"; {len(self._names)} names are declared"
        return f"{name!r} is not declared in the channel registry{hint}"

    def __repr__(self) -> str:
        return f"ChannelRegistry({len(self._channels)} channels, {len(self._names)} names, hash={self._hash})"


def _check_unique_names(table: Mapping[str, Any]) -> None:
    """A name declared twice (in one channel or two) is an error, reported before any other check."""
    owner: dict[str, str] = {}
    for channel, spec in table.items():
        if not isinstance(spec, Mapping):
            continue
        for key in ("intents", "events"):
            names = spec.get(key)
            for n in names if isinstance(names, list | tuple) else ():
                if not isinstance(n, str):
                    continue
                if n in owner:
                    where = (f"twice in channel {channel!r}" if owner[n] == channel
                             else f"in channels {owner[n]!r} and {channel!r}")
                    raise RegistryError(f"{n!r} is declared {where}; a name belongs to exactly one channel")
                owner[n] = channel


def _parse_channel(name: Any, spec: Any) -> Channel:
    if not isinstance(name, str) or not _CHANNEL_RE.match(name):
        raise RegistryError(f"channel name {name!r} must be an identifier (letters, digits, _)")
    where = f"channel {name!r}"
    if not isinstance(spec, Mapping):
        raise RegistryError(f"{where}: expected a table, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(_KNOWN_KEYS))
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_KNOWN_KEYS)}")

    remote = spec.get("remote")
    if not isinstance(remote, str) or not remote:
        raise RegistryError(f"{where}: 'remote' must be a non-empty string (the RemoteEvent name)")

    raw_qos = spec.get("qos", "NORMAL")
    try:
        qos = QoS.parse(raw_qos)
    except ValueError:
        raise RegistryError(
            f"{where}: unknown qos tier {raw_qos!r}; valid tiers: {_TIERS} "
            f"(LOW is accepted as an alias of BACKGROUND)"
        ) from None
    if isinstance(raw_qos, str) and raw_qos.upper() in TIER_ALIASES:
        warnings.warn(
            f"{where}: qos {raw_qos!r} is not a tier; treating it as {qos.name} (valid tiers: {_TIERS})",
            RegistryWarning,
            stacklevel=4,
        )

    raw_dir = spec.get("direction", "bidirectional")
    try:
        direction = Direction(raw_dir)
    except ValueError:
        allowed = ", ".join(d.value for d in Direction)
        raise RegistryError(f"{where}: unknown direction {raw_dir!r}; allowed: {allowed}") from None

    intents = _names(where, spec, "intents", "Intent", name)
    events = _names(where, spec, "events", "Event", name)
    if intents and direction is Direction.SERVER_TO_CLIENT:
        raise RegistryError(
            f"{where}: direction 'server_to_client' carries no intents (client -> server), "
            f"but {intents[0]!r} is declared; use 'bidirectional' or move it"
        )
    if events and direction is Direction.CLIENT_TO_SERVER:
        raise RegistryError(
            f"{where}: direction 'client_to_server' carries no events (server -> client), "
            f"but {events[0]!r} is declared; use 'bidirectional' or move it"
        )

    reliable = spec.get("reliable", False)
    if not isinstance(reliable, bool):
        raise RegistryError(f"{where}: 'reliable' must be true or false, got {reliable!r}")
    coalesce = spec.get("coalesce", [])
    if not isinstance(coalesce, list) or not all(isinstance(c, str) for c in coalesce):
        raise RegistryError(f"{where}: 'coalesce' must be a list of envelope names")
    for c in coalesce:
        if c not in intents and c not in events:
            raise RegistryError(f"{where}: coalesce names {c!r}, which this channel does not declare")
    return Channel(name, remote, qos, direction, intents, events, reliable, tuple(coalesce))


def _names(where: str, spec: Mapping[str, Any], key: str, prefix: str, channel: str) -> tuple[str, ...]:
    raw = spec.get(key, [])
    if not isinstance(raw, list | tuple):
        raise RegistryError(f"{where}: {key!r} must be a list of names, got {type(raw).__name__}")
    pattern = re.compile(rf"^{prefix}\.{re.escape(channel)}\.{_IDENT}$")
    what = "Verb" if prefix == "Intent" else "Thing"
    for n in raw:
        if not isinstance(n, str) or not pattern.match(n):
            raise RegistryError(f"{where}: {key[:-1]} {n!r} must be named {prefix}.{channel}.<{what}>")
    return tuple(raw)
