"""Robot logs without ROS: lidar scans and poses from ROS 1 and ROS 2 bags (via ``rosbags``).

Accepted inputs (``path``):

* a ROS 1 ``.bag`` file (storage ``"ros1"``);
* a ROS 2 bag folder holding ``metadata.yaml`` and ``.db3`` or ``.mcap`` files
  (``"ros2-sqlite3"`` / ``"ros2-mcap"``);
* a single ROS 2 ``.mcap`` file (``"mcap"``) or ``.db3`` file (``"ros2-sqlite3"``).

Public API:

* :func:`bag_info` -> :class:`BagInfo`: storage kind, time span, topics with type and count;
* :func:`read_scans` -> iterator of :class:`Scan` (``sensor_msgs/msg/PointCloud2`` decoded
  with numpy by :func:`decode_pointcloud2`);
* :func:`read_poses` -> :class:`PoseStream` from an ``nav_msgs/msg/Odometry`` or
  ``geometry_msgs/msg/PoseStamped`` topic, or from ``tf:PARENT->CHILD`` (``/tf`` and
  ``/tf_static``); :meth:`PoseStream.at` interpolates at scan stamps.

Every problem (missing file, truncated or corrupt bag, unknown topic, wrong message type,
cloud without x/y/z, poses not covering the scans) raises :class:`BagError`, one line
``"<path>: <problem>"``. No torch here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotformerloc.errors import PathError
from hotformerloc.io.pointcloud import PointCloud, Source
from hotformerloc.io.poses import quaternion_to_rotation, rotation_to_quaternion

StorageKind = Literal["ros1", "ros2-sqlite3", "ros2-mcap", "mcap"]

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
#: Message types :func:`read_poses` accepts on a plain topic.
POSE_TYPES = (ODOMETRY, POSE_STAMPED)
#: ``read_poses`` source prefix for a transform looked up in ``/tf`` + ``/tf_static``.
TF_PREFIX = "tf:"

#: PointField datatype constants (sensor_msgs/msg/PointField) -> numpy type (no byte order).
POINTFIELD_DTYPES: dict[int, str] = {
    1: "i1",  # INT8
    2: "u1",  # UINT8
    3: "i2",  # INT16
    4: "u2",  # UINT16
    5: "i4",  # INT32
    6: "u4",  # UINT32
    7: "f4",  # FLOAT32
    8: "f8",  # FLOAT64
}
#: Seconds a query stamp may lie outside the pose stream's span (clamped to its ends).
POSE_TOLERANCE = 0.05
#: Topics listed in one error message before "and N more".
MAX_LISTED = 8

Array = NDArray[np.float64]


class BagError(PathError):
    """A bag is missing, unreadable or does not hold what was asked for.

    The message is ``"<path>: <problem>"``, e.g. ``"run.bag: unknown topic '/lidar'
    (available: /imu, /points)"``. Errors of ``rosbags`` and of the storage back ends are
    wrapped in this type and chained.

    Attributes:
        path: the bag path as given by the caller.
        problem: what is wrong, without the path.
    """


# --------------------------------------------------------------------------- opening


def _read_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "this bag cannot be read" (rosbags' and its back ends':
    apsw for sqlite3 storage, lz4/zstd decompression, struct unpacking of ROS 1 records)."""
    import apsw
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error
    from rosbags.serde import SerdeError
    from rosbags.typesys import TypesysError

    return (
        AnyReaderError,
        Reader1Error,
        Reader2Error,
        SerdeError,
        TypesysError,
        OSError,
        apsw.Error,
        struct.error,
        EOFError,
        UnicodeDecodeError,
        KeyError,
        IndexError,
        AssertionError,
        ValueError,
        RuntimeError,
    )


def storage_kind(path: str | os.PathLike[str]) -> StorageKind:
    """The storage of the bag at ``path`` (see the module docstring), from its name and, for
    a folder, the files it holds. Raises :class:`BagError` when missing or not a bag."""
    p = Path(path)
    if not p.exists():
        raise BagError(path, "no such file or folder")
    if p.is_dir():
        if not (p / "metadata.yaml").is_file():
            raise BagError(path, "folder is not a ROS 2 bag (no metadata.yaml)")
        if any(p.glob("*.mcap")):
            return "ros2-mcap"
        return "ros2-sqlite3"
    suffix = p.suffix.lower()
    if suffix == ".bag":
        return "ros1"
    if suffix == ".mcap":
        return "mcap"
    if suffix == ".db3":
        return "ros2-sqlite3"
    raise BagError(
        path,
        f"unrecognised bag suffix {p.suffix!r} (expected a ROS 1 .bag file, a ROS 2 bag "
        "folder with metadata.yaml, or a .mcap or .db3 file)",
    )


@contextmanager
def _open(path: str | os.PathLike[str]) -> Iterator[Any]:
    """An open ``rosbags.highlevel.AnyReader``; any read failure inside becomes BagError."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    storage_kind(path)
    errors = _read_errors()
    try:
        reader = AnyReader([Path(path)], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except BagError:
        raise
    except errors as e:
        raise BagError(path, f"cannot open bag (truncated or corrupt?): {_one_line(e)}") from e
    try:
        yield reader
    except BagError:
        raise
    except errors as e:
        raise BagError(path, f"cannot read bag (truncated or corrupt?): {_one_line(e)}") from e
    finally:
        with suppress(*errors):
            reader.close()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return (shown or "none") + (f" and {more} more" if more > 0 else "")


def _topic_connections(
    path: str | os.PathLike[str], reader: Any, topic: str, msgtypes: Sequence[str]
) -> list[Any]:
    """The connections of ``topic``; BagError if absent or of another message type."""
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        names = sorted({c.topic for c in reader.connections})
        raise BagError(path, f"unknown topic {topic!r} (available: {_listed(names)})")
    bad = sorted({c.msgtype for c in conns if c.msgtype not in msgtypes})
    if bad:
        raise BagError(
            path,
            f"topic {topic!r} has message type {', '.join(bad)}, expected {' or '.join(msgtypes)}",
        )
    return conns


def _messages(reader: Any, conns: list[Any]) -> Iterator[Any]:
    for conn, _, raw in reader.messages(connections=conns):
        yield reader.deserialize(raw, conn.msgtype)


def _stamp(header: Any) -> float:
    """Seconds of a ``std_msgs/Header`` stamp (``sec + nanosec * 1e-9``)."""
    return int(header.stamp.sec) + int(header.stamp.nanosec) * 1e-9


# --------------------------------------------------------------------------- bag_info


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: name, message type (``pkg/msg/Type``) and message count."""

    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagInfo:
    """Summary of a bag.

    ``start``/``end`` are the bag's first and last receive times (seconds since the epoch,
    as rosbags reports them: ``end`` at or just after the last message), ``duration = end -
    start``; all three are None for an empty bag.
    ``topics`` is sorted by name.
    """

    path: str
    storage: StorageKind
    start: float | None
    end: float | None
    duration: float | None
    message_count: int
    topics: tuple[TopicInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (topics as a list of ``{name, type, count}``)."""
        return {
            "path": self.path,
            "storage": self.storage,
            "start": self.start,
            "end": self.end,
            "duration": self.duration,
            "message_count": self.message_count,
            "topics": [{"name": t.name, "type": t.msgtype, "count": t.count} for t in self.topics],
        }


def bag_info(path: str | os.PathLike[str]) -> BagInfo:
    """Storage kind, time span and topics of the bag at ``path``. Raises :class:`BagError`."""
    kind = storage_kind(path)
    with _open(path) as reader:
        topics = tuple(
            TopicInfo(name, info.msgtype or "(mixed)", int(info.msgcount))
            for name, info in sorted(reader.topics.items())
        )
        count = int(reader.message_count)
        start = end = duration = None
        if count:
            start = reader.start_time * 1e-9
            end = reader.end_time * 1e-9
            duration = (reader.end_time - reader.start_time) * 1e-9
    return BagInfo(os.fspath(path), kind, start, end, duration, count, topics)


# --------------------------------------------------------------------------- PointCloud2


def decode_pointcloud2(
    msg: Any, where: str | os.PathLike[str] = "PointCloud2"
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """``(xyz, intensity)`` of a ``sensor_msgs/msg/PointCloud2`` message.

    Fields are located by name, ``offset``, ``datatype`` (1..8 = INT8, UINT8, INT16, UINT16,
    INT32, UINT32, FLOAT32, FLOAT64) and byte order (``is_bigendian``); points are
    ``point_step`` bytes apart and rows ``row_step`` bytes apart (``height`` rows of ``width``
    points; bytes past ``width * point_step`` in a row are padding). ``x``, ``y``, ``z`` are
    required; ``intensity`` is kept if present; other fields (``t``/``time``/``timestamp``,
    ``ring``, ...) are ignored (``PointCloud`` has no per-point time). Points with a NaN or
    infinite coordinate are dropped. Returns xyz float32 (N, 3) in the message's frame and
    intensity float32 (N,) or None. Raises :class:`BagError` naming ``where``.
    """
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in ("x", "y", "z") if n not in fields]
    if missing:
        have = ", ".join(f.name for f in msg.fields) or "none"
        raise BagError(
            where, f"PointCloud2 has no {'/'.join(missing)} field (fields: {have}); need x, y, z"
        )
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    order = ">" if msg.is_bigendian else "<"
    wanted = ["x", "y", "z"] + (["intensity"] if "intensity" in fields else [])
    names, formats, offsets = [], [], []
    for name in wanted:
        f = fields[name]
        code = POINTFIELD_DTYPES.get(int(f.datatype))
        if code is None:
            raise BagError(where, f"PointCloud2 field {name!r} has unknown datatype {f.datatype}")
        dt = np.dtype(order + code)
        if int(f.offset) + dt.itemsize > point_step:
            raise BagError(
                where,
                f"PointCloud2 field {name!r} (offset {f.offset}, {dt.itemsize} bytes) does not "
                f"fit in point_step {point_step}",
            )
        names.append(name)
        formats.append(dt)
        offsets.append(int(f.offset))
    n = height * width
    if n == 0:
        empty = np.zeros((0, 3), np.float32)
        return empty, (np.zeros(0, np.float32) if "intensity" in fields else None)
    if row_step < width * point_step:
        raise BagError(
            where, f"PointCloud2 row_step {row_step} < width {width} * point_step {point_step}"
        )
    need = (height - 1) * row_step + width * point_step
    if data.size < need:
        raise BagError(
            where,
            f"PointCloud2 data has {data.size} bytes, {height}x{width} points of "
            f"point_step {point_step} and row_step {row_step} need {need}",
        )
    dtype = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step}
    )
    grid = np.ndarray(
        shape=(height, width), dtype=dtype, buffer=data, offset=0, strides=(row_step, point_step)
    )
    points = grid.reshape(-1)
    xyz = np.stack([points[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)
    keep = np.isfinite(xyz).all(axis=1) & np.isfinite(xyz.astype(np.float32)).all(axis=1)
    intensity = None
    if "intensity" in fields:
        intensity = np.ascontiguousarray(points["intensity"][keep], dtype=np.float32)
    return np.ascontiguousarray(xyz[keep], dtype=np.float32), intensity


@dataclass(frozen=True, eq=False)
class Scan:
    """One lidar scan of a bag: ``stamp`` (seconds, from ``header.stamp``), ``frame_id``
    (the sensor frame of ``cloud.xyz``) and the decoded ``cloud`` (timestamp = stamp, no
    pose)."""

    stamp: float
    frame_id: str
    cloud: PointCloud


def read_scans(
    path: str | os.PathLike[str], topic: str, *, source: Source = "ground"
) -> Iterator[Scan]:
    """The ``sensor_msgs/msg/PointCloud2`` messages of ``topic``, in bag order, as
    :class:`Scan` (see :func:`decode_pointcloud2` for the decoding rules). ``source`` is the
    clouds' platform. Raises :class:`BagError` (also while iterating)."""
    with _open(path) as reader:
        conns = _topic_connections(path, reader, topic, (POINTCLOUD2,))
        for i, msg in enumerate(_messages(reader, conns)):
            where = f"{os.fspath(path)} {topic} message {i}"
            xyz, intensity = decode_pointcloud2(msg, where)
            stamp = _stamp(msg.header)
            cloud = PointCloud(xyz, intensity, source=source, timestamp=stamp)
            yield Scan(stamp, str(msg.header.frame_id), cloud)


# --------------------------------------------------------------------------- poses


def _pose_matrix(t: Any, q: Any) -> Array:
    """4x4 float64 from a translation/position (x, y, z) and a quaternion (x, y, z, w)."""
    m = np.eye(4)
    m[:3, :3] = quaternion_to_rotation([q.x, q.y, q.z, q.w])
    m[:3, 3] = (t.x, t.y, t.z)
    return m


def _invert(m: Array) -> Array:
    """Inverse of rigid transform(s) (..., 4, 4): ``[R.T, -R.T t]``."""
    inv = np.zeros_like(m)
    rt = np.swapaxes(m[..., :3, :3], -1, -2)
    inv[..., :3, :3] = rt
    inv[..., :3, 3] = -np.einsum("...ij,...j->...i", rt, m[..., :3, 3])
    inv[..., 3, 3] = 1.0
    return inv


def _slerp(q0: Array, q1: Array, a: Array) -> Array:
    """Spherical interpolation of unit quaternions (M, 4) at fractions ``a`` (M,)."""
    dot = np.sum(q0 * q1, axis=1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)
    dot = np.abs(dot).clip(max=1.0)
    theta = np.arccos(dot)
    sin = np.sin(theta)
    near = sin < 1e-6
    safe = np.where(near, 1.0, sin)
    w0 = np.where(near, 1 - a, np.sin((1 - a) * theta) / safe)
    w1 = np.where(near, a, np.sin(a * theta) / safe)
    q = w0[:, None] * q0 + w1[:, None] * q1
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class PoseStream:
    """Timestamped poses read from a bag.

    * ``stamps``: (N,) float64 seconds (``header.stamp``), strictly increasing, N >= 1;
    * ``poses``: (N, 4, 4) float64 rigid transforms mapping the child/body frame into the
      parent/world frame (``world = pose @ [x, y, z, 1]``);
    * ``path``/``source``: where the poses came from (for error messages);
    * ``static``: True for a chain of ``/tf_static`` transforms only (one pose, valid at any
      time);
    * ``chain``: for a tf chain, its edges ``(edge stream, inverted)`` multiplied left to
      right; :meth:`at` interpolates each edge and composes them (as tf2 does), so a lever
      arm after a rotating edge moves on an arc, not on a chord. Empty for a plain topic.
    """

    stamps: Array
    poses: Array
    path: str
    source: str
    static: bool = False
    chain: tuple[tuple[PoseStream, bool], ...] = ()

    def __len__(self) -> int:
        return len(self.stamps)

    def at(self, stamps: ArrayLike, tolerance: float = POSE_TOLERANCE) -> Array:
        """Poses (M, 4, 4) float64 at ``stamps`` (M,) seconds: translation interpolated
        linearly, rotation by quaternion slerp between the two neighbouring samples (per tf
        edge for a chain).

        A stamp up to ``tolerance`` seconds outside ``[stamps[0], stamps[-1]]`` gets the end
        pose; one further out raises :class:`BagError` (the pose stream does not cover it).
        """
        t = np.atleast_1d(np.asarray(stamps, np.float64))
        if not self.static:
            lo, hi = float(self.stamps[0]), float(self.stamps[-1])
            outside = (t < lo - tolerance) | (t > hi + tolerance) | ~np.isfinite(t)
            if outside.any():
                first = float(t[np.argmax(outside)])
                raise BagError(
                    self.path,
                    f"poses of {self.source} cover {lo:.3f}..{hi:.3f} s but "
                    f"{int(outside.sum())} of {len(t)} stamps lie outside (+-{tolerance} s), "
                    f"first {first:.3f} s",
                )
        return self._interpolate(t)

    def _interpolate(self, t: Array) -> Array:
        """Poses at ``t`` clamped to the span, without the coverage check."""
        if self.chain:
            out = np.repeat(np.eye(4)[None], len(t), axis=0)
            for edge, inverted in self.chain:
                m = edge._interpolate(t)
                out = out @ (_invert(m) if inverted else m)
            out[:, 3] = (0.0, 0.0, 0.0, 1.0)
            return out
        if self.static or len(self.stamps) == 1:
            return np.repeat(self.poses[-1:], len(t), axis=0)
        t = t.clip(self.stamps[0], self.stamps[-1])
        i = np.searchsorted(self.stamps, t, side="right") - 1
        i = i.clip(0, len(self.stamps) - 2)
        a = (t - self.stamps[i]) / (self.stamps[i + 1] - self.stamps[i])
        q0 = rotation_to_quaternion(self.poses[i, :3, :3])
        q1 = rotation_to_quaternion(self.poses[i + 1, :3, :3])
        out = np.repeat(np.eye(4)[None], len(t), axis=0)
        out[:, :3, :3] = quaternion_to_rotation(_slerp(q0, q1, a))
        p0, p1 = self.poses[i, :3, 3], self.poses[i + 1, :3, 3]
        out[:, :3, 3] = p0 + a[:, None] * (p1 - p0)
        return out


def _sorted_stream(
    path: str | os.PathLike[str], source: str, stamps: list[float], poses: list[Array]
) -> PoseStream:
    """Sort by stamp, keep the last of equal stamps; BagError when empty."""
    if not stamps:
        raise BagError(path, f"no poses in {source}")
    s = np.asarray(stamps, np.float64)
    order = np.argsort(s, kind="stable")
    s, p = s[order], np.stack(poses)[order]
    keep = np.append(s[1:] != s[:-1], True)
    return PoseStream(s[keep], p[keep], os.fspath(path), source)


def read_poses(path: str | os.PathLike[str], source: str) -> PoseStream:
    """Poses from a bag. ``source`` is either

    * a topic of ``nav_msgs/msg/Odometry`` (``pose.pose``) or ``geometry_msgs/msg/PoseStamped``
      (``pose``): the body frame in ``header.frame_id``; or
    * ``"tf:PARENT->CHILD"``: the transform from CHILD to PARENT built from ``/tf`` and
      ``/tf_static`` (``tf2_msgs/msg/TFMessage``), chaining the edges along the frame tree
      (through a common ancestor if needed). Dynamic edges are interpolated at the stamps of
      the first dynamic edge on the path; stamps outside another dynamic edge's span are
      dropped.

    Raises :class:`BagError` (missing topic, wrong type, no path between the frames, ...).
    """
    if source.startswith(TF_PREFIX):
        return _read_tf(path, source)
    with _open(path) as reader:
        conns = _topic_connections(path, reader, source, POSE_TYPES)
        stamps: list[float] = []
        poses: list[Array] = []
        for msg in _messages(reader, conns):
            pose = msg.pose.pose if msg.__msgtype__ == ODOMETRY else msg.pose
            stamps.append(_stamp(msg.header))
            poses.append(_pose_matrix(pose.position, pose.orientation))
    return _sorted_stream(path, source, stamps, poses)


@dataclass
class _Edge:
    """A tf edge parent -> child: samples (stamp, child-to-parent 4x4)."""

    parent: str
    static: bool
    stamps: list[float]
    poses: list[Array]


def _read_tf(path: str | os.PathLike[str], source: str) -> PoseStream:
    spec = source[len(TF_PREFIX) :]
    parent, sep, child = (s.strip() for s in spec.partition("->"))
    if not sep or not parent or not child:
        raise BagError(path, f"pose source {source!r} must be 'tf:PARENT->CHILD'")
    edges: dict[str, _Edge] = {}
    with _open(path) as reader:
        topics = [t for t in ("/tf", "/tf_static") if any(c.topic == t for c in reader.connections)]
        if not topics:
            names = sorted({c.topic for c in reader.connections})
            raise BagError(path, f"no /tf or /tf_static topic (available: {_listed(names)})")
        for topic in topics:
            static = topic == "/tf_static"
            conns = _topic_connections(path, reader, topic, (TF_MESSAGE,))
            for msg in _messages(reader, conns):
                for tr in msg.transforms:
                    p = str(tr.header.frame_id).lstrip("/")
                    c = str(tr.child_frame_id).lstrip("/")
                    edge = edges.setdefault(c, _Edge(p, static, [], []))
                    if edge.parent != p:
                        raise BagError(
                            path, f"tf frame {c!r} has two parents: {edge.parent!r} and {p!r}"
                        )
                    edge.static = edge.static and static
                    edge.stamps.append(_stamp(tr.header))
                    edge.poses.append(_pose_matrix(tr.transform.translation, tr.transform.rotation))
    parent, child = parent.lstrip("/"), child.lstrip("/")

    def ancestors(frame: str) -> list[str]:
        frames = [frame]
        while frames[-1] in edges and len(frames) <= len(edges) + 1:
            frames.append(edges[frames[-1]].parent)
        return frames

    up_child, up_parent = ancestors(child), ancestors(parent)
    common = next((f for f in up_child if f in up_parent), None)
    if common is None:
        known = sorted(set(edges) | {e.parent for e in edges.values()})
        raise BagError(path, f"no tf path from {parent!r} to {child!r} (frames: {_listed(known)})")
    # T_parent_child = inv(T_common_parent) @ T_common_child
    #                = inv(E(up[0])) @ ... @ inv(E(up[-1])) @ E(down[-1]) @ ... @ E(down[0])
    down = up_child[: up_child.index(common)]  # child, ..., just below common
    up = up_parent[: up_parent.index(common)]  # parent, ..., just below common
    streams = {f: _edge_stream(path, source, edges[f]) for f in down + up}
    chain = tuple((streams[f], True) for f in up) + tuple(
        (streams[f], False) for f in reversed(down)
    )
    dynamic = [e for e, _ in chain if not e.static]
    if dynamic:
        stamps = dynamic[0].stamps
        for e in dynamic[1:]:
            stamps = stamps[(stamps >= e.stamps[0]) & (stamps <= e.stamps[-1])]
        if not len(stamps):
            raise BagError(path, f"the dynamic tf edges of {source!r} do not overlap in time")
    else:
        stamps = np.array([max([float(e.stamps[-1]) for e, _ in chain] or [0.0])], np.float64)
    draft = PoseStream(stamps, np.zeros((0, 4, 4)), os.fspath(path), source, chain=chain)
    poses = draft._interpolate(stamps)
    return PoseStream(stamps, poses, os.fspath(path), source, static=not dynamic, chain=chain)


def _edge_stream(path: str | os.PathLike[str], source: str, edge: _Edge) -> PoseStream:
    stream = _sorted_stream(path, source, edge.stamps, edge.poses)
    if edge.static:  # the latest /tf_static message wins, valid at any time
        return PoseStream(stream.stamps[-1:], stream.poses[-1:], stream.path, source, static=True)
    return stream


__all__ = [
    "POINTFIELD_DTYPES",
    "POSE_TOLERANCE",
    "BagError",
    "BagInfo",
    "PoseStream",
    "Scan",
    "StorageKind",
    "TopicInfo",
    "bag_info",
    "decode_pointcloud2",
    "read_poses",
    "read_scans",
    "storage_kind",
]
