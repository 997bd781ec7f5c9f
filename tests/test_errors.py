"""One error base class: every exception class the package defines for bad input derives
from HotformerlocError, and the CLI turns any of them into one line and exit code 2."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import hotformerloc
from hotformerloc.errors import HotformerlocError

#: Internal control-flow exceptions that never reach a user.
INTERNAL = {"hotformerloc.io.pickles._Refused"}


def _package_exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for mod in pkgutil.walk_packages(hotformerloc.__path__, "hotformerloc."):
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found[f"{obj.__module__}.{name}"] = obj
    return found


def test_every_package_error_derives_from_the_base() -> None:
    errors = _package_exceptions()
    assert len(errors) >= 20  # the walk found the package's error classes
    stray = [
        n for n, c in errors.items() if n not in INTERNAL and not issubclass(c, HotformerlocError)
    ]
    assert stray == []
    assert issubclass(HotformerlocError, ValueError)


def test_cli_prints_one_line_for_any_package_error(monkeypatch, capsys) -> None:
    from hotformerloc.cli import main
    from hotformerloc.index.rerank import RerankInputError

    def boom(*a, **k):
        raise RerankInputError("query.pcd: fewer than 3 points")

    monkeypatch.setattr(main, "app", boom)
    with pytest.raises(SystemExit) as e:
        main.entrypoint()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: query.pcd: fewer than 3 points"]
