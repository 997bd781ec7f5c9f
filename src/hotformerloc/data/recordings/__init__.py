"""Users' own lidar recordings and KITTI odometry -> our benchmark layout.

``prepare_recordings(layout, root, out, config=...)`` builds ground submaps along each
trajectory (accumulate scans in the map frame, crop, ground removal, voxel; spec 4.4, the
same :mod:`hotformerloc.submaps` code as the synthetic generator), aerial grid submaps from
a map cloud, splits from optional test polygons, and writes the layout read by
:class:`hotformerloc.data.Benchmark` with a checksummed ``manifest.json``.
``check_recordings(layout, root)`` lists every problem of a folder without raising.
See ``docs/own-data.md`` (the ``sequence`` layout) and ``docs/datasets/kitti.md``.
"""

from hotformerloc.data.recordings.build import (
    SubmapRecord,
    aerial_grid,
    check_recordings,
    plan_centres,
    prepare_recordings,
    read_regions,
    trajectory_coordinate,
    window_bounds,
)
from hotformerloc.data.recordings.config import (
    AerialConfig,
    LoopClosureConfig,
    PoseConfig,
    RecordingConfig,
    SplitConfig,
    TrajectoryConfig,
    parse_sets,
)
from hotformerloc.data.recordings.layouts import (
    LAYOUTS,
    Finding,
    RecordedSequence,
    RecordingError,
    discover,
    kitti_lidar_poses,
    match_poses,
)
from hotformerloc.io.splits import assign_splits, points_in_polygon

__all__ = [
    "LAYOUTS",
    "AerialConfig",
    "Finding",
    "LoopClosureConfig",
    "PoseConfig",
    "RecordedSequence",
    "RecordingConfig",
    "RecordingError",
    "SplitConfig",
    "SubmapRecord",
    "TrajectoryConfig",
    "aerial_grid",
    "assign_splits",
    "check_recordings",
    "discover",
    "kitti_lidar_poses",
    "match_poses",
    "parse_sets",
    "plan_centres",
    "points_in_polygon",
    "prepare_recordings",
    "read_regions",
    "trajectory_coordinate",
    "window_bounds",
]
