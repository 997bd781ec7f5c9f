"""The in-memory point cloud exchanged by every reader, writer and model input pipeline."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, cast, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotformerloc.io.errors import PointCloudError

Source = Literal["ground", "aerial"]
SOURCES: tuple[str, ...] = get_args(Source)

#: Largest tolerated deviation of ``R.T @ R`` from the identity in a pose (element-wise).
ORTHONORMAL_TOL = 1e-3


def check_rigid(transform: ArrayLike, what: str) -> NDArray[np.float64]:
    """Return ``transform`` as a float64 (4, 4) copy after checking it is a rigid transform.

    The last row must be exactly ``[0, 0, 0, 1]`` and the 3x3 block a proper rotation
    (``|R.T R - I| <= 1e-3`` element-wise, ``det R > 0``). Raises ``ValueError`` naming ``what``.
    """
    t = np.array(transform, dtype=np.float64)
    if t.shape != (4, 4):
        raise ValueError(f"{what} must have shape (4, 4), got {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError(f"{what} has non-finite entries")
    if not np.array_equal(t[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{what} last row must be [0, 0, 0, 1], got {t[3].tolist()}")
    r = t[:3, :3]
    err = float(np.abs(r.T @ r - np.eye(3)).max())
    if err > ORTHONORMAL_TOL or np.linalg.det(r) <= 0:
        raise ValueError(
            f"{what} rotation block is not a proper rotation "
            f"(max |R^T R - I| = {err:.2e}, det = {np.linalg.det(r):.4f})"
        )
    return t


@dataclass(frozen=True, eq=False, repr=False)
class PointCloud:
    """One lidar scan or submap.

    Contract (enforced by ``__post_init__``, which converts dtypes and raises ``ValueError``):

    * ``xyz``: float32, shape (N, 3), C-contiguous; metres, in the sensor/submap frame.
      Non-finite values are allowed here (readers decide); see :meth:`validate_finite`.
    * ``intensity``: ``None`` or float32, shape (N,); units are those of the source format
      (KITTI reflectance in [0, 1], LAS 0..65535, ...).
    * ``pose``: ``None`` (unknown, treat as identity) or float64 (4, 4) homogeneous rigid
      transform mapping the cloud frame to the world frame: ``world = pose @ [x, y, z, 1]``.
      The last row is exactly ``[0, 0, 0, 1]``; the rotation is orthonormal within 1e-3.
    * ``source``: ``"ground"`` or ``"aerial"`` (the platform that captured the cloud).
    * ``timestamp``: ``None`` or seconds (float, finite), epoch defined by the dataset.
    * ``sequence``: ``None`` or the name of the sequence/run the cloud belongs to.

    The dataclass is frozen (fields cannot be reassigned); use :func:`dataclasses.replace`
    to derive a modified copy, which re-runs the validation.
    """

    xyz: NDArray[np.float32]
    intensity: NDArray[np.float32] | None = None
    pose: NDArray[np.float64] | None = None
    source: Source = "ground"
    timestamp: float | None = None
    sequence: str | None = None

    def __post_init__(self) -> None:
        xyz = np.ascontiguousarray(self.xyz, dtype=np.float32)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"xyz must have shape (N, 3), got {xyz.shape}")
        object.__setattr__(self, "xyz", xyz)
        if self.intensity is not None:
            intensity = np.ascontiguousarray(self.intensity, dtype=np.float32)
            if intensity.shape != (len(xyz),):
                raise ValueError(
                    f"intensity must have shape ({len(xyz)},) to match xyz, got {intensity.shape}"
                )
            object.__setattr__(self, "intensity", intensity)
        if self.pose is not None:
            object.__setattr__(self, "pose", check_rigid(self.pose, "pose"))
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.timestamp is not None:
            timestamp = float(self.timestamp)
            if not np.isfinite(timestamp):
                raise ValueError(f"timestamp must be finite, got {timestamp}")
            object.__setattr__(self, "timestamp", timestamp)
        if self.sequence is not None and not isinstance(self.sequence, str):
            raise ValueError(f"sequence must be a str or None, got {type(self.sequence).__name__}")

    def __len__(self) -> int:
        """Number of points N."""
        return len(self.xyz)

    def __repr__(self) -> str:
        pose = "None" if self.pose is None else f"t={self.pose[:3, 3].tolist()}"
        return (
            f"PointCloud(n={len(self)}, intensity={self.intensity is not None}, pose={pose}, "
            f"source={self.source!r}, timestamp={self.timestamp}, sequence={self.sequence!r})"
        )

    def subset(self, index: ArrayLike) -> PointCloud:
        """The points selected by ``index`` (boolean mask or integer indices), metadata kept."""
        idx = np.asarray(index)
        return replace(
            self,
            xyz=self.xyz[idx],
            intensity=None if self.intensity is None else self.intensity[idx],
        )

    def world_xyz(self) -> NDArray[np.float64]:
        """Coordinates in the world frame, float64 (N, 3) (``xyz`` itself when pose is None).

        float64 keeps georeferenced coordinates (UTM: ~1e6 m) exact to well below 1 mm,
        which float32 cannot (~0.5 m at 7e6 m).
        """
        xyz = self.xyz.astype(np.float64)
        if self.pose is None:
            return xyz
        return xyz @ self.pose[:3, :3].T + self.pose[:3, 3]

    def transformed(self, transform: ArrayLike) -> PointCloud:
        """Apply the rigid (4, 4) ``transform`` T to the points: ``xyz' = T @ xyz``.

        The pose becomes ``pose @ inv(T)``, so world coordinates are unchanged; a cloud
        without pose keeps ``pose=None``. Computed in float64, stored as float32.
        """
        t = check_rigid(transform, "transform")
        xyz = self.xyz.astype(np.float64) @ t[:3, :3].T + t[:3, 3]
        pose = None
        if self.pose is not None:
            inv = np.eye(4)
            inv[:3, :3] = t[:3, :3].T
            inv[:3, 3] = -t[:3, :3].T @ t[:3, 3]
            pose = self.pose @ inv
            pose[3] = (0.0, 0.0, 0.0, 1.0)
        return replace(self, xyz=xyz.astype(np.float32), pose=pose)

    def to_world(self) -> PointCloud:
        """The cloud expressed in the world frame (pose applied), with pose = identity.

        A cloud without pose is returned unchanged (already "world"). The result is float32:
        for large georeferenced coordinates prefer :meth:`world_xyz` (float64).
        """
        if self.pose is None:
            return self
        return replace(self, xyz=self.world_xyz().astype(np.float32), pose=np.eye(4))

    def validate_finite(self, name: str) -> None:
        """Raise :class:`PointCloudError` naming ``name`` if the cloud is empty or any
        coordinate is NaN/inf; return None otherwise."""
        if len(self) == 0:
            raise PointCloudError(name, "point cloud is empty (0 points)")
        # numpy stubs: all(axis=1) of an (N, 3) array is an (N,) array, not maybe a scalar
        finite = cast("NDArray[np.bool_]", np.isfinite(self.xyz).all(axis=1))
        if not finite.all():
            raise PointCloudError(name, nonfinite_message(finite))


def nonfinite_message(finite: NDArray[np.bool_]) -> str:
    """Describe the False entries of a per-point finiteness mask (for error messages)."""
    bad = ~finite
    return (
        f"{int(bad.sum())} of {len(finite)} points have non-finite coordinates "
        f"(first at index {int(np.argmax(bad))})"
    )
