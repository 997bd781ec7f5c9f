"""The package's stages import one way (``docs/architecture.md``) and without cycles.

Every ``import`` in the package is read from the source (module level, inside functions
and under ``TYPE_CHECKING`` alike): a module may import its own stage or an earlier one,
never a later one. Module-level imports must not form a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import hotformerloc

PACKAGE = Path(hotformerloc.__file__).resolve().parent

#: Stage of each top-level module or subpackage -> its rank (a module may import ranks <=).
STAGES: dict[str, int] = {
    "": 0,  # hotformerloc/__init__.py (version; lazy create_model)
    "errors": 0,
    "config": 0,
    "io": 1,
    "submaps": 1,
    "synth": 2,
    "octree": 2,
    "model": 3,
    "data": 4,
    "baselines": 4,
    "train": 5,
    "eval": 5,
    "index": 6,
    "pipelines": 7,
    "cli": 8,
}
#: Lazy re-exports that point forward on purpose: ``hotformerloc.create_model`` loads the
#: model stage on first use (timm's top-level habit).
ALLOWED = {("hotformerloc", "hotformerloc.model")}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path, root: Path = PACKAGE) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, at module level) for each hotformerloc import of ``path``."""
    mod = module_name(path, root)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "hotformerloc" or name.startswith("hotformerloc."):
                yield name, node.lineno, id(node) in top


def source_files(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def stage_violations(root: Path = PACKAGE) -> list[str]:
    """One line per import of a later stage in the package at ``root``."""
    bad = []
    for path in source_files(root):
        mod = module_name(path, root)
        for target, line, _ in imports(path, root):
            a, b = stage_of(mod), stage_of(target)
            if STAGES[b] > STAGES[a] and (mod, target) not in ALLOWED:
                bad.append(f"{path.relative_to(root)}:{line} ({a or 'root'}) imports {target}")
    return bad


def test_every_stage_is_ranked() -> None:
    stages = {stage_of(module_name(p)) for p in source_files()}
    assert stages <= set(STAGES), f"unranked stages: {sorted(stages - set(STAGES))}"


def test_no_import_from_a_later_stage() -> None:
    bad = stage_violations()
    assert not bad, "imports against the stage order:\n" + "\n".join(bad)


def test_the_checker_finds_forward_imports(tmp_path: Path) -> None:
    """Not vacuous: function-level, relative and TYPE_CHECKING imports of a later stage
    are all found; imports of the same or an earlier stage are not."""
    pkg = tmp_path / "hotformerloc"
    (pkg / "io").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "io" / "__init__.py").write_text("from hotformerloc.errors import HotformerlocError\n")
    (pkg / "io" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from hotformerloc.model import network\n"
        "def f():\n    from ..index import search\n    import hotformerloc.cli.main\n"
    )
    (pkg / "data" / "c.py").write_text("from hotformerloc.model.network import HOTFormerLoc\n")
    bad = stage_violations(pkg)
    assert [b.split(" imports ")[1] for b in bad] == [
        "hotformerloc.model",
        "hotformerloc.index",
        "hotformerloc.cli.main",
    ]


def _known(name: str, modules: set[str]) -> str:
    """``name`` or its longest prefix that is a module (``from pkg import function``)."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def test_no_module_level_import_cycle() -> None:
    files = source_files()
    modules = {module_name(p) for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in files:
        mod = module_name(path)
        for target, _, top in imports(path):
            t = _known(target, modules)
            if top and t != mod and t in modules:
                graph[mod].add(t)
    # a package's __init__ importing its own submodules is the normal layout, not a cycle
    # that can bite, so only edges out of a submodule into its parent package are followed
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if colour.get(t) == 1:
                return [*stack[stack.index(t) :], t]
            if t not in colour and (cycle := visit(t)):
                return cycle
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(modules):
        if m not in colour and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


@pytest.mark.parametrize(
    "module",
    [
        "hotformerloc.io",
        "hotformerloc.synth.generate",
        "hotformerloc.data.benchmark",
        "hotformerloc.data.neighbours",
        "hotformerloc.eval",
        "hotformerloc.pipelines.demo",
        "hotformerloc.pipelines.evaluate",
    ],
)
def test_torch_free_modules(module: str) -> None:
    """Readers, the generator, metrics and the pipelines' front modules load without torch."""
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"importing {module} imports torch {proc.stderr[-500:]}"
