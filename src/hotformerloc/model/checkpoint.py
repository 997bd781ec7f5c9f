"""Model checkpoints: safetensors weights with the model name and config as metadata.

A checkpoint is one ``.safetensors`` file (no pickle: loading cannot execute code). Its
string metadata holds ``format`` (``hotformerloc-checkpoint``), ``format_version``,
``model`` (the registered name), ``config`` (JSON of the full model config), ``extra``
(JSON, e.g. training state) and ``tensors_sha256`` (a digest of every tensor's name, dtype,
shape and bytes, verified on load: a flipped byte is an error, not silently different
weights). Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from hotformerloc.errors import HotformerlocError
from hotformerloc.io.atomic import atomic_write_bytes
from hotformerloc.submaps import METRIC_SCALE

if TYPE_CHECKING:
    from hotformerloc.model.network import HOTFormerLoc

FORMAT = "hotformerloc-checkpoint"
FORMAT_VERSION = "1"


class CheckpointError(HotformerlocError):
    """A checkpoint file is missing, corrupt, or does not match the model."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class Checkpoint:
    """Weights (CPU tensors), model name, model config (plain dict), extra (plain dict),
    and the SHA-256 of the file's bytes."""

    state_dict: dict[str, torch.Tensor]
    model: str
    config: dict[str, Any]
    extra: dict[str, Any]
    sha256: str


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    name: str,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> str:
    """Write ``model``'s weights and metadata to ``path`` atomically; returns the SHA-256."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": name,
        "config": json.dumps(config, sort_keys=True),
        "extra": json.dumps(extra or {}, sort_keys=True),
        "tensors_sha256": tensors_digest(tensors),
    }
    data = st_save(tensors, metadata=metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _metadata(raw: bytes, path: Path) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (validated JSON header)."""
    if len(raw) < 8:
        raise CheckpointError(path, "file is truncated (no safetensors header)")
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or 8 + n > len(raw):
        raise CheckpointError(path, "not a safetensors file (bad header length)")
    try:
        header = json.loads(raw[8 : 8 + n])
    except ValueError as e:
        raise CheckpointError(path, f"corrupt safetensors header ({e})") from e
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(path, f"not a {FORMAT} file (missing or wrong metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            path, f"format version {meta.get('format_version')!r} is not {FORMAT_VERSION!r}"
        )
    return meta


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; any problem raises :class:`CheckpointError` naming the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(p, "file not found") from e
    except IsADirectoryError as e:
        raise CheckpointError(p, "is a directory, not a checkpoint file") from e
    meta = _metadata(raw, p)
    try:
        tensors = st_load(raw)
        config = json.loads(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except (SafetensorError, ValueError, KeyError) as e:
        raise CheckpointError(p, f"corrupt checkpoint ({e})") from e
    if not isinstance(config, dict) or not isinstance(extra, dict):
        raise CheckpointError(p, "config and extra metadata must be JSON objects")
    if tensors_digest(tensors) != meta.get("tensors_sha256"):
        raise CheckpointError(p, "weights are corrupt (checksum mismatch)")
    config = _migrate_config(config, extra)
    return Checkpoint(tensors, str(meta["model"]), config, extra, hashlib.sha256(raw).hexdigest())


#: The input scale that checkpoints written before the input pipeline moved into the model
#: config were used with when their metadata did not say (``extra["data_scale"]``).
LEGACY_DATA_SCALE = METRIC_SCALE


def _migrate_config(config: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The config of a checkpoint written before ``input_scale`` existed, made current.

    Its input scale travelled in ``extra["data_scale"]`` (absent: 1/30), and its octree
    already kept only non-empty nodes above ``full_depth``, which is ocnn's semantics with
    ``full_depth`` lowered to the coarsest pyramid depth: the same function, now valid.
    """
    if "input_scale" in config or "octree_depth" not in config:  # current, or not a model's
        return config
    out = dict(config)
    out["input_scale"] = extra.get("data_scale", LEGACY_DATA_SCALE)
    depth, levels = out.get("octree_depth"), out.get("num_pyramid_levels")
    if isinstance(depth, int) and isinstance(levels, int) and "full_depth" in out:
        out["full_depth"] = max(1, min(int(out["full_depth"]), depth - 2 - levels))
    return out


def load_weights(model: nn.Module, ckpt: Checkpoint, path: str | Path) -> None:
    """Load ``ckpt`` into ``model`` strictly; mismatches raise :class:`CheckpointError`."""
    own = model.state_dict()
    missing = sorted(set(own) - set(ckpt.state_dict))
    unexpected = sorted(set(ckpt.state_dict) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            path,
            f"weights do not match model {ckpt.model!r}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}",
        )
    for k, v in ckpt.state_dict.items():
        if own[k].shape != v.shape:
            raise CheckpointError(path, f"{k}: shape {tuple(v.shape)} != {tuple(own[k].shape)}")
    model.load_state_dict(ckpt.state_dict, strict=True)


def load_model(
    spec: str | Path, variant: str | None = None
) -> tuple[HOTFormerLoc, Checkpoint | None]:
    """A model in eval mode from a registered name (random weights, checkpoint None), a
    registered pretrained ``ARCH.TAG`` name (its packaged weights, SHA-256 verified, and
    that file's checkpoint) or a checkpoint file (its registered model and config, weights
    verified and loaded).
    A ``.pth`` / ``.pt`` / ``.ckpt`` file is a reference checkpoint, converted in memory as
    ``variant`` (None: detected; see :mod:`hotformerloc.model.reference`).

    Raises:
        CheckpointError: neither a registered name nor a readable checkpoint, or the
            checkpoint's model is unknown or its weights do not match.
    """
    from hotformerloc.model.registry import (
        create_model,
        list_models,
        load_pretrained,
        split_model_name,
    )

    if Path(spec).suffix.lower() in (".pth", ".pt", ".ckpt"):
        from hotformerloc.model.reference import load_reference_model

        return load_reference_model(spec, variant)
    if str(spec) in list_models():
        return create_model(str(spec)).eval(), None
    if str(spec) in list_models(pretrained=True):
        model, ck = load_pretrained(str(spec))
        return model.eval(), ck
    path = Path(spec)
    arch, tag = split_model_name(str(spec))
    unknown_tag = tag is not None and arch in list_models() and path.suffix != ".safetensors"
    if unknown_tag and not path.exists():
        raise CheckpointError(
            spec,
            f"model {arch!r} has no pretrained weights tagged {tag!r}; pretrained models: "
            f"{', '.join(list_models(pretrained=True)) or 'none yet'}",
        )
    if not path.exists() and path.suffix != ".safetensors":
        raise CheckpointError(
            path,
            f"neither a registered model ({', '.join(list_models())}) nor a checkpoint file",
        )
    ck = load_checkpoint(path)
    if ck.model not in list_models():
        raise CheckpointError(path, f"checkpoint of unknown model {ck.model!r}")
    model = create_model(ck.model, **ck.config)
    load_weights(model, ck, path)
    return model.eval(), ck
