"""Generate a cross-source (ground/aerial) place-recognition benchmark on disk.

Layout (the CS-Wild-Places layout)::

    <out>/<world>/<sequence>/clouds/<timestamp>.pcd     PCD (binary_compressed, or binary
                                                        when LZF cannot shrink it), metric,
                                                        submap frame, VIEWPOINT = pose
    <out>/<world>/<sequence>/poses.csv                  timestamp,x,y,z,qx,qy,qz,qw
    <out>/<world>/test_regions.json                     test squares (polygons), buffer
    <out>/<world>/split.csv                             sequence,timestamp,x,y,source,split
    <out>/manifest.json                                 version, config, seed, SHA-256s

The tables' formats are :mod:`hotformerloc.io.poses` and :mod:`hotformerloc.io.splits`.
Ground sequences are named ``ground_*`` and the aerial one ``aerial``. ``split`` is
``test`` (inside a test region: ground queries / aerial database only), ``buffer``
(within ``split.buffer`` m of a test query) or ``train``.

Generation is deterministic (every submap has its own seeded generator, independent of
worker count and order), idempotent and resumable: files are written atomically and an
existing submap file is kept; ``manifest.json`` is written last.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
from scipy.spatial import cKDTree

from hotformerloc import __version__
from hotformerloc.config import ConfigError, to_dict
from hotformerloc.io import PointCloud, Source, write_pointcloud
from hotformerloc.io.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    sha256_file,
)
from hotformerloc.io.poses import POSES_FILE, write_poses_csv
from hotformerloc.io.splits import (
    REGIONS_FILE,
    SPLIT_FILE,
    assign_splits,
    write_regions_json,
    write_split_csv,
)
from hotformerloc.submaps import process_submap
from hotformerloc.synth.config import GeneratorConfig, TraversalConfig, WorldConfig
from hotformerloc.synth.sensors import aerial_survey, ground_scan
from hotformerloc.synth.worlds import build_world
from hotformerloc.synth.worlds.base import World

STATE_FILE = ".generate-state.json"
CACHE_DIR = ".cache"

Progress = Callable[[str, int, int], None]  # (stage, done, total)
T = TypeVar("T")


# --------------------------------------------------------------------------- geometry


def rot_zyx(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation Rz(yaw) @ Ry(pitch) @ Rx(roll), radians."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def _pose(rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    p = np.eye(4)
    p[:3, :3] = rot
    p[:3, 3] = t
    return p


# --------------------------------------------------------------------------- planning


@dataclass
class SubmapPlan:
    """Everything needed to produce one submap file (picklable, small)."""

    world: int
    sequence: str
    index: int
    timestamp: float
    pose: np.ndarray  # (4, 4) submap frame -> world
    scan_poses: list[np.ndarray] = field(default_factory=list)  # ground only
    traversal: int = -1  # index into the world's traversals; -1 = aerial

    @property
    def relpath(self) -> str:
        return f"{self.sequence}/clouds/{self.timestamp:.6f}.pcd"


def _route_frame(route: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    seg = np.diff(route, axis=0)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(seg, axis=1))])
    return cum, seg


def _route_at(route: np.ndarray, cum: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position (N, 2) and unit tangent (N, 2) at arc lengths ``s`` (wrapped)."""
    total = cum[-1]
    s = np.mod(s, total)
    i = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(route) - 2)
    seg = route[i + 1] - route[i]
    seglen = np.maximum(np.linalg.norm(seg, axis=1), 1e-9)
    a = (s - cum[i]) / seglen
    pos = route[i] + seg * a[:, None]
    return pos, seg / seglen[:, None]


def _sensor_poses(
    world: World,
    trav: TraversalConfig,
    route: np.ndarray,
    cum: np.ndarray,
    s: np.ndarray,
    phase: np.ndarray,
) -> list[np.ndarray]:
    """Sensor poses (4, 4) at traversal arc lengths ``s``."""
    total = cum[-1]
    direction = -1.0 if trav.reverse else 1.0
    s_route = trav.start_fraction * total + direction * s
    pos, tan = _route_at(route, cum, s_route)
    normal = np.stack([-tan[:, 1], tan[:, 0]], 1)
    offset = trav.lateral_offset + trav.offset_amplitude * np.sin(
        2 * np.pi * s / trav.offset_wavelength + phase[0]
    )
    xy = pos + normal * offset[:, None]
    for shrink in (0.75, 0.5, 0.25, 0.0):  # step towards the (free) route where blocked
        blocked = ~world.free_mask(xy, 0.8)
        if not blocked.any():
            break
        xy[blocked] = pos[blocked] + normal[blocked] * (offset[blocked] * shrink)[:, None]
    z = world.ground_height(xy[:, 0], xy[:, 1]) + trav.platform.height
    heading = np.arctan2(tan[:, 1], tan[:, 0]) + (np.pi if trav.reverse else 0.0)
    sway = np.deg2rad(trav.platform.sway)
    roll = sway * np.sin(2 * np.pi * s / 1.7 + phase[1])
    pitch = 0.6 * sway * np.sin(2 * np.pi * s / 2.9 + phase[2])
    return [
        _pose(rot_zyx(heading[k], pitch[k], roll[k]), np.array([xy[k, 0], xy[k, 1], z[k]]))
        for k in range(len(s))
    ]


def plan_ground(cfg: GeneratorConfig, wi: int, world: World) -> list[SubmapPlan]:
    """Submap plans of every ground traversal of world ``wi``."""
    wcfg = cfg.worlds[wi]
    route = np.asarray(world.route(), np.float64)
    cum, _ = _route_frame(route)
    g = cfg.ground
    plans: list[SubmapPlan] = []
    for ti, trav in enumerate(wcfg.traversals):
        rng = np.random.default_rng([cfg.seed, wi, ti, 1])
        phase = rng.uniform(0, 2 * np.pi, 3)
        length = trav.coverage * cum[-1]
        centres = np.arange(g.window / 2, length - g.window / 2 + 1e-9, g.spacing)
        offs = np.linspace(-g.window / 2, g.window / 2, g.scans) if g.scans > 1 else np.zeros(1)
        all_s = (centres[:, None] + offs[None, :]).ravel()
        poses = _sensor_poses(world, trav, route, cum, all_s, phase)
        centre_poses = _sensor_poses(world, trav, route, cum, centres, phase)
        for k, sc in enumerate(centres):
            plans.append(
                SubmapPlan(
                    world=wi,
                    sequence=trav.name,
                    index=k,
                    timestamp=round(trav.start_time + sc / trav.platform.speed, 6),
                    pose=centre_poses[k],
                    scan_poses=poses[k * g.scans : (k + 1) * g.scans],
                    traversal=ti,
                )
            )
    return plans


def plan_aerial(cfg: GeneratorConfig, wi: int, world: World) -> list[SubmapPlan]:
    """Aerial submap plans on the grid, inset by the crop radius from the world edge."""
    xmin, ymin, xmax, ymax = world.extent
    r, step = cfg.aerial.submap.radius, cfg.aerial.grid
    xs = np.arange(xmin + r, xmax - r + 1e-9, step)
    ys = np.arange(ymin + r, ymax - r + 1e-9, step)
    plans = []
    for k, (y, x) in enumerate((y, x) for y in ys for x in xs):
        z = float(world.ground_height(np.array([x]), np.array([y]))[0])
        plans.append(
            SubmapPlan(
                wi,
                "aerial",
                k,
                round(cfg.aerial.start_time + k, 6),
                _pose(np.eye(3), np.array([x, y, z])),
            )
        )
    return plans


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, object] = {}


def _world_seed(cfg: GeneratorConfig, wi: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, wi]).generate_state(1)[0])


def _make_world(cfg: GeneratorConfig, wi: int) -> World:
    w: WorldConfig = cfg.worlds[wi]
    return build_world(w.kind, dict(w.params), _world_seed(cfg, wi), w.name, f"worlds[{wi}].params")


def _init_worker(cfg: GeneratorConfig, out: str, discarded: frozenset[str]) -> None:
    _WORKER.clear()
    _WORKER["cfg"] = cfg
    _WORKER["out"] = out
    _WORKER["discarded"] = discarded


def _cached(key: tuple, make: Callable[[], T]) -> T:
    """Per-process cache (worlds, scenes, aerial clouds) of the worker."""
    cache = _WORKER.setdefault("cache", {})
    assert isinstance(cache, dict)
    if key not in cache:
        cache[key] = make()
    return cast(T, cache[key])


def _write_submap(
    out: Path, world_name: str, plan: SubmapPlan, local: np.ndarray, source: Source
) -> None:
    path = out / world_name / plan.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    cloud = PointCloud(
        local, pose=plan.pose, source=source, timestamp=plan.timestamp, sequence=plan.sequence
    )
    write_pointcloud(path, cloud, format="pcd", compression="binary_compressed")


def _task_context(plan: SubmapPlan) -> tuple[GeneratorConfig, Path, WorldConfig, int | None]:
    """(config, output folder, world config, status if already done: -1 written, 0 known
    to be discarded, else None)."""
    cfg = _WORKER["cfg"]
    assert isinstance(cfg, GeneratorConfig)
    out = Path(str(_WORKER["out"]))
    wcfg = cfg.worlds[plan.world]
    rel = f"{wcfg.name}/{plan.relpath}"
    if (out / rel).exists():
        return cfg, out, wcfg, -1
    known = _WORKER["discarded"]
    assert isinstance(known, frozenset)
    return cfg, out, wcfg, 0 if rel in known else None


def _ground_task(plan: SubmapPlan) -> tuple[str, int, int]:
    """Simulate, process and write one ground submap; returns (sequence, index, points)."""
    cfg, out, wcfg, done = _task_context(plan)
    if done is not None:
        return plan.sequence, plan.index, done
    world = _cached(("world", plan.world), lambda: _make_world(cfg, plan.world))
    trav = wcfg.traversals[plan.traversal]
    scene = _cached(
        ("scene", plan.world, plan.traversal), lambda: world.scene(trav.epoch.epoch(trav.name))
    )
    rng = np.random.default_rng([cfg.seed, plan.world, plan.traversal, plan.index, 2])
    sub = cfg.ground.submap
    reach = sub.radius + cfg.ground.window / 2 + 1.0
    pts = [ground_scan(scene, sp, trav.sensor, rng, max_range=reach)[0] for sp in plan.scan_poses]
    local = process_submap(np.concatenate(pts), plan.pose, sub)
    if local is None:
        return plan.sequence, plan.index, 0
    _write_submap(out, wcfg.name, plan, local, "ground")
    return plan.sequence, plan.index, len(local)


def _aerial_task(plan: SubmapPlan) -> tuple[str, int, int]:
    cfg, out, wcfg, done = _task_context(plan)
    if done is not None:
        return plan.sequence, plan.index, done

    def load() -> tuple[np.ndarray, cKDTree]:
        with np.load(out / CACHE_DIR / f"{wcfg.name}-aerial.npz", allow_pickle=False) as z:
            pts = z["xyz"]
        return pts, cKDTree(pts[:, :2])

    pts, tree = _cached(("aerial", plan.world), load)
    idx = np.sort(np.asarray(tree.query_ball_point(plan.pose[:2, 3], cfg.aerial.submap.radius)))
    local = process_submap(pts[idx.astype(np.int64)], plan.pose, cfg.aerial.submap)
    if local is None:
        return plan.sequence, plan.index, 0
    _write_submap(out, wcfg.name, plan, local, "aerial")
    return plan.sequence, plan.index, len(local)


def _run(
    tasks: list,
    fn: Callable,
    cfg: GeneratorConfig,
    out: Path,
    workers: int,
    stage: str,
    progress: Progress | None,
    discarded: frozenset[str],
) -> list:
    results = []
    total = len(tasks)
    if workers <= 1:
        _init_worker(cfg, str(out), discarded)
        for i, t in enumerate(tasks):
            results.append(fn(t))
            if progress:
                progress(stage, i + 1, total)
        _WORKER.clear()
        return results
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg, str(out), discarded)
    ) as ex:
        for i, r in enumerate(ex.map(fn, tasks, chunksize=4)):
            results.append(r)
            if progress:
                progress(stage, i + 1, total)
    return results


# --------------------------------------------------------------------------- outputs


def make_test_regions(cfg: GeneratorConfig, world: World) -> list[list[list[float]]]:
    """Axis-aligned squares (closed polygons, xy) centred on evenly spaced route points."""
    route = np.asarray(world.route(), np.float64)
    cum, _ = _route_frame(route)
    n = cfg.split.regions
    centres, _ = _route_at(route, cum, (np.arange(n) + 0.5) / n * cum[-1])
    h = cfg.split.region_size / 2
    return [
        [[x - h, y - h], [x + h, y - h], [x + h, y + h], [x - h, y + h], [x - h, y - h]]
        for x, y in centres
    ]


def overlap_report(
    folder: Path,
    plans: list[SubmapPlan],
    split: np.ndarray,
    max_queries: int = 60,
    tolerance: float = 1.0,
    far: float = 100.0,
) -> dict[str, float | int | None]:
    """Difficulty proxy: how much geometry a query shares with its revisits.

    For up to ``max_queries`` ground test queries (evenly spaced), the fraction of query
    points with a point of the nearest other-traversal ground submap (``ground``) / the
    nearest aerial submap (``aerial``) within ``tolerance`` m, in the world frame (true
    poses). ``*_far``: the same for the nearest submap at least ``far`` m away, overlaid in
    its own frame (what a false match shares). Medians are reported.
    """
    from hotformerloc.io import read_pointcloud

    xy = np.array([p.pose[:2, 3] for p in plans]).reshape(-1, 2)
    ground = np.array([p.traversal >= 0 for p in plans], bool)
    seqs = np.array([p.sequence for p in plans])
    queries = np.flatnonzero(ground & (split == "test"))
    if not len(queries):
        return {"queries": 0}
    queries = queries[np.linspace(0, len(queries) - 1, min(max_queries, len(queries))).astype(int)]

    def world_pts(i: int, at: np.ndarray | None = None) -> np.ndarray:
        c = read_pointcloud(folder / plans[i].relpath)
        pose = plans[i].pose if at is None else at
        return (c.xyz.astype(np.float64) @ pose[:3, :3].T) + pose[:3, 3]

    def frac(q: np.ndarray, db: np.ndarray) -> float:
        d, _ = cKDTree(db).query(q, k=1, distance_upper_bound=tolerance)
        return float(np.mean(np.isfinite(d)))

    res: dict[str, list[float]] = {k: [] for k in ("ground", "aerial", "ground_far", "aerial_far")}
    for qi in queries:
        q = world_pts(qi)
        d = np.linalg.norm(xy - xy[qi], axis=1)
        for key, pool in (("ground", ground & (seqs != seqs[qi])), ("aerial", ~ground)):
            cand = np.flatnonzero(pool)
            if not len(cand):
                continue
            near = cand[np.argmin(d[cand])]
            res[key].append(frac(q, world_pts(near)))
            far_c = cand[d[cand] >= far]
            if len(far_c):
                other = far_c[np.argmin(d[far_c])]
                # overlay the far submap's frame on the query's (same relative placement)
                at = plans[qi].pose.copy()
                at[2, 3] += plans[other].pose[2, 3] - plans[qi].pose[2, 3] if key == "aerial" else 0
                res[f"{key}_far"].append(frac(q, world_pts(other, at)))
    out: dict[str, float | int | None] = {
        "queries": len(queries),
        "tolerance": tolerance,
        "far": far,
    }
    for k, v in res.items():
        out[f"median_overlap_{k}"] = round(float(np.median(v)), 4) if v else None
    return out


def revisit_report(
    xy: np.ndarray, seq: np.ndarray, is_ground: np.ndarray, split: np.ndarray, radius: float
) -> dict[str, object]:
    """For every ground test query: distance to the nearest aerial submap and to the nearest
    ground submap of another traversal. Counts those within ``radius``."""

    q = np.flatnonzero(is_ground & (split == "test"))
    aer = np.flatnonzero(~is_ground)
    d_aer = cKDTree(xy[aer]).query(xy[q], k=1)[0] if len(aer) else np.full(len(q), np.inf)
    d_gnd = np.full(len(q), np.inf)
    for s in np.unique(seq[q]):
        mine = seq[q] == s
        other = np.flatnonzero(is_ground & (seq != s))
        if len(other):
            d_gnd[mine] = cKDTree(xy[other]).query(xy[q[mine]], k=1)[0]
    return {
        "queries": len(q),
        "with_aerial_within": int(np.sum(d_aer <= radius)),
        "with_ground_within": int(np.sum(d_gnd <= radius)),
        "radius": radius,
        "max_nearest_aerial": float(d_aer.max()) if len(q) else None,
        "max_nearest_ground": float(d_gnd.max()) if len(q) else None,
        "mean_nearest_ground": float(d_gnd.mean()) if len(q) else None,
    }


@dataclass
class GenerateResult:
    """Summary of a generation run (also stored in the manifest)."""

    out: Path
    counts: dict[str, dict[str, int]]
    revisits: dict[str, dict[str, object]]
    generated: int
    skipped_existing: int
    discarded: int
    manifest: Path


def config_digest(cfg: GeneratorConfig) -> str:
    blob = json.dumps(to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _check_state(out: Path, digest: str) -> set[str]:
    """Validate (or create) the state file; returns the submaps known to be discarded."""
    state = out / STATE_FILE
    discarded: list[str] = []
    if state.exists():
        try:
            data = json.loads(state.read_text())
            old, discarded = data["config_sha256"], list(data.get("discarded", []))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{state}: unreadable generation state ({e}); remove it") from e
        if old != digest:
            raise ConfigError(
                f"{out} holds a benchmark generated with another config or seed; "
                "choose an empty folder (or delete it) to generate this one"
            )
    elif out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise ConfigError(f"{out} is not empty and was not made by 'hotformerloc generate'")
    out.mkdir(parents=True, exist_ok=True)
    _write_state(out, digest, discarded)
    return set(discarded)


def _write_state(out: Path, digest: str, discarded: Iterable[str]) -> None:
    data = {"config_sha256": digest, "version": __version__, "discarded": sorted(discarded)}
    atomic_write_text(out / STATE_FILE, json.dumps(data, indent=0) + "\n")


def generate(
    cfg: GeneratorConfig, out: str | Path, workers: int = 2, progress: Progress | None = None
) -> GenerateResult:
    """Generate (or resume, or verify as complete) the benchmark ``cfg`` under ``out``."""
    out = Path(out)
    digest = config_digest(cfg)
    discarded = _check_state(out, digest)
    remove_stale_temporaries(out)  # left by a killed earlier run; never listed in the manifest
    (out / CACHE_DIR).mkdir(exist_ok=True)
    all_plans: list[list[SubmapPlan]] = []
    ground_tasks: list[SubmapPlan] = []
    aerial_tasks: list[SubmapPlan] = []
    worlds = []
    for wi, wcfg in enumerate(cfg.worlds):
        if progress:
            progress(f"world+survey {wcfg.name}", 0, 1)
        world = _make_world(cfg, wi)
        worlds.append(world)
        g = plan_ground(cfg, wi, world)
        a = plan_aerial(cfg, wi, world)
        ground_tasks += g
        aerial_tasks += a
        all_plans.append(g + a)
        cache = out / CACHE_DIR / f"{wcfg.name}-aerial.npz"
        pending = [
            p
            for p in a
            if f"{wcfg.name}/{p.relpath}" not in discarded
            and not (out / wcfg.name / p.relpath).exists()
        ]
        if pending and not cache.exists():
            pts = world.aerial_points()
            if pts is None:
                scene = world.scene(cfg.aerial.epoch.epoch("aerial"))
                rng = np.random.default_rng([cfg.seed, wi, 0, 3])
                pts, _ = aerial_survey(
                    scene,
                    world.extent,
                    cfg.aerial.sensor,
                    rng,
                    progress=(
                        lambda f, n=wcfg.name: progress(f"aerial survey {n}", int(f * 100), 100)
                    )
                    if progress
                    else None,
                )
            buf = io.BytesIO()
            np.savez(buf, xyz=np.ascontiguousarray(pts, np.float32))
            atomic_write_bytes(cache, buf.getvalue())
        if progress:
            progress(f"world+survey {wcfg.name}", 1, 1)
    known = frozenset(discarded)
    res = _run(ground_tasks, _ground_task, cfg, out, workers, "ground submaps", progress, known)
    res += _run(aerial_tasks, _aerial_task, cfg, out, workers, "aerial submaps", progress, known)
    status = {
        (p.world, p.sequence, p.index): n
        for p, (_, _, n) in zip(ground_tasks + aerial_tasks, res, strict=True)
    }
    names = [w.name for w in cfg.worlds]
    _write_state(
        out,
        digest,
        {
            f"{names[p.world]}/{p.relpath}"
            for p in ground_tasks + aerial_tasks
            if status[(p.world, p.sequence, p.index)] == 0
        },
    )
    counts: dict[str, dict[str, int]] = {}
    revisits: dict[str, dict[str, object]] = {}
    files: dict[str, str] = {}
    for wi, (wcfg, world, plans) in enumerate(zip(cfg.worlds, worlds, all_plans, strict=True)):
        kept = [p for p in plans if (out / wcfg.name / p.relpath).exists()]
        for name in sorted({p.sequence for p in plans}):
            sp = [p for p in kept if p.sequence == name]
            (out / wcfg.name / name / "clouds").mkdir(parents=True, exist_ok=True)
            write_poses_csv(
                out / wcfg.name / name / POSES_FILE,
                [p.timestamp for p in sp],
                [p.pose for p in sp],
            )
        xy = np.array([p.pose[:2, 3] for p in kept]).reshape(-1, 2)
        seq = np.array([p.sequence for p in kept])
        is_ground = np.array([p.traversal >= 0 for p in kept], bool)
        regions = make_test_regions(cfg, world)
        # the regions are axis-aligned squares: "box" is the closed square
        split = assign_splits(xy, is_ground, regions, cfg.split.buffer, shape="box")
        write_regions_json(out / wcfg.name / REGIONS_FILE, regions, cfg.split.buffer)
        write_split_csv(
            out / wcfg.name / SPLIT_FILE,
            (
                (
                    p.sequence,
                    p.timestamp,
                    p.pose[0, 3],
                    p.pose[1, 3],
                    "ground" if p.traversal >= 0 else "aerial",
                    s,
                )
                for p, s in zip(kept, split, strict=True)
            ),
        )
        c: dict[str, int] = {}
        for p, s in zip(kept, split, strict=True):
            c[p.sequence] = c.get(p.sequence, 0) + 1
            key = f"{'ground' if p.traversal >= 0 else 'aerial'}_{s}"
            c[key] = c.get(key, 0) + 1
        c["discarded"] = sum(1 for p in plans if status.get((wi, p.sequence, p.index)) == 0)
        counts[wcfg.name] = dict(sorted(c.items()))
        revisits[wcfg.name] = revisit_report(xy, seq, is_ground, split, cfg.split.revisit_radius)
        x0, y0, x1, y1 = world.extent
        far = min(100.0, 0.5 * min(x1 - x0, y1 - y0))
        revisits[wcfg.name]["overlap"] = overlap_report(out / wcfg.name, kept, split, far=far)
    for wcfg in cfg.worlds:
        for path in sorted((out / wcfg.name).rglob("*")):
            if path.is_file():
                files[path.relative_to(out).as_posix()] = sha256_file(path)
    manifest = {
        "generator": "hotformerloc.synth",
        "version": __version__,
        "seed": cfg.seed,
        "config_sha256": digest,
        "config": to_dict(cfg),
        "counts": counts,
        "revisits": revisits,
        "files": files,
    }
    mpath = out / "manifest.json"
    atomic_write_text(mpath, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(out / CACHE_DIR, ignore_errors=True)  # survey clouds: only for resuming
    vals = [n for n in status.values()]
    return GenerateResult(
        out=out,
        counts=counts,
        revisits=revisits,
        generated=sum(1 for n in vals if n > 0),
        skipped_existing=sum(1 for n in vals if n < 0),
        discarded=sum(1 for n in vals if n == 0),
        manifest=mpath,
    )


def workers_default() -> int:
    """Worker processes: the CPUs this process may use, at most 8."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:
        return max(1, min(8, os.cpu_count() or 1))
