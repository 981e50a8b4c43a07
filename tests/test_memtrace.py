"""The server's memory diagnostic (``netharness serve --mem-trace`` / ``NETHARNESS_MEMTRACE``)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from harness.game import memtrace


class _Hoard:
    def __init__(self) -> None:
        self.data = bytearray(1000)


@pytest.mark.parametrize("frames", [0, 1])
def test_lines_show_what_grew_since_the_baseline(tmp_path: Path, frames: int) -> None:
    path = tmp_path / "trace.jsonl"
    was_tracing = tracemalloc.is_tracing()
    trace = memtrace.MemTrace(str(path), every=0.01, after=0.0, frames=frames)
    # Earlier tests' garbage is freed now, not by a collection between the two samples (in a whole-suite run
    # that shrank glibc's in-use bytes by more than the hoard).
    gc.collect()
    gc.disable()
    try:
        trace.sample()  # the baseline
        hoard = [_Hoard() for _ in range(3000)]  # 3 MB that stays
        time.sleep(0.02)
        trace.sample()
    finally:
        gc.enable()
        if not was_tracing:
            tracemalloc.stop()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["baseline"] and lines[0]["rss"] > 0
    assert lines[1]["types"]["_Hoard"] == 3000
    if sys.platform.startswith("linux") and "in_use" in lines[0]:  # glibc: where the memory is, by allocator
        assert lines[1]["in_use"] - lines[0]["in_use"] >= 2_900_000  # the hoard's buffers (wherever they landed)
        assert all(lines[1][k] >= 0 for k in ("rss_heap", "rss_anon", "free_lt_4k", "free_4k_64k", "free_ge_64k"))
        assert lines[1]["rss_heap"] + lines[1]["rss_anon"] + lines[1]["rss_files"] <= lines[1]["rss"] * 1.01
        if not frames:  # (CPython's allocator reports nothing while tracemalloc wraps it)
            assert lines[1]["py_in_blocks"] <= lines[1]["py_total"]
    if frames:
        top = lines[1]["top"][0]
        assert top["size_diff"] >= 3_000_000 and "test_memtrace.py" in top["where"]
        assert any("test_memtrace.py" in f for f in lines[1]["per_file"])
    else:
        assert "top" not in lines[1]
    assert len(hoard) == 3000


@pytest.mark.parametrize(("var", "value", "message"), [
    ("NETHARNESS_MEMTRACE_EVERY", "soon", "NETHARNESS_MEMTRACE_EVERY='soon' is not a number"),
    ("NETHARNESS_MEMTRACE_FRAMES", "2.5", "NETHARNESS_MEMTRACE_FRAMES=2.5 is not a whole number"),
    ("NETHARNESS_MEMTRACE_EVERY", "0", "every > 0"),
])
def test_bad_settings_say_what_is_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str,
                                          message: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        memtrace.from_env(str(tmp_path / "t.jsonl"))


def test_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memtrace.ENV, raising=False)
    assert memtrace.from_env(None) is None


def test_serve_refuses_a_bad_setting_in_one_line_before_listening(tmp_path: Path) -> None:
    env = {**os.environ, memtrace.ENV: str(tmp_path / "t.jsonl"), "NETHARNESS_MEMTRACE_AFTER": "later"}
    p = subprocess.run([sys.executable, "-m", "harness", "serve", "--port", "0", "--quiet"], capture_output=True,
                       text=True, timeout=60, env=env, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == ["netharness serve: error: memory trace: NETHARNESS_MEMTRACE_AFTER='later' is "
                                     "not a number"]
