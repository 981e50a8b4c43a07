"""Closed-loop requests through the dispatcher: each player sends a request and waits for its answer."""

from __future__ import annotations

from locust import task

from harness.bench.files import cpumeter
from harness.runner.users import DispatcherUser

cpumeter.install()

NAME = "Intent.Attributes.RequestSnapshot"


class DispatcherBench(DispatcherUser):
    def wait_time(self) -> float:
        return 0.0

    @task
    def ask(self) -> None:
        self.request(NAME, None, timeout=10)
