"""Point-cloud I/O: the :class:`PointCloud` type, file readers/writers, atomic writes.

The tables of the benchmark layout have their own public modules: :mod:`hotformerloc.io.poses`
(pose geometry, quaternions scalar last, ``poses.csv``) and :mod:`hotformerloc.io.splits`
(``split.csv``, ``test_regions.json``, :func:`~hotformerloc.io.splits.assign_splits`); both
raise :class:`LayoutFileError`. Robot logs (ROS 1 / ROS 2 bags) are read by
:mod:`hotformerloc.io.bags` (:func:`bag_info`, :func:`read_scans`, :func:`read_poses`; errors
are :class:`BagError`).

See ``docs/io.md`` for the contract, the formats table and examples.
"""

from hotformerloc.io.atomic import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
)
from hotformerloc.io.bags import (
    BagError,
    BagInfo,
    PoseStream,
    Scan,
    bag_info,
    read_poses,
    read_scans,
)
from hotformerloc.io.errors import LayoutFileError, PointCloudError
from hotformerloc.io.formats import (
    FORMATS,
    LAS_SCALE,
    FormatSpec,
    read_pointcloud,
    write_pointcloud,
)
from hotformerloc.io.pointcloud import PointCloud, Source

__all__ = [
    "FORMATS",
    "LAS_SCALE",
    "BagError",
    "BagInfo",
    "FormatSpec",
    "LayoutFileError",
    "PointCloud",
    "PointCloudError",
    "PoseStream",
    "Scan",
    "Source",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "bag_info",
    "read_pointcloud",
    "read_poses",
    "read_scans",
    "sha256_file",
    "write_pointcloud",
]
