"""Worlds of the synthetic benchmark: procedural forest and town, and real geometry.

:func:`build_world` makes one from a kind name and a plain (e.g. YAML-loaded) config dict.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

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
    "config_from_dict",
]

WORLD_KINDS: dict[str, tuple[type, type[World]]] = {
    "forest": (ForestConfig, ForestWorld),
    "urban": (UrbanConfig, UrbanWorld),
    "real": (RealConfig, RealWorld),
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (lists become tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ValueError:
                continue
        raise ValueError(f"config key {key!r}: {value!r} is not a valid {tp}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple and isinstance(value, list | tuple):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) == len(args):
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    raise ValueError(f"config key {key!r}: {value!r} is not a valid {tp}")


def config_from_dict(cls: type, cfg: dict[str, Any]) -> Any:
    """Instance of the config dataclass ``cls`` from a plain dict; omitted keys keep their
    defaults. Raises ``ValueError`` for an unknown key (listing the valid ones) or a value
    of the wrong type (naming the key)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in cfg:
        if key not in names:
            raise ValueError(f"unknown {cls.__name__} key {key!r}; valid keys: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], k) for k, v in cfg.items()})


def build_world(kind: str, cfg_dict: dict[str, Any], seed: int, name: str) -> World:
    """World of ``kind`` ("forest", "urban" or "real") from a plain config dict."""
    if kind not in WORLD_KINDS:
        raise ValueError(f"unknown world kind {kind!r}; valid kinds: {', '.join(WORLD_KINDS)}")
    cfg_cls, world_cls = WORLD_KINDS[kind]
    return world_cls(config_from_dict(cfg_cls, cfg_dict or {}), seed, name=name)
