"""Closed-loop players using ``DispatcherUser.request()``: a valid request, and one its schema rejects."""

from __future__ import annotations

from locust import constant, task

from harness.runner.users import DispatcherUser


class Asker(DispatcherUser):
    wait_time = constant(0.01)

    @task
    def ask(self) -> None:
        env = self.request("Intent.Attributes.RequestSnapshot", None, timeout=5)
        if env is not None and set(env.payload) == {"attributes", "points"}:  # the answer itself comes back
            self.request("Intent.Attributes.SpendPoints", {"attribute": "luck", "points": 1})  # not an attribute
