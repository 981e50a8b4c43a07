"""A memory diagnostic for ``netharness serve``: what grows inside the server, and where.

Off unless asked for: ``netharness serve --mem-trace FILE`` or, for a server someone else starts (a
Locust run's embedded server), the environment variable ``NETHARNESS_MEMTRACE=FILE``.  The same lines for
the Locust process itself: ``NETHARNESS_LOCUST_MEMTRACE=FILE`` (read by ``harness.runner.plugin``; the
embedded server does not read it, so the two can be traced in one run, each to its own file).  Then every
``NETHARNESS_MEMTRACE_EVERY`` seconds (default 15) one JSON line is appended to FILE: resident memory,
glibc's heap figures (``mallinfo2``: in use, free inside the heap, mmapped), Python's gc counts and object
count, and what grew since the baseline (the first line after ``NETHARNESS_MEMTRACE_AFTER`` seconds,
default 15: after the warm-up): object counts by type, and the allocation sites (``tracemalloc``,
``NETHARNESS_MEMTRACE_FRAMES`` frames deep, default 1; 0 leaves tracemalloc off) with the growth per source
file ("per component").  tracemalloc slows the server down (a flooded server falls behind its players):
figures taken with it on are for finding a leak, not for the benchmark.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ENV", "LOCUST_ENV", "MemTrace", "from_env", "heap_info", "rss_bytes"]

ENV = "NETHARNESS_MEMTRACE"
LOCUST_ENV = "NETHARNESS_LOCUST_MEMTRACE"
TOP = 25


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


def _mallinfo2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2: Any = None


def heap_info() -> dict[str, int]:
    """glibc's heap: bytes in use (``uordblks``), free inside the heap (``fordblks``), in mmapped blocks
    (``hblkhd``) and the heap's size (``arena``); empty where glibc's ``mallinfo2`` is missing."""
    global _MALLINFO2
    if _MALLINFO2 is None:
        _MALLINFO2 = _mallinfo2() or False
    if not _MALLINFO2:
        return {}
    m = _MALLINFO2()
    return {"heap": m.arena, "in_use": m.uordblks, "free": m.fordblks, "mmapped": m.hblkhd}


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), 0 if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


class MemTrace:
    """Appends one JSON line of memory figures to ``path`` every ``every`` seconds (``sample()`` is called
    from the server's loop; it returns at once between lines)."""

    def __init__(self, path: str, every: float = 15.0, after: float = 15.0, frames: int = 1,
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
        if every <= 0 or after < 0 or frames < 0:
            raise ValueError(f"memtrace: every > 0, after >= 0, frames >= 0; got {every}, {after}, {frames}")
        self.path = Path(path)
        self.extra = extra  # more figures for each line (the Locust process: its statistics' sizes)
        self.every = every
        self.after = after
        self.t0 = time.monotonic()
        self._next = self.t0 + min(every, after) if after else self.t0
        self._baseline: tracemalloc.Snapshot | None = None
        self._types0: dict[str, int] = {}
        self._based = False
        self._rss0 = 0
        if frames and not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        self.path.write_text("")

    def sample(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every
        objects = gc.get_objects()
        types: dict[str, int] = defaultdict(int)
        for o in objects:
            types[type(o).__qualname__] += 1
        del objects
        snap = None
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
        line: dict[str, Any] = {"t": round(now - self.t0, 1), "rss": rss_bytes(), **heap_info(),
                                "traced": tracemalloc.get_traced_memory()[0], "gc_counts": list(gc.get_count()),
                                "gc_objects": sum(types.values()),
                                "gc_collections": [s["collections"] for s in gc.get_stats()]}
        line.update(allocators())
        if self.extra is not None:
            line.update(self.extra())
        if not self._based:
            if now - self.t0 >= self.after:
                self._based, self._baseline, self._types0, self._rss0 = True, snap, types, line["rss"]
                line["baseline"] = True
        else:
            line["rss_growth"] = line["rss"] - self._rss0
            grown = {k: n - self._types0.get(k, 0) for k, n in types.items()}
            line["types"] = dict(sorted(((k, n) for k, n in grown.items() if n), key=lambda kv: -abs(kv[1]))[:TOP])
            if snap is not None and self._baseline is not None:
                diffs = snap.compare_to(self._baseline, "traceback")
                line["top"] = [{"where": _where(d.traceback), "size_diff": d.size_diff,
                                "count_diff": d.count_diff, "size": d.size} for d in diffs[:TOP]]
                per_file: dict[str, int] = defaultdict(int)
                for d in diffs:
                    per_file[d.traceback[0].filename] += d.size_diff
                line["per_file"] = dict(sorted(((_short(f), n) for f, n in per_file.items() if n),
                                               key=lambda kv: -abs(kv[1]))[:TOP])
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")


def allocators() -> dict[str, int]:
    """Where resident memory is, by allocator: the C heap's pages (``rss_heap``), other anonymous mappings
    (CPython's 1 MiB arenas, large blocks, stacks: ``rss_anon``); CPython's small-object allocator (arenas'
    bytes and the bytes in live blocks); glibc's free chunks in the main heap by size (``free_*``: holes
    under a page cannot go back to the OS, larger ones only on ``malloc_trim``)."""
    return {**_smaps(), **_pymalloc(), **_free_chunks()}


def _smaps() -> dict[str, int]:
    out = {"rss_heap": 0, "rss_anon": 0, "rss_files": 0}
    kind = "rss_anon"
    try:
        for line in Path("/proc/self/smaps").read_text().splitlines():
            head = line.split(maxsplit=6)
            if "-" in head[0] and not line.endswith(":") and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else ""
                kind = "rss_heap" if name == "[heap]" else "rss_files" if name.startswith("/") else "rss_anon"
            elif head[0] == "Rss:":
                out[kind] += int(head[1]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _pymalloc() -> dict[str, int]:
    """``sys._debugmallocstats()`` (it writes to the C stderr), parsed."""
    if not hasattr(sys, "_debugmallocstats"):
        return {}
    with tempfile.TemporaryFile("w+") as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()
    out = {}
    for key, label in (("py_arenas", "# arenas allocated current"), ("py_in_blocks", "# bytes in allocated blocks"),
                       ("py_total", "Total")):
        m = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
        if m:
            out[key] = int(m.group(1).replace(",", ""))
    return out


def _free_chunks() -> dict[str, int]:
    """glibc's ``malloc_info``: the main heap's free chunks, bytes by size class."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        fp = libc.fopen(f.name.encode(), b"w")
        if not fp:
            return {}
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        main = Path(f.name).read_text().split("</heap>")[0]
    out = {"free_lt_4k": 0, "free_4k_64k": 0, "free_ge_64k": 0}
    for m in re.finditer(r'<size from="(\d+)" to="\d+" total="(\d+)" count="\d+"/>', main):
        lo = int(m.group(1))
        out["free_lt_4k" if lo < 4096 else "free_4k_64k" if lo < 65536 else "free_ge_64k"] += int(m.group(2))
    return out


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    parts = Path(filename).parts
    return "/".join(parts[-3:])


def _where(tb: tracemalloc.Traceback) -> str:
    return " <- ".join(f"{_short(fr.filename)}:{fr.lineno}" for fr in tb)


def from_env(path: str | None = None, extra: Callable[[], dict[str, Any]] | None = None) -> MemTrace | None:
    """A ``MemTrace`` writing to ``path`` (else ``$NETHARNESS_MEMTRACE``), or None when neither is set.
    A bad ``NETHARNESS_MEMTRACE_*`` value raises ``ValueError`` naming it and what is allowed."""
    path = path or os.environ.get(ENV)
    if not path:
        return None
    opts: dict[str, float] = {}
    for key, default in (("every", "15"), ("after", "15"), ("frames", "1")):
        name = f"{ENV}_{key.upper()}"
        text = os.environ.get(name, default)
        try:
            opts[key] = float(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not a number") from None
    if opts["frames"] != int(opts["frames"]):
        raise ValueError(f"{ENV}_FRAMES={opts['frames']} is not a whole number")
    return MemTrace(path, every=opts["every"], after=opts["after"], frames=int(opts["frames"]), extra=extra)
