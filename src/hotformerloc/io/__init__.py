"""Point-cloud I/O: the :class:`PointCloud` type, file readers/writers, atomic writes.

See ``docs/io.md`` for the contract, the formats table and examples.
"""

from hotformerloc.io.atomic import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
)
from hotformerloc.io.errors import PointCloudError
from hotformerloc.io.formats import FORMATS, FormatSpec, read_pointcloud, write_pointcloud
from hotformerloc.io.pointcloud import PointCloud, Source

__all__ = [
    "FORMATS",
    "FormatSpec",
    "PointCloud",
    "PointCloudError",
    "Source",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_pointcloud",
    "sha256_file",
    "write_pointcloud",
]
