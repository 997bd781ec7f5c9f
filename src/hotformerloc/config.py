"""Configs as data: strict conversion between plain dicts / YAML and nested dataclasses.

Unknown keys, wrong types and impossible values raise :class:`ConfigError`, whose message
names the key path (``aerial.sensor.scan_angle``) and the problem.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from hotformerloc.errors import HotformerlocError

T = TypeVar("T")
#: A number in exponent notation without a dot (``1e-3``), which YAML 1.1 leaves as text.
_EXPONENT = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


class ConfigError(HotformerlocError):
    """A config value or key is invalid; the message names the key path."""


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _convert(a, v, f"{where}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        out = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclasses recurse. Strict keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # T is unbounded: callers pass dataclass types
    hints = get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        path = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {path}{unknown[0]!s}; valid keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def to_dict(obj: Any) -> Any:
    """Plain (JSON/YAML-safe) form of a dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear :class:`ConfigError` names the file on failure."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: config file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins; lists are replaced, not merged."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond``."""
    if not cond:
        raise ConfigError(message)


def _field_type(schema: Any, path: list[str]) -> Any:
    """The annotated type of the dotted key ``path`` in the dataclass ``schema`` (None when
    unknown or when the schema is None)."""
    tp: Any = schema
    for part in path:
        if not (dataclasses.is_dataclass(tp) and part in {f.name for f in dataclasses.fields(tp)}):
            return None
        tp = get_type_hints(tp)[part]
    return tp


def _is_textual(tp: Any) -> bool:
    if tp is str:
        return True
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in (list, tuple):
        return bool(args) and args[0] is str
    return bool(args) and all(_is_textual(a) for a in args)


def parse_overrides(items: typing.Iterable[str] | None, schema: Any = None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items (dotted keys) -> a nested dict to :func:`merge` over a
    config. Values are parsed as YAML; for keys that ``schema`` (a config dataclass) types
    as text, they are kept as text (``name=00`` stays ``"00"``; ``null``/``~`` or nothing
    give None where None is allowed). Every command's ``--set`` goes through this.

    Raises:
        ConfigError: an item without ``KEY=``, a key both a section and a value, bad YAML.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. epochs=5)")
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is already given a value")
        tp = _field_type(schema, parts)
        textual = tp is not None and _is_textual(tp)
        try:
            # BaseLoader keeps every scalar as text: "00" stays "00" for string keys
            parsed = yaml.load(value, Loader=yaml.BaseLoader if textual else yaml.SafeLoader)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from e
        if textual and type(None) in get_args(tp) and parsed in ("null", "~", ""):
            parsed = None
        node[parts[-1]] = parsed
    return out


def list_presets(package: str) -> list[str]:
    """Sorted names of the YAML presets packaged in ``<package>/presets/`` (e.g.
    ``hotformerloc.synth``: ``demo``, ``large``, ``small``)."""
    folder = resources.files(package).joinpath("presets")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def config_source(spec: str | Path, package: str) -> tuple[dict[str, Any], Path | None]:
    """The mapping named by ``spec`` and its file (None for a packaged preset): an existing
    file, a path with a suffix (a missing one is an error naming it), else a preset name of
    ``package`` (:func:`list_presets`).

    Raises:
        ConfigError: neither a file nor a preset, unreadable or invalid YAML.
    """
    p = Path(spec)
    if p.suffix or p.exists():
        return load_yaml(p), p
    names = list_presets(package)
    if str(spec) not in names:
        raise ConfigError(
            f"{spec}: neither a config file nor a preset (unknown preset; presets: "
            f"{', '.join(names)})"
        )
    text = resources.files(package).joinpath(f"presets/{spec}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    return data, None


def load_config(
    schema: type[T],
    specs: typing.Sequence[str | Path],
    package: str,
    overrides: dict[str, Any] | None = None,
) -> T:
    """The one way to load a config: each of ``specs`` (a preset name of ``package`` or a
    YAML file, :func:`config_source`) merged over the previous ones, then ``overrides``
    (e.g. from :func:`parse_overrides`), checked against the dataclass ``schema``.

    Raises:
        ConfigError: an unknown preset or file, bad YAML, unknown key or invalid value.
    """
    data: dict[str, Any] = {}
    for spec in specs:
        data = merge(data, config_source(spec, package)[0])
    return from_dict(schema, merge(data, overrides or {}))
