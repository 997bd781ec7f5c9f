"""Model registry (timm-like): named configurations, pretrained weights and ``create_model``.

A registered variant is a function returning the :class:`ModelConfig` of that variant::

    @register_model("hotformerloc-oxford")
    def _oxford() -> ModelConfig: ...

A variant can have pretrained weights under a tag, named ``ARCH.TAG`` (timm's habit, e.g.
``hotformerloc-tiny.synth``): one :func:`register_pretrained` call below the variants adds
an entry pointing to a checkpoint file in the package folder ``hotformerloc/weights/``
(our checkpoint format: it carries the model config, input pipeline included) with the
file's SHA-256, verified on every load.

``create_model(name, pretrained=False, **overrides)`` applies ``overrides`` (any
:class:`ModelConfig` field) with strict validation and builds the network;
``list_models(pretrained=True)`` lists the ``ARCH.TAG`` names that have weights.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotformerloc.config import ConfigError, to_dict
from hotformerloc.model.checkpoint import (
    Checkpoint,
    CheckpointError,
    _metadata,
    _migrate_config,
    load_checkpoint,
)
from hotformerloc.model.config import ModelConfig, model_config_from_dict
from hotformerloc.model.network import HOTFormerLoc

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}

ConfigFn = Callable[[], ModelConfig]

#: The package folder of the pretrained weights files (a data folder, not a package).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: Tags that would read as a file suffix (``load_model`` takes files by their suffix).
_RESERVED_TAGS = frozenset({"pt", "pth", "ckpt", "safetensors"})
_TAG = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PretrainedEntry:
    """Pretrained weights of a registered variant.

    ``name``: ``ARCH.TAG``; ``file``: the checkpoint file, relative to :data:`WEIGHTS_DIR`
    (or absolute); ``sha256``: the SHA-256 of the file's bytes; ``description``: what the
    weights were trained on and how well they do; ``input``: the clouds they expect, in
    words (sensor, units, frame). The input pipeline itself is in the file's config.
    """

    name: str
    file: str
    sha256: str
    description: str
    input: str = ""

    @property
    def arch(self) -> str:
        return self.name.partition(".")[0]

    @property
    def tag(self) -> str:
        return self.name.partition(".")[2]

    @property
    def path(self) -> Path:
        """The weights file (resolved against :data:`WEIGHTS_DIR` at call time)."""
        return WEIGHTS_DIR / self.file


#: ``ARCH.TAG`` -> entry, in registration order (an architecture's first tag is its default).
_PRETRAINED: dict[str, PretrainedEntry] = {}


def register_model(name: str) -> Callable[[ConfigFn], ConfigFn]:
    """Decorator registering a zero-argument function returning a :class:`ModelConfig`.

    Raises:
        ValueError: ``name`` is already registered or contains a ``.`` (the tag separator).
    """

    def decorate(fn: ConfigFn) -> ConfigFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if "." in name:
            raise ValueError(f"model {name!r}: a name cannot contain '.' (it separates tags)")
        _REGISTRY[name] = fn
        return fn

    return decorate


def register_pretrained(
    name: str, file: str, sha256: str, description: str, input: str = ""
) -> PretrainedEntry:
    """Register pretrained weights ``name`` = ``ARCH.TAG`` of the registered variant ARCH.

    ``file``: a checkpoint (:func:`~hotformerloc.model.checkpoint.save_checkpoint` of ARCH)
    relative to :data:`WEIGHTS_DIR`, or absolute; ``sha256``: its bytes' SHA-256. The first
    tag registered for an ARCH is the one ``create_model(ARCH, pretrained=True)`` loads.

    Raises:
        ValueError: unknown ARCH, malformed tag or SHA-256, or ``name`` already registered.
    """
    arch, sep, tag = name.partition(".")
    if arch not in _REGISTRY:
        raise ValueError(f"pretrained {name!r}: unknown model {arch!r}")
    if not sep or not _TAG.fullmatch(tag) or tag in _RESERVED_TAGS:
        raise ValueError(
            f"pretrained {name!r}: expected ARCH.TAG with TAG of [a-z0-9_-] "
            f"(not {', '.join(sorted(_RESERVED_TAGS))})"
        )
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"pretrained {name!r}: sha256 must be 64 lowercase hex digits")
    if name in _PRETRAINED:
        raise ValueError(f"pretrained {name!r} is already registered")
    entry = PretrainedEntry(name, str(file), sha256, description, input)
    _PRETRAINED[name] = entry
    return entry


def split_model_name(name: str) -> tuple[str, str | None]:
    """``ARCH.TAG`` -> (ARCH, TAG); ``ARCH`` -> (ARCH, None)."""
    arch, sep, tag = name.partition(".")
    return arch, (tag if sep else None)


def is_model_name(name: str) -> bool:
    """Whether ``name`` is a registered variant or a registered ``ARCH.TAG``."""
    return name in _REGISTRY or name in _PRETRAINED


def list_models(pretrained: bool = False, filter: str | None = None) -> list[str]:
    """Sorted names of the registered variants, or with ``pretrained`` the ``ARCH.TAG``
    names that have weights; ``filter``: an fnmatch pattern (``"*tiny*"``)."""
    names = sorted(_PRETRAINED if pretrained else _REGISTRY)
    return names if filter is None else [n for n in names if fnmatch.fnmatchcase(n, filter)]


def pretrained_tags(arch: str) -> list[str]:
    """The ``ARCH.TAG`` names of ``arch``'s weights, its default first."""
    return [n for n, e in _PRETRAINED.items() if e.arch == arch]


def _check_arch(arch: str) -> None:
    if arch not in _REGISTRY:
        raise ConfigError(f"unknown model {arch!r}; registered: {', '.join(list_models())}")


def _available() -> str:
    return ", ".join(list_models(pretrained=True)) or "none yet"


def get_pretrained(name: str) -> PretrainedEntry:
    """The pretrained entry ``name``: ``ARCH.TAG``, or ``ARCH`` for its default tag.

    Raises:
        ConfigError: unknown model, unknown tag, or no weights for ARCH (lists what exists).
    """
    arch, tag = split_model_name(name)
    _check_arch(arch)
    if tag is None:
        tags = pretrained_tags(arch)
        if not tags:
            raise ConfigError(
                f"model {arch!r} has no pretrained weights; pretrained models: {_available()}"
            )
        return _PRETRAINED[tags[0]]
    if name not in _PRETRAINED:
        raise ConfigError(
            f"model {arch!r} has no pretrained weights tagged {tag!r}; "
            f"pretrained models: {_available()}"
        )
    return _PRETRAINED[name]


def read_pretrained_config(entry: PretrainedEntry) -> dict[str, Any]:
    """The model config saved in ``entry``'s file, read from its header only (cheap).

    Raises:
        CheckpointError: missing or unreadable file, or not ``entry.arch``'s checkpoint.
    """
    path = entry.path
    try:
        with path.open("rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            raw = head + f.read(max(0, min(n, path.stat().st_size - 8)))
    except FileNotFoundError as e:
        raise CheckpointError(path, f"pretrained weights {entry.name} not found") from e
    except OSError as e:
        raise CheckpointError(path, f"cannot read pretrained weights ({e})") from e
    meta = _metadata(raw, path)
    try:
        config = json.loads(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, ValueError) as e:
        raise CheckpointError(path, f"corrupt checkpoint metadata ({e})") from e
    if not isinstance(config, dict) or not isinstance(extra, dict):
        raise CheckpointError(path, "config and extra metadata must be JSON objects")
    if meta.get("model") != entry.arch:
        raise CheckpointError(
            path, f"holds weights of model {meta.get('model')!r}, not {entry.arch!r}"
        )
    return _migrate_config(config, extra)


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of variant ``name`` with ``overrides`` (config fields) applied; for an
    ``ARCH.TAG`` name, the config saved with those weights.

    Raises:
        ConfigError: unknown model name or tag, unknown override key or invalid value.
        CheckpointError: ``ARCH.TAG``'s weights file is missing or unreadable.
    """
    arch, tag = split_model_name(name)
    if tag is not None:
        data = read_pretrained_config(get_pretrained(name))
    else:
        _check_arch(arch)
        data = to_dict(_REGISTRY[arch]())
    data.update(overrides)
    return model_config_from_dict(data)


def _shape_problem(own: dict[str, Any], given: dict[str, Any]) -> str | None:
    """The first difference of key set or shape between two state dicts, or None."""
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    if missing or unexpected:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    for k in sorted(own):
        if tuple(own[k].shape) != tuple(given[k].shape):
            return f"{k}: shape {tuple(own[k].shape)} != {tuple(given[k].shape)} in the weights"
    return None


def load_pretrained(name: str, **overrides: Any) -> tuple[HOTFormerLoc, Checkpoint]:
    """(model with the pretrained weights ``name``, the weights file's :class:`Checkpoint`).

    ``name``: ``ARCH.TAG``, or ``ARCH`` for its default tag. The model is built from the
    file's config with ``overrides`` applied; only overrides that keep every parameter
    shape are accepted (``drop_path``, ``grad_checkpoint``, ``window_batching``, ...).
    The model is returned in training mode, as :func:`create_model` builds it.

    Raises:
        ConfigError: unknown name or tag, no weights, invalid override, or an override
            that changes the architecture.
        CheckpointError: the file is missing or corrupt, its SHA-256 is not the registered
            one, or it does not hold ARCH's weights (names the file).
    """
    entry = get_pretrained(name)
    path = entry.path
    ck = load_checkpoint(path)
    if ck.sha256 != entry.sha256:
        raise CheckpointError(
            path,
            f"SHA-256 {ck.sha256[:12]}... is not the registered {entry.sha256[:12]}... of "
            f"{entry.name} (corrupt or replaced file: reinstall the package)",
        )
    if ck.model != entry.arch:
        raise CheckpointError(path, f"holds weights of model {ck.model!r}, not {entry.arch!r}")
    base = model_config_from_dict(ck.config)
    cfg = model_config_from_dict({**ck.config, **overrides})
    model = HOTFormerLoc(cfg)
    problem = _shape_problem(model.state_dict(), ck.state_dict)
    if problem is not None:
        changed = [
            f"{k}={v!r}" for k, v in overrides.items() if getattr(base, k) != getattr(cfg, k)
        ]
        if changed:
            raise ConfigError(
                f"{entry.name}: override {', '.join(changed)} changes the architecture "
                f"({problem}); pretrained weights take only overrides that keep every "
                "parameter shape (e.g. drop_path, grad_checkpoint, window_batching)"
            )
        raise CheckpointError(path, f"weights do not match model {entry.arch!r}: {problem}")
    model.load_state_dict(ck.state_dict, strict=True)
    return model, ck


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> HOTFormerLoc:
    """Build variant ``name`` (see :func:`list_models`), fields overridden by ``overrides``.

    ``name``: ``ARCH`` or ``ARCH.TAG``. With ``pretrained``, the weights ``ARCH.TAG`` (for
    a bare ARCH, its default tag) are loaded, SHA-256 verified, into the model built from
    their saved config (input pipeline included); ``overrides`` may then not change a
    parameter shape. ``ARCH.TAG`` without ``pretrained``: that config, random weights.

    Example: ``create_model("hotformerloc-tiny", pooling="gem", output_dim=64)``.

    Raises:
        ConfigError: unknown model name or tag, no pretrained weights (lists those that
            exist), unknown override key, invalid value, or an override that changes the
            architecture of pretrained weights.
        CheckpointError: a pretrained weights file is missing, corrupt or mismatched.
    """
    if pretrained:
        return load_pretrained(name, **overrides)[0]
    return HOTFormerLoc(get_model_config(name, **overrides))


# --------------------------------------------------------------------- variants (spec 2.1)
@register_model("hotformerloc-cs-wild-places")
def _cs_wild_places() -> ModelConfig:
    """CS-Wild-Places: K 64, ADaPE cov, k 74/36/18, depth 7, bbox-normalised, Cartesian."""
    return ModelConfig(
        patch_size=64,
        adape_mode="cov",
        k_pooled_tokens=(74, 36, 18),
        octree_depth=7,
        normalize_points=True,
        coordinates="cartesian",
    )


@register_model("hotformerloc-oxford")
def _oxford() -> ModelConfig:
    """Oxford RobotCar: K 48, ADaPE cov, k 74/36/18, depth 9, no normalisation."""
    return ModelConfig(
        patch_size=48,
        adape_mode="cov",
        k_pooled_tokens=(74, 36, 18),
        octree_depth=9,
        normalize_points=False,
        coordinates="cartesian",
    )


@register_model("hotformerloc-cs-campus3d")
def _cs_campus3d() -> ModelConfig:
    """CS-Campus3D: K 64, ADaPE cov, k 148/72/36, depth 7, no normalisation."""
    return ModelConfig(
        patch_size=64,
        adape_mode="cov",
        k_pooled_tokens=(148, 72, 36),
        octree_depth=7,
        normalize_points=False,
        coordinates="cartesian",
    )


@register_model("hotformerloc-wild-places")
def _wild_places() -> ModelConfig:
    """Wild-Places: K 48, no ADaPE (CPE relay init), k 148/72/36, depth 7, cylindrical."""
    return ModelConfig(
        patch_size=48,
        adape_mode="none",
        k_pooled_tokens=(148, 72, 36),
        octree_depth=7,
        normalize_points=True,
        coordinates="cylindrical",
    )


@register_model("hotformerloc-small")
def _small() -> ModelConfig:
    """CPU-sized: channels 64/128, blocks 2/4, heads 4/8, K 48, depth 7, k 40/16/8."""
    return ModelConfig(
        channels=(64, 128),
        num_blocks=(2, 4),
        num_heads=(4, 8),
        patch_size=48,
        k_pooled_tokens=(40, 16, 8),
        octree_depth=7,
    )


@register_model("hotformerloc-tiny")
def _tiny() -> ModelConfig:
    """Smoke-test size: channels 32/64, blocks 2/2, heads 2/4, K 32, depth 6, k 20/8/4,
    full_depth 1 (its coarsest pyramid level is depth 1)."""
    return ModelConfig(
        channels=(32, 64),
        num_blocks=(2, 2),
        num_heads=(2, 4),
        patch_size=32,
        k_pooled_tokens=(20, 8, 4),
        octree_depth=6,
        full_depth=1,
    )


# ------------------------------------------------------------ pretrained weights (ARCH.TAG)
# One call per weights file in hotformerloc/weights/ (package data); model cards in
# docs/models.md.
register_pretrained(
    "hotformerloc-tiny.synth",
    "hotformerloc-tiny.synth.safetensors",
    sha256="337022f2cd36e721517195e34843cc09dd3d206c4b9aee902494e3e6bb01f144",
    description="synthetic pre-training v3: 6 small-preset seeds (12 worlds), co-oriented "
    "training, cross-source pair sampling, a 10 m height band, 8 query views; 4.8 h on 2 CPU "
    "cores; docs/models.md",
    input="metric submaps (30 m radius, ground removed, 0.8 m voxels) with z up from the "
    "sensor or terrain (points above 10 m dropped), input_scale 1/30, "
    "bbox-normalised, depth 6; queries searched at 8 yaw views",
)
