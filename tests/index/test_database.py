"""Place database: round trip, crash-safe appends (SIGKILL at every step), corruption
detection, model check, filtered search through the database."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import OrderedDict

import numpy as np
import pytest

from hotformerloc.index.database import (
    ADD_STEPS,
    FAULT_ENV,
    MANIFEST,
    SEGMENTS,
    DatabaseCorruptError,
    DatabaseError,
    DatabaseExistsError,
    DatabaseInputError,
    DatabaseLockedError,
    Entry,
    ModelInfo,
    ModelMismatchError,
    PlaceDatabase,
    RerankPoints,
)
from hotformerloc.index.search import Circle, SearchFilter

MODEL = ModelInfo("hotformerloc-tiny", "ab" * 32, "hotformerloc-tiny", 1 / 30)
DIM = 16


def yaw_pose(yaw_deg: float, x: float, y: float) -> np.ndarray:
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    p = np.eye(4)
    p[:2, :2] = [[c, -s], [s, c]]
    p[:3, 3] = (x, y, 1.5)
    return p


def make(n: int, start: int = 0, seed: int = 0) -> tuple[np.ndarray, list[Entry]]:
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n, DIM))
    d = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
    entries = [
        Entry(
            id=f"w/s{i % 2}/{i}",
            source=("ground", "aerial")[i % 2],
            world="w" if i % 3 else "v",
            sequence=f"s{i % 2}",
            timestamp=None if i % 4 == 3 else 1000.0 + i,
            pose=None if i % 5 == 4 else yaw_pose(7.0 * i, 10.0 * i, -3.0 * i),
            path=None if i % 6 == 5 else f"/data/cloud_{i}.pcd",
        )
        for i in range(start, start + n)
    ]
    return d, entries


def same_entry(a: Entry, b: Entry) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return da == db


def test_round_trip_and_append_reopen_identical(tmp_path):
    d, entries = make(7)
    db = PlaceDatabase.create(tmp_path / "db", DIM, MODEL, d, entries)
    re = PlaceDatabase.open(tmp_path / "db")
    assert re.descriptors.tobytes() == d.tobytes()
    assert len(re) == 7 and re.ids == [e.id for e in entries]
    assert all(same_entry(re.entry(i), e) for i, e in enumerate(entries))
    assert re.entry(4).pose is None and re.entry(3).timestamp is None and re.entry(5).path is None
    np.testing.assert_array_equal(re.entry(2).pose, entries[2].pose)
    assert re.schema == db.schema
    s = re.schema
    assert (s.dim, s.metric, s.count, s.generation, s.format_version) == (DIM, "l2-unit", 7, 1, 1)
    assert s.model == MODEL
    d2, more = make(4, start=7, seed=1)
    re.add(d2, more)
    again = PlaceDatabase.open(tmp_path / "db")
    assert again.descriptors.tobytes() == np.concatenate([d, d2]).tobytes()
    assert again.ids == [e.id for e in [*entries, *more]]
    assert all(same_entry(again.entry(i), e) for i, e in enumerate([*entries, *more]))
    assert again.schema == re.schema and again.schema.generation == 2
    assert again.row(more[1].id) == 8 and re.row(more[1].id) == 8
    assert again.counts()["source"] == {"aerial": 5, "ground": 6}


def test_empty_database_and_search_padding(tmp_path):
    db = PlaceDatabase.create(tmp_path / "db", DIM, MODEL)
    res = PlaceDatabase.open(tmp_path / "db").search(np.eye(DIM, dtype=np.float32)[0], 3)
    assert len(db) == 0 and (res.indices == -1).all()


# ---------------------------------------------------------------------------- crash safety
CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from hotformerloc.index.database import Entry, PlaceDatabase

    db = PlaceDatabase.open(sys.argv[1])
    d = np.load(sys.argv[2])
    ids = sys.argv[3].split(",")
    db.add(d, [Entry(id=i, source="ground", world="w", sequence="new") for i in ids])
    print("finished")
    """
)


@pytest.mark.parametrize("step", ADD_STEPS)
def test_sigkill_at_every_step_of_an_append_keeps_a_loadable_database(tmp_path, step):
    d, entries = make(5)
    root = tmp_path / "db"
    PlaceDatabase.create(root, DIM, MODEL, d, entries)
    d2, _ = make(3, seed=9)
    np.save(tmp_path / "new.npy", d2)
    new_ids = ["n/0", "n/1", "n/2"]
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(tmp_path / "new.npy"), ",".join(new_ids)],
        env={**os.environ, FAULT_ENV: step},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert "finished" not in r.stdout
    db = PlaceDatabase.open(root, verify=True)
    if step == "committed":
        assert db.ids == [e.id for e in entries] + new_ids
        assert db.descriptors.tobytes() == np.concatenate([d, d2]).tobytes()
    else:
        assert db.ids == [e.id for e in entries]
        assert db.descriptors.tobytes() == d.tobytes()
        assert db.schema.generation == 1
    if step in ("segment-dir", "descriptors.npy", "metadata.json"):
        assert (root / SEGMENTS / "000002").is_dir()  # the kill left a partial segment
    if step == "manifest-temp":
        assert list(root.glob(f"{MANIFEST}.tmp-*"))  # and here a partial manifest
    # the next append succeeds and removes what the killed one left
    d3, more = make(2, start=50, seed=3)
    db.add(d3, more)
    final = PlaceDatabase.open(root)
    assert final.ids[-2:] == [m.id for m in more]
    listed = {s["name"] for s in json.loads((root / MANIFEST).read_text())["segments"]}
    assert {p.name for p in (root / SEGMENTS).iterdir()} == listed
    assert not list(root.glob(f"{MANIFEST}.tmp-*"))


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path):
    import fcntl

    d, entries = make(3)
    db = PlaceDatabase.create(tmp_path / "db", DIM, MODEL, d, entries)
    with open(tmp_path / "db" / "write.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        d2, more = make(1, start=10)
        with pytest.raises(DatabaseLockedError, match="another process"):
            db.add(d2, more)
    db.add(d2, more)
    assert len(PlaceDatabase.open(tmp_path / "db")) == 4


def test_appends_from_two_handles_both_survive(tmp_path):
    d, entries = make(3)
    a = PlaceDatabase.create(tmp_path / "db", DIM, MODEL, d, entries)
    b = PlaceDatabase.open(tmp_path / "db")
    da, ea = make(2, start=10, seed=1)
    db_, eb = make(2, start=20, seed=2)
    b.add(db_, eb)
    a.add(da, ea)  # a re-reads the manifest under the lock: b's entries are kept
    final = PlaceDatabase.open(tmp_path / "db")
    assert final.ids == [e.id for e in [*entries, *eb, *ea]]
    assert a.ids == final.ids


# ---------------------------------------------------------------------------- corruption
@pytest.fixture
def built(tmp_path):
    d, entries = make(6)
    PlaceDatabase.create(tmp_path / "db", DIM, MODEL, d, entries)
    return tmp_path / "db"


def flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["descriptors.npy", "metadata.json", "poses.npy"])
def test_a_flipped_byte_is_detected_and_names_the_file(built, name):
    path = built / SEGMENTS / "000001" / name
    flip(path, path.stat().st_size - 3)
    with pytest.raises(DatabaseCorruptError, match="checksum mismatch") as e:
        PlaceDatabase.open(built)
    assert e.value.path == str(path) and str(path) in str(e.value)


def test_unverified_open_misses_a_data_flip_that_verify_then_reports(built):
    path = built / SEGMENTS / "000001" / "descriptors.npy"
    flip(path, path.stat().st_size - 1)
    db = PlaceDatabase.open(built, verify=False)
    with pytest.raises(DatabaseCorruptError, match=r"descriptors\.npy"):
        db.verify()


def test_truncated_missing_and_manifest_problems_are_named(built):
    seg = built / SEGMENTS / "000001"
    desc = seg / "descriptors.npy"
    raw = desc.read_bytes()
    desc.write_bytes(raw[:-10])
    with pytest.raises(DatabaseCorruptError, match="truncated") as e:
        PlaceDatabase.open(built)
    assert e.value.path == str(desc)
    desc.write_bytes(raw)
    (seg / "timestamps.npy").rename(seg / "moved.npy")
    with pytest.raises(DatabaseCorruptError, match="missing") as e:
        PlaceDatabase.open(built)
    assert e.value.path == str(seg / "timestamps.npy")
    (seg / "moved.npy").rename(seg / "timestamps.npy")
    manifest = built / MANIFEST
    text = manifest.read_text()
    manifest.write_text(text.replace('"count": 6', '"count": 7'))
    with pytest.raises(DatabaseCorruptError, match="checksum mismatch") as e:
        PlaceDatabase.open(built)
    assert e.value.path == str(manifest)
    manifest.write_text(text.replace('"format_version": 1', '"format_version": 2'))
    with pytest.raises(DatabaseCorruptError, match="format version 2"):
        PlaceDatabase.open(built)
    # a schema without its dimension, re-checksummed so only the schema check can catch it
    body = {k: v for k, v in json.loads(text).items() if k not in ("dim", "manifest_sha256")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["manifest_sha256"] = hashlib.sha256(canonical).hexdigest()
    manifest.write_text(json.dumps(body))
    with pytest.raises(DatabaseCorruptError, match=r"malformed schema.*dim") as e:
        PlaceDatabase.open(built)
    assert e.value.path == str(manifest)
    manifest.write_text(text[:-20])
    with pytest.raises(DatabaseCorruptError, match="not valid JSON"):
        PlaceDatabase.open(built)
    manifest.unlink()
    with pytest.raises(DatabaseCorruptError, match="missing"):
        PlaceDatabase.open(built)
    with pytest.raises(DatabaseError, match="does not exist"):
        PlaceDatabase.open(built / "nope")


# ---------------------------------------------------------------------------- model, input
def test_opening_with_another_model_is_refused(built):
    PlaceDatabase.open(
        built, model=ModelInfo(MODEL.name, MODEL.tensors_sha256, "/elsewhere", 1 / 30)
    )
    for other in (
        ModelInfo("hotformerloc-small", MODEL.tensors_sha256, "x", 1 / 30),
        ModelInfo(MODEL.name, "cd" * 32, "x", 1 / 30),
        ModelInfo(MODEL.name, MODEL.tensors_sha256, "x", None),
    ):
        with pytest.raises(ModelMismatchError, match="built with model hotformerloc-tiny"):
            PlaceDatabase.open(built, model=other)


def test_bad_input_is_refused_and_nothing_is_written(built):
    db = PlaceDatabase.open(built)
    d, entries = make(2, start=100)
    before = (built / MANIFEST).read_bytes()
    with pytest.raises(DatabaseInputError, match="already in the database"):
        db.add(d, [entries[0], Entry(id="w/s0/0", source="ground")])
    with pytest.raises(DatabaseInputError, match="norm"):
        db.add(d * 2, entries)
    with pytest.raises(DatabaseInputError, match="shape"):
        db.add(d[:, :5], entries)
    with pytest.raises(DatabaseInputError, match="source"):
        db.add(d, [entries[0], Entry(id="x", source="satellite")])
    bad_pose = np.eye(4)
    bad_pose[0, 0] = 2.0
    with pytest.raises(DatabaseInputError, match="rotation"):
        db.add(d, [entries[0], Entry(id="x", source="ground", pose=bad_pose)])
    assert (built / MANIFEST).read_bytes() == before
    assert sorted(p.name for p in (built / SEGMENTS).iterdir()) == ["000001"]
    with pytest.raises(DatabaseExistsError, match="already exists"):
        PlaceDatabase.create(built, DIM, MODEL)


def test_database_search_filters_give_the_true_filtered_top_k(tmp_path):
    d, entries = make(60, seed=4)
    db = PlaceDatabase.create(tmp_path / "db", DIM, MODEL, d, entries)
    q = d[:3] + 0.01
    where = SearchFilter(source="aerial", world="w", region=Circle(0.0, 0.0, 400.0))
    res = db.search(q, 4, where)
    ok = np.array(
        [
            e.source == "aerial"
            and e.world == "w"
            and e.pose is not None
            and np.hypot(*e.pose[:2, 3]) <= 400.0
            for e in entries
        ]
    )
    rows = np.flatnonzero(ok)
    dist = np.linalg.norm(q[:, None, :] - d[None, rows, :], axis=2)
    want = rows[np.argsort(dist, axis=1)[:, :4]]
    np.testing.assert_array_equal(res.indices, want)
    np.testing.assert_allclose(res.distances, np.sort(dist, axis=1)[:, :4], atol=1e-5)


def _clouds(n: int, seed: int = 0) -> list[np.ndarray | None]:
    rng = np.random.default_rng(seed)
    return [None if i % 4 == 2 else rng.uniform(-30, 30, (40 + 7 * i, 3)) for i in range(n)]


def test_rerank_points_round_trip_checksummed_and_optional(tmp_path) -> None:
    """Stored re-ranking clouds come back (float32) per entry and segment, only for the
    voxel they were made with; databases without them answer None; corrupting them is
    detected like any other file."""
    d, entries = make(6)
    pts = _clouds(10)
    db = PlaceDatabase.create(
        tmp_path / "db", DIM, MODEL, d, entries, rerank=RerankPoints(0.5, pts[:6])
    )
    d2, more = make(4, start=6, seed=1)
    db.add(d2, more, RerankPoints(0.5, pts[6:]))
    d3, plain = make(2, start=10, seed=2)
    db.add(d3, plain)  # no re-ranking data: as an older database
    again = PlaceDatabase.open(tmp_path / "db")
    for i, p in enumerate(pts):
        got = again.rerank_points(i, 0.5)
        if p is None:
            assert got is None
        else:
            assert got is not None and got.dtype == np.float64
            np.testing.assert_array_equal(got, p.astype(np.float32))
    assert again.rerank_points(0, 1.0) is None  # another voxel
    assert again.rerank_points(10, 0.5) is None and again.rerank_points(11, 0.5) is None
    seg = sorted((tmp_path / "db" / SEGMENTS).iterdir())[1]
    f = seg / "rerank_points.npy"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(DatabaseCorruptError, match=r"rerank_points\.npy: checksum mismatch"):
        PlaceDatabase.open(tmp_path / "db")
    (seg / "rerank_offsets.npy").unlink()
    with pytest.raises(DatabaseCorruptError, match=r"rerank_offsets\.npy: file is missing"):
        PlaceDatabase.open(tmp_path / "db", verify=False)


def test_rerank_points_input_errors(tmp_path) -> None:
    d, entries = make(3)
    with pytest.raises(DatabaseInputError, match="2 re-ranking clouds for 3 entries"):
        PlaceDatabase.create(
            tmp_path / "a", DIM, MODEL, d, entries, rerank=RerankPoints(0.5, [None] * 2)
        )
    bad = [None, np.full((5, 3), np.nan), None]
    with pytest.raises(DatabaseInputError, match="re-ranking cloud 1"):
        PlaceDatabase.create(tmp_path / "b", DIM, MODEL, d, entries, rerank=RerankPoints(0.5, bad))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_localizer_reranks_with_and_without_stored_clouds(tmp_path) -> None:
    """Re-ranking from the stored clouds gives the verification computed from the files
    (a database without them, as an older one, still re-ranks)."""
    from hotformerloc.index.pipeline import Localizer, rerank_points
    from hotformerloc.index.rerank import RerankConfig

    rng = np.random.default_rng(5)
    place = np.concatenate(
        [rng.normal((x, y, 0), (0.4, 0.4, 3.0), (150, 3)) for x, y in rng.uniform(-20, 20, (30, 2))]
    )
    other = np.concatenate(
        [rng.normal((x, y, 0), (0.4, 0.4, 3.0), (150, 3)) for x, y in rng.uniform(-20, 20, (30, 2))]
    )
    entries = []
    for i, pts in enumerate([other, place]):
        np.save(tmp_path / f"c{i}.npy", pts.astype(np.float32))
        entries.append(Entry(id=f"e{i}", source="aerial", path=str(tmp_path / f"c{i}.npy")))
    d, _ = make(2)
    stored = PlaceDatabase.create(
        tmp_path / "new", DIM, MODEL, d, entries, rerank=rerank_points(entries)
    )
    old = PlaceDatabase.create(tmp_path / "old", DIM, MODEL, d, entries)
    assert stored.rerank_points(1, RerankConfig().voxel) is not None
    assert old.rerank_points(1, RerankConfig().voxel) is None
    query = place[rng.permutation(len(place))[:2000]] + (0.5, -0.3, 0.0)
    results = []
    for db in (stored, old):
        loc = Localizer.__new__(Localizer)  # no model needed to re-rank
        loc.db, loc.rerank_config, loc._prepared = db, None, OrderedDict()
        results.append(loc._verify(query, "scan", [0, 1]))
    for a, b in zip(*results, strict=True):
        assert a.fitness == pytest.approx(b.fitness, abs=1e-3)
        np.testing.assert_allclose(a.pose, b.pose, atol=1e-3)
    assert results[0][1].fitness > 0.9 > results[0][0].fitness
