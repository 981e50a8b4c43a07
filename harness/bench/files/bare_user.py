"""Closed-loop requests over a bare msgpack socket: the same exchange as a dispatcher request (the same
answer payload, see ``harness.bench.servers``), no dispatcher."""

from __future__ import annotations

import time
from typing import Any

import gevent.socket
import msgpack
from locust import User, task

from harness.bench.files import cpumeter

cpumeter.install()


class BareMsgpackBench(User):
    def wait_time(self) -> float:
        return 0.0

    def on_start(self) -> None:
        host, port = (self.host or "").removeprefix("tcp://").rsplit(":", 1)
        self.sock = gevent.socket.create_connection((host, int(port)))
        self.unpacker = msgpack.Unpacker(raw=False)
        self.seq = 0

    def on_stop(self) -> None:
        self.sock.close()

    @task
    def ask(self) -> None:
        self.seq += 1
        t0 = time.perf_counter()
        self.sock.sendall(msgpack.packb((self.seq, None)))
        answer: Any = None
        while answer is None:
            self.unpacker.feed(self.sock.recv(65536))
            for msg in self.unpacker:
                answer = msg
        self.environment.events.request.fire(request_type="BARE", name="request",
                                             response_time=(time.perf_counter() - t0) * 1000, response_length=0,
                                             exception=None, context={})
