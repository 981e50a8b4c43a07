"""Authentication: tokens, challenge-response proofs, resume proofs, and the random ids behind them.

A *token* is the player's credential, ``make_token(secret, player_id, expires=None)``: an HMAC-SHA256 of
the player id (and the expiry, a Unix time, when given) under the server's secret.  It never goes on the
wire.  The server opens every connection with a fresh nonce (CHALLENGE); the client answers with a *proof*,
``prove(token, player_id, nonce)``, an HMAC of the nonce under the token, so a captured HELLO is worthless on
any other connection.  Resuming a session needs, besides a fresh proof, a proof under the session's
resume secret (random, sent once in the WELCOME).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = [
    "make_secret",
    "make_token",
    "new_nonce",
    "new_resume_secret",
    "new_session_id",
    "prove",
    "prove_resume",
    "token_expiry",
    "verify_proof",
    "verify_resume",
]


def _key(secret: bytes | str) -> bytes:
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, bytes | bytearray):
        return bytes(secret)
    raise TypeError(f"a secret is bytes or str, got {type(secret).__name__}")


def _mac(key: bytes, msg: str) -> str:
    return hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


def _same(a: str, b: object) -> bool:
    """Constant-time comparison that never raises (a hostile proof may be any string)."""
    if not isinstance(b, str):
        return False
    return hmac.compare_digest(a.encode(), b.encode("utf-8", "surrogatepass"))


def make_secret() -> bytes:
    """A fresh random server secret."""
    return secrets.token_bytes(32)


def make_token(secret: bytes | str, player_id: int, expires: float | None = None) -> str:
    """The credential a player keeps (not sent on the wire): ``HMAC(secret, player_id[, expires])``.
    ``expires`` (a Unix time, whole seconds) makes the server refuse it afterwards."""
    if not isinstance(player_id, int) or isinstance(player_id, bool):
        raise TypeError(f"player_id is an integer, got {type(player_id).__name__}")
    if expires is None:
        return _mac(_key(secret), str(player_id))
    exp = int(expires)
    return f"{exp}.{_mac(_key(secret), f'{player_id}:{exp}')}"


def token_expiry(token: str) -> int | None:
    """The expiry a token carries (None: it does not expire)."""
    head, dot, _ = token.partition(".")
    return int(head) if dot and head.isdigit() else None


def prove(token: str, player_id: int | None, nonce: str) -> str:
    """The client's answer to a CHALLENGE: an HMAC of the nonce and player id under the token."""
    return _mac(token.encode(), f"login|{player_id}|{nonce}")


def verify_proof(secret: bytes | str, player_id: int, expires: int | None, nonce: str, proof: object) -> bool:
    return _same(prove(make_token(secret, player_id, expires), player_id, nonce), proof)


def prove_resume(resume_secret: str, player_id: int | None, session: str, nonce: str) -> str:
    return _mac(resume_secret.encode(), f"resume|{player_id}|{session}|{nonce}")


def verify_resume(resume_secret: str, player_id: int, session: str, nonce: str, proof: object) -> bool:
    return _same(prove_resume(resume_secret, player_id, session, nonce), proof)


def new_nonce() -> str:
    return secrets.token_hex(16)


def new_session_id() -> str:
    return secrets.token_hex(12)


def new_resume_secret() -> str:
    return secrets.token_hex(32)
