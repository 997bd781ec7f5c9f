"""Trainer: schedule, configs, exact resume after a crash, best checkpoint, bad input."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from place_bench import write_place_benchmark

from hotformerloc.config import ConfigError
from hotformerloc.data import DatasetError
from hotformerloc.model.checkpoint import CheckpointError, load_checkpoint
from hotformerloc.train.config import TrainConfig, load_train_config, train_presets
from hotformerloc.train.trainer import Trainer

SMALL = {
    "model_overrides": {"grad_checkpoint": False, "input_scale": 1.0 / 30.0},
    "data": {"pos_radius": 15.0, "neg_radius": 60.0},
    "batch_size": 8,
    "batch_split_size": 4,
    "val_batch_size": 8,
    "epochs": 3,
    "lr": 0.001,
    "warmup_epochs": 1,
    "milestones": [1],
    "eval_every": 1,
    "seed": 3,
}


def config(root: Path, **over: object) -> TrainConfig:
    raw = {**SMALL, **over}
    raw["data"] = {**SMALL["data"], "root": str(root)}  # type: ignore[dict-item]
    from hotformerloc.config import from_dict

    return from_dict(TrainConfig, raw)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_place_benchmark(tmp_path_factory.mktemp("bench"))


def test_lr_schedule_warmup_then_relative_milestones() -> None:
    cfg = TrainConfig(lr=1.0, warmup_epochs=5, milestones=[50], gamma=0.1)
    assert [cfg.lr_factor(e) for e in range(6)] == [1e-3, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert cfg.lr_factor(54) == 1.0 and cfg.lr_factor(55) == pytest.approx(0.1)  # 5 + 50


def test_presets_load_and_bad_configs(tmp_path: Path) -> None:
    assert {"demo", "oxford", "cs-campus3d", "cs-wild-places", "wild-places"} <= set(
        train_presets()
    )
    for name in train_presets():
        load_train_config(name)
    cs = load_train_config("cs-wild-places")
    assert (cs.lr, cs.epochs, cs.milestones, cs.loss.mesa) == (8e-4, 100, [50], 1.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nloss: {name: truncated_smooth_ap, tau1: 0.01}\n")
    with pytest.raises(ConfigError, match=r"unknown config key loss\.tau1"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="neither a config file nor a preset"):
        load_train_config("no-such-preset")
    with pytest.raises(ConfigError, match="batch_size"):
        load_train_config("demo", {"batch_size": 7})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


class Crash(Exception):
    pass


def test_resume_after_crash_gives_identical_weights(bench: Path, tmp_path: Path) -> None:
    cfg = config(bench)
    full = Trainer(cfg, tmp_path / "full").fit()
    assert full.last_epoch == 3 and len(full.log) == 3

    def crash(epoch: int, batch: int, total: int, stats: dict[str, float]) -> None:
        if epoch == 1 and batch == 1:  # mid epoch 2: epoch 1's state is on disk
            raise Crash

    with pytest.raises(Crash):
        Trainer(cfg, tmp_path / "crashed", progress=crash).fit()
    assert not (tmp_path / "crashed" / "done.json").exists()
    resumed = Trainer(cfg, tmp_path / "crashed").fit(resume=True)
    assert resumed.epochs_run == 2 and resumed.last_epoch == 3
    a = _weights(tmp_path / "full" / "last.safetensors")
    b = _weights(tmp_path / "crashed" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in full.log] == [r["loss"] for r in resumed.log]
    assert (tmp_path / "crashed" / "log.csv").read_text().count("\n") == 4  # header + 3


def test_weights_ema_is_the_reference_average_and_resumes_exactly(
    bench: Path, tmp_path: Path
) -> None:
    cfg = config(bench, weights_ema=0.9, epochs=2)
    trainer = Trainer(cfg, tmp_path / "full", validate=lambda m: {"ar1": 1.0})
    ref = {k: v.clone().double() for k, v in trainer.model.state_dict().items()}
    steps = 0

    def track(epoch: int, batch: int, total: int, stats: dict[str, float]) -> None:
        nonlocal steps
        steps += 1
        d = min(0.9, (1 + steps) / (10 + steps))
        for k, v in trainer.model.state_dict().items():
            ref[k] = d * ref[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()

    trainer.progress = track
    trainer.fit()
    saved = _weights(tmp_path / "full" / "last.safetensors")
    raw = trainer.model.state_dict()
    assert any(not torch.allclose(saved[k], raw[k]) for k in saved)  # not the raw weights
    for k, v in saved.items():
        torch.testing.assert_close(v.double(), ref[k], rtol=1e-5, atol=1e-6, msg=k)

    def crash(epoch: int, batch: int, total: int, stats: dict[str, float]) -> None:
        if epoch == 1 and batch == 1:
            raise Crash

    with pytest.raises(Crash):
        Trainer(cfg, tmp_path / "crashed", validate=lambda m: {"ar1": 1.0}, progress=crash).fit()
    Trainer(cfg, tmp_path / "crashed", validate=lambda m: {"ar1": 1.0}).fit(resume=True)
    resumed = _weights(tmp_path / "crashed" / "last.safetensors")
    for k in saved:
        assert torch.equal(saved[k], resumed[k]), k


def test_best_checkpoint_by_validation_ar1(bench: Path, tmp_path: Path) -> None:
    scores = iter([10.0, 30.0, 20.0])
    res = Trainer(config(bench), tmp_path / "run", validate=lambda m: {"ar1": next(scores)}).fit()
    assert (res.best_epoch, res.best_score) == (2, 30.0)
    assert load_checkpoint(tmp_path / "run" / "best.safetensors").extra["epoch"] == 2
    last = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert last.extra["epoch"] == 3
    # the input pipeline travels in the model config, not in a side channel
    assert last.config["input_scale"] == 1.0 / 30.0 and "data_scale" not in last.extra


def test_existing_run_resume_mismatch_and_corrupt_state(bench: Path, tmp_path: Path) -> None:
    cfg = config(bench, epochs=1)
    out = tmp_path / "run"
    Trainer(cfg, out, validate=lambda m: {"ar1": 1.0}).fit()
    before = (out / "last.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg, out).fit()
    with pytest.raises(ValueError, match="another config"):
        Trainer(config(bench, epochs=2), out).fit(resume=True)
    state = out / "resume.safetensors"
    raw = bytearray(state.read_bytes())
    raw[-10] ^= 0xFF
    state.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(cfg, out).fit(resume=True)
    assert (out / "last.safetensors").read_bytes() == before  # nothing overwritten


def test_dataset_with_missing_files_is_a_clear_error(bench: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(bench, root)
    next((root / "w" / "ground_01" / "clouds").glob("*.pcd")).unlink()
    with pytest.raises(DatasetError, match="missing"):
        Trainer(config(root), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fit_local_two_processes_matches_single_process(bench: Path, tmp_path: Path) -> None:
    from hotformerloc.train.trainer import fit_local

    cfg = config(bench, epochs=2, model_overrides={"grad_checkpoint": False, "drop_path": 0.0})
    single = fit_local(cfg, tmp_path / "one", nproc=1)
    double = fit_local(cfg, tmp_path / "two", nproc=2)
    assert double.last_epoch == single.last_epoch == 2
    assert [r["loss"] for r in double.log] == pytest.approx([r["loss"] for r in single.log])
    a = _weights(tmp_path / "one" / "last.safetensors")
    b = _weights(tmp_path / "two" / "last.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    with pytest.raises(FileExistsError):
        fit_local(cfg, tmp_path / "two", nproc=2)


def test_cosine_schedule_after_warmup() -> None:
    cfg = TrainConfig(epochs=11, warmup_epochs=1, schedule="cosine", min_lr_factor=0.1)
    factors = [cfg.lr_factor(e) for e in range(11)]
    assert factors[0] == pytest.approx(1e-3) and factors[1] == pytest.approx(1.0)
    assert factors[4] == pytest.approx(0.775) and factors[10] == pytest.approx(0.1)  # t = 1/3, 1
    assert all(a >= b for a, b in itertools.pairwise(factors[1:]))


def test_corpus_of_folders_validation_worlds_splits_and_init(tmp_path: Path) -> None:
    """Several benchmark folders train as one (worlds kept apart), validation scores the
    separate validation worlds, ``train_splits`` widens the training rows, and
    ``init_weights`` starts from a checkpoint's weights."""
    from hotformerloc.data import Benchmark
    from hotformerloc.eval.benchmark import evaluate_model
    from hotformerloc.model.checkpoint import load_model

    a = write_place_benchmark(tmp_path / "corpus" / "a", places=4)
    b = write_place_benchmark(tmp_path / "corpus" / "b", places=4)
    val = write_place_benchmark(tmp_path / "val", places=4)
    both = Benchmark.load([a, b])
    assert both.worlds == ["a/w", "b/w"] and len(both) == 2 * len(Benchmark.load(a))
    assert both.path(0).is_file() and both.path(len(both) - 1).is_file()
    with pytest.raises(DatasetError, match="given twice"):
        Benchmark.load([a, a])

    cfg = config(a, epochs=1, eval_every=1)
    cfg = replace(cfg, data=replace(cfg.data, root=[str(a), str(b)], val_root=str(val)))
    trainer = Trainer(cfg, tmp_path / "run", validate=None)
    assert len(trainer.train_index) == len(both.select(split="train"))
    wide = Trainer(
        replace(cfg, data=replace(cfg.data, train_splits=["train", "test"])), tmp_path / "w"
    )
    assert len(wide.train_index) == len(both.select(split=["train", "test"]))
    res = trainer.fit()
    model, _ = load_model(tmp_path / "run" / "last.safetensors")
    want = evaluate_model(model, Benchmark.load(val), batch_size=cfg.val_batch_size).summary()
    assert res.log[-1]["val_ar1"] == pytest.approx(want["ar1"], abs=1e-4)

    init = replace(cfg, init_weights=str(tmp_path / "run" / "last.safetensors"), epochs=1)
    started = Trainer(init, tmp_path / "init")
    for k, v in _weights(tmp_path / "run" / "last.safetensors").items():
        assert torch.equal(started.model.state_dict()[k], v)
    with pytest.raises(ConfigError, match="train_splits"):
        replace(cfg.data, train_splits=["validation"])


def test_co_oriented_training_and_query_view_validation(bench: Path, tmp_path: Path) -> None:
    """``data.align_yaw`` feeds every cloud turned to the world's orientation (the views of a
    place then coincide), and validation searches with the model's ``query_views``."""
    from hotformerloc.data import Benchmark
    from hotformerloc.eval.benchmark import evaluate_model
    from hotformerloc.model.checkpoint import load_model

    cfg = config(bench, epochs=1)
    cfg = replace(
        cfg,
        data=replace(cfg.data, align_yaw=True),
        model_overrides={**cfg.model_overrides, "query_views": 3},
    )
    trainer = Trainer(cfg, tmp_path / "run")
    data = trainer.loader.dataset.dataset  # the SubmapDataset behind the index wrapper
    b = Benchmark.load(bench)
    place = {}
    for j, i in enumerate(trainer.train_index.tolist()):
        place.setdefault(round(b.xy[i, 0] / 100), []).append(data[j].numpy())
    for views in place.values():
        assert len(views) == 3
        for v in views[1:]:  # co-oriented: the same layout's bounding box
            np.testing.assert_allclose(v[:, :2].min(0), views[0][:, :2].min(0), atol=0.6)
            np.testing.assert_allclose(v[:, :2].max(0), views[0][:, :2].max(0), atol=0.6)
    res = trainer.fit()
    model, _ = load_model(tmp_path / "run" / "last.safetensors")
    assert model.config.query_views == 3
    want = evaluate_model(model, b, batch_size=cfg.val_batch_size).summary()
    assert res.log[-1]["val_ar1"] == pytest.approx(want["ar1"], abs=1e-4)
    one = evaluate_model(model, b, batch_size=cfg.val_batch_size, query_views=1).summary()
    assert one != want


def test_spawned_rank_exits_1_on_error_and_0_on_success(bench: Path, tmp_path: Path) -> None:
    """A spawned rank ends with ``os._exit``: its exit code still tells failure from success."""
    import torch.multiprocessing as mp

    from hotformerloc.train.trainer import _rank_main

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "WORLD_SIZE": "1"}
    ctx = mp.get_context("spawn")
    bad = config(tmp_path / "missing")  # no benchmark there: the Trainer raises
    good = config(bench, epochs=1)
    procs = [
        ctx.Process(target=_rank_main, args=(1, env, 1, cfg, str(tmp_path / name), False))
        for cfg, name in ((bad, "bad"), (good, "good"))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [1, 0]
    assert (tmp_path / "good" / "last.safetensors").is_file()
