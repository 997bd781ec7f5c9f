"""The demo (``hotformerloc.pipelines.demo.run_demo``, ``hotformerloc demo``) on a small
benchmark with temporary pretrained weights (a co-oriented model: ``query_views`` 2): every
number it reports is recomputed independently here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_cli as cli
from hotformerloc.baselines import ScanContextConfig, ScanContextRetriever
from hotformerloc.config import from_dict, to_dict
from hotformerloc.data import Benchmark
from hotformerloc.eval import DescriptorRetriever, QueryViewRetriever
from hotformerloc.eval.benchmark import (
    embed_benchmark,
    embed_query_views,
    evaluate_retriever,
    query_rows,
)
from hotformerloc.index import PlaceDatabase, read_poses_csv
from hotformerloc.index.rerank import RerankRetriever
from hotformerloc.model import registry
from hotformerloc.model.checkpoint import save_checkpoint
from hotformerloc.model.registry import create_model, register_pretrained
from hotformerloc.pipelines.demo import (
    RESERVED_SEEDS,
    RESULTS_FILE,
    DemoError,
    DemoResult,
    load_result,
    run_demo,
)
from hotformerloc.synth.config import GeneratorConfig

NAME = "hotformerloc-tiny.synth"
SEED = 11
YAW_VIEWS = 2
TOP = 3
LOCALIZE = 3
#: One small forest, two traversals: generates in a few seconds.
SMALL = {
    "ground": {"spacing": 15.0, "window": 2.0, "scans": 2, "submap": {"min_points": 200}},
    "aerial": {
        "grid": 25.0,
        "sensor": {"pulse_density": 0.6, "max_returns": 2},
        "submap": {"min_points": 200},
    },
    "split": {"regions": 1, "region_size": 60.0, "buffer": 20.0},
    "worlds": [
        {
            "name": "forest",
            "kind": "forest",
            "params": {
                "size_x": 150.0,
                "size_y": 150.0,
                "route_length": 250.0,
                "route_margin": 30.0,
            },
            "traversals": [
                {"name": "ground_a", "sensor": {"beams": 16, "columns": 360}},
                {
                    "name": "ground_b",
                    "reverse": True,
                    "lateral_offset": 2.0,
                    "sensor": {"beams": 32, "columns": 360},
                    "epoch": {"leaf_off": True, "seed": 5},
                },
            ],
        }
    ],
}


def small_config() -> GeneratorConfig:
    return from_dict(GeneratorConfig, SMALL)


def register_weights(mp: pytest.MonkeyPatch, folder: Path) -> tuple[torch.nn.Module, str]:
    """An empty pretrained table and weights folder, then ``NAME``: seeded tiny weights."""
    mp.setattr(registry, "_PRETRAINED", {})
    mp.setattr(registry, "WEIGHTS_DIR", folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(5)
    model = create_model("hotformerloc-tiny", input_scale=1.0 / 30.0, query_views=YAW_VIEWS)
    file = f"{NAME}.safetensors"
    sha = save_checkpoint(folder / file, model, "hotformerloc-tiny", to_dict(model.config))
    register_pretrained(NAME, file, sha, "seeded test weights")
    return model.eval(), sha


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(result, run folder, the registered model, its file's SHA-256) of one demo run."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        model, sha = register_weights(mp, root / "weights")
        res = run_demo(
            root / "run",
            seed=SEED,
            workers=1,
            rerank_top=TOP,
            localize=LOCALIZE,
            config=small_config(),
        )
        yield res, root / "run", model, sha


def test_every_method_equals_the_library_evaluation(demo):
    res, out, model, sha = demo
    bench = Benchmark.load(out / "benchmark")
    assert [m.kind for m in res.methods] == ["model", "yaw_views", "rerank", "scancontext"]
    desc = embed_benchmark(model, bench, None, 64, 0, 1)
    one = DescriptorRetriever(desc)
    rows = query_rows(bench)
    yaw = QueryViewRetriever(desc, rows, embed_query_views(model, bench, rows, YAW_VIEWS, 64))
    rr = RerankRetriever(yaw, bench.load_cloud, top_k=TOP)
    clouds = [bench.load_cloud(i) for i in range(len(bench))]
    sc = ScanContextRetriever.from_clouds(
        clouds, ScanContextConfig(max_radius=30.0, height_reference="min")
    )
    expected = {
        "model": evaluate_retriever(one, bench).summary(),
        "yaw_views": evaluate_retriever(yaw, bench).summary(),
        "rerank": evaluate_retriever(rr, bench).summary(),
        "scancontext": evaluate_retriever(sc, bench).summary(),
    }
    for kind, summary in expected.items():
        assert dict(res.method(kind).metrics) == summary, kind
        assert {"g2g_ar1", "g2a_ar1"} <= set(summary)
    assert res.method("rerank").name == f"{NAME}, {YAW_VIEWS} query views + re-ranking top {TOP}"
    assert res.yaw_views == YAW_VIEWS  # the model's own query views
    assert res.model == NAME and res.model_name == "hotformerloc-tiny"
    assert res.weights_sha256 == sha
    report = json.loads((out / "report" / "results.json").read_text())
    assert list(report["methods"]) == [m.name for m in res.methods]
    assert Path(res.report).is_file() and "training" not in Path(res.report).read_text().lower()
    assert "| Method" in res.table() and "Scan Context" in res.table()


def test_localisation_rows_match_the_ground_truth(demo):
    res, out, _, _ = demo
    bench = Benchmark.load(out / "benchmark")
    tests = {
        f"{bench.world[i]}/{bench.sequence[i]}/{bench.timestamp[i]:.6f}"
        for i in bench.select(source="ground", split="test")
    }
    rows = res.localization
    assert len(rows) == LOCALIZE and len({r.query for r in rows}) == LOCALIZE
    assert {r.query for r in rows} <= tests
    db = PlaceDatabase.open(res.database)
    assert set(db.sources.tolist()) == {"aerial"}
    assert len(db.ids) == len(bench.select(source="aerial"))
    for r in rows:
        world, seq, ts = r.query.split("/")
        true = read_poses_csv(out / "benchmark" / world / seq / "poses.csv")[round(float(ts) * 1e6)]
        np.testing.assert_array_equal(np.array(r.true_pose), true)
        est = np.array(r.estimated_pose)
        assert est.shape == (4, 4) and np.allclose(est[3], [0, 0, 0, 1])
        trans = float(np.linalg.norm(est[:3, 3] - true[:3, 3]))
        c = (np.trace(est[:3, :3].T @ true[:3, :3]) - 1) / 2
        rot = math.degrees(math.acos(float(np.clip(c, -1, 1))))
        yaw = math.degrees(math.atan2(est[1, 0], est[0, 0]) - math.atan2(true[1, 0], true[0, 0]))
        yaw = abs((yaw + 180) % 360 - 180)
        assert r.translation_error_m == pytest.approx(trans, abs=1e-9)
        assert r.rotation_error_deg == pytest.approx(rot, abs=1e-6)
        assert r.yaw_error_deg == pytest.approx(yaw, abs=1e-6)
        assert r.within == (trans <= 5.0 and rot <= 5.0)
        place = db.entry(db.row(r.top_place))
        assert place.world == world and place.source == "aerial"
        assert r.place_distance_m == pytest.approx(
            float(np.linalg.norm(place.pose[:2, 3] - true[:2, 3]))
        )
        assert 0.0 <= r.fitness <= 1.0 and r.descriptor_distance >= 0.0


def test_results_json_round_trips(demo):
    res, out, _, sha = demo
    data = json.loads((out / RESULTS_FILE).read_text())
    assert data == res.to_dict()
    assert load_result(out) == res == DemoResult.from_dict(data)
    assert (data["model"], data["seed"], data["weights_sha256"]) == (NAME, SEED, sha)
    t = res.timings
    assert t.total_s >= t.generate_s + t.embed_s + t.rerank_s + t.scancontext_s > 0


@pytest.mark.parametrize("seed", sorted(RESERVED_SEEDS))
def test_training_and_validation_seeds_are_refused(tmp_path, seed):
    with pytest.raises(DemoError, match=f"seed {seed} .*pre-training"):
        run_demo(tmp_path / "run", seed=seed, config=small_config())
    assert not (tmp_path / "run").exists()


def test_cli_without_registered_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_PRETRAINED", {})
    code, out, err = cli("demo", "--out", str(tmp_path / "run"))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert NAME in lines[0] and "hotformerloc models --pretrained" in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_refuses_a_training_seed(tmp_path, monkeypatch):
    register_weights(monkeypatch, tmp_path / "weights")
    code, _, err = cli("demo", "--out", str(tmp_path / "run"), "--seed", "101")
    assert code == 2 and "seed 101" in err and len(err.strip().splitlines()) == 1
