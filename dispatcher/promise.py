"""A small Promise (seed: ``:andThen(...)`` / ``:catch(...)``), settled by the dispatcher core.

Callbacks run synchronously when the promise settles (or at once if it already has).  ``result()``
blocks through the runtime that made the promise: a loopback pair advances its clock, the TCP runtime
yields to other greenlets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Promise"]

T = TypeVar("T")
U = TypeVar("U")
log = logging.getLogger("dispatcher")

_PENDING, _FULFILLED, _REJECTED = 0, 1, 2
Waiter = Callable[["Promise[Any]", float | None], None]


class Promise(Generic[T]):
    __slots__ = ("_callbacks", "_error", "_state", "_value", "_waiter")

    def __init__(self, waiter: Waiter | None = None) -> None:
        self._state = _PENDING
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._waiter = waiter

    @classmethod
    def resolved(cls, value: T) -> Promise[T]:
        p: Promise[T] = cls()
        p.resolve(value)
        return p

    @classmethod
    def rejected(cls, error: BaseException) -> Promise[Any]:
        p: Promise[Any] = cls()
        p.reject(error)
        return p

    # -- settling (the core calls these) -------------------------------------------------------

    def resolve(self, value: T) -> None:
        if self._state != _PENDING:
            return
        if isinstance(value, Promise):
            value._subscribe(lambda: self._adopt(value))
            return
        self._state, self._value = _FULFILLED, value
        self._run()

    def reject(self, error: BaseException) -> None:
        if self._state != _PENDING:
            return
        self._state, self._error = _REJECTED, error
        self._run()

    def _adopt(self, other: Promise[Any]) -> None:
        if other._state == _FULFILLED:
            self.resolve(other._value)
        else:
            assert other._error is not None
            self.reject(other._error)

    def _run(self) -> None:
        cbs, self._callbacks = self._callbacks, []
        for cb in cbs:
            cb()

    def _subscribe(self, cb: Callable[[], None]) -> None:
        if self._state == _PENDING:
            self._callbacks.append(cb)
        else:
            cb()

    # -- chaining ----------------------------------------------------------------------------------

    def and_then(self, on_fulfilled: Callable[[T], U | Promise[U]]) -> Promise[U]:
        """A promise of ``on_fulfilled(value)``; a rejection passes through untouched."""
        nxt: Promise[U] = Promise(self._waiter)

        def step() -> None:
            if self._state == _REJECTED:
                assert self._error is not None
                nxt.reject(self._error)
                return
            try:
                nxt.resolve(on_fulfilled(self._value))  # type: ignore[arg-type]
            except Exception as e:
                nxt.reject(e)

        self._subscribe(step)
        return nxt

    def catch(self, on_rejected: Callable[[BaseException], U | Promise[U]]) -> Promise[T | U]:
        """A promise that recovers a rejection with ``on_rejected(error)``; a value passes through."""
        nxt: Promise[T | U] = Promise(self._waiter)

        def step() -> None:
            if self._state == _FULFILLED:
                nxt.resolve(self._value)
                return
            assert self._error is not None
            try:
                nxt.resolve(on_rejected(self._error))  # type: ignore[arg-type]
            except Exception as e:
                nxt.reject(e)

        self._subscribe(step)
        return nxt

    def finally_(self, fn: Callable[[], Any]) -> Promise[T]:
        """Run ``fn`` when settled either way; the outcome passes through."""

        def step() -> None:
            try:
                fn()
            except Exception:
                log.exception("finally_ callback raised")

        self._subscribe(step)
        return self

    # -- inspection ----------------------------------------------------------------------------

    def done(self) -> bool:
        return self._state != _PENDING

    @property
    def rejected_error(self) -> BaseException | None:
        return self._error

    def result(self, timeout: float | None = None) -> T:
        """The value, waiting up to ``timeout`` seconds (None: until settled); raises the rejection.

        ``TimeoutError`` if still pending after ``timeout`` (the request itself may still be answered).
        """
        if self._state == _PENDING and self._waiter is not None:
            self._waiter(self, timeout)
        if self._state == _FULFILLED:
            return self._value  # type: ignore[no-any-return]
        if self._state == _REJECTED:
            assert self._error is not None
            raise self._error
        raise TimeoutError(
            f"promise still pending after {timeout}s" if timeout is not None
            else "promise is pending and has no runtime to wait on"
        )

    def __repr__(self) -> str:
        state = {_PENDING: "pending", _FULFILLED: "fulfilled", _REJECTED: "rejected"}[self._state]
        return f"<Promise {state}>"
