"""bf16 inference only where the device computes it natively; fp32 with one warning line
elsewhere (forced here by faking the CPU's flags)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cli_helpers import run_cli
from hotformerloc.index import load_embedder
from hotformerloc.io import PointCloud, write_pointcloud
from hotformerloc.model import precision as P

CPU = torch.device("cpu")


def fake_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path, flags: str) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(P, "CPUINFO", info)
    P.cpu_flags.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_flags():
    P.cpu_flags.cache_clear()
    yield
    P.cpu_flags.cache_clear()


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 fma", False),
        ("fpu avx512f avx512bw", False),  # AVX-512 without its bf16 extension
        ("fpu avx512f avx512_bf16", True),
        ("fpu amx_tile amx_bf16", True),
    ],
)
def test_native_bf16_follows_the_cpu_flags(monkeypatch, tmp_path, flags: str, native: bool):
    fake_cpuinfo(monkeypatch, tmp_path, flags)
    assert P.native_bf16(CPU) is native
    choice = P.resolve_precision("bf16", CPU)
    assert choice.dtype == (torch.bfloat16 if native else torch.float32)
    assert (choice.note is None) is native
    assert choice.name == ("bf16" if native else "fp32")


def test_fp32_is_always_granted_and_unknown_names_are_refused(monkeypatch, tmp_path):
    fake_cpuinfo(monkeypatch, tmp_path, "avx512_bf16")
    assert P.resolve_precision("fp32", CPU) == P.PrecisionChoice(torch.float32, "fp32")
    with pytest.raises(P.PrecisionError, match="'fp16': not one of fp32, bf16"):
        P.resolve_precision("fp16", CPU)
    monkeypatch.setattr(P, "CPUINFO", tmp_path / "missing")
    P.cpu_flags.cache_clear()
    assert P.cpu_flags() == frozenset() and not P.native_bf16(CPU)


def clouds(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        xyz = rng.uniform(-20, 20, (1200, 3)).astype(np.float32)
        xyz[:, 2] *= 0.2
        out.append(xyz)
    return out


def test_bf16_without_native_support_falls_back_to_fp32_with_one_warning(monkeypatch, tmp_path):
    fake_cpuinfo(monkeypatch, tmp_path, "avx2")
    ref = load_embedder("hotformerloc-tiny", "cpu").embed(clouds())
    with pytest.warns(P.PrecisionWarning, match="bf16 asked but this CPU has none") as caught:
        emb = load_embedder("hotformerloc-tiny", "cpu", "bf16")
    assert len(caught) == 1 and emb.precision.name == "fp32"
    np.testing.assert_array_equal(emb.embed(clouds()), ref)  # really fp32


def test_bf16_with_native_support_runs_in_bf16_after_the_cosine_check(monkeypatch, tmp_path):
    fake_cpuinfo(monkeypatch, tmp_path, "avx512_bf16")
    ref = load_embedder("hotformerloc-tiny", "cpu").embed(clouds())
    emb = load_embedder("hotformerloc-tiny", "cpu", "bf16")
    out = emb.embed(clouds())
    assert emb.precision.name == "bf16"
    cos = (out * ref).sum(1)  # unit rows
    assert cos.min() > P.MIN_BF16_COSINE and not np.array_equal(out, ref)


def test_bf16_that_strays_from_fp32_falls_back(monkeypatch, tmp_path):
    fake_cpuinfo(monkeypatch, tmp_path, "avx512_bf16")
    monkeypatch.setattr(P, "MIN_BF16_COSINE", 1.5)  # no bf16 descriptor can pass
    ref = load_embedder("hotformerloc-tiny", "cpu").embed(clouds())
    emb = load_embedder("hotformerloc-tiny", "cpu", "bf16")
    with pytest.warns(P.PrecisionWarning, match="to fp32 .*running in fp32"):
        out = emb.embed(clouds())
    assert emb.precision.name == "fp32"
    np.testing.assert_array_equal(out, ref)


def test_cli_prints_the_fallback_as_one_line(monkeypatch, tmp_path):
    fake_cpuinfo(monkeypatch, tmp_path, "avx2")
    files = []
    for i, xyz in enumerate(clouds(2)):
        files.append(tmp_path / f"s{i}.pcd")
        write_pointcloud(files[-1], PointCloud(xyz))
    args = ["embed", *files, "-m", "hotformerloc-tiny", "--device", "cpu", "-o"]
    code, _, err = run_cli(*args, tmp_path / "out", "--precision", "bf16")
    assert code == 0
    lines = [ln for ln in err.splitlines() if "bf16" in ln]
    assert lines == [
        "warning: bf16 asked but this CPU has none of avx512_bf16/amx_bf16/bf16: running "
        "in fp32 (faster here)"
    ]
    assert '"precision": "fp32"' in (tmp_path / "out" / "embed.json").read_text()
    code, _, err = run_cli(*args, tmp_path / "bad", "--precision", "fp16")
    assert code == 2 and err.strip() == "error: precision 'fp16': not one of fp32, bf16"
