"""Worlds of the synthetic benchmark: procedural forest and town, and real geometry.

:func:`build_world` makes one from a kind name and a plain (e.g. YAML-loaded) config dict,
converted strictly by :func:`hotformerloc.config.from_dict` (unknown keys and wrong types
raise :class:`~hotformerloc.config.ConfigError`, a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hotformerloc.config import ConfigError, from_dict
from hotformerloc.synth.worlds.base import Epoch, World
from hotformerloc.synth.worlds.forest import ForestConfig, ForestWorld
from hotformerloc.synth.worlds.real import RealConfig, RealWorld
from hotformerloc.synth.worlds.urban import UrbanConfig, UrbanWorld

__all__ = [
    "Epoch",
    "ForestConfig",
    "ForestWorld",
    "RealConfig",
    "RealWorld",
    "UrbanConfig",
    "UrbanWorld",
    "World",
    "build_world",
]

#: kind -> (config dataclass, world class called as ``(config, seed, name)``).
WORLD_KINDS: dict[str, tuple[type, Callable[[Any, int, str], World]]] = {
    "forest": (ForestConfig, ForestWorld),
    "urban": (UrbanConfig, UrbanWorld),
    "real": (RealConfig, RealWorld),
}


def build_world(
    kind: str, cfg_dict: dict[str, Any], seed: int, name: str, where: str = "params"
) -> World:
    """World of ``kind`` ("forest", "urban" or "real") from a plain config dict."""
    if kind not in WORLD_KINDS:
        raise ConfigError(f"unknown world kind {kind!r}; valid kinds: {', '.join(WORLD_KINDS)}")
    cfg_cls, world_cls = WORLD_KINDS[kind]
    return world_cls(from_dict(cfg_cls, cfg_dict or {}, where), seed, name)
