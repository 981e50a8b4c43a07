"""Closed-loop requests through the dispatcher: each player sends a request and waits for its answer."""

from __future__ import annotations

import time

from locust import task

import dispatcher
from harness.runner.users import DispatcherUser

NAME = "Intent.Attributes.RequestSnapshot"


class DispatcherBench(DispatcherUser):
    def wait_time(self) -> float:
        return 0.0

    @task
    def ask(self) -> None:
        assert self.client is not None
        e = self._entry("request", "CRITICAL", NAME)
        t0 = time.monotonic()
        try:
            self.client.request(NAME, None, timeout=10).result(timeout=10)
        except dispatcher.DispatcherError as exc:
            self._failed(e, time.monotonic() - t0, exc)
            return
        self._ok(e, time.monotonic() - t0)
