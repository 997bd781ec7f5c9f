"""Configuration of the synthetic benchmark generator (every knob, with defaults).

A config is a YAML mapping converted strictly into :class:`GeneratorConfig` (unknown keys
and impossible values are errors naming the key). Presets live in ``presets/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hotformerloc.config import list_presets, load_config, require
from hotformerloc.submaps import SubmapConfig
from hotformerloc.synth.sensors import AerialLidarConfig, GroundLidarConfig
from hotformerloc.synth.worlds.base import Epoch


@dataclass(frozen=True)
class EpochConfig:
    """Per-visit conditions (see :class:`~hotformerloc.synth.worlds.base.Epoch`)."""

    foliage: float = 1.0
    leaf_off: bool = False
    growth_years: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.foliage >= 0, "foliage must be >= 0")
        require(self.growth_years >= 0, "growth_years must be >= 0")

    def epoch(self, name: str) -> Epoch:
        return Epoch(name, self.foliage, self.leaf_off, self.growth_years, self.seed)


@dataclass(frozen=True)
class PlatformConfig:
    """What carries the ground lidar.

    ``height``: sensor height above the terrain (m); ``sway``: amplitude (degrees) of the
    roll/pitch oscillation (a handheld rig's gait; small for a vehicle); ``speed`` (m/s)
    sets the timestamps.
    """

    kind: Literal["vehicle", "handheld"] = "handheld"
    height: float = 1.4
    sway: float = 3.0
    speed: float = 1.2

    def __post_init__(self) -> None:
        require(
            0.2 <= self.height <= 5.0, f"platform height must be in [0.2, 5] m, got {self.height}"
        )
        require(0 <= self.sway <= 20, "sway must be in [0, 20] degrees")
        require(self.speed > 0, "speed must be > 0")


@dataclass(frozen=True)
class TraversalConfig:
    """One ground traversal of a world's base route.

    The sensor follows the route (``reverse``: opposite heading) starting at
    ``start_fraction`` of its length, covering ``coverage`` of it, displaced sideways by
    ``lateral_offset + offset_amplitude * sin(2 pi s / offset_wavelength)`` metres (left
    positive), shrunk where that position is blocked by an obstacle.
    """

    name: str
    sensor: GroundLidarConfig = field(default_factory=GroundLidarConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)
    epoch: EpochConfig = field(default_factory=EpochConfig)
    reverse: bool = False
    lateral_offset: float = 0.0
    offset_amplitude: float = 0.0
    offset_wavelength: float = 150.0
    start_fraction: float = 0.0
    coverage: float = 1.0
    start_time: float = 1_600_000_000.0

    def __post_init__(self) -> None:
        require("ground" in self.name, f"traversal name {self.name!r} must contain 'ground'")
        require(
            "/" not in self.name and self.name.strip() == self.name and self.name != "",
            f"traversal name {self.name!r} is not a valid folder name",
        )
        require(
            abs(self.lateral_offset) + abs(self.offset_amplitude) <= 15.0,
            "lateral offsets beyond 15 m leave no revisit; keep |offset| + amplitude <= 15",
        )
        require(self.offset_wavelength > 0, "offset_wavelength must be > 0")
        require(0 <= self.start_fraction < 1, "start_fraction must be in [0, 1)")
        require(0 < self.coverage <= 1, "coverage must be in (0, 1]")


@dataclass(frozen=True)
class WorldConfig:
    """A world and its ground traversals. ``params`` are the world kind's own knobs."""

    name: str
    kind: Literal["forest", "urban", "real"]
    params: dict[str, Any] = field(default_factory=dict)
    traversals: list[TraversalConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, f"invalid world name {self.name!r}")
        require(
            len(self.traversals) >= 2, f"world {self.name!r} needs at least 2 traversals (revisits)"
        )
        names = [t.name for t in self.traversals]
        require(len(set(names)) == len(names), f"world {self.name!r}: duplicate traversal names")


@dataclass(frozen=True)
class GroundConfig:
    """Ground submaps: one every ``spacing`` m along a traversal, accumulating ``scans``
    revolutions spread over ``window`` m of travel around the centre (CS-Wild-Places: 2 s
    at walking speed)."""

    spacing: float = 6.0
    window: float = 3.0
    scans: int = 3
    submap: SubmapConfig = field(default_factory=SubmapConfig)

    def __post_init__(self) -> None:
        require(self.spacing > 0, "spacing must be > 0")
        require(self.window >= 0, "window must be >= 0")
        require(self.scans >= 1, "scans must be >= 1")


@dataclass(frozen=True)
class AerialConfig:
    """Aerial database: one survey per world, cropped on a ``grid`` m grid."""

    sensor: AerialLidarConfig = field(default_factory=AerialLidarConfig)
    epoch: EpochConfig = field(default_factory=lambda: EpochConfig(growth_years=2.0, seed=99))
    grid: float = 10.0
    submap: SubmapConfig = field(default_factory=SubmapConfig)
    start_time: float = 1_700_000_000.0

    def __post_init__(self) -> None:
        require(self.grid > 0, "grid must be > 0")


@dataclass(frozen=True)
class SplitConfig:
    """Test regions (squares of ``region_size`` m centred on the route, ``regions`` per
    world) and the training-exclusion ``buffer`` (m) around test queries."""

    regions: int = 2
    region_size: float = 60.0
    buffer: float = 30.0
    revisit_radius: float = 15.0

    def __post_init__(self) -> None:
        require(self.regions >= 1, "regions must be >= 1")
        require(self.region_size > 0, "region_size must be > 0")
        require(self.buffer >= 0, "buffer must be >= 0")


@dataclass(frozen=True)
class GeneratorConfig:
    """The whole benchmark: worlds, ground and aerial submaps, splits, seed."""

    worlds: list[WorldConfig]
    seed: int = 0
    ground: GroundConfig = field(default_factory=GroundConfig)
    aerial: AerialConfig = field(default_factory=AerialConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        require(len(self.worlds) >= 1, "at least one world is required")
        names = [w.name for w in self.worlds]
        require(len(set(names)) == len(names), "duplicate world names")


def generator_presets() -> list[str]:
    """Names of the packaged generator presets (``synth/presets/*.yaml``)."""
    return list_presets("hotformerloc.synth")


def load_generator_config(
    preset: str | None = None,
    config: str | Path | Sequence[str | Path] | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> GeneratorConfig:
    """The generator config (:func:`hotformerloc.config.load_config`): ``preset`` (a name or
    a YAML file), then ``config`` (one or several names or files, each merged over the
    previous), then ``overrides``, then the seed; the ``demo`` preset when neither is given
    (a lone file is merged over the built-in defaults)."""
    configs = [config] if isinstance(config, str | Path) else list(config or [])
    specs = [*([preset] if preset else []), *configs] or ["demo"]
    data = dict(overrides or {})
    if seed is not None:
        data["seed"] = seed
    return load_config(GeneratorConfig, specs, "hotformerloc.synth", data)
