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
                and not issubclass(obj, Warning)  # warnings are not errors
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


def test_one_device_resolver() -> None:
    import torch

    from hotformerloc.model import DeviceError, resolve_device

    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="'gpu0': not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_cli_bad_device_is_one_line(tmp_path) -> None:
    from cli_helpers import run_cli

    cloud = tmp_path / "c.npy"
    import numpy as np

    np.save(cloud, np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))
    code, _, err = run_cli(
        "embed",
        "--model",
        "hotformerloc-tiny",
        str(cloud),
        "--out",
        str(tmp_path / "o"),
        "--device",
        "gpu0",
    )
    assert code == 2 and err.strip().splitlines() == [
        "error: device 'gpu0': not a device name (auto, cpu, cuda, cuda:N)"
    ]
    assert not (tmp_path / "o").exists()


def test_one_set_parser_types_values_by_the_schema() -> None:
    from hotformerloc.config import ConfigError, parse_overrides
    from hotformerloc.model.config import ModelConfig
    from hotformerloc.train.config import TrainConfig, load_train_config

    got = parse_overrides(
        ["model=00", "epochs=5", "data.root=[a, 01]", "init_weights=null", "lr=1e-3"],
        TrainConfig,
    )
    assert got == {
        "model": "00",
        "epochs": 5,
        "data": {"root": ["a", "01"]},
        "init_weights": None,
        "lr": "1e-3",  # YAML 1.1 text; the float field converts it:
    }
    assert load_train_config("pretrain", got).lr == 1e-3
    assert parse_overrides(["query_views=8", "input_scale=0.5"], ModelConfig) == {
        "query_views": 8,
        "input_scale": 0.5,
    }
    assert parse_overrides(["x=00"]) == {"x": 0}  # no schema: YAML scalars
    for bad, msg in (("epochs", "expected KEY=VALUE"), ("a.=1", "expected KEY=VALUE")):
        with pytest.raises(ConfigError, match=msg):
            parse_overrides([bad], TrainConfig)
    with pytest.raises(ConfigError, match="already given a value"):
        parse_overrides(["data=1", "data.root=x"], TrainConfig)
