"""Headless Chromium (Debian's ``chromium``): a screenshot and the rendered DOM of a report page."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["BrowserError", "chromium", "dump_dom", "screenshot"]

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars")


class BrowserError(RuntimeError):
    pass


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError("no chromium on PATH (Debian: apt-get install chromium)")


def _run(page: Path, *extra: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="netharness-chromium-") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(page: str | Path, png: str | Path, width: int = 1200, height: int = 2600) -> Path:
    out = Path(png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    p = _run(Path(page), f"--screenshot={out}", f"--window-size={width},{height}")
    if not out.exists():
        raise BrowserError(f"chromium wrote no screenshot: {p.stderr.strip()[-500:]}")
    return out


def dump_dom(page: str | Path) -> str:
    """The DOM after Chromium loaded and rendered the page."""
    p = _run(Path(page), "--dump-dom")
    if p.returncode != 0 or not p.stdout:
        raise BrowserError(f"chromium could not load {page}: {p.stderr.strip()[-500:]}")
    return p.stdout
