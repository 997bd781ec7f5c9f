"""Octree of normalised point clouds: normalisation, construction, windows (spec 1.1-1.4).

See ``docs/octree.md`` for the contracts and the deviations from the reference.
"""

from .build import (
    MAX_DEPTH,
    UNIT_EDGES,
    build_octree,
    compute_neighbours,
    morton_decode,
    morton_encode,
)
from .normalise import (
    OctreeInputError,
    bbox_normalise,
    clamp_to_unit,
    filter_to_unit,
    to_cylindrical,
    unit_sphere_normalise,
)
from .octree import Octree
from .windows import Windows, node_corner_coords, relative_offsets, window_partition

__all__ = [
    "MAX_DEPTH",
    "UNIT_EDGES",
    "Octree",
    "OctreeInputError",
    "Windows",
    "bbox_normalise",
    "build_octree",
    "clamp_to_unit",
    "compute_neighbours",
    "filter_to_unit",
    "morton_decode",
    "morton_encode",
    "node_corner_coords",
    "relative_offsets",
    "to_cylindrical",
    "unit_sphere_normalise",
    "window_partition",
]
