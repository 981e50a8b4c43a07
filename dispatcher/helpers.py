"""Intent helpers and event wrappers derived from the registry (seed: ``Intents.lua``, ``Events.lua``).

``client.intents.Skills.Use({"skillId": "TripleStrike"})`` validates and sends;
``client.intents.Stats.RequestSnapshot.request({"version": 3})`` sends a request;
``client.events.Attributes.Updated(handler)`` subscribes.  An unknown attribute raises
``UnknownNameError`` (an ``AttributeError``) listing the names that exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .errors import UnknownNameError

if TYPE_CHECKING:
    from .base import Handler
    from .bus import Subscription
    from .envelope import Envelope
    from .promise import Promise
    from .registry import ChannelRegistry

__all__ = ["EventHelpers", "IntentHelpers", "Sends"]


class Sends(Protocol):
    """What the helpers need of a transport (``transport.Transport`` is one; this module does not import it,
    so the two modules form no import circle)."""

    @property
    def registry(self) -> ChannelRegistry: ...

    def intent(self, *args: Any, **options: Any) -> Envelope | None: ...

    def request(self, *args: Any, **options: Any) -> Promise[Envelope]: ...

    def on(self, name: str, handler: Handler) -> Subscription: ...

    def emit(self, *args: Any, **options: Any) -> list[Envelope]: ...


class _Namespace:
    """Attribute access over a fixed table; an unknown attribute lists what exists."""

    __slots__ = ("_items", "_what")

    def __init__(self, what: str, items: dict[str, Any]) -> None:
        self._what = what
        self._items = items

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        try:
            return self._items[attr]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(f"{self._what} has no {attr!r}; known: {known}") from None

    def __dir__(self) -> list[str]:
        return sorted(self._items)


def _tree(transport: Sends, prefix: str, make: Any) -> dict[str, _Namespace]:
    tree: dict[str, dict[str, Any]] = {}
    for name in transport.registry.names:
        kind, channel, leaf = name.split(".", 2)
        if kind == prefix:
            tree.setdefault(channel, {})[leaf] = make(transport, name)
    label = "intents" if prefix == "Intent" else "events"
    return {ch: _Namespace(f"{label}.{ch}", leaves) for ch, leaves in tree.items()}


class IntentHelper:
    __slots__ = ("_t", "name")

    def __init__(self, transport: Sends, name: str) -> None:
        self._t = transport
        self.name = name

    def __call__(self, payload: Any = None, **options: Any) -> Envelope | None:
        return self._t.intent(self.name, payload, **options)

    def request(self, payload: Any = None, **options: Any) -> Promise[Envelope]:
        return self._t.request(self.name, payload, **options)

    def __repr__(self) -> str:
        return f"<intent helper {self.name}>"


class EventHelper:
    __slots__ = ("_t", "name")

    def __init__(self, transport: Sends, name: str) -> None:
        self._t = transport
        self.name = name

    def __call__(self, handler: Handler) -> Subscription:
        return self._t.on(self.name, handler)

    def emit(self, payload: Any = None, **options: Any) -> list[Envelope]:
        return self._t.emit(self.name, payload, **options)

    def __repr__(self) -> str:
        return f"<event helper {self.name}>"


class IntentHelpers(_Namespace):
    __slots__ = ()

    def __init__(self, transport: Sends) -> None:
        super().__init__("intents", _tree(transport, "Intent", IntentHelper))


class EventHelpers(_Namespace):
    __slots__ = ()

    def __init__(self, transport: Sends) -> None:
        super().__init__("events", _tree(transport, "Event", EventHelper))
