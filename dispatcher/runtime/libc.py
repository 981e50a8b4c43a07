"""glibc's ``malloc_trim``: free pages inside the C heap go back to the OS only when it is called.

Used by the TCP server's memory-return step and by the harness's Locust process (``harness.runner.heap``).
Linux with glibc only; elsewhere ``malloc_trim()`` does nothing.  The library is looked up at the first call,
not at import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

__all__ = ["malloc_trim"]

_TRIM: Any = None


def _lookup() -> Any:
    global _TRIM
    if _TRIM is None:
        _TRIM = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
                fn.argtypes = [ctypes.c_size_t]
                _TRIM = fn
            except (OSError, AttributeError):
                _TRIM = False
    return _TRIM


def malloc_trim() -> bool:
    """Give the C heap's free pages back to the OS; False where there is no glibc (nothing was done)."""
    fn = _lookup()
    if not fn:
        return False
    fn(0)
    return True
