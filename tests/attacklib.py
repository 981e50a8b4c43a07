"""Helpers of the attack suite (``test_attacks.py``): a real ``netharness serve`` per test, RSS sampling,
reading what a server answers, and the honest-player check run after every attack.

The protocol itself (login, frame builders, the server subprocess) is in ``harness.attack.attacker``, shared
with ``netharness fuzz``: one place to follow a wire or handshake change.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import gevent

from dispatcher.wire import Close, EnvelopeFrame, Nack
from harness.attack.attacker import Raw, ServerProc, honest_player, honest_request

SECRET = "attack-suite-secret"

#: The server under attack: big snapshots (cheap amplification for an attacker), and small timeouts and
#: caps so that half-open connections are closed within a test's few seconds.
CONFIG: dict[str, Any] = {
    "snapshot_bytes": 8192,
    "log_every": 0.0,
}

_honest_ids = iter(range(900_000, 1_000_000))


@contextlib.contextmanager
def serve(**overrides: Any) -> Iterator[ServerProc]:
    srv = ServerProc(SECRET, {**CONFIG, **overrides})
    try:
        yield srv
    finally:
        srv.cleanup()


def assert_serves(srv: ServerProc) -> None:
    """The server did not die, printed no traceback, and still answers an honest player's request."""
    assert srv.alive(), f"the server died: {srv.stderr()[-2000:]}"
    client = honest_player(srv.address, SECRET, next(_honest_ids), reconnect=False)
    try:
        honest_request(client)
    finally:
        client.close()
    assert srv.alive()
    assert srv.tracebacks() == 0, srv.stderr()[-3000:]


def login(srv: ServerProc, pid: int, **kw: Any) -> Raw:
    raw = Raw(srv.address, **kw)
    fr = raw.login(pid, SECRET)
    assert fr is not None and not isinstance(fr, Close), f"login of player {pid} refused: {fr}"
    return raw


def collect(raw: Raw, *, quiet: float = 1.0, limit: float = 6.0) -> list[Any]:
    """Frames the server sends until it is ``quiet`` for that long (or ``limit`` seconds, or EOF)."""
    out: list[Any] = []
    end = time.monotonic() + limit
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return out
        fr = raw.read_frame(min(quiet, left))
        if fr is None:
            return out
        out.append(fr)


def first_answer(raw: Raw, timeout: float = 5.0) -> EnvelopeFrame | None:
    """The first response the server sends (other frames skipped), or None."""
    end = time.monotonic() + timeout
    while (fr := raw.read_frame(max(0.0, end - time.monotonic()))) is not None:
        if isinstance(fr, EnvelopeFrame) and fr.envelope.meta.is_response:
            return fr
    return None


def answers(frames: list[Any]) -> list[EnvelopeFrame]:
    return [f for f in frames if isinstance(f, EnvelopeFrame) and f.envelope.meta.is_response]


def nack_codes(frames: list[Any]) -> Counter[str]:
    return Counter(f.code for f in frames if isinstance(f, Nack))


def peak_rss_during(srv: ServerProc, fn: Callable[[], Any], settle: float = 0.5) -> tuple[int, int, Any]:
    """Run ``fn`` while sampling the server's RSS every 20 ms: (RSS before in kB, peak, fn's result)."""
    before = srv.rss_kb()
    peak = [before]
    done = [False]

    def sample() -> None:
        while not done[0]:
            peak[0] = max(peak[0], srv.rss_kb())
            gevent.sleep(0.02)

    g = gevent.spawn(sample)
    try:
        result = fn()
        gevent.sleep(settle)
    finally:
        done[0] = True
        g.join()
    return before, max(peak[0], srv.rss_kb()), result


def stat_total(stats: Any, word: str) -> int:
    """Sum of every integer counter whose key contains ``word``, anywhere in a stats snapshot."""
    if isinstance(stats, dict):
        return sum((v if isinstance(v, int) and not isinstance(v, bool) and word in str(k) else 0)
                   + (stat_total(v, word) if isinstance(v, dict | list) else 0) for k, v in stats.items())
    if isinstance(stats, list):
        return sum(stat_total(v, word) for v in stats)
    return 0
