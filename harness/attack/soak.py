"""``netharness soak``: honest players while each single-client attacker of issue 12 runs in turn.

Starts its own ``netharness serve`` (a subprocess on a free 127.0.0.1 port) and ``--players`` honest
players in this process, each making a CRITICAL request every 20 ms.  The run is split into equal phases:
calm, then one phase per attacker (in its own process, one client), then calm again.  Prints per phase the
honest players' requests, failures, p50/p99 and their p99 against the calm p99 (both calm phases
together; target <= 2x, 0 failures), the attacker's frames and connections, and the server's RSS sampled
every second.  Exits 1 when an honest request failed, a target was missed, or the server died or printed a
traceback; bad arguments: one line on standard error, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent

from dispatcher.wire import Bits
from harness.attack.attacker import Raw, ServerProc, chunk, envelope, packed, ping
from harness.attack.fuzz import ArgError, Honest, RssSampler, _Parser, percentiles

__all__ = ["ATTACKS", "main"]

SNAPSHOT = "Intent.Stats.RequestSnapshot"
ATTRS = "Intent.Attributes.RequestSnapshot"
REQ = Bits.REQUEST
Stats = dict[str, int]


def _drain(raw: Raw) -> gevent.Greenlet:
    """Read (and discard) what the server sends, until it closes."""
    def run() -> None:
        raw.sock.settimeout(None)
        try:
            while raw.sock.recv(1 << 16):
                pass
        except OSError:
            pass
    return gevent.spawn(run)


def _logged_in(address: tuple[str, int], secret: str, pid: int, st: Stats) -> Raw | None:
    try:
        raw = Raw(address)
    except OSError:
        return None
    st["connections"] += 1
    if type(raw.login(pid, secret)).__name__ != "Welcome":
        raw.close()
        gevent.sleep(0.05)
        return None
    return raw


def _send(raw: Raw, data: bytes, n: int, st: Stats) -> bool:
    ok = raw.send(data)
    if ok:
        st["frames"] += n
    return ok


def _bursts(address: tuple[str, int], secret: str, end: float, st: Stats, *, player: int, n: int, pause: float,
            frame: Callable[[int], bytes]) -> None:
    """Log in as ``player`` and send ``n`` frames (``frame(seq)``) every ``pause`` seconds until ``end``; log in
    again whenever the server closes the connection."""
    seq = 0
    while time.monotonic() < end:
        raw = _logged_in(address, secret, player, st)
        if raw is None:
            continue
        g = _drain(raw)
        while time.monotonic() < end and not g.dead:
            burst = b"".join(frame(s) for s in range(seq + 1, seq + n + 1))
            seq += n
            if not _send(raw, burst, n, st):
                break
            gevent.sleep(pause)
        raw.close()


def tier_claim(address: tuple[str, int], secret: str, end: float, st: Stats) -> None:
    """(1) 8 kB snapshot requests claiming CRITICAL at 400/s."""
    _bursts(address, secret, end, st, player=101, n=4, pause=0.01,
            frame=lambda s: envelope(SNAPSHOT, {"version": 1}, s, qos=0, bits=REQ))


def retransmit(address: tuple[str, int], secret: str, end: float, st: Stats) -> None:
    """(2) bursts of 3,000 requests with the retransmit bit, one a second."""
    _bursts(address, secret, end, st, player=102, n=3000, pause=1.0,
            frame=lambda s: envelope(ATTRS, None, s, bits=REQ | Bits.RETRANSMIT))


def _connections(address: tuple[str, int], end: float, st: Stats) -> Iterator[Raw]:
    """New connections to ``address`` until ``end``, one at a time, each counted and closed after its turn
    (a refused connect waits 50 ms)."""
    while time.monotonic() < end:
        try:
            raw = Raw(address)
        except OSError:
            gevent.sleep(0.05)
            continue
        st["connections"] += 1
        try:
            yield raw
        finally:
            raw.close()


def _flood_preauth(frame: bytes, count: int) -> Callable[[tuple[str, int], str, float, Stats], None]:
    data = frame * count

    def attack(address: tuple[str, int], secret: str, end: float, st: Stats) -> None:
        for raw in _connections(address, end, st):
            while time.monotonic() < end and _send(raw, data, count, st):
                gevent.sleep(0)
    return attack


def _one_shot(make: Callable[[Raw, str], bool]) -> Callable[[tuple[str, int], str, float, Stats], None]:
    """An attack of one connection at a time: ``make`` sends its frames (False: the login failed)."""
    def attack(address: tuple[str, int], secret: str, end: float, st: Stats) -> None:
        for raw in _connections(address, end, st):
            if make(raw, secret):
                st["frames"] += 1
                if raw.closed_with(3.0) is not None:
                    st["closes"] += 1
    return attack


def _deep(raw: Raw, secret: str) -> bool:
    if raw.sock.fileno() % 2:  # every other connection, about: a non-ASCII proof
        return raw.login(103, secret, proof="é" * 64) is not None
    if type(raw.login(103, secret)).__name__ != "Welcome":
        return False
    return raw.send(b"\x97\x00" + b"\x91" * 1000 + b"\xc0" + packed([1, 0, REQ, 0.0, None])[1:])


def _huge(raw: Raw, secret: str) -> bool:
    if type(raw.login(104, secret)).__name__ != "Welcome":
        return False
    return raw.send(packed([0, "A" * 900_000, 1, 0, 0, 0.0, None]))


def _half_close(raw: Raw, secret: str) -> bool:
    if type(raw.login(105, secret)).__name__ != "Welcome":
        return False
    ok = raw.send(packed([99, "no such frame type"]))
    with contextlib.suppress(OSError):
        raw.sock.shutdown(socket.SHUT_WR)
    return ok


def replay(address: tuple[str, int], secret: str, end: float, st: Stats) -> None:
    """(8) replay a captured handshake, and resume the victim's session without its resume secret."""
    victim = _logged_in(address, secret, 106, st)
    if victim is None or victim.welcome is None:
        return
    captured, session = victim.handshake, victim.welcome.session
    while time.monotonic() < end:
        for resume in (False, True):
            try:
                raw = Raw(address)
            except OSError:
                continue
            st["connections"] += 1
            if resume:
                raw.login(106, "wrong-secret", resume=session, resume_secret=None)
            else:
                raw.replay_handshake(captured)
            st["frames"] += 1
            raw.close()
        gevent.sleep(0.005)
    victim.close()


def half_open(address: tuple[str, int], secret: str, end: float, st: Stats, hold: int = 1000) -> None:
    """(9) up to ``hold`` half-open connections (partial handshakes), re-opened as the server closes them."""
    held: list[Raw] = []
    i = 0
    while time.monotonic() < end:
        held = [r for r in held if not r.eof]
        while len(held) < hold and time.monotonic() < end:
            i += 1
            try:
                r = Raw(address, source=f"127.20.{1 + i % 200}.{1 + i // 200 % 250}")
            except OSError:
                break
            st["connections"] += 1
            if _send(r, r.partial_handshake(i), 1, st):
                held.append(r)
        for r in held:
            r.read_frame(0.0)  # notice EOFs
        gevent.sleep(0.2)
    for r in held:
        r.close()


ATTACKS: dict[str, Callable[[tuple[str, int], str, float, Stats], None]] = {
    "1 tier claim flood": tier_claim,
    "2 retransmit burst": retransmit,
    "3 pre-auth PING flood": _flood_preauth(ping(), 20_000),
    "4 pre-auth CHUNKs": _flood_preauth(chunk(1, 0, False, b"x" * 65536), 16),
    "5 deep nesting / bad token": _one_shot(_deep),
    "6 huge bad frames": _one_shot(_huge),
    "7 half-close": _one_shot(_half_close),
    "8 replay / resume": replay,
    "9 half-open connections": half_open,
}


def _attacker(address: tuple[str, int], secret: str, seconds: float, name: str, out: Any) -> None:
    st: Stats = {"frames": 0, "connections": 0, "closes": 0}
    # The attacker runs at the lowest CPU priority: on a real network its CPU is not the server's, and on a
    # 2-core machine a flooding process would otherwise starve the server and the honest players by the
    # scheduler alone, which says nothing about the server's defences.
    with contextlib.suppress(OSError):
        os.nice(19)
    out.put("ready")  # imports done: the phase (and its measurement) starts now
    ATTACKS[name](address, secret, time.monotonic() + seconds, st)
    out.put(st)


def _get(q: Any, timeout: float) -> Any:
    """The next item of a multiprocessing queue, letting this process's greenlets run meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return q.get_nowait()  # never block: that would stall the honest players' greenlets
        except Exception:
            gevent.sleep(0.05)
    return None


def soak(minutes: float, players: int, only: list[str] | None = None) -> dict[str, Any]:
    names = [n for n in ATTACKS if not only or n.split()[0] in only]
    phase = minutes * 60 / (len(names) + 2)
    srv = ServerProc("soak-secret", {"snapshot_bytes": 8192, "log_every": 0.0})
    ctx = multiprocessing.get_context("spawn")
    rows: list[dict[str, Any]] = []
    try:
        rss = RssSampler(srv, every=1.0)
        honest = [Honest(srv.address, srv.secret, 1 + i) for i in range(players)]
        gevent.sleep(1.0)
        for h in honest:
            h.take()
        calm: list[float] = []
        for name in ["calm", *names, "calm"]:
            st: Stats = {}
            if name == "calm":
                fails0, k0 = sum(h.failures for h in honest), len(rss.samples)
                gevent.sleep(phase)
            else:
                q = ctx.Queue()
                p = ctx.Process(target=_attacker, args=(srv.address, srv.secret, phase, name, q), daemon=True)
                p.start()
                got = _get(q, 60.0)
                for h in honest:
                    h.take()  # what the honest players saw while the attacker process started is not counted
                fails0, k0 = sum(h.failures for h in honest), len(rss.samples)
                if got == "ready":
                    st = _get(q, phase + 30) or {}
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
            lat = [x for h in honest for x in h.take()]
            if name == "calm":
                calm += lat
            kb = [s[1] for s in rss.samples[k0:]] or [srv.rss_kb()]
            p50, p99 = percentiles(lat)
            rows.append({"phase": name, "requests": len(lat), "failures": sum(h.failures for h in honest) - fails0,
                         "p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "attacker": st,
                         "rss_peak_kb": max(kb), "rss_end_kb": kb[-1], "server_alive": srv.alive()})
        for h in honest:
            h.stop()
        rss.stop()
        _, calm_p99 = percentiles(calm)
        for r in rows:
            r["p99_ratio"] = round(r["p99_ms"] / calm_p99, 2) if calm_p99 else None
        return {"minutes": minutes, "players": players, "phase_seconds": round(phase, 1),
                "honest_failures_total": sum(h.failures for h in honest),
                "calm_p99_ms": round(calm_p99, 3), "phases": rows, "tracebacks": srv.tracebacks(),
                "rss_samples_kb": [(round(t, 1), kb) for t, kb in rss.samples], "server_alive": srv.alive()}
    finally:
        srv.cleanup()


def verdict(r: dict[str, Any]) -> bool:
    return r["server_alive"] and not r["tracebacks"] and not r["honest_failures_total"] and all(
        p["failures"] == 0 and (p["p99_ratio"] is not None and p["p99_ratio"] <= 2.0) for p in r["phases"])


def format_report(r: dict[str, Any]) -> str:
    out = [f"soak: {r['minutes']:g} min, {r['players']} honest players, {r['phase_seconds']}s per phase, "
           f"calm p99 {r['calm_p99_ms']:.2f} ms",
           f"{'phase':<28} {'requests':>8} {'fail':>4} {'p50 ms':>8} {'p99 ms':>8} {'x calm':>6} "
           f"{'att frames':>10} {'att conns':>9} {'RSS peak':>9} {'RSS end':>8}"]
    for p in r["phases"]:
        a = p["attacker"]
        out.append(f"{p['phase']:<28} {p['requests']:>8} {p['failures']:>4} {p['p50_ms']:>8.2f} {p['p99_ms']:>8.2f} "
                   f"{p['p99_ratio'] if p['p99_ratio'] is not None else '-':>6} {a.get('frames', '-'):>10} "
                   f"{a.get('connections', '-'):>9} {p['rss_peak_kb'] / 1024:>7.1f}MB {p['rss_end_kb'] / 1024:>6.1f}MB")
    samples = r["rss_samples_kb"]
    step = max(1, len(samples) // 12)
    out.append("server RSS over time: " + ", ".join(f"{t:.0f}s {kb / 1024:.0f}MB" for t, kb in samples[::step]))
    out.append(f"server alive: {r['server_alive']}, tracebacks: {r['tracebacks']}, honest failures in all: "
               f"{r['honest_failures_total']}; "
               f"target (0 failures, p99 <= 2x calm): {'met' if verdict(r) else 'MISSED'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="netharness soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the whole run (default 2)")
    ap.add_argument("--players", type=int, default=4, help="honest players (default 4)")
    ap.add_argument("--only", default=None, help="attackers to run, by number (e.g. 2,9; default: all)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    try:
        args = ap.parse_args(argv)
        numbers = [n.split()[0] for n in ATTACKS]
        only = [x.strip() for x in args.only.split(",")] if args.only else None
        if only and not set(only) <= set(numbers):
            raise ArgError(f"--only takes attacker numbers among {','.join(numbers)}, got {args.only!r}")
        if not 0 < args.minutes <= 600:
            raise ArgError(f"--minutes must be in (0, 600], got {args.minutes:g}")
        if not 1 <= args.players <= 200:
            raise ArgError(f"--players must be 1..200, got {args.players}")
    except ArgError as e:
        print(f"netharness soak: error: {e}", file=sys.stderr)
        return 2
    r = soak(args.minutes, args.players, only)
    print(format_report(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0 if verdict(r) else 1

