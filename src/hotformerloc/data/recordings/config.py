"""Knobs of :func:`~hotformerloc.data.recordings.prepare_recordings`, with strict parsing.

A :class:`RecordingConfig` is built from its defaults overlaid by a nested mapping
(:meth:`RecordingConfig.from_dict`) or by ``KEY=VALUE`` strings such as the CLI's ``--set``
items (:meth:`RecordingConfig.from_sets`). An unknown key or an impossible value raises
:class:`~hotformerloc.config.ConfigError` naming the key path (``ground.spacing``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_type_hints

from hotformerloc.config import ConfigError, from_dict, merge, parse_overrides, require, to_dict
from hotformerloc.submaps import SubmapConfig

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Sampling = Literal["distance", "time", "scan"]
D = TypeVar("D", bound="DataclassInstance")


@dataclass(frozen=True)
class TrajectoryConfig:
    """Submaps along a trajectory (spec 4.4 ground recipe).

    ``by`` picks the unit of ``spacing`` and ``window``: ``"distance"`` metres of travel
    (3D arc length of the sensor positions), ``"time"`` seconds, ``"scan"`` scans (both
    integers). Submap centres are chosen greedily: the first scan, then each first scan at
    least ``spacing`` after the previous centre. A submap accumulates, in the map frame,
    every scan within ``window / 2`` of its centre (``window = 0``: the centre scan only),
    then ``submap`` post-processes it in the frame of the centre scan's sensor pose.
    """

    by: Sampling = "distance"
    spacing: float = 3.0
    window: float = 3.0
    submap: SubmapConfig = field(default_factory=SubmapConfig)

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.spacing) and self.spacing > 0,
            f"spacing must be a finite number > 0, got {self.spacing}",
        )
        require(
            math.isfinite(self.window) and self.window >= 0,
            f"window must be a finite number >= 0, got {self.window}",
        )
        if self.by == "scan":
            require(
                float(self.spacing).is_integer() and float(self.window).is_integer(),
                f"with by=scan, spacing and window count scans: integers expected, got "
                f"{self.spacing} and {self.window}",
            )


def _kitti_trajectory() -> TrajectoryConfig:
    return TrajectoryConfig(
        by="scan",
        spacing=1,
        window=0,
        submap=SubmapConfig(radius=50.0, remove_ground=False, voxel=0.8, min_points=512),
    )


@dataclass(frozen=True)
class AerialConfig:
    """Aerial sequences: one map cloud (a ``map.*`` file, or all scans accumulated in the
    map frame) cut into submaps of radius ``submap.radius`` on a ``grid`` m grid aligned to
    multiples of ``grid`` and inset by the radius (spec 4.4: 10 m, 30 m).

    ``sequences``: names of the sequences to treat as aerial (besides those marked by a
    ``source.txt`` file or holding only a map cloud). ``map_voxel`` (m): when an
    accumulated scan map exceeds 4 M points it is compacted to this voxel size (0: never).
    """

    sequences: list[str] = field(default_factory=list)
    grid: float = 10.0
    map_voxel: float = 0.1
    submap: SubmapConfig = field(default_factory=SubmapConfig)

    def __post_init__(self) -> None:
        require(math.isfinite(self.grid) and self.grid > 0, f"grid must be > 0, got {self.grid}")
        require(self.map_voxel >= 0, f"map_voxel must be >= 0, got {self.map_voxel}")


@dataclass(frozen=True)
class PoseConfig:
    """Matching scans to ``poses.csv`` rows by timestamp (sequence layout).

    A scan takes the pose whose timestamp is within ``tolerance`` s of its own; otherwise
    the pose is interpolated (linear position, spherical rotation) between the two poses
    around it when they are at most ``max_gap`` s apart (0: exact matches only). A scan
    left without a pose is an error, or is skipped with a warning when ``skip_unposed``.
    """

    tolerance: float = 1e-3
    max_gap: float = 0.2
    skip_unposed: bool = False

    def __post_init__(self) -> None:
        require(self.tolerance >= 0, f"tolerance must be >= 0, got {self.tolerance}")
        require(self.max_gap >= 0, f"max_gap must be >= 0, got {self.max_gap}")


@dataclass(frozen=True)
class SplitConfig:
    """``regions``: a JSON file of test polygons in map xy (``{"regions": [[[x, y], ...],
    ...]}``), or None: every submap is ``test``. With regions, submaps inside a polygon are
    ``test``, those within ``buffer`` m of a ground test submap ``buffer``, the rest
    ``train`` (spec 4.4)."""

    regions: str | None = None
    buffer: float = 30.0

    def __post_init__(self) -> None:
        require(self.buffer >= 0, f"buffer must be >= 0, got {self.buffer}")


@dataclass(frozen=True)
class LoopClosureConfig:
    """The loop-closure protocol recorded in the manifest (used for KITTI): a query
    retrieves among the submaps of its sequence older than ``skip_time`` s; a match is true
    within ``threshold`` m (see :func:`hotformerloc.eval.evaluate_loop_closure`)."""

    threshold: float = 3.0
    skip_time: float = 30.0

    def __post_init__(self) -> None:
        require(self.threshold > 0, f"threshold must be > 0, got {self.threshold}")
        require(self.skip_time >= 0, f"skip_time must be >= 0, got {self.skip_time}")


@dataclass(frozen=True)
class RecordingConfig:
    """Every knob of the recordings converter, with defaults.

    * ``world``: the output world's name (None: the root folder's name for the sequence
      layout, ``kitti`` for KITTI);
    * ``sequences``: convert only these sequences (empty: every sequence found);
    * ``ground``: ground sequences of the sequence layout (default every 3 m of travel,
      3 m window, CS-Wild-Places post-processing: 30 m crop, ground removal, 0.8 m voxel);
    * ``kitti``: KITTI sequences (default: every scan is one place, no accumulation, 50 m
      crop, no ground removal, 0.8 m voxel);
    * ``drop_nonfinite``: drop NaN/inf points of a cloud instead of failing on it (organised
      clouds from some lidars mark missing returns with NaN);
    * ``aerial``, ``poses``, ``split``, ``loop_closure``: see their classes.
    """

    world: str | None = None
    sequences: list[str] = field(default_factory=list)
    drop_nonfinite: bool = False
    ground: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    kitti: TrajectoryConfig = field(default_factory=_kitti_trajectory)
    aerial: AerialConfig = field(default_factory=AerialConfig)
    poses: PoseConfig = field(default_factory=PoseConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    loop_closure: LoopClosureConfig = field(default_factory=LoopClosureConfig)

    def __post_init__(self) -> None:
        if self.world is not None:
            require(
                bool(self.world)
                and self.world.strip() == self.world
                and not any(c in self.world for c in "/\\")
                and self.world not in (".", ".."),
                f"world {self.world!r} is not a valid folder name",
            )
        require(
            len(set(self.sequences)) == len(self.sequences),
            f"sequences lists a name twice: {self.sequences}",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordingConfig:
        """The defaults overlaid by the nested mapping ``data`` (sections merge key by key,
        so ``{"kitti": {"window": 2}}`` keeps the other KITTI defaults).

        Raises:
            ConfigError: unknown key or invalid value (names the key path).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"recording config: expected a mapping, got {type(data).__name__}")
        return _build(cls, merge(to_dict(cls()), dict(data)), "")

    @classmethod
    def from_sets(cls, items: Iterable[str]) -> RecordingConfig:
        """The defaults overlaid by ``KEY=VALUE`` items (``ground.spacing=5``,
        ``aerial.sequences=[drone]``). Values are YAML scalars or lists; a key whose type is
        a string (or a list of strings) keeps its text (``sequences=[00, 05]`` stays
        ``["00", "05"]``).

        Raises:
            ConfigError: an item without ``=``, a value that is not valid YAML, an unknown
                key or an invalid value (names the item or key path).
        """
        return cls.from_dict(parse_sets(items))


def _build(cls: type[D], data: Any, where: str) -> D:
    """:func:`~hotformerloc.config.from_dict`, nested sections first, so that a value
    rejected by a section's own checks is reported with its key path."""
    if isinstance(data, dict):
        hints = get_type_hints(cls)
        data = dict(data)
        for f in fields(cls):
            tp = hints[f.name]
            if isinstance(tp, type) and is_dataclass(tp) and isinstance(data.get(f.name), dict):
                data[f.name] = _build(tp, data[f.name], f"{where}.{f.name}" if where else f.name)
    try:
        return from_dict(cls, data, where)
    except ConfigError as e:
        if where and f"{where}." not in str(e) and not str(e).startswith(f"{where}:"):
            raise ConfigError(f"{where}: {e}") from e
        raise


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """:func:`hotformerloc.config.parse_overrides` with :class:`RecordingConfig` as the
    schema (its text keys keep their text)."""
    return parse_overrides(items, RecordingConfig)
