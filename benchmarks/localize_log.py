"""Benchmark: a synthetic robot log localised against an aerial place database.

The ground traversal of a generated world (the ``demo`` preset and seed of the database's
benchmark, so the aerial map is of the same world) is driven again as a log of single
scans: every ``--step`` metres along the traversal one revolution of its lidar, in the
sensor frame, as ``sensor_msgs/PointCloud2``, plus ``nav_msgs/Odometry`` with drift (the
true motion with a 2 % scale error and 0.1 +- 0.03 degrees of yaw drift per metre, from an
arbitrary origin). The log is written as a ROS 2 MCAP bag with rosbags' writer, then
``hotformerloc.pipelines.localize.localize_log`` makes its ground submaps and localises
them; each submap's map pose is compared with the true pose of its centre scan. Printed:
the share within 5 m / 5 degrees with and without the temporal filter and the false share
among the reported ones, for several confidence thresholds.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/localize_log.py \
        --db runs/demo/places.db --world forest --traversal 0 --length 300
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from hotformerloc.index import Localizer, SearchFilter
from hotformerloc.io.poses import rotation_to_quaternion
from hotformerloc.pipelines.localize import localize_log
from hotformerloc.synth.config import load_generator_config
from hotformerloc.synth.generate import _make_world, _route_frame, _sensor_poses
from hotformerloc.synth.sensors import ground_scan
from localize import score_rows  # benchmarks/localize.py (this folder)

PC2, ODOM = "sensor_msgs/msg/PointCloud2", "nav_msgs/msg/Odometry"


def _rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    t = np.eye(4)
    t[:2, :2] = [[c, -s], [s, c]]
    return t


def _stamp(ts, t: float):  # type: ignore[no-untyped-def]
    sec = math.floor(t)
    return ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec) * 1e9))


def write_log(args: argparse.Namespace, path: Path) -> dict[float, np.ndarray]:
    """The synthetic log at ``path``; returns {stamp: true sensor pose}."""
    cfg = load_generator_config("demo", seed=args.seed)
    wi = [w.name for w in cfg.worlds].index(args.world)
    world = _make_world(cfg, wi)
    trav = cfg.worlds[wi].traversals[args.traversal]
    route = np.asarray(world.route(), np.float64)
    cum, _ = _route_frame(route)
    phase = np.random.default_rng([cfg.seed, wi, args.traversal, 1]).uniform(0, 2 * np.pi, 3)
    s = np.arange(0.0, min(args.length, trav.coverage * cum[-1]), args.step)
    truth = _sensor_poses(world, trav, route, cum, s, phase)
    scene = world.scene(trav.epoch.epoch(trav.name))
    rng = np.random.default_rng(args.seed + 1)
    ts = get_typestore(Stores.ROS2_HUMBLE)
    g = ts.types
    fields = [g["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate("xyz")]  # fmt: skip
    start = _rz(37.0)
    start[:3, 3] = (500.0, -200.0, 3.0)
    odo = start
    stamps = {}
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cp = w.add_connection("/points", PC2, typestore=ts)
        co = w.add_connection("/odom", ODOM, typestore=ts)
        for k, (sk, pose) in enumerate(zip(s, truth, strict=True)):
            t = round(trav.start_time + sk / trav.platform.speed, 6)
            stamps[t] = pose
            if k:
                d = np.linalg.inv(truth[k - 1]) @ pose
                d[:3, 3] *= 1.02
                odo = odo @ d @ _rz(args.step * (0.1 + 0.03 * rng.standard_normal()))
            pts = ground_scan(scene, pose, trav.sensor, rng, max_range=40.0)[0]
            local = ((pts - pose[:3, 3]) @ pose[:3, :3]).astype("<f4")
            hdr = g["std_msgs/msg/Header"](stamp=_stamp(ts, t), frame_id="lidar")
            msg = g[PC2](header=hdr, height=1, width=len(local), fields=fields,
                         is_bigendian=False, point_step=12, row_step=12 * len(local),
                         data=np.frombuffer(local.tobytes(), np.uint8), is_dense=True)  # fmt: skip
            w.write(cp, round(t * 1e9), ts.serialize_cdr(msg, PC2))
            q = rotation_to_quaternion(odo[:3, :3])
            p = g["geometry_msgs/msg/Pose"](
                position=g["geometry_msgs/msg/Point"](x=odo[0, 3], y=odo[1, 3], z=odo[2, 3]),
                orientation=g["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
            )
            v = g["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
            om = g[ODOM](
                header=g["std_msgs/msg/Header"](stamp=_stamp(ts, t), frame_id="odom"),
                child_frame_id="lidar",
                pose=g["geometry_msgs/msg/PoseWithCovariance"](pose=p, covariance=np.zeros(36)),
                twist=g["geometry_msgs/msg/TwistWithCovariance"](
                    twist=g["geometry_msgs/msg/Twist"](linear=v, angular=v),
                    covariance=np.zeros(36),
                ),
            )
            w.write(co, round(t * 1e9), ts.serialize_cdr(om, ODOM))
    return stamps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="aerial place database")
    ap.add_argument("--world", default="forest")
    ap.add_argument("--traversal", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="the database benchmark's seed")
    ap.add_argument("--length", type=float, default=300.0, help="metres driven")
    ap.add_argument("--step", type=float, default=1.0, help="metres between scans")
    ap.add_argument("--top-k", type=int, default=25)
    args = ap.parse_args()
    loc = Localizer.open(args.db)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "drive"
        truth = write_log(args, log)
        run = localize_log(loc, log, "/points", "/odom", Path(tmp) / "submaps", args.top_k,
                           SearchFilter(source="aerial"))  # fmt: skip
    true = [truth[round(float(s.entry.timestamp or 0.0), 6)] for s in run]
    print(f"{args.world} traversal {args.traversal}: {len(truth)} scans -> {len(run)} submaps")
    print("| min confidence | single shot within 5 m / 5 deg | single shot false | "
          "filtered within | filtered false | matched / predicted |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in score_rows(run, true):
        print(f"| {row} |", flush=True)


if __name__ == "__main__":
    main()
