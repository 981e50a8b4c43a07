"""Handler tables and the local event bus (seed: "Integration with Event Bus")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .envelope import Meta

__all__ = ["EventBus", "HandlerTable", "Subscription"]

H = TypeVar("H", bound=Callable[..., Any])
log = logging.getLogger("dispatcher")


class Subscription:
    """The handle ``on()`` returns: call it (or pass it to ``disconnect``) to unsubscribe.  Idempotent."""

    __slots__ = ("_table", "handler", "name")

    def __init__(self, table: HandlerTable[Any], name: str, handler: Callable[..., Any]) -> None:
        self._table: HandlerTable[Any] | None = table
        self.name = name
        self.handler = handler

    @property
    def active(self) -> bool:
        return self._table is not None

    def __call__(self) -> None:
        if self._table is not None:
            self._table.remove(self.name, self.handler)
            self._table = None

    def __repr__(self) -> str:
        return f"<Subscription {self.name} {'active' if self.active else 'disconnected'}>"


class HandlerTable(Generic[H]):
    """Handlers keyed by envelope name, called in subscription order."""

    __slots__ = ("_handlers",)

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[H, ...]] = {}

    @property
    def table(self) -> dict[str, tuple[H, ...]]:
        """The handlers by name (read-only: the core's hot path looks names up here directly)."""
        return self._handlers

    def add(self, name: str, handler: H) -> Subscription:
        if not callable(handler):
            raise TypeError(f"handler for {name!r} must be callable, got {type(handler).__name__}")
        self._handlers[name] = (*self._handlers.get(name, ()), handler)
        return Subscription(self, name, handler)

    def remove(self, name: str, handler: H) -> None:
        hs = list(self._handlers.get(name, ()))
        if handler in hs:
            hs.remove(handler)
        if hs:
            self._handlers[name] = tuple(hs)
        else:
            self._handlers.pop(name, None)

    def get(self, name: str) -> tuple[H, ...]:
        """A snapshot: handlers added or removed while these run take effect on the next envelope."""
        return self._handlers.get(name, ())

    def __contains__(self, name: object) -> bool:
        return name in self._handlers


BusHandler = Callable[[Any, Meta], Any]


class EventBus(HandlerTable[BusHandler]):
    """Every envelope the dispatcher accepts is published here as ``(name, payload, meta)``.

    Domain services listen on the bus; a handler that raises is logged and does not stop the others.
    """

    __slots__ = ()

    def on(self, name: str, handler: BusHandler) -> Subscription:
        return self.add(name, handler)

    def emit(self, name: str, payload: Any, meta: Meta) -> int:
        hs = self.get(name)
        for h in hs:
            try:
                h(payload, meta)
            except Exception:
                log.exception("event bus handler for %s raised", name)
        return len(hs)
