"""Closed-loop GET / with Locust's FastHttpUser, against a minimal gevent HTTP/1.1 server."""

from locust import FastHttpUser, task

from harness.bench.files import cpumeter

cpumeter.install()


class HttpBench(FastHttpUser):
    def wait_time(self) -> float:
        return 0.0

    @task
    def get(self) -> None:
        self.client.get("/")
