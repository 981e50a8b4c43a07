from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import RegistryError, SchemaRegistry
from dispatcher import schema as s

SKILL = s.table(skillId=s.string(min_len=1, max_len=8), target=s.optional(s.integer(min=0)))

CASES: list[tuple[str, s.Validator, Any, str | None]] = [
    ("int ok", s.integer(min=0, max=10), 5, None),
    ("int is not bool", s.integer(), True, "expected an integer, got bool"),
    ("int below", s.integer(min=0), -1, "-1 is below the minimum 0"),
    ("int above", s.integer(max=3), 4, "4 is above the maximum 3"),
    ("number accepts int", s.number(min=0.5), 1, None),
    ("number not finite", s.number(), float("nan"), "expected a finite number, got nan"),
    ("number wrong type", s.number(), "1", "expected a number, got str"),
    ("string ok", s.string(max_len=3), "abc", None),
    ("string too long", s.string(max_len=3), "abcd", "string of length 4 is longer than 3"),
    ("string too short", s.string(min_len=2), "a", "string of length 1 is shorter than 2"),
    ("string choices", s.string(choices=["a", "b"]), "c", "'c' is not one of a, b"),
    ("boolean", s.boolean(), 0, "expected a boolean, got int"),
    ("none", s.none(), 0, "expected nil, got int"),
    ("any", s.any_value(), object(), None),
    ("optional nil", s.optional(s.integer()), None, None),
    ("optional wrong", s.optional(s.integer()), "x", "expected an integer, got str"),
    ("table ok", SKILL, {"skillId": "Nova"}, None),
    ("table optional present", SKILL, {"skillId": "Nova", "target": 3}, None),
    ("table missing", SKILL, {}, "skillId: missing required field"),
    ("table nested path", SKILL, {"skillId": "Nova", "target": -1}, "target: -1 is below the minimum 0"),
    ("table unknown field", SKILL, {"skillId": "N", "x": 1}, "unknown field 'x'; allowed fields: skillId, target"),
    ("table extra allowed", s.table(extra=True, a=s.integer()), {"a": 1, "b": 2}, None),
    ("table wrong type", SKILL, [1], "expected a table, got list"),
    ("array ok", s.array(s.integer(), max_len=3), [1, 2], None),
    ("array item path", s.array(s.integer()), [1, "x"], "[1]: expected an integer, got str"),
    ("array too long", s.array(s.any_value(), max_len=1), [1, 2], "array of 2 items is longer than 1"),
    ("map ok", s.map_of(s.string(), s.integer()), {"str": 1}, None),
    ("map value path", s.map_of(s.string(), s.integer()), {"str": "x"}, "str: expected an integer, got str"),
    ("map key", s.map_of(s.string(), s.integer()), {1: 1}, "<key 1>: expected a string, got int"),
    ("nested paths", s.table(a=s.table(b=s.array(s.table(c=s.integer())))), {"a": {"b": [{"c": "x"}]}},
     "a.b[0].c: expected an integer, got str"),
    ("one_of", s.one_of(s.integer(), s.string()), 1.5, "expected an integer, got float / expected a string, got float"),
    ("foreign validator", s.table(v=lambda x: (x == 1, "must be 1")), {"v": 2}, "v: must be 1"),
]


@pytest.mark.parametrize(("validator", "value", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validators(validator: s.Validator, value: Any, reason: str | None) -> None:
    ok, why = validator(value)
    assert ok is (reason is None)
    assert why == reason


def test_registry_validate_and_response_schemas() -> None:
    reg = SchemaRegistry({"Intent.Skills.Use": SKILL})
    reg.register("Intent.Skills.Use", s.table(ok=s.boolean()), response=True)
    assert reg.validate("Intent.Skills.Use", {"skillId": "A"}) is None
    assert reg.validate("Intent.Skills.Use", {"skillId": ""}) == "skillId: string of length 0 is shorter than 1"
    assert reg.validate("Intent.Skills.Use", {"ok": 1}, response=True) == "ok: expected a boolean, got int"
    assert reg.validate("Event.Unchecked.Thing", 123) is None


def test_crashing_validator_rejects_with_what_it_raised() -> None:
    reg = SchemaRegistry({"Intent.Skills.Use": lambda v: (v["missing"], None)})
    assert reg.validate("Intent.Skills.Use", {}) == "validator raised KeyError: 'missing'"


def test_schema_for_undeclared_name() -> None:
    with pytest.raises(RegistryError, match=r"schema for 'Intent.Skills.Nope': no such name"):
        SchemaRegistry({"Intent.Skills.Nope": SKILL}).check_names(["Intent.Skills.Use"])


# -- compiled tests (``schema.compile_test``): never looser than the validator, equal on plain values --------

@pytest.mark.parametrize(("validator", "value", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compiled_test_agrees_with_the_validator(validator: s.Validator, value: Any, reason: str | None) -> None:
    assert s.compile_test(validator)(value) is (reason is None)


class _Int(int):
    pass


def test_compiled_test_may_be_stricter_and_the_registry_then_asks_the_validator() -> None:
    v = s.table(n=s.integer(min=0))
    assert s.compile_test(v)({"n": _Int(3)}) is False  # an int subclass: the compiled test says "ask"
    assert v({"n": _Int(3)}) == (True, None)
    assert SchemaRegistry({"Intent.Skills.Use": v}).validate("Intent.Skills.Use", {"n": _Int(3)}) is None


def test_registered_later_is_compiled_too() -> None:
    reg = SchemaRegistry()
    reg.register("Intent.Skills.Use", SKILL)
    assert reg.tests["Intent.Skills.Use"]({"skillId": "A"}) is True
    assert reg.validate("Intent.Skills.Use", {"skillId": 1}) == "skillId: expected a string, got int"


_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True, allow_infinity=True) \
    | st.text(max_size=12) | st.sampled_from(["TripleStrike", "Nova", "str", "dex", "skillId", "target", "stats"])
_keys = st.sampled_from(["skillId", "target", "traceId", "seq", "version", "stats", "blob", "attribute", "points",
                         "caster", "at", "ready_in", "id", "hp", "x", "y", "accepted", "attributes", "str", "dex"])
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_keys | st.text(max_size=4), inner, max_size=6), max_leaves=12)
_payloads = st.dictionaries(_keys, _values, max_size=6) | _values


@given(payload=_payloads)
@settings(max_examples=400, deadline=None)
def test_compiled_tests_of_the_game_schemas_agree_with_their_validators(payload: Any) -> None:
    from harness.game.schemas import SCHEMAS

    for key in SCHEMAS:
        ok, _ = SCHEMAS[key](payload)
        assert SCHEMAS.tests[key](payload) is ok, key
