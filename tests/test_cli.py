"""The command line: version, info, generate; user errors are one line and exit code 2."""

import json
import os
import subprocess
import sys

import pytest

from hotformerloc import __version__

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hotformerloc.cli.main", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"hotformerloc {__version__}"


def test_info_json_reports_versions_threads_device():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["torch"].startswith("2.13.0")
    assert data["device"] in ("cpu", "cuda")
    assert data["torch_threads"] >= 1
    assert data["omp_wait_policy"] == "PASSIVE"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--preset", "huge", "--out", "{tmp}/x"], "unknown preset"),
        (["generate", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/x"], "not found"),
        (["generate", "--config", "{tmp}/bad.yaml", "--out", "{tmp}/x"], "spacingg"),
        (["generate", "--config", "{tmp}/bad2.yaml", "--out", "{tmp}/x"], "worlds[0].kind"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("ground: {spacingg: 2}\n")
    (tmp_path / "bad2.yaml").write_text("worlds: [{name: w, kind: jungle}]\n")
    r = run(*(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists(), "nothing is written for a bad config"


def test_generate_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    r = run("generate", "--preset", "demo", "--out", str(tmp_path))
    assert r.returncode == 2
    assert "not empty" in r.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_usage_error_exit_code():
    r = run("generate")
    assert r.returncode == 2
    assert "--out" in r.stderr
