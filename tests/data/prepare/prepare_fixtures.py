"""Builders of tiny public-benchmark folders in their exact on-disk formats (file types,
dtypes, folder and file names, CSV headers, reference pickle schemas)."""

from __future__ import annotations

import csv
import json
import pickle
import sys
import types
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hotformerloc.io import PointCloud, write_pointcloud

#: Oxford run folder names: 45 runs, sorted order = index order.
OXFORD_RUNS = [f"2014-05-{d:02d}-12-00-00" for d in range(1, 32)] + [
    f"2014-06-{d:02d}-12-00-00" for d in range(1, 15)
]
INHOUSE_RUNS = [
    f"{loc}_run{i}" for loc in ("business", "residential", "university") for i in range(1, 6)
]


def pnv_cloud(seed: int) -> np.ndarray:
    """4096 x 3 float64 in [-1, 1], zero mean (a PNV submap)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.9, 0.9, (4096, 3))
    return p - p.mean(0)


def write_pnv_bin(path: Path, seed: int = 0, data: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (pnv_cloud(seed) if data is None else data).astype("<f8").tofile(path)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_pnv_run(
    root: Path,
    top: str,
    run: str,
    folder: str,
    csv_name: str,
    en: Sequence[tuple[float, float]],
    t0: int = 1400000000000000,
) -> list[str]:
    """One run of PNV submaps at (easting, northing) positions; the CSV is
    timestamp,northing,easting like the benchmark's. Returns the timestamps."""
    stamps = [str(t0 + 1000 * k) for k in range(len(en))]
    write_csv(
        root / top / run / csv_name,
        ["timestamp", "northing", "easting"],
        [[t, repr(float(n)), repr(float(e))] for t, (e, n) in zip(stamps, en, strict=True)],
    )
    (root / top / run / folder).mkdir(parents=True, exist_ok=True)
    for k, t in enumerate(stamps):
        write_pnv_bin(root / top / run / folder / f"{t}.bin", seed=k)
    return stamps


def write_regions(path: Path, locations: dict[str, Any], axes: str = "easting,northing") -> Path:
    path.write_text(
        json.dumps(
            {"format": "hotformerloc-regions", "version": 1, "axes": axes, "locations": locations}
        )
    )
    return path


class reference_classes:
    """Context: a fake ``datasets.base_datasets.TrainingTuple`` importable by pickle, as the
    reference's MinkLoc3Dv2-derived code defines it (attributes set in __init__)."""

    def __enter__(self) -> type:
        mod = types.ModuleType("datasets.base_datasets")

        class TrainingTuple:
            def __init__(
                self, id, timestamp, rel_scan_filepath, positives, non_negatives, position
            ):
                self.id = id
                self.timestamp = timestamp
                self.rel_scan_filepath = rel_scan_filepath
                self.positives = positives
                self.non_negatives = non_negatives
                self.position = position

        TrainingTuple.__module__ = "datasets.base_datasets"
        TrainingTuple.__qualname__ = "TrainingTuple"
        mod.TrainingTuple = TrainingTuple
        self._saved = {k: sys.modules.get(k) for k in ("datasets", "datasets.base_datasets")}
        sys.modules["datasets"] = types.ModuleType("datasets")
        sys.modules["datasets.base_datasets"] = mod
        return TrainingTuple

    def __exit__(self, *exc: object) -> None:
        for k, v in self._saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_pickle(path: Path, obj: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def eval_pickles(
    runs: Sequence[Sequence[tuple[str, float, float]]],
    queries: Sequence[Sequence[int]],
    radius: float,
) -> tuple[list[dict], list[dict]]:
    """Reference evaluation database / query structures (PointNetVLAD's generator):
    ``runs[i]`` = [(path, northing, easting)], ``queries[i]`` = indices into runs[i]. Query
    items carry, per other run m, the database-m indices within ``radius``."""
    database = [
        {
            k: {"query": p, "northing": np.float64(n), "easting": np.float64(e)}
            for k, (p, n, e) in enumerate(run)
        }
        for run in runs
    ]
    query = []
    for j, run in enumerate(runs):
        q = {}
        for key, k in enumerate(queries[j]):
            p, n, e = run[k]
            item: dict[Any, Any] = {"query": p, "northing": np.float64(n), "easting": np.float64(e)}
            for m, other in enumerate(runs):
                if m == j:
                    continue
                item[m] = [
                    i for i, (_, n2, e2) in enumerate(other) if np.hypot(n - n2, e - e2) <= radius
                ]
            q[key] = item
        query.append(q)
    return database, query


def write_pcd(path: Path, xyz: np.ndarray, pose: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pointcloud(path, PointCloud(xyz=xyz.astype(np.float32), pose=pose), compression="binary")


def small_cloud(seed: int, scale: float = 20.0, n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-scale, scale, (n, 3)).astype(np.float32)


def write_poses(path: Path, stamps: Sequence[str], xy: Sequence[tuple[float, float]]) -> None:
    write_csv(
        path,
        ["timestamp", "x", "y", "z", "qx", "qy", "qz", "qw"],
        [
            [t, repr(float(x)), repr(float(y)), "0.0", "0.0", "0.0", "0.0", "1.0"]
            for t, (x, y) in zip(stamps, xy, strict=True)
        ],
    )


# --------------------------------------------------------------------------- PNV

OX_TRAIN = ("pointcloud_20m_10overlap", "pointcloud_locations_20m_10overlap.csv")
OX_EVAL = ("pointcloud_20m", "pointcloud_locations_20m.csv")
IH = ("pointcloud_25m_25", "pointcloud_centroids_25.csv")
#: Sorted run indices of the Oxford evaluation set (spec 4.1), written out independently.
OX_EVAL_RUNS = [
    5,
    6,
    7,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    22,
    24,
    31,
    32,
    33,
    38,
    39,
    43,
    44,
]
#: Training submaps (easting, northing) of runs 0, 1 and 44 (the last run: never trained on);
#: other runs get one far-away submap. The test square of the regions file is centred on
#: (1000, 1000) with half size 150 (open).
OX_TRAIN_EN = {
    0: [(1000, 1000), (1149, 1000), (1150, 1000), (1160, 1000), (1200, 1000), (1250.5, 1000)],
    1: [(1160, 1010)],
    44: [(1160, 1000)],
}
OX_EVAL_EN = {5: [(1000, 1000), (3000, 3000)], 6: [(1025, 1000), (5000, 5000)]}


def make_oxford(
    root: Path, runs: Sequence[str] = OXFORD_RUNS, train_en: dict | None = None
) -> Path:
    """A 45-run Oxford tree under ``root/oxford`` (positions: the module constants, or
    ``train_en`` {run index: [(easting, northing)]} for the training CSVs)."""
    train_en = OX_TRAIN_EN if train_en is None else train_en
    for i, run in enumerate(runs):
        en = train_en.get(i, [(5000 + 100 * i, 5000)])
        write_pnv_run(root, "oxford", run, *OX_TRAIN, en)
        if i in OX_EVAL_RUNS:
            write_pnv_run(root, "oxford", run, *OX_EVAL, OX_EVAL_EN.get(i, [(9000 + 10 * i, 9000)]))
    return root


def oxford_regions(path: Path) -> Path:
    return write_regions(
        path, {"oxford": {"squares": [{"name": "T", "center": [1000, 1000], "half_size": 150}]}}
    )


def make_inhouse(root: Path, step: float = 100.0) -> Path:
    """Two submaps per run: run k (1..5) of a location at (step k, 0) and (step k, 400)
    (easting, northing)."""
    for run in INHOUSE_RUNS:
        k = int(run[-1])
        write_pnv_run(root, "inhouse_datasets", run, *IH, [(step * k, 0), (step * k, 400)])
    return root


# --------------------------------------------------------------------------- CS-Campus3D

#: (relative path, northing, easting); ground g0, g1 and aerial a0, a1, a2.
CAMPUS = {
    "g0": ("umd/umcp_lidar5_ground_umd_gps_1/pointcloud_4096/1000.bin", 0.0, 0.0),
    "g1": ("umd/umcp_lidar5_ground_umd_gps_1/pointcloud_4096/1001.bin", 0.0, 150.0),
    "g2": ("umd/umcp_lidar5_ground_umd_gps_2/pointcloud_4096/2000.bin", 500.0, 500.0),
    "a0": ("umd/umcp_lidar5_aerial_umd_1/pointcloud_4096/3000.bin", 0.0, 100.0),
    "a1": ("umd/umcp_lidar5_aerial_umd_1/pointcloud_4096/3001.bin", 0.0, 300.0),
    "a2": ("umd/umcp_lidar5_aerial_umd_1/pointcloud_4096/3002.bin", 50.0, 150.0),
}


def make_campus3d(root: Path, schema: str = "v2") -> Path:
    """CS-Campus3D files + its pickles in ``root``: training (g2, a1 with hand tuples),
    databases [all, aerial-only], queries g0, g1 (neighbours within 100 m)."""
    for k, (p, _, _) in enumerate(CAMPUS.values()):
        write_pnv_bin(root / p, seed=k)
    if schema == "v2":
        with reference_classes() as TrainingTuple:
            entries = {
                i: TrainingTuple(
                    id=i,
                    timestamp=int(Path(CAMPUS[n][0]).stem),
                    rel_scan_filepath=CAMPUS[n][0],
                    positives=np.array(pos, np.int64),
                    non_negatives=np.array(nn, np.int64),
                    position=np.array([CAMPUS[n][1], CAMPUS[n][2]]),
                )
                for i, (n, pos, nn) in enumerate(
                    [("g2", [], [0]), ("a1", [2], [1, 2]), ("g0", [1], [1, 2])]
                )
            }
            write_pickle(root / "training_queries_umd_4096_v2.pickle", entries)
    else:  # CrossLoc3D's own schema: negatives instead of non-negatives
        entries = {
            i: {
                "query": CAMPUS[n][0],
                "northing": CAMPUS[n][1],
                "easting": CAMPUS[n][2],
                "positives": pos,
                "negatives": neg,
            }
            for i, (n, pos, neg) in enumerate(
                [("g2", [], [1, 2]), ("a1", [2], [0]), ("g0", [1], [0])]
            )
        }
        write_pickle(root / "training_queries_umd_4096.pickle", entries)
    runs = [
        [CAMPUS[n] for n in ("g0", "g1", "a0", "a1", "a2")],
        [CAMPUS[n] for n in ("a0", "a1", "a2")],
    ]
    db, _ = eval_pickles(runs, [[], []], 100.0)
    write_pickle(root / "umd_evaluation_database.pickle", db)
    queries = {}
    for k, n in enumerate(("g0", "g1")):
        p, no, e = CAMPUS[n]
        item = {"query": p, "northing": no, "easting": e}
        for m, run in enumerate(runs):
            item[m] = [i for i, (_, n2, e2) in enumerate(run) if np.hypot(no - n2, e - e2) <= 100.0]
        queries[k] = item
    write_pickle(
        root
        / ("umd_evaluation_query_v2.pickle" if schema == "v2" else "umd_evaluation_query.pickle"),
        [queries] if schema == "v2" else queries,
    )
    return root


# --------------------------------------------------------------------------- Wild-Places

#: Aligned-pose positions (x, y) per sequence; test polygons and buffer circles in
#: WP_REGIONS. See test_prepare_wild_places.py for the hand-derived splits.
WP_XY = {
    ("Venman", "V-01"): [(50, 50), (100, 50), (170, 50), (169, 50)],
    ("Venman", "V-02"): [(166, 50), (50, 50), (116, 50)],
    ("Venman", "V-03"): [(52, 50), (400, 400)],
    ("Venman", "V-04"): [(50, 53), (500, 500)],
    ("Karawatha", "K-01"): [(10, 10), (30, 30), (31, 30)],
    ("Karawatha", "K-02"): [(31, 33)],
    ("Karawatha", "K-03"): [(10, 11)],
    ("Karawatha", "K-04"): [(11, 10)],
}
WP_REGIONS = {
    "venman": {
        "polygons": [{"name": "P1", "vertices": [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]}],
        "buffers": [{"name": "C1", "center": [200, 50], "radius": 30}],
    },
    "karawatha": {
        "polygons": [{"name": "P4", "vertices": [[0, 0], [60, 0], [0, 60]]}],
        "buffers": [{"name": "C7", "center": [300, 0], "radius": 30}],
    },
}


def wp_seed(forest: str, seq: str, k: int) -> int:
    return zlib.crc32(f"{forest}/{seq}/{k}".encode())


def wp_stamps(forest: str, seq: str, n: int) -> list[str]:
    base = 1624000000 + 100000 * (forest == "Karawatha") + 10000 * int(seq[-1])
    return [f"{base + 2 * k}.{500000 + k:06d}" for k in range(n)]


def make_wild_places(root: Path, release: str = "pcd", broken: bool = True) -> Path:
    """Both forests, 4 sequences each. ``pcd``: Clouds_downsampled/<ts>.pcd and a
    poses_aligned.csv whose timestamps are broken (shifted by 0.25 s) when ``broken``;
    ``v3``: <ts>.bin float32 N x 4 and correct timestamps."""
    for (forest, seq), xy in WP_XY.items():
        stamps = wp_stamps(forest, seq, len(xy))
        d = root / forest / seq
        for k, t in enumerate(stamps):
            xyz = small_cloud(wp_seed(forest, seq, k))
            if release == "pcd":
                write_pcd(d / "Clouds_downsampled" / f"{t}.pcd", xyz)
            else:
                d.joinpath("Clouds_downsampled").mkdir(parents=True, exist_ok=True)
                rec = np.column_stack([xyz, np.ones(len(xyz), np.float32)]).astype("<f4")
                rec.tofile(d / "Clouds_downsampled" / f"{t}.bin")
        pose_t = (
            [f"{float(t) + 0.25:.6f}" for t in stamps] if broken and release == "pcd" else stamps
        )
        write_poses(d / "poses_aligned.csv", pose_t, xy)
    return root


# --------------------------------------------------------------------------- CS-Wild-Places

E0, N0 = 500000.0, 6900000.0
#: Local (east, north) offsets from (E0, N0) per sequence folder; Karawatha's square test
#: polygon is [0, 100]^2 (CSWP_REGIONS). Hand-derived splits in test_prepare_cs_wild_places.py.
CSWP_XY = {
    ("Karawatha", "K-01_ground"): [(50, 50), (100, 50), (130, 50), (131, 50)],
    ("Karawatha", "K-02_ground"): [(146, 50), (400, 400)],
    ("Karawatha", "Karawatha_aerial"): [(50, 60), (120, 60), (131, 65), (191, 50)],
    ("Venman", "V-01_ground"): [(10, 10), (300, 300)],
    ("Venman", "Venman_aerial"): [(12, 10), (320, 300)],
}
CSWP_UNSEEN_XY = {
    ("QCAT", "QCAT_ground"): [(0, 0), (40, 0)],
    ("QCAT", "QCAT_aerial"): [(0, 5), (40, 20), (80, 0)],
    ("Samford", "Samford_ground"): [(0, 0)],
    ("Samford", "Samford_aerial"): [(3, 4)],
}
CSWP_REGIONS = {
    "karawatha": {
        "polygons": [
            {
                "name": "K",
                "vertices": [[E0, N0], [E0 + 100, N0], [E0 + 100, N0 + 100], [E0, N0 + 100]],
            }
        ]
    },
    "venman": {
        "polygons": [
            {"name": "V", "vertices": [[E0 - 50, N0 - 50], [E0 + 50, N0 - 50], [E0 + 50, N0 + 50]]}
        ]
    },
}


def cswp_stamps(folder: str, n: int) -> list[str]:
    base = 1700000000 + 1000 * zlib.crc32(folder.encode()) % 100000
    return [f"{base + 2 * k}.{k:06d}" for k in range(n)]


def make_cs_wild_places(root: Path, layout: dict = CSWP_XY, normalised: bool = True) -> Path:
    """Forest/<sequence>/clouds/<ts>.pcd + poses.csv (UTM x = easting, y = northing)."""
    for (forest, seq), xy in layout.items():
        stamps = cswp_stamps(seq, len(xy))
        d = root / forest / seq
        for k, t in enumerate(stamps):
            xyz = small_cloud(zlib.crc32(f"{seq}{k}".encode()), scale=0.9 if normalised else 25.0)
            write_pcd(d / "clouds" / f"{t}.pcd", xyz)
        write_poses(d / "poses.csv", stamps, [(E0 + x, N0 + y) for x, y in xy])
    return root
