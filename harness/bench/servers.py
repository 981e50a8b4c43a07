"""Trivial servers the load-generation benchmark compares against (``python -m harness.bench.servers KIND``).

* ``bare``: msgpack over TCP, length-free: each request is one msgpack array ``[seq, payload]``, answered
  with ``[seq, answer]``, ``answer`` being what the game server answers ``Intent.Attributes.RequestSnapshot``
  (the dispatcher user's request) with.  No dispatcher: the floor of "a Python load generator on a socket".
* ``http``: a minimal HTTP/1.1 keep-alive server answering every request with a tiny body in one write
  (a WSGI server writing headers and body separately stalls 40 ms a request on Nagle + delayed ACK, which
  would make Locust's ``FastHttpUser`` look far slower than it is).

Both print ``listening on HOST:PORT`` and serve until SIGTERM.
"""

from __future__ import annotations

import signal
import sys

import gevent
import gevent.event
import gevent.server
import msgpack

#: The payload of the game server's answer to ``Intent.Attributes.RequestSnapshot`` for a new player.
ANSWER = {"attributes": {"str": 10, "dex": 10, "int": 10, "vit": 10}, "points": 1_000_000}


def _bare(sock: gevent.socket.socket, addr: object) -> None:
    _nodelay(sock)
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            unpacker.feed(data)
            out = [msgpack.packb((msg[0], ANSWER)) for msg in unpacker]
            if out:
                sock.sendall(b"".join(out))
    except OSError:
        return
    finally:
        sock.close()


_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def _http(sock: gevent.socket.socket, addr: object) -> None:
    _nodelay(sock)
    buf = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            buf += data
            n = buf.count(b"\r\n\r\n")  # GET requests: no bodies
            if n:
                buf = buf[buf.rindex(b"\r\n\r\n") + 4:]
                sock.sendall(_RESPONSE * n)
    except OSError:
        return
    finally:
        sock.close()


def _nodelay(sock: gevent.socket.socket) -> None:
    import socket

    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main(argv: list[str] | None = None) -> int:
    kind = (argv or sys.argv[1:] or ["bare"])[0]
    if kind == "bare":
        server = gevent.server.StreamServer(("127.0.0.1", 0), _bare)
    elif kind == "http":
        server = gevent.server.StreamServer(("127.0.0.1", 0), _http)
    else:
        print(f"unknown server kind {kind!r}; kinds: bare, http", file=sys.stderr)
        return 2
    server.start()
    host, port = server.address[:2]
    print(f"listening on {host}:{port}", flush=True)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()
    server.stop(timeout=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
