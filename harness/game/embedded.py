"""The embedded game server: ``netharness serve`` as a subprocess on 127.0.0.1, a free port, a fresh secret.

Started by the Locust master (or local runner) when no ``--host`` is given; stopped (SIGTERM: it drains and
writes its dispatcher stats) when the run ends, and at interpreter exit whatever happens, so no server
process outlives the run.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedServer", "EmbeddedServerError"]


class EmbeddedServerError(RuntimeError):
    pass


class EmbeddedServer:
    def __init__(self, config: dict[str, Any] | None = None, *, capture: str | None = None,
                 start_timeout: float = 20.0) -> None:
        self.secret = secrets.token_hex(32)
        self._dir = tempfile.TemporaryDirectory(prefix="netharness-server-")
        d = Path(self._dir.name)
        cfg = d / "game.json"
        cfg.write_text(json.dumps(config or {}))
        self.stats_path = d / "server-stats.json"
        self.log_path = d / "server.log"
        cmd = [sys.executable, "-m", "harness", "serve", "--host", "127.0.0.1", "--port", "0",
               "--config", str(cfg), "--stats-out", str(self.stats_path)]
        if capture:
            cmd += ["--capture", capture]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env={**os.environ, "NETHARNESS_SECRET": self.secret})
        atexit.register(self.stop)
        line = self._first_line(start_timeout)
        if not line.startswith("listening on tcp://"):
            self.stop()
            raise EmbeddedServerError(f"the embedded game server did not start: {line or 'no output'}; "
                                      f"{self.log_path.read_text().strip()[-500:]}")
        hostport = line.split("tcp://", 1)[1].split()[0]
        host, port = hostport.rsplit(":", 1)
        self.address = (host, int(port))
        self.url = f"tcp://{hostport}"

    def _first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else ""

    def stop(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """Stop the server (drain, then exit); its dispatcher stats, if it wrote them."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        atexit.unregister(self.stop)
        stats = None
        if self.stats_path.exists():
            stats = json.loads(self.stats_path.read_text())
        return stats

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
