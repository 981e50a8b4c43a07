"""Server-side services of Strongest Dungeon Crawler: the behaviour the harness loads.

* Stats: snapshots of ``snapshot_bytes`` on request, and pushed to every player ``snapshot_rate`` times a
  second (the snapshot floods).
* Attributes: points to spend, validated (an unknown attribute or too few points is refused), each spend
  answered and pushed back as an ``Event.Attributes.Updated`` delta.
* Skills: ``Intent.Skills.Use`` with per-skill cooldowns; a use that is ready broadcasts
  ``Event.Skills.Execution`` to the players of the caster's zone ("nearby") and tells the caster its
  cooldown; one that is not is refused with the time left.
* Entity info: ``Event.EntityInfo.Delta`` pushed to every player ``entity_rate`` times a second
  (coalesced per entity when the link is saturated).
* ``handler_cost_us`` burns that much CPU in every intent handler, to model a busy game server.

The services never read a clock or sleep: ``tick(now)`` pushes what is due; the server loop calls it.
"""

from __future__ import annotations

import json
import math
import random
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dispatcher import Envelope, Transport
from harness.game.schemas import ATTRIBUTES

__all__ = ["ConfigError", "Game", "GameConfig"]


class ConfigError(ValueError):
    """A game config that cannot be used: the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class GameConfig:
    snapshot_bytes: int = 2048  # size of the blob in a stats snapshot
    snapshot_rate: float = 0.0  # Event.Stats.Updated pushes per second per player
    entity_rate: float = 0.0  # Event.EntityInfo.Delta pushes per second per player
    entities: int = 32  # entities per zone
    zones: int = 8  # a player is in zone player_id % zones; skill executions go to the zone
    cooldown: float = 0.0  # seconds before a player may use the same skill again
    starting_points: int = 1_000_000  # attribute points a player may spend
    handler_cost_us: float = 0.0  # CPU burned per intent handled
    tick_hz: float = 20.0  # how often pushes are made
    log_every: float = 1.0  # seconds between load lines (0: quiet)
    seed: int = 1
    scheduler: dict[str, Any] = field(default_factory=dict)  # the server transport's outbound scheduler
    rate_limits: dict[str, float] = field(default_factory=dict)  # per channel intents/s a player may send
    limits: dict[str, Any] = field(default_factory=dict)  # the server's dispatcher.Limits (timeouts, caps, ...)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], where: str = "config") -> GameConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
        values: dict[str, Any] = {}
        defaults = cls()
        for key, value in table.items():
            kind = type(getattr(defaults, key))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ConfigError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
            if kind in (int, float) and value < 0:
                raise ConfigError(f"{where}: {key} must be >= 0, got {value}")
            values[key] = value
        cfg = cls(**values)
        if cfg.zones < 1 or cfg.entities < 1 or cfg.tick_hz <= 0:
            raise ConfigError(f"{where}: zones and entities must be >= 1 and tick_hz > 0")
        return cfg

    def info(self) -> dict[str, Any]:
        """What players are told about the game (the server's WELCOME ``server_info``): the scalar settings,
        the scheduler options and the rate limits, a few hundred bytes (``limits`` and ``log_every`` stay
        on the server)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)
                               if f.name not in ("scheduler", "rate_limits", "limits", "log_every")}
        out["scheduler"] = dict(self.scheduler)
        out["rate_limits"] = dict(self.rate_limits)
        return out

    @classmethod
    def load(cls, path: str | Path) -> GameConfig:
        return cls.from_dict(cls.read_table(path), str(path))

    @staticmethod
    def read_table(path: str | Path) -> dict[str, Any]:
        """The ``[game]`` table of a TOML file (or the whole file; JSON too), unchecked."""
        p = Path(path)
        try:
            text = p.read_text()
            table = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: cannot read the config file: {e}") from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}") from None
        game = table.get("game", table) if isinstance(table, dict) else table
        if not isinstance(game, dict):
            raise ConfigError(f"{p}: expected a table of game config keys, got {type(game).__name__}")
        return dict(game)


class Game:
    """The game's services, attached to a server transport."""

    def __init__(self, server: Transport, config: GameConfig | None = None) -> None:
        self.server = server
        self.config = config or GameConfig()
        self.rng = random.Random(self.config.seed)
        self.points: dict[int, int] = {}
        self.attributes: dict[int, dict[str, int]] = {}
        self.ready_at: dict[tuple[int, str], float] = {}
        self.version = 0
        self.handled = 0  # intents handled (the load log's figure)
        self.refused = 0  # skill uses refused for cooldown, spends refused for points
        self._next_push: dict[str, float] = {}
        self._blob = "x" * self.config.snapshot_bytes
        for name, fn in (
            ("Intent.Stats.RequestSnapshot", self.stats_snapshot),
            ("Intent.Attributes.RequestSnapshot", self.attributes_snapshot),
            ("Intent.Attributes.SpendPoints", self.spend_points),
            ("Intent.Skills.Use", self.use_skill),
        ):
            server.on(name, fn)

    # -- handlers ----------------------------------------------------------------------------------

    def _work(self) -> None:
        self.handled += 1
        cost = self.config.handler_cost_us
        if cost:
            end = time.perf_counter() + cost * 1e-6
            while time.perf_counter() < end:
                pass

    def _player(self, env: Envelope) -> int:
        pid = env.meta.player_id
        assert pid is not None, "the server stamps every intent with its player id"
        return pid

    def _stats(self, pid: int) -> dict[str, float]:
        a = self.attributes.get(pid) or dict.fromkeys(ATTRIBUTES, 10)
        return {"hp": 100.0 + 10 * a["vit"], "atk": 5.0 + 2 * a["str"], "crit": 0.01 * a["dex"],
                "mana": 50.0 + 5 * a["int"]}

    def stats_snapshot(self, env: Envelope) -> dict[str, Any]:
        self._work()
        self.version += 1
        return {"version": self.version, "stats": self._stats(self._player(env)), "blob": self._blob}

    def attributes_snapshot(self, env: Envelope) -> dict[str, Any]:
        self._work()
        pid = self._player(env)
        return {"attributes": self.attributes.setdefault(pid, dict.fromkeys(ATTRIBUTES, 10)),
                "points": self.points.setdefault(pid, self.config.starting_points)}

    def spend_points(self, env: Envelope) -> dict[str, Any]:
        self._work()
        pid = self._player(env)
        want, attr = env.payload["points"], env.payload["attribute"]
        have = self.points.setdefault(pid, self.config.starting_points)
        if want > have:
            self.refused += 1
            raise ValueError(f"not enough points: player {pid} has {have}, wants to spend {want}")
        attrs = self.attributes.setdefault(pid, dict.fromkeys(ATTRIBUTES, 10))
        attrs[attr] += want
        self.points[pid] = have - want
        self.server.emit("Event.Attributes.Updated", {attr: attrs[attr]}, to=pid)
        return {"attributes": attrs, "points": self.points[pid]}

    def use_skill(self, env: Envelope) -> dict[str, Any]:
        self._work()
        pid, skill = self._player(env), env.payload["skillId"]
        now = self.server.now()
        ready = self.ready_at.get((pid, skill), 0.0)
        if now < ready:
            self.refused += 1
            return {"accepted": False, "ready_in": ready - now}
        self.ready_at[(pid, skill)] = now + self.config.cooldown
        zone = pid % self.config.zones
        nearby = [p for p in self.server.players() if p % self.config.zones == zone]
        execution = {"skillId": skill, "caster": pid, "target": env.payload.get("target"), "at": now}
        if "seq" in env.payload:
            execution["seq"] = env.payload["seq"]
        self.server.emit("Event.Skills.Execution", execution, to=nearby, player_id=pid)
        if self.config.cooldown:
            self.server.emit("Event.Cooldowns.Updated", {"skillId": skill, "ready_in": self.config.cooldown}, to=pid)
        return {"accepted": True, "ready_in": 0.0}

    # -- pushes ------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Push what is due at ``now``: snapshots and entity deltas, at their configured rates."""
        cfg = self.config
        players = self.server.players()
        if not players:
            return
        if cfg.snapshot_rate and now >= self._next_push.get("snapshot", 0.0):
            self._next_push["snapshot"] = now + 1.0 / cfg.snapshot_rate
            self.version += 1
            for pid in players:
                self.server.emit("Event.Stats.Updated", {"version": self.version, "stats": self._stats(pid),
                                                         "blob": self._blob}, to=pid)
        if cfg.entity_rate:
            due = self._next_push.get("entity", now)
            n = 0
            while due <= now and n < 1000:
                due += 1.0 / cfg.entity_rate
                n += 1
            self._next_push["entity"] = due
            for _ in range(n):
                for pid in players:
                    zone = pid % cfg.zones
                    eid = zone * cfg.entities + self.rng.randrange(cfg.entities)
                    angle = self.rng.random() * 2 * math.pi
                    self.server.emit("Event.EntityInfo.Delta", {"id": eid, "hp": self.rng.randrange(1, 1000),
                                                                "x": math.cos(angle) * 50, "y": math.sin(angle) * 50},
                                     to=pid, coalesce_key=eid)
