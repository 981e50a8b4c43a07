"""The dispatcher's one error tree.

``DispatcherError`` is the root.  Who is at fault decides the branch:

* ``LocalProtocolError``: this side misused the API (unknown name, wrong direction, closed transport).
* ``RemoteProtocolError``: the peer sent something bad (malformed frame, oversized frame, bad handshake).
* ``ValidationError``: a payload failed its schema.
* ``RequestTimeout``: a request got no answer after all its attempts.
* ``RemoteError``: the peer answered a request with an error (its handler raised, no subscriber, ...).
* ``RegistryError``: a channel registry is malformed.
"""

from __future__ import annotations

__all__ = [
    "ConnectionClosed",
    "DispatcherError",
    "LocalProtocolError",
    "RegistryError",
    "RegistryWarning",
    "RemoteError",
    "RemoteProtocolError",
    "RequestTimeout",
    "UnknownNameError",
    "ValidationError",
]


class DispatcherError(Exception):
    """Root of every error the dispatcher raises."""


class LocalProtocolError(DispatcherError):
    """This side used the API wrongly: the call is refused and nothing was sent."""


class UnknownNameError(LocalProtocolError, AttributeError):
    """An intent/event helper attribute that the registry does not declare."""


class RemoteProtocolError(DispatcherError):
    """The peer sent bytes that break the protocol; the connection to that peer is closed."""

    def __init__(self, message: str, *, code: str = "protocol_error") -> None:
        super().__init__(message)
        self.code = code


class ValidationError(DispatcherError):
    """A payload does not match the schema registered for its envelope name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: invalid payload: {reason}")
        self.name = name
        self.reason = reason


class RequestTimeout(DispatcherError):
    """A request was not answered within ``timeout`` seconds on any of its attempts."""

    def __init__(self, name: str, attempts: int, timeout: float) -> None:
        super().__init__(
            f"{name}: no response after {attempts} attempt(s) of {timeout:g}s each"
        )
        self.name = name
        self.attempts = attempts
        self.timeout = timeout


class RemoteError(DispatcherError):
    """The peer answered a request with an error instead of a response.

    ``code`` is one of ``handler_error``, ``no_subscriber``, ``invalid_payload``, ``rate_limited``,
    ``overloaded`` (the answer's queue to this player is full), ``expired`` (a retry whose answer is no
    longer kept: the request already ran), ``wrong_direction``; ``message`` is the peer's text (for
    ``handler_error``, the handler's exception).
    """

    def __init__(self, name: str, code: str, message: str) -> None:
        super().__init__(f"{name}: {code}: {message}")
        self.name = name
        self.code = code
        self.message = message


class RegistryError(DispatcherError):
    """A channel registry is malformed; the message names the channel and what is allowed."""


class RegistryWarning(UserWarning):
    """A registry entry is accepted but deprecated or ambiguous (e.g. the seed's ``qos = "LOW"``)."""


class ConnectionClosed(DispatcherError):
    """The connection closed (either side) while something was still waiting on it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"connection closed: {code}: {message}")
        self.code = code
        self.message = message
