"""Evaluation report on a tiny on-disk benchmark with descriptors of known quality."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hotformerloc.data import Benchmark
from hotformerloc.eval import DescriptorRetriever
from hotformerloc.eval import report as rep
from hotformerloc.eval.benchmark import BenchmarkResult, evaluate_retriever
from hotformerloc.eval.report import MethodEntry, format_table, query_colours, query_outcomes
from hotformerloc.io import PointCloud, write_pointcloud

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEADER = "sequence,timestamp,x,y,source,split\n"
WORLDS = ("alpha", "beta")
# Places 100 m apart: each query has exactly one true neighbour (g2g 15 m, g2a 30 m).
PLACES = [(0.0, 0.0), (100.0, 0.0), (200.0, 0.0), (300.0, 0.0), (600.0, 0.0)]
# sequence -> (source, split, offset, places). ground_a's place 4 has no neighbour
# anywhere: a skipped query (first_hit -1) in both protocols.
SEQS = {
    "aerial": ("aerial", "train", (0.0, 0.0), [0, 1, 2, 3]),
    "ground_a": ("ground", "test", (1.0, 1.0), [0, 1, 2, 3, 4]),
    "ground_b": ("ground", "test", (-1.0, 2.0), [0, 1, 2, 3]),
}


def write_benchmark(root: Path) -> Path:
    """Two worlds (alpha, beta), each: aerial + ground_a + ground_b; 30 points per cloud."""
    rng = np.random.default_rng(0)
    for world in WORLDS:
        lines = [HEADER]
        for seq, (source, split, (dx, dy), places) in SEQS.items():
            for p in places:
                ts = float(p + 1)
                xyz = rng.uniform(-20, 20, (30, 3)).astype(np.float32)
                path = root / world / seq / "clouds" / f"{ts:.6f}.pcd"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_pointcloud(path, PointCloud(xyz, source=source), format="pcd")
                x, y = PLACES[p][0] + dx, PLACES[p][1] + dy
                lines.append(f"{seq},{ts:.6f},{x},{y},{source},{split}\n")
        (root / world / "split.csv").write_text("".join(lines))
    return root


def place_of(bench: Benchmark) -> np.ndarray:
    """(N,) place index of every submap (timestamp - 1)."""
    return (bench.timestamp - 1).astype(int)


def one_hot(idx: np.ndarray) -> np.ndarray:
    return np.eye(len(PLACES))[idx]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    bench = Benchmark.load(write_benchmark(tmp_path_factory.mktemp("bench")))
    place = place_of(bench)
    perfect = DescriptorRetriever(one_hot(place))
    # ground_a's descriptor names the next place: its queries are all wrong at top-1.
    shifted_place = np.where(bench.sequence == "ground_a", (place + 1) % len(PLACES), place)
    shifted = DescriptorRetriever(one_hot(shifted_place))
    methods = [
        MethodEntry("perfect <model>", evaluate_retriever(perfect, bench), perfect),
        MethodEntry("shifted & co", evaluate_retriever(shifted, bench), shifted),
    ]
    return bench, methods


def test_results_are_as_designed(setup) -> None:
    _, (perfect, shifted) = setup
    assert perfect.result.summary()["g2a_ar1"] == 100.0
    assert perfect.result.summary()["g2g_ar1"] == 100.0
    assert shifted.result.summary()["g2a_ar1"] == 50.0
    assert shifted.result.summary()["g2g_ar1"] == 0.0
    # the pair keys are (query run, database run)
    assert set(shifted.result.g2a.locations["alpha"].pairs) == {
        ("ground_a", "aerial"),
        ("ground_b", "aerial"),
    }


def test_query_outcomes_hand_known(setup) -> None:
    bench, (perfect, shifted) = setup
    pos, correct, world = query_outcomes(shifted.result, bench, "g2a")
    # per world: ground_a places 0-3 (place 4 skipped, no neighbour) wrong, ground_b right
    exp_pos = [[x + 1, y + 1] for x, y in PLACES[:4]] + [[x - 1, y + 2] for x, y in PLACES[:4]]
    np.testing.assert_array_equal(pos, np.array(exp_pos * 2))
    assert correct.tolist() == ([False] * 4 + [True] * 4) * 2
    assert world.tolist() == ["alpha"] * 8 + ["beta"] * 8
    # g2g: shifted is wrong both ways
    pos, correct, world = query_outcomes(shifted.result, bench, "g2g")
    assert pos.shape == (16, 2) and not correct.any()
    # the perfect method's query map is all green
    for protocol in ("g2a", "g2g"):
        _, correct, _ = query_outcomes(perfect.result, bench, protocol)
        assert correct.size == 16 and correct.all()
        assert set(query_colours(correct)) == {rep.CORRECT_COLOUR}
    assert query_colours(np.array([True, False])) == [rep.CORRECT_COLOUR, rep.WRONG_COLOUR]
    with pytest.raises(ValueError, match="unknown protocol"):
        query_outcomes(perfect.result, bench, "a2g")
    with pytest.raises(ValueError, match="no g2a"):
        query_outcomes(BenchmarkResult(None, None), bench, "g2a")


def test_write_report(setup, tmp_path: Path) -> None:
    bench, methods = setup
    empty = MethodEntry("nothing", BenchmarkResult(None, None))  # summary ar1 = NaN
    log = [
        {"epoch": 1, "loss": 2.0, "val_ar1": 10.0},
        {"epoch": 2, "loss": float("nan"), "val_g2a_ar1": 30.0},
        {"epoch": 3, "loss": 1.0, "val_ar1": None},
    ]
    extra = {"embed_seconds": 1.25, "bad": float("nan"), "config": {"k": 25, "np": np.int64(3)}}
    out = tmp_path / "out" / "nested"
    path = rep.write_report(
        out, bench, [*methods, empty], title="Report <A&B>", training_log=log, extra=extra
    )
    assert path == out / "report.html" and path.is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.json", "report.html", *rep.FIGURES]
    )

    data = json.loads((out / "results.json").read_text())
    assert data["title"] == "Report <A&B>"
    for m in methods:
        assert data["methods"][m.name]["summary"] == m.result.summary()
    assert data["methods"]["nothing"]["summary"] == {"ar1": None}  # NaN -> null
    assert data["extra"] == {"embed_seconds": 1.25, "bad": None, "config": {"k": 25, "np": 3}}

    doc = path.read_text(encoding="utf-8")
    assert doc.startswith("<!DOCTYPE html>")
    assert "<h1>Report &lt;A&amp;B&gt;</h1>" in doc
    assert "perfect &lt;model&gt;" in doc and "shifted &amp; co" in doc and "nothing" in doc
    assert "<model>" not in doc and "<script" not in doc and "http" not in doc
    for m in methods:
        s = m.result.summary()
        assert f'<td class="num">{s["g2a_ar1"]:.1f}</td>' in doc
        assert f'<td class="num">{s["g2g_ar1"]:.1f}</td>' in doc
    assert "embed_seconds" in doc and "1.25" in doc
    for name in rep.FIGURES:
        png = (out / name).read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in doc

    table = format_table([*methods, empty])
    lines = table.splitlines()
    assert len(lines) == 5 and "g2a AR@1" in lines[0]
    assert "| perfect <model> | 100.0" in lines[2] and "50.0" in lines[3]
    assert lines[4].count("—") == 6


def test_optional_figures_and_rerun(setup, tmp_path: Path) -> None:
    bench, methods = setup
    stale = tmp_path / "training.png"
    stale.write_bytes(b"old")
    no_retriever = [MethodEntry(m.name, m.result) for m in methods]
    rep.write_report(tmp_path, bench, no_retriever, title="t")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["query_map.png", "recall_at_n.png", "report.html", "results.json"]
    with pytest.raises(ValueError, match="unique"):
        rep.write_report(tmp_path, bench, [methods[0], methods[0]], title="t")
    with pytest.raises(ValueError, match="at least one"):
        rep.write_report(tmp_path, bench, [], title="t")


def test_render_failure_leaves_no_report(
    setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench, methods = setup
    (tmp_path / "report.html").write_text("stale")

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(rep, "plot_query_map", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        rep.write_report(tmp_path, bench, methods, title="t")
    assert not (tmp_path / "report.html").exists()
    assert json.loads((tmp_path / "results.json").read_text())["title"] == "t"
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())


def test_pick_examples_mixes_deterministically() -> None:
    correct = np.array([True] * 6 + [False] * 2)
    a = rep._pick_examples(correct, 4, seed=3)
    assert a.tolist() == rep._pick_examples(correct, 4, seed=3).tolist()
    assert correct[a].tolist() == [True, False, True, False]
    assert correct[rep._pick_examples(correct, 6, 0)].sum() == 4  # failures run out
    assert len(set(rep._pick_examples(correct, 20, 0).tolist())) == 8
    assert rep._pick_examples(np.zeros(0, bool), 4, 0).size == 0


def test_plot_training_skips_missing_values() -> None:
    assert rep.plot_training(None) is None and rep.plot_training([]) is None
    assert rep.plot_training([{"epoch": 1, "loss": math.nan}]) is None
    fig = rep.plot_training([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}])
    assert fig is not None and len(fig.axes) == 2
