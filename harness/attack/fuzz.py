"""``netharness fuzz``: structured mutation fuzzing of ``netharness serve`` over real loopback sockets.

By default it starts its own server (a subprocess on a free 127.0.0.1 port); ``--port`` (with ``--host``
and ``--secret``) attacks a running one instead.  Attacker processes open connections from many 127.x.y.z
source addresses, before login (mutated handshakes, PINGs, CHUNKs, garbage) and after a valid login
(envelopes with every field randomised: names both ways, claimed tiers, bits, huge sequence numbers,
spoofed player ids, wrong payload types; then bit flips, truncation, length lies, deep nesting, wrong types
in every field, unknown frame types and wire ids).  Meanwhile an honest player makes requests.

Prints frames sent, connections, server crashes (the process died), unhandled exceptions (tracebacks in
the server's standard error), log bytes per frame, server RSS start/peak/end and the honest player's
requests, failures, p50/p99.  Exits 1 on a crash, an unhandled exception or an honest failure, else 0;
bad arguments: one line on standard error, exit 2.  ``netharness fuzz --soak`` is ``netharness soak``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
import numpy as np

from dispatcher.wire import PROTOCOL_VERSION, Bits, FrameType
from harness.attack.attacker import REG, Raw, ServerProc, chunk, honest_player, honest_request, packed, ping

__all__ = ["Mutator", "main"]

NAMES = REG.names
_ODD: list[Any] = [None, True, False, -1, 0, 2**63 - 1, 2**64 - 1, -(2**63), 1e308, -0.0, float("nan"),
                   float("inf"), "", "x" * 300, "é\n\x00", b"\x00\xff", [], [1, [2, [3]]], {}, {"k": [None]},
                   {1: 2}, 3.5]


class ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (no usage dump)
        raise ArgError(message)


class Mutator:
    """Random frames: ``hostile()`` keeps the frame structure and randomises what is in it; ``broken()``
    breaks the structure (the server must answer with a CLOSE)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def odd(self) -> Any:
        r = self.rng
        if r.random() < 0.2:
            return r.choice([r.getrandbits(64), -r.getrandbits(63), r.random() * 1e9])
        return r.choice(_ODD)

    def payload(self) -> Any:
        r = self.rng
        return r.choice([None, {"version": r.randrange(10)}, {"skillId": r.choice(["Nova", "Heal", 7])},
                         {"attribute": r.choice(["str", "xyz"]), "points": r.randrange(-5, 2000)},
                         {"traceId": "t" * r.randrange(100)}, self.odd()])

    def envelope_items(self, seq: int) -> list[Any]:
        r = self.rng
        wid = r.randrange(len(NAMES))
        bits = r.randrange(Bits.ALL + 1) if r.random() < 0.5 else Bits.REQUEST | r.choice([0, Bits.RETRANSMIT])
        if r.random() < 0.05:
            seq = r.choice([2**63 - 1, 2**64 - 1, 2**32])
        items: list[Any] = [0, wid, seq, r.randrange(4), bits, r.random() * 1e4, self.payload()]
        items += [r.choice([None, r.randrange(10**6)]), r.choice([None, "trace"]), r.choice([None, seq - 1])]
        return items[: r.randrange(7, 11)]

    def hostile(self, seq: int) -> bytes:
        """A frame a decoder accepts, with hostile content."""
        r = self.rng.random()
        if r < 0.8:
            return packed(self.envelope_items(seq))
        if r < 0.88:
            return ping(self.rng.random())
        if r < 0.92:  # acknowledgements of sequence numbers never sent
            return packed([FrameType.ACK, self.rng.randrange(len(REG.channels)),
                           [self.rng.randrange(2**32) for _ in range(3)]])
        if r < 0.96:  # an envelope cut in two CHUNKs (message id: seq, unique on the connection)
            whole = packed(self.envelope_items(seq))
            cut = self.rng.randrange(1, len(whole))
            return chunk(seq, 0, False, whole[:cut]) + chunk(seq, cut, True, whole[cut:])
        return packed([FrameType.NACK, self.rng.randrange(len(NAMES)), seq, "bogus", "msg\nforged"])

    def broken(self, seq: int, preauth: bool = False) -> bytes:
        """A frame the server must refuse with a CLOSE."""
        r = self.rng
        if preauth:
            items: list[Any] = [FrameType.HELLO, PROTOCOL_VERSION, REG.hash, r.randrange(10**6), "0" * 64, 0.0]
        else:
            items = self.envelope_items(seq)
        kind = r.randrange(9)
        if kind == 8:  # a frame this state does not admit (a second handshake, a server's frame, a CLOSE)
            return r.choice([packed(items) if preauth else packed([FrameType.HELLO, PROTOCOL_VERSION, REG.hash, 1,
                                                                   "0" * 64, 0.0]),
                             packed([FrameType.WELCOME, PROTOCOL_VERSION, "s", 1, 0.0, 0.0]),
                             packed([FrameType.CHALLENGE, PROTOCOL_VERSION, "n", 0.0]),
                             packed([FrameType.CLOSE, "bye\n" * 100, "x" * r.randrange(10**5)])])
        if kind == 0:  # a wrong type in one field
            items[r.randrange(1, len(items))] = r.choice([[None], {"a": 1}, b"\x00", "s", 1.5, -7, 2**64 - 1])
            return packed(items)
        if kind == 1:  # deep nesting in one field
            i = r.randrange(1, len(items))
            deep = b"\x91" * r.randrange(200, 3000) + b"\xc0"
            return bytes([0x90 | len(items)]) + b"".join(packed(x) for x in items[:i]) + deep \
                + b"".join(packed(x) for x in items[i + 1:])
        if kind == 2:  # unknown frame type or wire id
            if r.random() < 0.5:
                return packed([r.randrange(10, 2**16), *items[1:]])
            items[1] = r.choice([len(NAMES), 2**31, -1, "Intent.Skills.Use"])
            return packed(items)
        if kind == 3:  # a length lie: an array, string or binary header claiming far more than follows
            return r.choice([b"\xdd\xff\xff\xff\xf0", b"\xdb\x7f\xff\xff\xff", b"\xc6\x7f\xff\xff\xff",
                             b"\xdc\xff\xff"]) + packed(items)[1:]
        if kind == 4:  # extension types and reserved bytes
            return r.choice([b"\xd4\x01\x00", b"\xc1", b"\xc7\x03\x05abc"]) + packed(items)
        data = bytearray(packed(items))
        if kind == 5:  # bit flips
            for _ in range(r.randrange(1, 6)):
                data[r.randrange(len(data))] ^= 1 << r.randrange(8)
            return bytes(data) + b"\xc1"  # and then a byte that is never valid msgpack
        if kind == 6:  # a scalar or a map where a frame must be an array
            return packed(r.choice([items[1:], {"frame": items}, 7, "HELLO", None]))
        return bytes(data[: r.randrange(1, len(data))]) + b"\xc1"  # truncated, then invalid


# -- attacker processes -----------------------------------------------------------------------------------

def _attack_loop(address: tuple[str, int], secret: str, seconds: float, greenlets: int, worker: int,
                 seed: int) -> dict[str, int]:
    totals = {"frames": 0, "hostile": 0, "broken": 0, "connections": 0, "preauth": 0, "closes": 0,
              "refused_logins": 0, "connect_errors": 0, "bytes": 0, "fuzzer_errors": 0}
    deadline = time.monotonic() + seconds
    pids = iter(range(1_000_000 + worker * 10_000_000, 2_000_000_000))

    def one(gid: int) -> None:
        rng = random.Random(seed * 1000 + worker * 100 + gid)
        mut = Mutator(rng)
        while time.monotonic() < deadline:
            try:
                connection(rng, mut)
            except Exception as e:  # the fuzzer's own bug: count it, say it once, go on
                totals["fuzzer_errors"] += 1
                if totals["fuzzer_errors"] == 1:
                    print(f"netharness fuzz: attacker error: {type(e).__name__}: {e}", file=sys.stderr)

    def connection(rng: random.Random, mut: Mutator) -> None:
        src = f"127.{10 + worker}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
        try:
            raw = Raw(address, source=src, timeout=2.0)
        except OSError:
            totals["connect_errors"] += 1
            gevent.sleep(0.01)
            return
        try:
            totals["connections"] += 1
            preauth = rng.random() < 0.3
            if preauth:
                totals["preauth"] += 1
                frames = [rng.choice([ping(), chunk(rng.randrange(4), 0, False, b"x" * 512), mut.hostile(1)])
                          for _ in range(rng.randrange(1, 40))]
            else:
                fr = raw.login(next(pids), secret)
                if type(fr).__name__ != "Welcome":
                    totals["refused_logins"] += 1
                    return
                frames = [mut.hostile(seq) for seq in range(1, rng.randrange(100, 4000))]
            n = len(frames)
            k = rng.randrange(1, 3)
            frames += [mut.broken(rng.randrange(1, 10**6), preauth) for _ in range(k)]
            data = b"".join(frames)
            if raw.send(data):
                totals["frames"] += n + k
                totals["hostile"] += n
                totals["broken"] += k
                totals["bytes"] += len(data)
            close = raw.closed_with(0.5)  # not longer: the CLOSE may queue behind answers
            if close is not None:
                totals["closes"] += 1
                key = "close:" + close.code[:40]
                totals[key] = totals.get(key, 0) + 1
        finally:
            raw.close()

    gevent.joinall([gevent.spawn(one, g) for g in range(greenlets)], timeout=seconds + 10)
    return totals


def _worker(address: tuple[str, int], secret: str, seconds: float, greenlets: int, worker: int, seed: int,
            out: Any) -> None:
    out.put(_attack_loop(address, secret, seconds, greenlets, worker, seed))


# -- the run ----------------------------------------------------------------------------------------------

class Honest:
    """One honest player in this process: a CRITICAL request every ``gap`` seconds; latencies in ms."""

    def __init__(self, address: tuple[str, int], secret: str, pid: int, gap: float = 0.02) -> None:
        self.client = honest_player(address, secret, pid)
        self.gap = gap
        self.lat: list[float] = []
        self.failures = 0
        self.errors: list[str] = []
        self._stop = False
        self._g = gevent.spawn(self._run)

    def _run(self) -> None:
        while not self._stop:
            try:
                self.lat.append(honest_request(self.client) * 1e3)
            except Exception as e:
                self.failures += 1
                if len(self.errors) < 5:
                    self.errors.append(f"{type(e).__name__}: {e}"[:200])
            gevent.sleep(self.gap)

    def take(self) -> list[float]:
        out, self.lat = self.lat, []
        return out

    def stop(self) -> None:
        self._stop = True
        self._g.join(timeout=10)
        self.client.close()


def percentiles(lat: list[float]) -> tuple[float, float]:
    if not lat:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(np.asarray(lat), [50, 99])
    return float(p50), float(p99)


class RssSampler:
    def __init__(self, srv: ServerProc | None, every: float = 0.5) -> None:
        self.srv = srv
        self.samples: list[tuple[float, int]] = []
        self._stop = False
        self._t0 = time.monotonic()
        self._g = gevent.spawn(self._run, every) if srv is not None else None

    def _run(self, every: float) -> None:
        assert self.srv is not None
        while not self._stop and self.srv.alive():
            self.samples.append((time.monotonic() - self._t0, self.srv.rss_kb()))
            gevent.sleep(every)

    def stop(self) -> None:
        self._stop = True
        if self._g is not None:
            self._g.join(timeout=2)


def run_workers(address: tuple[str, int], secret: str, seconds: float, concurrency: int, seed: int,
                target: Callable[..., None] = _worker, extra: tuple[Any, ...] = ()) -> list[dict[str, int]]:
    """``concurrency`` attacker greenlets in worker processes (two at most: the server needs a core too)."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    n_proc = max(1, min(2, concurrency // 64))
    per = [concurrency // n_proc + (1 if i < concurrency % n_proc else 0) for i in range(n_proc)]
    procs = [ctx.Process(target=target, args=(address, secret, seconds, per[i], i, seed, *extra, q), daemon=True)
             for i in range(n_proc)]
    for p in procs:
        p.start()
    results: list[dict[str, int]] = []
    deadline = time.monotonic() + seconds + 60
    while len(results) < n_proc and time.monotonic() < deadline:
        try:
            results.append(q.get_nowait())  # never block: the honest player and the RSS sampler run meanwhile
        except Exception:
            gevent.sleep(0.1)
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="netharness fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long to fuzz (default 30)")
    ap.add_argument("--concurrency", type=int, default=32, help="attacker connections at once (default 32)")
    ap.add_argument("--host", default="127.0.0.1", help="server to attack with --port (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None, help="attack this running server (default: start one)")
    ap.add_argument("--secret", default=None, help="the server's token secret (required with --port)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--soak", action="store_true", help="run the soak instead (see netharness soak --help)")
    argv = list(sys.argv[1:] if argv is None else argv)  # --soak: harness.cli runs harness.attack.soak instead
    try:
        args = ap.parse_args(argv)
        if args.seconds <= 0 or args.seconds > 3600:
            raise ArgError(f"--seconds must be in (0, 3600], got {args.seconds:g}")
        if not 1 <= args.concurrency <= 1000:
            raise ArgError(f"--concurrency must be 1..1000, got {args.concurrency}")
        if args.port is not None and (not args.secret or not 0 < args.port < 65536):
            raise ArgError("--port needs a port 1..65535 and --secret, the server's token secret")
        if not args.host.startswith("127."):
            raise ArgError(f"--host must be a loopback address (127.x.y.z), got {args.host!r}")
    except ArgError as e:
        print(f"netharness fuzz: error: {e}", file=sys.stderr)
        return 2
    report = fuzz(args.seconds, args.concurrency, args.seed, args.host, args.port, args.secret)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    bad = report["crashes"] or report["unhandled_exceptions"] or report["honest"]["failures"]
    return 1 if bad else 0


def fuzz(seconds: float, concurrency: int, seed: int, host: str = "127.0.0.1", port: int | None = None,
         secret: str | None = None) -> dict[str, Any]:
    srv = ServerProc("fuzz-" + str(seed), {"log_every": 0.0}) if port is None else None
    address = srv.address if srv is not None else (host, port or 0)
    secret = srv.secret if srv is not None else (secret or "")
    try:
        rss = RssSampler(srv)
        honest = Honest(address, secret, 1)
        gevent.sleep(0.5)
        calm = honest.take()
        t0 = time.monotonic()
        parts = run_workers(address, secret, seconds, concurrency, seed)
        elapsed = time.monotonic() - t0
        lat = calm + honest.take()
        honest.stop()
        rss.stop()
        crashed = srv is not None and not srv.alive()
        totals: dict[str, int] = {}
        for part in parts:
            for k, v in part.items():
                totals[k] = totals.get(k, 0) + v
        decoded = None
        if srv is not None:
            rc = srv.stop()
            crashed = crashed or rc != 0  # it must also stop cleanly on SIGTERM
            with contextlib.suppress(OSError, ValueError):
                decoded = srv.stats()["peer"].get("frames_in")
        p50, p99 = percentiles(lat)
        log_bytes = srv.stderr_bytes() if srv is not None else None
        kb = [s[1] for s in rss.samples]
        return {
            "seconds": round(elapsed, 1), "workers": len(parts), **totals, "frames_decoded": decoded,
            "frames_per_second": round(totals.get("frames", 0) / elapsed) if elapsed else 0,
            "crashes": int(crashed), "unhandled_exceptions": srv.tracebacks() if srv is not None else None,
            "log_bytes": log_bytes,
            "log_bytes_per_frame": round(log_bytes / max(1, totals.get("frames", 0)), 4)
            if log_bytes is not None else None,
            "rss_kb": {"start": kb[0], "peak": max(kb), "end": kb[-1]} if kb else None,
            "honest": {"requests": len(lat) + honest.failures, "failures": honest.failures,
                       "errors": honest.errors, "p50_ms": round(p50, 3), "p99_ms": round(p99, 3)},
        }
    finally:
        if srv is not None:
            srv.cleanup()


def format_report(r: dict[str, Any]) -> str:
    h = r["honest"]
    rss = r["rss_kb"]
    lines = [
        f"fuzzed {r['seconds']}s with {r['workers']} attacker process(es)",
        f"frames sent:           {r.get('frames', 0):,} ({r.get('frames_per_second', 0):,}/s; "
        f"{r.get('broken', 0):,} broken, {r.get('hostile', 0):,} well-formed but hostile)",
        "frames the server decoded: " + (f"{r['frames_decoded']:,}" if r.get("frames_decoded") is not None
                                          else "n/a") + " (the rest followed a frame that closed the connection)",
        "CLOSE reasons:         " + ", ".join(f"{k[6:]} {v:,}" for k, v in sorted(r.items(), key=lambda kv: str(kv[0]))
                                               if isinstance(k, str) and k.startswith("close:")),
        f"connections:           {r.get('connections', 0):,} ({r.get('preauth', 0):,} never logged in; "
        f"{r.get('closes', 0):,} ended with a CLOSE; {r.get('refused_logins', 0):,} logins refused; "
        f"{r.get('connect_errors', 0):,} connects failed)",
        f"server crashes:        {r['crashes']}",
        f"unhandled exceptions:  {r['unhandled_exceptions'] if r['unhandled_exceptions'] is not None else 'n/a'}",
        f"log bytes per frame:   {r['log_bytes_per_frame'] if r['log_bytes_per_frame'] is not None else 'n/a'}"
        f" ({r['log_bytes'] or 0:,} bytes of log)",
        "server RSS:            " + (f"start {rss['start'] / 1024:.1f} MB, peak {rss['peak'] / 1024:.1f} MB, "
                                     f"end {rss['end'] / 1024:.1f} MB" if rss else "n/a"),
        f"honest player:         {h['requests']:,} requests, {h['failures']} failures, p50 {h['p50_ms']:.2f} ms, "
        f"p99 {h['p99_ms']:.2f} ms",
    ]
    lines += [f"  honest failure: {e}" for e in h["errors"]]
    return "\n".join(lines)
