"""The Locust side of a run: users, plugin hooks, recorder, scenarios, results at the end, the QoS tab."""
