"""The train / eval commands: a real kill mid-run then --resume, and bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from place_bench import write_place_benchmark

from hotformerloc.model.checkpoint import load_checkpoint

CLI = [sys.executable, "-m", "hotformerloc.cli.main"]
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


def write_config(path: Path, root: Path, epochs: int) -> Path:
    cfg = {
        "model_overrides": {"grad_checkpoint": False, "input_scale": 1.0 / 30.0},
        "data": {"root": str(root)},
        "batch_size": 8,
        "batch_split_size": 4,
        "epochs": epochs,
        "warmup_epochs": 0,
        "milestones": [2],
        "eval_every": 0,
        "seed": 5,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_place_benchmark(tmp_path_factory.mktemp("bench"))


def test_sigkill_mid_run_then_resume_equals_uninterrupted(bench: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", bench, epochs=4)
    assert run("train", "-c", str(cfg), "-o", str(tmp_path / "full")).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, "train", "-c", str(cfg), "-o", str(out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "resume.safetensors"
    deadline = time.monotonic() + 300
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if killed:
        assert not (out / "done.json").exists()
    res = run("train", "-c", str(cfg), "-o", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    a = load_checkpoint(tmp_path / "full" / "last.safetensors").state_dict
    b = load_checkpoint(out / "last.safetensors").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_bad_input_is_one_line_exit_2(bench: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", bench, epochs=1)
    res = run("train", "-c", str(cfg), "-o", str(tmp_path / "o"), "--set", "loss.tau1=0.1")
    assert res.returncode == 2 and "unknown config key loss.tau1" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("train", "-c", str(cfg), "-o", str(tmp_path / "o"), "--set", f"data.root={empty}")
    assert res.returncode == 2 and "split.csv" in res.stderr and "Traceback" not in res.stderr


def test_eval_errors(tmp_path: Path) -> None:
    root = write_place_benchmark(tmp_path / "noaerial", aerial_at_test=False, places=4)
    # ground queries exist, but no aerial submap (and no other ground place) within range
    res = run("eval", "-d", str(root), "--scancontext")
    assert res.returncode == 2 and "no query" in res.stderr.lower(), res.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    res = run("eval", "-d", str(root), "-m", str(bad))
    assert res.returncode == 2 and "bad.safetensors" in res.stderr
    assert "Traceback" not in res.stderr


def test_eval_rerank_scores_the_reranked_retriever(tmp_path: Path) -> None:
    import json

    from hotformerloc.config import to_dict
    from hotformerloc.data import Benchmark
    from hotformerloc.eval import DescriptorRetriever
    from hotformerloc.eval.benchmark import embed_benchmark, evaluate_retriever
    from hotformerloc.index.rerank import RerankRetriever
    from hotformerloc.model.checkpoint import load_model, save_checkpoint

    root = write_place_benchmark(tmp_path / "b", places=4)
    ckpt = tmp_path / "m.safetensors"
    net, _ = load_model("hotformerloc-tiny")
    save_checkpoint(ckpt, net, "hotformerloc-tiny", to_dict(net.config))
    res = run("eval", "-d", str(root), "-m", str(ckpt), "--rerank-top", "3", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    names = list(out)
    assert len(names) == 2 and names[1] == f"{names[0]} + re-ranking top 3"
    # the same numbers from the library: the model's retriever, re-ranked
    bench = Benchmark.load(root)
    model, _ = load_model(str(ckpt))
    base = DescriptorRetriever(embed_benchmark(model, bench))
    want = evaluate_retriever(RerankRetriever(base, bench.load_cloud, top_k=3), bench)
    assert out[names[1]] == json.loads(json.dumps(want.to_dict()))
    res = run("eval", "-d", str(root), "--scancontext", "--rerank", "3")  # old spelling
    assert res.returncode == 2 and "--model" in res.stderr
