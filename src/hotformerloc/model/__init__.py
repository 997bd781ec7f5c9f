"""HOTFormerLoc network in pure PyTorch (spec 2): config, layers, blocks, pooling, registry.

Typical use::

    from hotformerloc import create_model
    model = create_model("hotformerloc-cs-wild-places").eval()
    with torch.inference_mode():
        desc = model.embed([cloud])  # (1, 256), unit norm

See ``docs/model.md``.
"""

from hotformerloc.model.config import ModelConfig, model_config_from_dict
from hotformerloc.model.device import DeviceError, resolve_device, retain_freed_memory
from hotformerloc.model.network import (
    HOTFormerLoc,
    build_input_octree,
    crop_and_scale,
    prepare_points,
)
from hotformerloc.model.registry import create_model, get_model_config, list_models, register_model

__all__ = [
    "DeviceError",
    "HOTFormerLoc",
    "ModelConfig",
    "build_input_octree",
    "create_model",
    "crop_and_scale",
    "get_model_config",
    "list_models",
    "model_config_from_dict",
    "prepare_points",
    "register_model",
    "resolve_device",
    "retain_freed_memory",
]
