"""The command line: version, info, generate; user errors are one line and exit code 2."""

import json
import os
import platform
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
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert data["malloc_retains_freed_memory"] is glibc


def test_info_leaves_a_user_malloc_setting_alone():
    r = subprocess.run(
        [sys.executable, "-m", "hotformerloc.cli.main", "info", "--json"],
        env={**ENV, "MALLOC_MMAP_THRESHOLD_": "131072"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["malloc_retains_freed_memory"] is False


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


# ------------------------------------------------------------- one name, one meaning
def _options() -> dict[str, list[tuple[str, object]]]:
    """Every option string of every command -> [(command path, click option)]."""
    import typer

    from hotformerloc.cli.main import app

    found: dict[str, list[tuple[str, object]]] = {}

    def walk(cmd: object, path: str) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())
        for p in getattr(cmd, "params", []):
            if getattr(p, "param_type_name", "") == "option":
                for o in [*p.opts, *p.secondary_opts]:
                    found.setdefault(o, []).append((path, p))

    walk(typer.main.get_command(app), "")
    return found


def _base(annotation: object) -> object:
    """The value type of an option annotation: ``int | None`` and ``list[int]`` -> int
    (a repeatable or optional option still means the same thing)."""
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list or (len(args) == 1 and args[0] is not annotation):
        return _base(args[0])
    return annotation


#: Spellings of one concept: at most one of each group may be visible in the whole CLI.
SYNONYMS = [
    {"--batch", "--batch-size", "--bs"},
    {"--preset", "--config"},
    {"--rerank-top", "--rerank-k"},
    {"--out", "--output", "--out-dir"},
    {"--json", "--as-json"},
    {"--model", "--arch", "--weights"},
    {"--workers", "--jobs", "--num-workers"},
    {"--set", "--override"},
]


def test_one_name_per_concept_across_commands():
    visible = {o for o, uses in _options().items() if any(not p.hidden for _, p in uses)}
    for group in SYNONYMS:
        assert len(group & visible) <= 1, f"one concept, several visible names: {group & visible}"


def test_an_option_means_the_same_in_every_command():
    """Same value kind (flag, value, repeatable) and type wherever a visible option name
    appears; the options defined once in ``cli/options.py`` have one help text."""
    from hotformerloc.cli import options

    shared = {
        "--device": options.DEVICE_HELP,
        "--json": options.JSON_HELP,
        "--set": options.SET_HELP,
        "--batch-size": options.BATCH_SIZE_HELP,
        "--workers": options.WORKERS_HELP,
        "--rerank-top": options.RERANK_TOP_HELP,
    }
    problems = []
    for name, uses in sorted(_options().items()):
        uses = [(c, p) for c, p in uses if not p.hidden]
        kinds = {(p.is_flag, _base(p.type_descriptor.annotation)) for _, p in uses}
        if len(kinds) > 1:
            types = sorted((c, str(_base(p.type_descriptor.annotation))) for c, p in uses)
            problems.append(f"{name}: {types}")
        if name in shared:
            helps = {c: p.help for c, p in uses if p.help != shared[name]}
            if helps:
                problems.append(f"{name}: own help text in {sorted(helps)}")
    assert not problems, "\n".join(problems)
    assert _options()["--device"], "the walk found the options"
    commands = {c for uses in _options().values() for c, _ in uses}
    assert {"eval", "db build", "dataset prepare", "generate", "train"} <= commands


def test_old_spellings_still_work(tmp_path):
    """Hidden aliases (one release): generate --preset, eval --rerank, db --batch."""
    r = run("generate", "--preset", "huge", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown preset" in r.stderr
    r = run("generate", "-c", "huge", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown preset" in r.stderr
    r = run("generate", "--help")
    assert "--preset" not in r.stdout and "--config" in r.stdout
