"""The Strongest Dungeon Crawler model: the system under test."""

from __future__ import annotations

from pathlib import Path

from dispatcher import ChannelRegistry

REGISTRY_PATH = Path(__file__).with_name("registry.toml")


def load_registry() -> ChannelRegistry:
    return ChannelRegistry.load(REGISTRY_PATH)
