"""Pose geometry and the ``poses.csv`` table of our benchmark layout (and of CS-Wild-Places).

One row per submap or scan: ``timestamp,x,y,z,qx,qy,qz,qw`` (seconds; translation in
metres; unit quaternion, scalar last), the pose mapping that frame into the map frame.

Quaternions. Every function here takes and returns quaternions in ONE component order,
**scalar last** ``(x, y, z, w)``: the order of ``poses.csv`` and of
``scipy.spatial.transform.Rotation.from_quat``. Formats with another order reorder at
their call site (the PCD ``VIEWPOINT`` is ``tx ty tz qw qx qy qz``).

* :func:`quaternion_to_rotation` / :func:`rotation_to_quaternion`: (..., 4) <-> (..., 3, 3);
* :func:`quaternion_yaw` / :func:`rotation_yaw`: the heading (yaw about z, radians);
* :func:`read_poses_csv` (validated, typed arrays), :func:`poses_csv_text`,
  :func:`write_poses_csv`.

No torch here: the benchmark readers stay light.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotformerloc.io.atomic import atomic_write_text
from hotformerloc.io.errors import LayoutFileError

#: Column order of a ``poses.csv``.
POSE_COLUMNS = ("timestamp", "x", "y", "z", "qx", "qy", "qz", "qw")
#: The name of the table in a sequence folder (``<world>/<sequence>/poses.csv``).
POSES_FILE = "poses.csv"
#: A quaternion with a smaller norm has no direction (:func:`read_poses_csv` rejects it).
ZERO_QUATERNION = 1e-9
#: Items listed in one error message before "and N more".
MAX_LISTED = 3

Array = NDArray[np.float64]


# --------------------------------------------------------------------------- geometry


def quaternion_to_rotation(q: ArrayLike) -> Array:
    """Rotation matrix (..., 3, 3) of the quaternion(s) ``q`` (..., 4) ``(x, y, z, w)``,
    normalised first (any sign gives the same rotation).

    Raises:
        ValueError: a quaternion is (nearly) zero or not finite.
    """
    quat = np.asarray(q, np.float64)
    if quat.shape[-1:] != (4,):
        raise ValueError(f"quaternion must have 4 components (x, y, z, w), got {quat.shape}")
    x, y, z, w = np.moveaxis(quat, -1, 0)
    # the arithmetic of scipy's Rotation.from_quat(q).as_matrix(), to the last bit
    norm = np.sqrt(x * x + y * y + z * z + w * w)
    bad = ~np.isfinite(norm) | (norm < 1e-12)
    if np.any(bad):
        first = quat[bad] if quat.ndim > 1 else quat
        raise ValueError(f"quaternion {first.reshape(-1, 4)[0].tolist()} has no direction")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    x2, y2, z2, w2 = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    rows = [
        [x2 - y2 - z2 + w2, 2 * (xy - zw), 2 * (xz + yw)],
        [2 * (xy + zw), -x2 + y2 - z2 + w2, 2 * (yz - xw)],
        [2 * (xz - yw), 2 * (yz + xw), -x2 - y2 + z2 + w2],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _rotation_to_quaternion(r: Array) -> Array:
    """Unit ``(x, y, z, w)``, ``w >= 0``, of one 3x3 rotation (Shepperd's method)."""
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [s / 4, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4]
    # computed as (w, x, y, z) and normalised in that order (the former PCD writer's
    # arithmetic, so VIEWPOINT headers stay byte-identical), returned scalar last
    wxyz = np.array(q, dtype=np.float64)
    wxyz /= np.linalg.norm(wxyz)
    if wxyz[0] < 0:
        wxyz = -wxyz
    return wxyz[[1, 2, 3, 0]]


def rotation_to_quaternion(r: ArrayLike) -> Array:
    """Unit quaternion(s) (..., 4) ``(x, y, z, w)`` with ``w >= 0`` of the rotation
    matrix(es) ``r`` (..., 3, 3) (a 4x4 pose's upper-left 3x3 may be passed as
    ``pose[:3, :3]``)."""
    rot = np.asarray(r, np.float64)
    if rot.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must be (..., 3, 3), got {rot.shape}")
    flat = rot.reshape(-1, 3, 3)
    out = np.array([_rotation_to_quaternion(m) for m in flat]).reshape(*rot.shape[:-2], 4)
    return out


def quaternion_yaw(q: ArrayLike) -> float | Array:
    """Heading (yaw about z, radians in [-pi, pi]) of unit quaternion(s) ``(x, y, z, w)``:
    the ``yaw`` of ``R = Rz(yaw) Ry(pitch) Rx(roll)``. A float for one quaternion (4,),
    else (...,) float64."""
    quat = np.asarray(q, np.float64)
    if quat.shape[-1:] != (4,):
        raise ValueError(f"quaternion must have 4 components (x, y, z, w), got {quat.shape}")

    def yaw(x: float, y: float, z: float, w: float) -> float:
        return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))

    if quat.ndim == 1:
        return yaw(*(float(v) for v in quat))
    flat = quat.reshape(-1, 4).tolist()
    return np.array([yaw(*v) for v in flat], np.float64).reshape(quat.shape[:-1])


def rotation_yaw(r: ArrayLike) -> float | Array:
    """Heading (yaw about z, radians) of rotation matrix(es) or poses ``r`` (..., 3, 3) or
    (..., 4, 4): ``atan2(R[1, 0], R[0, 0])``, the ``yaw`` of ``Rz(yaw) Ry(pitch) Rx(roll)``.
    A float for one matrix, else (...,) float64."""
    rot = np.asarray(r, np.float64)
    if rot.ndim < 2 or rot.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"rotation must be (..., 3, 3) or (..., 4, 4), got {rot.shape}")
    if rot.ndim == 2:
        return math.atan2(float(rot[1, 0]), float(rot[0, 0]))
    flat = rot.reshape(-1, *rot.shape[-2:])
    yaws = [math.atan2(float(m[1, 0]), float(m[0, 0])) for m in flat]
    return np.array(yaws, np.float64).reshape(rot.shape[:-2])


# --------------------------------------------------------------------------- poses.csv


@dataclass(frozen=True, eq=False)
class PoseTable:
    """The rows of a ``poses.csv``, sorted by timestamp (stable).

    * ``timestamps``: (N,) float64 seconds, strictly increasing;
    * ``poses``: (N, 4, 4) float64 rigid transforms (frame -> map), rotation from the
      normalised quaternion;
    * ``quaternions``: (N, 4) float64 ``(x, y, z, w)`` as written in the file (not
      normalised: their norms tell how far from unit they were).
    """

    timestamps: Array
    poses: Array
    quaternions: Array

    def __len__(self) -> int:
        return len(self.timestamps)


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def open_csv_table(path: Path, columns: Sequence[str]) -> csv.DictReader[str]:
    """A ``csv.DictReader`` over the table at ``path`` (header names stripped; data rows
    start at line 2), checked to have every one of ``columns`` (others are ignored).

    Raises:
        LayoutFileError: the file cannot be read, or column(s) are missing.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutFileError(path, f"cannot read ({e})") from e
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in columns if c not in header]
    if missing:
        raise LayoutFileError(
            path, f"missing column(s) {', '.join(missing)} (header: {','.join(header)!r})"
        )
    return reader


def read_poses_csv(path: str | os.PathLike[str], *, allow_empty: bool = False) -> PoseTable:
    """Read and validate a ``poses.csv``: a header naming at least :data:`POSE_COLUMNS`
    (surrounding spaces ignored, in any order, other columns ignored), then one row per pose.

    Args:
        path: the file.
        allow_empty: accept a file with a header and no rows (an empty table).

    Raises:
        LayoutFileError: one message naming the file and the problem: unreadable file;
            missing column(s); missing, unparsable or non-finite numbers (the first lines
            listed); no rows; duplicate timestamps; zero quaternions.
    """
    path = Path(path)
    reader = open_csv_table(path, POSE_COLUMNS)
    rows, bad = [], []
    for line, rec in enumerate(reader, start=2):
        try:
            values = [float(rec.get(c) or "nan") for c in POSE_COLUMNS]
        except ValueError:
            bad.append(f"line {line}")
            continue
        if not all(math.isfinite(v) for v in values):
            bad.append(f"line {line}")
            continue
        rows.append(values)
    if bad:
        raise LayoutFileError(path, f"missing, unparsable or non-finite numbers on {_listed(bad)}")
    if not rows and not allow_empty:
        raise LayoutFileError(path, "no pose rows")
    data = np.asarray(rows, np.float64).reshape(-1, len(POSE_COLUMNS))
    data = data[np.argsort(data[:, 0], kind="stable")]
    dup = np.flatnonzero(np.diff(data[:, 0]) == 0)
    if len(dup):
        stamps = [f"{float(data[i, 0])!r}" for i in dup]
        raise LayoutFileError(path, f"duplicate timestamp(s) {_listed(stamps)}")
    quats = data[:, 4:8]
    zero = np.flatnonzero(np.linalg.norm(quats, axis=1) < ZERO_QUATERNION)
    if len(zero):
        at = [f"timestamp {float(data[i, 0])!r}" for i in zero]
        raise LayoutFileError(path, f"zero quaternion (no rotation) at {_listed(at)}")
    poses = np.tile(np.eye(4), (len(data), 1, 1))
    poses[:, :3, :3] = quaternion_to_rotation(quats)
    poses[:, :3, 3] = data[:, 1:4]
    return PoseTable(timestamps=data[:, 0].copy(), poses=poses, quaternions=quats.copy())


def csv_text(header: Sequence[str], rows: Iterable[Iterable[object]]) -> str:
    """A CSV document (``\\n`` line ends): ``header``, then ``rows``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def poses_csv_text(
    rows: Iterable[tuple[float, Sequence[float], Sequence[float]]],
) -> str:
    """``poses.csv`` text from ``(timestamp, (x, y, z), (qx, qy, qz, qw))`` rows: timestamp
    and translation with 6 decimals, quaternion with 9."""
    return csv_text(
        POSE_COLUMNS,
        ([f"{ts:.6f}", *(f"{v:.6f}" for v in t), *(f"{v:.9f}" for v in q)] for ts, t, q in rows),
    )


def write_poses_csv(path: str | os.PathLike[str], timestamps: ArrayLike, poses: ArrayLike) -> None:
    """Write (atomically) the ``poses.csv`` of ``timestamps`` (N,) and rigid ``poses``
    (N, 4, 4) with :func:`poses_csv_text` (quaternions from :func:`rotation_to_quaternion`)."""
    ts = np.asarray(timestamps, np.float64).reshape(-1)
    mats = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    if len(ts) != len(mats):
        raise ValueError(f"{len(ts)} timestamps for {len(mats)} poses")
    quats = rotation_to_quaternion(mats[:, :3, :3]) if len(mats) else np.zeros((0, 4))
    atomic_write_text(
        path,
        poses_csv_text(
            (float(t), tuple(m[:3, 3]), tuple(q)) for t, m, q in zip(ts, mats, quats, strict=True)
        ),
    )
