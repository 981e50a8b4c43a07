"""Player auth tokens: an HMAC-SHA256 of the player id under the server's secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["make_secret", "make_token", "verify_token"]


def _key(secret: bytes | str) -> bytes:
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, bytes | bytearray):
        return bytes(secret)
    raise TypeError(f"a secret is bytes or str, got {type(secret).__name__}")


def make_secret() -> bytes:
    """A fresh random server secret."""
    return secrets.token_bytes(32)


def make_token(secret: bytes | str, player_id: int) -> str:
    """The token a player presents in its handshake."""
    if not isinstance(player_id, int) or isinstance(player_id, bool):
        raise TypeError(f"player_id is an integer, got {type(player_id).__name__}")
    return hmac.new(_key(secret), str(player_id).encode(), hashlib.sha256).hexdigest()


def verify_token(secret: bytes | str, player_id: int, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(make_token(secret, player_id), token)
