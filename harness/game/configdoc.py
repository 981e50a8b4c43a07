"""Every key of the game config, documented: ``netharness serve --print-config`` and the shipped
``game.example.toml`` (a test keeps the two equal)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from dispatcher.envelope import QoS
from dispatcher.limits import Limits
from dispatcher.qos import SchedulerConfig
from harness.game.services import GameConfig

__all__ = ["DOCS", "EXAMPLE_PATH", "render_config"]

EXAMPLE_PATH = Path(__file__).with_name("game.example.toml")

DOCS: dict[str, str] = {
    "snapshot_bytes": "bytes of the blob in a stats snapshot (answers and pushes)",
    "snapshot_rate": "Event.Stats.Updated pushes per second per player (BACKGROUND floods)",
    "entity_rate": "Event.EntityInfo.Delta pushes per second per player (NORMAL, coalesced per entity)",
    "entities": "entities per zone",
    "zones": "a player is in zone player_id % zones; skill executions go to the caster's zone",
    "cooldown": "seconds before a player may use the same skill again",
    "starting_points": "attribute points a player may spend",
    "handler_cost_us": "CPU microseconds burned in every intent handler (a busy server)",
    "tick_hz": "how often per second the game pushes what is due",
    "log_every": "seconds between load lines on standard error (0: none)",
    "seed": "random seed of the game (entity deltas)",
}
SCHEDULER_DOCS: dict[str, str] = {
    "mode": '"priority" (strict priority, weighted fair inside) or "fifo" (pre-migration behaviour)',
    "tick_hz": "scheduler ticks per second",
    "budget": "bytes per second per connection (leave out: 50000; unlimited is not expressible in TOML)",
    "max_rate": "messages per second per connection (default: no cap)",
    "weights": "HIGH, NORMAL, BACKGROUND weights of the fair queueing",
    "chunk_size": "large messages are cut into segments of this many bytes",
    "critical_reserve": "fraction of a tick's budget only CRITICAL may spend",
    "queue_limits": "frames a tier's queue may hold (past it: dropped and counted)",
    "queue_bytes": "bytes a tier's queue may hold",
}
HEADER = """\
# The game config of `netharness serve --config FILE` (TOML; JSON with the same keys also works).
# Every key with its default (`netharness serve --print-config` prints this; with --scenario NAME or
# --config FILE it prints the values that server would run).  Every key is optional.
# Scheduler options: dispatcher/qos.py (SchedulerConfig); limits: README "Security model and limits".
"""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _key(k: Any) -> str:
    return QoS(k).name if isinstance(k, int) else str(k)


def _line(key: str, value: Any, doc: str, default: Any) -> str:
    note = doc if value == default else f"{doc} (default {_toml(default) if default is not None else 'none'})"
    if value is None:
        return f"# {key} =   # {note}"
    return f"{key} = {_toml(value)}   # {note}"


def render_config(config: GameConfig | None = None) -> str:
    """The config as a documented TOML file: every key, its value and, where it differs, its default."""
    cfg = config or GameConfig()
    base = GameConfig()
    out = [HEADER, "[game]"]
    for f in fields(GameConfig):
        if f.name in ("scheduler", "rate_limits", "limits"):
            continue
        out.append(_line(f.name, getattr(cfg, f.name), DOCS[f.name], getattr(base, f.name)))
    out += ["", "# Intents per second a player may send, per channel (more are dropped and counted),",
            "# e.g. Skills = 20.0; default: no limit.", "[game.rate_limits]"]
    out += [f"{k} = {_toml(float(v))}" for k, v in cfg.rate_limits.items()]
    out += ["", "# The server's outbound scheduler, per connection.", "[game.scheduler]"]
    sched, sched_default = SchedulerConfig.from_options(cfg.scheduler or None), SchedulerConfig()
    for f in fields(SchedulerConfig):
        value = getattr(sched, f.name)
        out.append(_line(f.name, value, SCHEDULER_DOCS[f.name], getattr(sched_default, f.name)))
    out += ["", "# Every bound the server enforces on a peer (README: \"Security model and limits\").", "[game.limits]"]
    limits, limits_default = Limits.from_options(cfg.limits or None), Limits()
    for f in fields(Limits):
        out.append(_line(f.name, getattr(limits, f.name), "", getattr(limits_default, f.name)).rstrip(" #"))
    return "\n".join(out) + "\n"
