"""Compiled schema tests: a validator's yes/no verdict, as a tree of native nodes (``schema.compile_test``).

Each ``schema`` combinator also builds one of these nodes.  They only say whether a payload is valid (no
reasons, no paths), exactly: ``type(v) is int`` where the validator accepts an int subclass, so a test may be
stricter than its validator, never looser; the registry runs the test first and asks the validator only when
it says no.  Compiled (mypyc), a node's ``ok`` is a native call and its type checks, dict lookups and loops are
native: the benchmark request's response (a table of a 4-entry map and an int) costs 3.5k instructions, 8.4k
with the flat Python function per schema this replaced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["ABSENT", "AnyTest", "ArrayTest", "BoolTest", "CheckTest", "IntTest", "MapTest", "NilTest",
           "NumberTest", "OneOfTest", "OptionalTest", "StrTest", "TableTest", "Test"]

ABSENT = object()  # a table field that is not there


class Test:
    """Whether a value passes: ``ok(v)`` (``test(v)`` too)."""

    def ok(self, v: Any) -> bool:
        return True

    def __call__(self, v: Any) -> bool:
        return self.ok(v)


class AnyTest(Test):
    pass


class NilTest(Test):
    def ok(self, v: Any) -> bool:
        return v is None


class BoolTest(Test):
    def ok(self, v: Any) -> bool:
        return type(v) is bool


class IntTest(Test):
    def __init__(self, lo: int | None, hi: int | None) -> None:
        self.lo = lo
        self.hi = hi

    def ok(self, v: Any) -> bool:
        if type(v) is not int:
            return False
        x: int = v  # typed: native compares
        lo = self.lo
        hi = self.hi
        return (lo is None or x >= lo) and (hi is None or x <= hi)


class NumberTest(Test):
    """A finite float or an int (not a bool) in [lo, hi] (compared exactly, as Python compares int and float)."""

    def __init__(self, lo: float | None, hi: float | None) -> None:
        self.lo: Any = lo
        self.hi: Any = hi

    def ok(self, v: Any) -> bool:
        t = type(v)
        if t is float:
            f: float = v
            if not math.isfinite(f):
                return False
        elif t is not int:
            return False
        lo, hi = self.lo, self.hi
        return (lo is None or not v < lo) and (hi is None or not v > hi)


class StrTest(Test):
    def __init__(self, min_len: int, max_len: int | None, allowed: frozenset[str] | None) -> None:
        self.min_len = min_len
        self.max_len = max_len
        self.allowed = allowed

    def ok(self, v: Any) -> bool:
        if type(v) is not str:
            return False
        s: str = v
        allowed = self.allowed
        if allowed is not None and s not in allowed:
            return False
        n = len(s)
        return n >= self.min_len and (self.max_len is None or n <= self.max_len)


class OptionalTest(Test):
    def __init__(self, inner: Test) -> None:
        self.inner = inner

    def ok(self, v: Any) -> bool:
        return v is None or self.inner.ok(v)


class OneOfTest(Test):
    def __init__(self, alternatives: list[Test]) -> None:
        self.alternatives = alternatives

    def ok(self, v: Any) -> bool:
        return any(a.ok(v) for a in self.alternatives)


class ArrayTest(Test):
    def __init__(self, item: Test, min_len: int, max_len: int | None) -> None:
        self.item = item
        self.min_len = min_len
        self.max_len = max_len

    def ok(self, v: Any) -> bool:
        if type(v) is not list:
            return False
        a: list[Any] = v
        n = len(a)
        if n < self.min_len or (self.max_len is not None and n > self.max_len):
            return False
        item = self.item
        return all(item.ok(x) for x in a)


class MapTest(Test):
    def __init__(self, key: Test, value: Test, max_len: int | None) -> None:
        self.key = key
        self.value = value
        self.max_len = max_len

    def ok(self, v: Any) -> bool:
        if type(v) is not dict:
            return False
        m: dict[Any, Any] = v
        if self.max_len is not None and len(m) > self.max_len:
            return False
        key, value = self.key, self.value
        return all(key.ok(k) and value.ok(x) for k, x in m.items())


class TableTest(Test):
    """A dict with these fields (``required`` ones present), and no other key unless ``extra``."""

    def __init__(self, fields: list[tuple[str, Test, bool]], extra: bool) -> None:
        self.fields = fields
        self.extra = extra

    def ok(self, v: Any) -> bool:
        if type(v) is not dict:
            return False
        m: dict[Any, Any] = v
        n = 0
        for name, test, required in self.fields:
            x = m.get(name, ABSENT)
            if x is ABSENT:
                if required:
                    return False
                continue
            n += 1
            if not test.ok(x):
                return False
        return self.extra or len(m) == n


class CheckTest(Test):
    """A validator that is no combinator: its check, called (it says yes only for ``(True, None)``)."""

    def __init__(self, check: Callable[[Any, str], tuple[bool, str | None]]) -> None:
        self.check = check

    def ok(self, v: Any) -> bool:
        try:
            return self.check(v, "")[0] is True
        except Exception:  # a validator that crashes rejects
            return False
