"""Validators for every intent and event of the game (seed: "Schema Registry"), and their responses."""

from __future__ import annotations

from dispatcher.schema import (
    SchemaRegistry,
    boolean,
    integer,
    map_of,
    none,
    number,
    one_of,
    optional,
    string,
    table,
)

ATTRIBUTES = ("str", "dex", "int", "vit")
SKILLS = ("TripleStrike", "Nova", "Quake", "Blink", "Heal")

_skill = string(choices=SKILLS)
_trace = optional(string(max_len=64))
_stats = map_of(string(max_len=32), number(), max_len=256)
_attributes = map_of(string(choices=ATTRIBUTES), integer(min=0))

SCHEMAS = SchemaRegistry({
    # Stats (BACKGROUND): snapshots on request and pushed.
    "Intent.Stats.RequestSnapshot": table(version=optional(integer(min=0)), traceId=_trace),
    "Event.Stats.Updated": table(version=integer(min=0), stats=_stats, blob=optional(string())),
    # Attributes (CRITICAL): spending points, with the resulting delta pushed back.
    "Intent.Attributes.RequestSnapshot": one_of(none(), table(traceId=_trace)),
    "Intent.Attributes.SpendPoints": table(attribute=string(choices=ATTRIBUTES), points=integer(min=1, max=1000),
                                           traceId=_trace),
    "Event.Attributes.Updated": _attributes,
    # Skills (CRITICAL, reliable): use, and the execution broadcast to nearby players.
    "Intent.Skills.Use": table(skillId=_skill, target=optional(integer(min=0)), traceId=_trace,
                               seq=optional(integer(min=0))),
    "Event.Skills.Execution": table(skillId=_skill, caster=integer(), target=optional(integer(min=0)),
                                    at=number(), seq=optional(integer(min=0))),
    # Cooldowns (HIGH) and entity info (NORMAL, coalesced per entity).
    "Event.Cooldowns.Updated": table(skillId=_skill, ready_in=number(min=0)),
    "Event.EntityInfo.Delta": table(id=integer(min=0), hp=integer(min=0), x=number(), y=number()),
})
SCHEMAS.register("Intent.Stats.RequestSnapshot",
                 table(version=integer(min=0), stats=_stats, blob=optional(string())), response=True)
SCHEMAS.register("Intent.Attributes.RequestSnapshot", table(attributes=_attributes, points=integer(min=0)),
                 response=True)
SCHEMAS.register("Intent.Attributes.SpendPoints", table(attributes=_attributes, points=integer(min=0)),
                 response=True)
SCHEMAS.register("Intent.Skills.Use", table(accepted=boolean(), ready_in=number(min=0)), response=True)
