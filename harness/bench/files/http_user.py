"""Closed-loop GET / with Locust's FastHttpUser, against a trivial gevent WSGI server."""

from locust import FastHttpUser, task


class HttpBench(FastHttpUser):
    def wait_time(self) -> float:
        return 0.0

    @task
    def get(self) -> None:
        self.client.get("/")
