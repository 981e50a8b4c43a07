"""The Locust stress harness for the dispatcher (users, recorder, scenarios, gate, game server)."""
