"""A hostile client's toolkit, shared by ``netharness fuzz``/``soak`` and ``tests/test_attacks.py``.

Every protocol detail an attacker needs (how to log in, how frames are built) lives here, on top of
``dispatcher.wire``'s public encoders, so following a protocol change is one edit:

* ``ServerProc``: a real ``netharness serve`` subprocess on a free loopback port with a known secret and a
  config file, tracked by PID (RSS from ``/proc/PID/status``, its standard error kept in a file).
* ``Raw``: a raw loopback socket speaking frames by hand: ``login`` (the handshake, recorded so it can be
  replayed), ``send``, ``read_frame``, ``closed_with``.
* frame builders (``envelope``, ``ping``, ``chunk``, ``nack``, ``packed``) and ``honest_player`` (a real
  ``dispatcher`` client).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket as _stdsocket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import msgpack

import dispatcher
from dispatcher import auth
from dispatcher.decoder import FrameDecoder
from dispatcher.envelope import Envelope, Meta, QoS
from dispatcher.wire import (
    PROTOCOL_VERSION,
    Challenge,
    Close,
    FrameType,
    Hello,
    Ping,
    Welcome,
    encode_chunk,
    encode_control,
    encode_envelope,
)
from harness.game import load_registry
from harness.game.schemas import SCHEMAS

__all__ = ["REG", "Raw", "ServerProc", "chunk", "envelope", "honest_player", "nack", "packed", "ping",
           "rss_kb"]

REG = load_registry()
_LISTEN = re.compile(r"listening on tcp://([\d.]+):(\d+)")


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of process ``pid`` in kB (``VmRSS`` of ``/proc/PID/status``, or another field such
    as ``RssAnon``); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def write_config(path: Path, game: dict[str, Any]) -> None:
    """A ``netharness serve --config`` TOML file: top-level keys and one level of tables."""
    lines = [f"{k} = {_toml(v)}" for k, v in game.items() if not isinstance(v, dict)]
    for k, v in game.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")


class ServerProc:
    """``netharness serve`` in a subprocess on 127.0.0.1 (a free port), with ``secret`` and ``config``.

    ``stop()`` (or leaving the ``with`` block) sends SIGTERM to that PID, then SIGKILL after ``grace``.

    The server picks its allocator itself, as ``netharness serve`` always does (``PYTHONMALLOC=malloc``,
    ``harness.cli.serve_on_the_c_allocator``); ``allocator`` sets another (``"pymalloc"``), and a
    ``PYTHONMALLOC`` set in the environment wins.
    """

    def __init__(self, secret: str = "attack-secret", config: dict[str, Any] | None = None, *,
                 start_timeout: float = 20.0, allocator: str | None = None) -> None:
        self.secret = secret
        self._dir = tempfile.TemporaryDirectory(prefix="netharness-attack-")
        d = Path(self._dir.name)
        args = [sys.executable, "-m", "harness", "serve", "--host", "127.0.0.1", "--port", "0",
                "--secret", secret, "--quiet", "--stats-out", str(d / "stats.json")]
        self.stats_path = d / "stats.json"
        if config:
            write_config(d / "server.toml", config)
            args += ["--config", str(d / "server.toml")]
        self.stderr_path = d / "stderr.log"
        self._stderr = self.stderr_path.open("wb")
        env = {**({"PYTHONMALLOC": allocator} if allocator else {}), **os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        deadline = time.monotonic() + start_timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()  # the first line says where it listens
            if line or self.proc.poll() is not None:
                break
        m = _LISTEN.search(line.decode(errors="replace"))
        if m is None:
            self.stop()
            why = self.stderr_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"netharness serve did not start: {line!r} {why}")
        self.address: tuple[str, int] = (m.group(1), int(m.group(2)))

    def __enter__(self) -> ServerProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self, field: str = "VmRSS") -> int:
        return rss_kb(self.pid, field)

    def rss_detail(self) -> str:
        return ", ".join(f"{f} {self.rss_kb(f)} kB" for f in ("VmRSS", "RssAnon", "RssFile"))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stderr_bytes(self) -> int:
        return self.stderr_path.stat().st_size

    def stats(self) -> dict[str, Any]:
        """The server's dispatcher stats, written when it stopped (``stop()`` first)."""
        return json.loads(self.stats_path.read_text())  # type: ignore[no-any-return]

    def tracebacks(self) -> int:
        """Unhandled exceptions the server printed (Python tracebacks, gevent's greenlet failures)."""
        text = self.stderr()
        return text.count("Traceback (most recent call last)")

    def stop(self, grace: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(grace)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        self._dir.cleanup()


# -- frames ---------------------------------------------------------------------------------------------

def envelope(name: str, payload: Any, seq: int, *, qos: int = QoS.CRITICAL, bits: int = 0,
             player_id: int | None = None, ts: float = 0.0) -> bytes:
    """An envelope frame as a client would send it; ``qos`` is the tier the frame claims."""
    env = Envelope(name, payload, Meta(seq, QoS(qos), ts, player_id=player_id))
    return encode_envelope(env, REG.wire_id(name), bits)


def ping(ts: float = 0.0) -> bytes:
    return encode_control(Ping(ts))


def chunk(msg_id: int, offset: int, last: bool, data: bytes) -> bytes:
    return encode_chunk(msg_id, offset, last, data)


def nack(wire_id: int, reply_to: int, code: str, message: str) -> bytes:
    return packed([FrameType.NACK, wire_id, reply_to, code, message])


def packed(obj: Any) -> bytes:
    """Any msgpack value as bytes (for frames the encoders refuse to build)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def token(secret: str, pid: int) -> str:
    return dispatcher.make_token(secret, pid)


def hello(pid: int | None, nonce: str, secret: str | None, *, proof: str | None = None,
          resume: str | None = None, resume_secret: str | None = None, registry_hash: str | None = None) -> bytes:
    """The client's answer to the server's CHALLENGE (``nonce``): the one place that knows the handshake.

    ``proof`` replaces the proof made from ``secret`` (a wrong one, say); ``resume`` names a session to
    resume, proven with ``resume_secret`` (a resume without it carries no resume proof).
    """
    if proof is None and secret is not None and pid is not None:
        proof = auth.prove(token(secret, pid), pid, nonce)
    resume_proof = None
    if resume is not None and resume_secret is not None:
        resume_proof = auth.prove_resume(resume_secret, pid, resume, nonce)
    return encode_control(Hello(PROTOCOL_VERSION, registry_hash or REG.hash, pid, proof, 0.0, resume, None,
                                resume_proof, ""))


# -- a raw socket ---------------------------------------------------------------------------------------

class Raw:
    """A raw client socket to ``address`` (optionally bound to ``source``, another 127.x address)."""

    def __init__(self, address: tuple[str, int], *, source: str | None = None, timeout: float = 5.0) -> None:
        src = (source, 0) if source else None
        self.sock = gevent.socket.create_connection(address, timeout=timeout, source_address=src)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder(REG.names, 64 << 20)
        self.inbox: list[Any] = []
        self.handshake = b""  # the bytes of the handshake this socket sent (for replay attacks)
        self.welcome: Welcome | None = None
        self._challenge: Challenge | None = None
        self.eof = False

    def send(self, data: bytes) -> bool:
        """Write ``data``; False when the server has closed (or reset) the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def challenge(self) -> Challenge | None:
        """The server's CHALLENGE (read once; later calls return the same one)."""
        while self._challenge is None:
            fr = self.read_frame()
            if fr is None or isinstance(fr, Close):
                if fr is not None:
                    self.inbox.insert(0, fr)  # login returns it
                return None
            if isinstance(fr, Challenge):
                self._challenge = fr
        return self._challenge

    def login(self, pid: int, secret: str, *, proof: str | None = None, resume: str | None = None,
              resume_secret: str | None = None) -> Any:
        """The handshake; the server's answer (``Welcome`` or ``Close``, None on EOF).  ``proof`` replaces
        the proof of the secret; ``resume`` names a session to resume (with ``resume_secret``)."""
        ch = self.challenge()
        if ch is None:
            return self.read_frame()
        self.handshake = hello(pid, ch.nonce, secret, proof=proof, resume=resume, resume_secret=resume_secret)
        self.send(self.handshake)
        fr = self.read_frame()
        if isinstance(fr, Welcome):
            self.welcome = fr
        return fr

    def partial_handshake(self, pid: int) -> bytes:
        """The first half of a handshake (for a half-open connection; needs no CHALLENGE)."""
        whole = hello(pid, "0" * 32, None, proof="0" * 64)
        return whole[: len(whole) // 2]

    def replay_handshake(self, handshake: bytes) -> Any:
        """Answer this connection's CHALLENGE with a handshake captured on another; the server's answer."""
        self.challenge()
        self.send(handshake)
        return self.read_frame()

    def read_frame(self, timeout: float = 5.0) -> Any:
        """The next frame from the server; None on EOF, reset or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return None
            except OSError:  # reset
                self.eof = True
                return None
            if not data:
                self.eof = True
                return None
            self.inbox += self.decoder.feed(data)
        return self.inbox.pop(0)

    def closed_with(self, timeout: float = 5.0) -> Close | None:
        """The CLOSE the server sent (skipping other frames), or None if it closed without one."""
        deadline = time.monotonic() + timeout
        while True:
            fr = self.read_frame(max(0.0, deadline - time.monotonic()))
            if fr is None or isinstance(fr, Close):
                return fr

    def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (EOF or reset) within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.read_frame(max(0.0, deadline - time.monotonic())) is not None:
            pass
        return self.eof

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def honest_player(address: tuple[str, int], secret: str, pid: int, **kw: Any) -> dispatcher.Transport:
    """A real ``dispatcher`` client logged in as ``pid`` (returns once the server welcomed it)."""
    return dispatcher.init(peer="client", channel_registry=REG, connect=address, player_id=pid,
                           token=token(secret, pid), schemas=SCHEMAS, mode="release", **kw)


def honest_request(client: dispatcher.Transport, timeout: float = 5.0) -> float:
    """One CRITICAL request of an honest player; its round trip in seconds (raises if it fails)."""
    t0 = time.perf_counter()
    client.request("Intent.Attributes.RequestSnapshot", None, timeout=timeout).result(timeout=timeout + 1)
    return time.perf_counter() - t0


def sleep(seconds: float) -> None:
    gevent.sleep(seconds)
