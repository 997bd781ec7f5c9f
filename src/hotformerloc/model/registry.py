"""Model registry (timm-like): named configurations and ``create_model``.

A registered entry is a function returning the :class:`ModelConfig` of that variant::

    @register_model("hotformerloc-oxford")
    def _oxford() -> ModelConfig: ...

``create_model(name, **overrides)`` applies ``overrides`` (any :class:`ModelConfig` field)
with strict validation and builds the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hotformerloc.config import ConfigError, to_dict
from hotformerloc.model.config import ModelConfig, model_config_from_dict
from hotformerloc.model.network import HOTFormerLoc

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}

ConfigFn = Callable[[], ModelConfig]


def register_model(name: str) -> Callable[[ConfigFn], ConfigFn]:
    """Decorator registering a zero-argument function returning a :class:`ModelConfig`.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorate(fn: ConfigFn) -> ConfigFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorate


def list_models() -> list[str]:
    """Sorted names of the registered variants."""
    return sorted(_REGISTRY)


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of variant ``name`` with ``overrides`` (config fields) applied.

    Raises:
        ConfigError: unknown model name, unknown override key or invalid value (named).
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    data = to_dict(_REGISTRY[name]())
    data.update(overrides)
    return model_config_from_dict(data)


def create_model(name: str, **overrides: Any) -> HOTFormerLoc:
    """Build variant ``name`` (see :func:`list_models`), fields overridden by ``overrides``.

    Example: ``create_model("hotformerloc-tiny", pooling="gem", output_dim=64)``.

    Raises:
        ConfigError: unknown model name, unknown override key or invalid value (named).
    """
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
