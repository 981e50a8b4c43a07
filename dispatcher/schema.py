"""Payload validators (seed: "Envelope Validation").

A validator follows the seed's convention: it takes a payload and returns ``(ok, reason)``, where
``reason`` says what was wrong and where (``skillId: expected a string, got int``).  The combinators
below make game schemas declarative one-liners::

    skill_use = table(skillId=string(max_len=64), target=optional(integer(min=0)))
    schemas = SchemaRegistry({"Intent.Skills.Use": skill_use})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .errors import RegistryError
from .schematest import (
    AnyTest,
    ArrayTest,
    BoolTest,
    CheckTest,
    IntTest,
    MapTest,
    NilTest,
    NumberTest,
    OneOfTest,
    OptionalTest,
    StrTest,
    TableTest,
    Test,
)

__all__ = [
    "SchemaRegistry",
    "Validator",
    "any_value",
    "array",
    "boolean",
    "integer",
    "map_of",
    "none",
    "number",
    "one_of",
    "optional",
    "string",
    "table",
]

Result = tuple[bool, str | None]
Validator = Callable[[Any], Result]

_OK: Result = (True, None)


def _type_name(v: Any) -> str:
    return "nil" if v is None else type(v).__name__


def _fail(path: str, msg: str) -> Result:
    return False, f"{path}: {msg}" if path else msg


def _at(path: str, key: object) -> str:
    if isinstance(key, str):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


# Each combinator builds a ``_Node`` (validate with a path prefix) and wraps it as a plain Validator.

class _Node:
    __slots__ = ("check", "optional", "test")

    def __init__(self, check: Callable[[Any, str], Result], test: Test, optional: bool = False) -> None:
        self.check = check
        self.test = test  # the compiled verdict (``schematest``)
        self.optional = optional  # a table field that may be absent

    def __call__(self, value: Any) -> Result:
        return self.check(value, "")


def _node(v: Validator) -> Callable[[Any, str], Result]:
    if isinstance(v, _Node):
        return v.check

    def check(value: Any, path: str) -> Result:  # a foreign validator: prefix its reason with the path
        ok, reason = v(value)
        return _OK if ok else _fail(path, reason or "invalid")

    return check


def any_value() -> Validator:
    """Anything (including nil)."""
    return _Node(lambda value, path: _OK, AnyTest())


def none() -> Validator:
    """Exactly nil."""
    return _Node(lambda v, p: _OK if v is None else _fail(p, f"expected nil, got {_type_name(v)}"), NilTest())


def boolean() -> Validator:
    return _Node(lambda v, p: _OK if isinstance(v, bool) else _fail(p, f"expected a boolean, got {_type_name(v)}"),
                 BoolTest())


def integer(*, min: int | None = None, max: int | None = None) -> Validator:
    """An int (not a bool) in ``[min, max]``."""

    def check(v: Any, p: str) -> Result:
        if not isinstance(v, int) or isinstance(v, bool):
            return _fail(p, f"expected an integer, got {_type_name(v)}")
        if min is not None and v < min:
            return _fail(p, f"{v} is below the minimum {min}")
        if max is not None and v > max:
            return _fail(p, f"{v} is above the maximum {max}")
        return _OK

    return _Node(check, IntTest(min, max))


def number(*, min: float | None = None, max: float | None = None) -> Validator:
    """A finite int or float in ``[min, max]``."""

    def check(v: Any, p: str) -> Result:
        if not isinstance(v, int | float) or isinstance(v, bool):
            return _fail(p, f"expected a number, got {_type_name(v)}")
        if not math.isfinite(v):
            return _fail(p, f"expected a finite number, got {v}")
        if min is not None and v < min:
            return _fail(p, f"{v} is below the minimum {min}")
        if max is not None and v > max:
            return _fail(p, f"{v} is above the maximum {max}")
        return _OK

    return _Node(check, NumberTest(min, max))


def string(*, min_len: int = 0, max_len: int | None = None, choices: Iterable[str] | None = None) -> Validator:
    """A str whose length is in ``[min_len, max_len]``, optionally one of ``choices``."""
    allowed = frozenset(choices) if choices is not None else None

    def check(v: Any, p: str) -> Result:
        if not isinstance(v, str):
            return _fail(p, f"expected a string, got {_type_name(v)}")
        if len(v) < min_len:
            return _fail(p, f"string of length {len(v)} is shorter than {min_len}")
        if max_len is not None and len(v) > max_len:
            return _fail(p, f"string of length {len(v)} is longer than {max_len}")
        if allowed is not None and v not in allowed:
            return _fail(p, f"{v!r} is not one of {', '.join(sorted(allowed))}")
        return _OK

    return _Node(check, StrTest(min_len, max_len, allowed))


def optional(inner: Validator) -> Validator:
    """nil, or what ``inner`` accepts.  In a ``table``, an optional field may also be absent."""
    sub = _node(inner)
    return _Node(lambda v, p: _OK if v is None else sub(v, p), OptionalTest(compile_test(inner)), optional=True)


def one_of(*alternatives: Validator) -> Validator:
    """Accepted when any alternative accepts; the reason lists every alternative's complaint."""
    subs = [_node(a) for a in alternatives]

    def check(v: Any, p: str) -> Result:
        reasons = []
        for s in subs:
            ok, reason = s(v, p)
            if ok:
                return _OK
            reasons.append(reason or "invalid")
        return False, " / ".join(reasons)

    tests = [compile_test(a) for a in alternatives]
    rest = [t for t in tests if not isinstance(t, NilTest)]
    if len(rest) == 1 and len(tests) == 2:  # nil or one other: as ``optional``
        return _Node(check, OptionalTest(rest[0]))
    return _Node(check, OneOfTest(tests))


def array(item: Validator, *, min_len: int = 0, max_len: int | None = None) -> Validator:
    """A list whose every item passes ``item``."""
    sub = _node(item)

    def check(v: Any, p: str) -> Result:
        if not isinstance(v, list):
            return _fail(p, f"expected an array, got {_type_name(v)}")
        if len(v) < min_len:
            return _fail(p, f"array of {len(v)} items is shorter than {min_len}")
        if max_len is not None and len(v) > max_len:
            return _fail(p, f"array of {len(v)} items is longer than {max_len}")
        for i, x in enumerate(v):
            if sub(x, "") is not _OK:  # validators are pure: run again with the path, for the reason
                return False, sub(x, f"{p}[{i}]")[1]
        return _OK

    return _Node(check, ArrayTest(compile_test(item), min_len, max_len))


def map_of(key: Validator, value: Validator, *, max_len: int | None = None) -> Validator:
    """A dict whose keys pass ``key`` and values pass ``value``."""
    ksub, vsub = _node(key), _node(value)

    def check(v: Any, p: str) -> Result:
        if not isinstance(v, dict):
            return _fail(p, f"expected a table, got {_type_name(v)}")
        if max_len is not None and len(v) > max_len:
            return _fail(p, f"table of {len(v)} entries is larger than {max_len}")
        for k, x in v.items():
            if ksub(k, "") is not _OK:  # the path (with the key's repr) is made only for a reason
                return False, ksub(k, f"{p}<key {k!r}>" if p else f"<key {k!r}>")[1]
            if vsub(x, "") is not _OK:
                return False, vsub(x, _at(p, k))[1]
        return _OK

    return _Node(check, MapTest(compile_test(key), compile_test(value), max_len))


def table(*, extra: bool = False, **fields: Validator) -> Validator:
    """A dict with the given fields (``optional`` ones may be absent); unknown keys fail unless ``extra``."""
    subs = {k: _node(v) for k, v in fields.items()}
    required = tuple(k for k, v in fields.items() if not getattr(v, "optional", False))
    known = ", ".join(fields) or "none"

    def check(v: Any, p: str) -> Result:
        if not isinstance(v, dict):
            return _fail(p, f"expected a table, got {_type_name(v)}")
        for k in required:
            if k not in v:
                return _fail(_at(p, k), "missing required field")
        for k, x in v.items():
            s = subs.get(k)
            if s is None:
                if extra:
                    continue
                return _fail(p, f"unknown field {k!r}; allowed fields: {known}")
            if s(x, "") is not _OK:  # the path is made only for a reason
                return False, s(x, _at(p, k))[1]
        return _OK

    return _Node(check, TableTest([(k, compile_test(v), k in required) for k, v in fields.items()], extra))


def compile_test(validator: Validator) -> Test:
    """``validator``'s compiled verdict (``schematest``): True only for payloads it accepts.  It may be stricter
    than the validator (``type(v) is int`` where the validator accepts an int subclass), never looser: the
    registry runs it first and asks the validator only when it says no, for the verdict and the reason."""
    return validator.test if isinstance(validator, _Node) else CheckTest(_node(validator))


class SchemaRegistry(Mapping[str, Validator]):
    """Validators keyed by envelope name; responses are keyed ``"<name>#response"``."""

    RESPONSE_SUFFIX = "#response"

    def __init__(self, validators: Mapping[str, Validator] | None = None) -> None:
        self._v: dict[str, Validator] = {}
        #: Per key, the compiled test (``compile_test``): True means valid; False means ask ``validate``.
        self.tests: dict[str, Test] = {}
        for key, v in (validators or {}).items():
            self._set(key, v)

    def register(self, name: str, validator: Validator, *, response: bool = False) -> None:
        self._set(name + self.RESPONSE_SUFFIX if response else name, validator)

    def _set(self, key: str, validator: Validator) -> None:
        self._v[key] = validator
        self.tests[key] = compile_test(validator)

    def check_names(self, names: Iterable[str]) -> None:
        """Raise ``RegistryError`` for a schema whose name the channel registry does not declare."""
        declared = set(names)
        for key in self._v:
            base = key.removesuffix(self.RESPONSE_SUFFIX)
            if base not in declared:
                raise RegistryError(f"schema for {key!r}: no such name in the channel registry")

    def validate(self, name: str, payload: Any, *, response: bool = False) -> str | None:
        """The reason ``payload`` is invalid for ``name``, or None when valid or unchecked: the compiled test
        first, the validator only when it says no."""
        key = name + self.RESPONSE_SUFFIX if response else name
        test = self.tests.get(key)
        if test is None or test.ok(payload):
            return None
        return self.reason(key, payload)

    def reason(self, key: str, payload: Any) -> str | None:
        """The validator of ``key`` (a name, or ``name + RESPONSE_SUFFIX``) on ``payload``: the reason it is
        invalid, or None.  What ``validate`` asks once the compiled test has said no."""
        v = self._v[key]
        try:
            ok, reason = v(payload)
        except Exception as e:  # a validator that crashes rejects, with what it raised
            return f"validator raised {type(e).__name__}: {e}"
        return None if ok else (reason or "rejected by validator")

    def __getitem__(self, key: str) -> Validator:
        return self._v[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._v)

    def __len__(self) -> int:
        return len(self._v)
