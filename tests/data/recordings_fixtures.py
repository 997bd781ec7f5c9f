"""Tiny recordings in the exact on-disk formats, made from a known static scene.

The scene (ground plane, poles, boxes) lives in the map frame; each scan keeps a random 70 %
of the scene points within ``max_range`` of a known sensor pose and stores them in the
sensor frame, so every converted submap can be checked against the truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hotformerloc.io import PointCloud, write_pointcloud
from hotformerloc.io.poses import rotation_to_quaternion


def rot_zyx(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll), radians."""
    cy, sy, cp, sp, cr, sr = (f(a) for a in (yaw, pitch, roll) for f in (np.cos, np.sin))
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def pose(x: float, y: float, z: float, yaw: float, pitch: float = 0.0, roll: float = 0.0):
    """(4, 4) rigid transform with translation (x, y, z) and rotation :func:`rot_zyx`."""
    p = np.eye(4)
    p[:3, :3] = rot_zyx(yaw, pitch, roll)
    p[:3, 3] = (x, y, z)
    return p


def make_scene(
    xlim: tuple[float, float], ylim: tuple[float, float], keep_clear, seed: int = 0
) -> np.ndarray:
    """(M, 3) float64 map points: a 0.5 m ground grid at z = 0 covering exactly ``xlim`` x
    ``ylim``, 14 poles (0.25 m radius, 2-7 m tall) and 6 boxes (1.5-4 m tall) placed where
    ``keep_clear(x, y)`` is False."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(
        np.arange(xlim[0], xlim[1] + 1e-9, 0.5), np.arange(ylim[0], ylim[1] + 1e-9, 0.5)
    )
    parts = [np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])]

    def spot(margin: float) -> tuple[float, float]:
        while True:
            x = rng.uniform(xlim[0] + margin, xlim[1] - margin)
            y = rng.uniform(ylim[0] + margin, ylim[1] - margin)
            if not keep_clear(x, y):
                return x, y

    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    for _ in range(14):
        x, y = spot(3)
        z = np.arange(0.25, rng.uniform(2, 7), 0.25)
        a, h = np.meshgrid(ang, z)
        parts.append(
            np.column_stack([x + 0.25 * np.cos(a.ravel()), y + 0.25 * np.sin(a.ravel()), h.ravel()])
        )
    for _ in range(6):
        x, y = spot(5)
        sx, sy, sz = rng.uniform(2, 5), rng.uniform(2, 5), rng.uniform(1.5, 4)
        u = np.arange(0, 1 + 1e-9, 0.3 / max(sx, sy, sz))
        a, b = np.meshgrid(u, u)
        a, b = a.ravel(), b.ravel()
        faces = [
            (a * sx, b * sy, np.full_like(a, sz)),  # roof
            (a * sx, np.zeros_like(a), b * sz),
            (a * sx, np.full_like(a, sy), b * sz),
            (np.zeros_like(a), a * sy, b * sz),
            (np.full_like(a, sx), a * sy, b * sz),
        ]
        for fx, fy, fz in faces:
            parts.append(np.column_stack([x - sx / 2 + fx, y - sy / 2 + fy, fz]))
    return np.concatenate(parts)


def scan_of(
    scene: np.ndarray, sensor: np.ndarray, rng: np.random.Generator, max_range: float = 25.0
) -> tuple[np.ndarray, np.ndarray]:
    """(sensor-frame float32 points, the same points in the map frame as float64): 70 % of
    the scene points within ``max_range`` (horizontal) of the sensor."""
    d = np.linalg.norm(scene[:, :2] - sensor[:2, 3], axis=1)
    keep = (d <= max_range) & (rng.random(len(scene)) < 0.7)
    world = scene[keep]
    local = ((world - sensor[:3, 3]) @ sensor[:3, :3]).astype(np.float32)
    return local, local.astype(np.float64) @ sensor[:3, :3].T + sensor[:3, 3]


def poses_csv(times: np.ndarray, poses: list[np.ndarray]) -> str:
    """``poses.csv`` text (timestamp,x,y,z,qx,qy,qz,qw) with full precision."""
    lines = ["timestamp,x,y,z,qx,qy,qz,qw,extra"]
    for t, p in zip(times, poses, strict=True):
        x, y, z, w = rotation_to_quaternion(p[:3, :3])
        vals = [t, *p[:3, 3], x, y, z, w]
        lines.append(",".join(repr(float(v)) for v in vals) + ",ignored")
    return "\n".join(lines) + "\n"


def write_sequence(
    folder: Path,
    scene: np.ndarray,
    poses: list[np.ndarray],
    times: np.ndarray,
    fmt: str,
    rng: np.random.Generator,
    index_names: bool = False,
) -> list[np.ndarray]:
    """Write a ``sequence``-layout sequence: scans ``<folder>/clouds/<name>.<fmt>`` (name =
    timestamp, or index with ``times.txt``) and ``poses.csv``. Returns each scan's points
    in the map frame."""
    clouds = folder / "clouds"
    clouds.mkdir(parents=True)
    world = []
    for i, (t, p) in enumerate(zip(times, poses, strict=True)):
        local, w = scan_of(scene, p, rng)
        name = f"{i:04d}" if index_names else f"{t:.6f}"
        write_pointcloud(clouds / f"{name}.{fmt}", PointCloud(local, intensity=np.ones(len(local))))
        world.append(w)
    if index_names:
        (folder / "times.txt").write_text("".join(f"{float(t)!r}\n" for t in times))
    (folder / "poses.csv").write_text(poses_csv(times, poses))
    return world


# KITTI: velodyne -> camera 0 (x right, y down, z forward), a realistic calibration.
KITTI_TR = np.eye(4)
KITTI_TR[:3, :3] = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]]) @ rot_zyx(0.004, -0.012, 0.007)
KITTI_TR[:3, 3] = (-0.004, -0.076, -0.272)
# a KITTI projection matrix (3x4, row-major); {tx} = -focal * baseline of the camera
_P = (
    "7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 {tx} "
    "0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 "
    "0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00"
)


def row12(m: np.ndarray) -> str:
    """The top 3x4 of ``m`` as 12 numbers (KITTI poses / calib format)."""
    return " ".join(f"{v:.12e}" for v in m[:3].ravel())


def calib_text(tr: np.ndarray = KITTI_TR) -> str:
    """A KITTI odometry ``calib.txt``: P0..P3 projection matrices and ``Tr``."""
    txs = ("0.000000000000e+00", "-3.861448000000e+02", "4.538225000000e+01", "-3.372877000000e+02")
    return "".join(f"P{k}: {_P.format(tx=tx)}\n" for k, tx in enumerate(txs)) + f"Tr: {row12(tr)}\n"


def write_kitti_sequence(
    root: Path,
    name: str,
    scene: np.ndarray,
    lidar_poses: list[np.ndarray],
    times: np.ndarray,
    rng: np.random.Generator,
    with_poses: bool = True,
) -> list[np.ndarray]:
    """Write ``sequences/<name>/{velodyne/NNNNNN.bin, calib.txt, times.txt}`` and
    ``poses/<name>.txt`` (camera-0 poses ``Tr @ L_i @ inv(Tr)`` for lidar poses ``L_i`` in
    the map frame). Returns each scan's points in the map frame."""
    seq = root / "sequences" / name
    (seq / "velodyne").mkdir(parents=True)
    (seq / "calib.txt").write_text(calib_text())
    (seq / "times.txt").write_text("".join(f"{t:.6e}\n" for t in times))
    world = []
    for i, p in enumerate(lidar_poses):
        local, w = scan_of(scene, p, rng)
        rec = np.column_stack([local, np.full(len(local), 0.5, np.float32)]).astype("<f4")
        rec.tofile(seq / "velodyne" / f"{i:06d}.bin")
        world.append(w)
    if with_poses:
        (root / "poses").mkdir(exist_ok=True)
        inv = np.linalg.inv(KITTI_TR)
        cams = [KITTI_TR @ p @ inv for p in lidar_poses]
        (root / "poses" / f"{name}.txt").write_text("".join(row12(c) + "\n" for c in cams))
    return world
