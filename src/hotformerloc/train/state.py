"""Resumable training state in one safetensors file (no pickle).

``resume.safetensors`` holds the model weights (``model.*``), the optimiser's tensors
(``optim.<param index>.<key>``), the EMA weights (``ema.*``, the MESA teacher), the weight
average (``avg.*``, with ``weights_ema``) and the RNG states (``rng.*``); its JSON metadata
holds the optimiser's hyper-parameters, the epoch to start from, the best validation score
and the log so far. Written atomically after every epoch, so a kill leaves the previous
epoch's state, and a resumed run replays the interrupted epoch exactly (batches and
augmentations are functions of (seed, epoch, batch)).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hotformerloc.io.atomic import atomic_write_bytes
from hotformerloc.model.checkpoint import CheckpointError, tensors_digest

FORMAT = "hotformerloc-train-state"


@dataclass
class TrainState:
    """Everything needed to continue a run after ``epoch`` (the next epoch to run)."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    ema: dict[str, torch.Tensor] | None
    rng: dict[str, torch.Tensor]
    meta: dict[str, Any]
    average: dict[str, torch.Tensor] | None = None


def _flat_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflat_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(path: str | Path, state: TrainState) -> None:
    """Write ``state`` atomically to ``path``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.items()}
    opt_tensors, opt_meta = _flat_optimizer(state.optimizer)
    tensors.update(opt_tensors)
    for head, group in (("ema", state.ema), ("avg", state.average)):
        if group is not None:
            tensors.update({f"{head}.{k}": v.detach().cpu().contiguous() for k, v in group.items()})
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in state.rng.items()})
    metadata = {
        "format": FORMAT,
        "optimizer": json.dumps(opt_meta),
        "meta": json.dumps(state.meta, sort_keys=True),
        "tensors_sha256": tensors_digest(tensors),
    }
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_state(path: str | Path) -> TrainState:
    """Read a state written by :func:`save_state`; problems raise
    :class:`~hotformerloc.model.checkpoint.CheckpointError` naming the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(p, "no training state to resume from (file not found)") from e
    try:
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n]) if 8 < 8 + n <= len(raw) else None
        meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
        if meta.get("format") != FORMAT:
            raise CheckpointError(p, f"not a {FORMAT} file")
        tensors = st_load(raw)
        opt_meta = json.loads(meta["optimizer"])
        run_meta = json.loads(meta["meta"])
    except (SafetensorError, ValueError, KeyError) as e:
        raise CheckpointError(p, f"corrupt training state ({e})") from e
    if tensors_digest(tensors) != meta.get("tensors_sha256"):
        raise CheckpointError(p, "training state is corrupt (checksum mismatch)")
    groups: dict[str, dict[str, torch.Tensor]] = {
        "model": {},
        "optim": {},
        "ema": {},
        "avg": {},
        "rng": {},
    }
    for name, t in tensors.items():
        head, rest = name.split(".", 1)
        groups[head][rest if head != "optim" else name] = t
    return TrainState(
        model=groups["model"],
        optimizer=_unflat_optimizer(groups["optim"], opt_meta),
        ema=groups["ema"] or None,
        rng=groups["rng"],
        meta=run_meta,
        average=groups["avg"] or None,
    )
