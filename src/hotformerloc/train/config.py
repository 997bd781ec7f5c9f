"""Training configs as data (spec 3.4, 8.1): strict YAML <-> dataclasses.

``hotformerloc train --config FILE`` reads one :class:`TrainConfig`; an unknown key or an
impossible value is a :class:`~hotformerloc.config.ConfigError` naming the key path.
Paper settings and the demo are packaged presets (``train/presets/*.yaml``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from hotformerloc.config import ConfigError, list_presets, load_config, require
from hotformerloc.data.augment import AugmentConfig


@dataclass(frozen=True)
class DataSection:
    """Where the submaps are and how training tuples are formed.

    ``root``: a benchmark folder (``hotformerloc generate`` layout) or a prepared dataset
    (``hotformerloc dataset prepare``; its tuples are used, its scale becomes the model's
    ``input_scale``, and ``pos_radius``, ``neg_radius`` are ignored); relative paths are
    resolved against the config file's folder. How clouds are scaled and normalised is the
    model's input pipeline (``model_overrides: {input_scale: ...}``, saved with every
    checkpoint). Positives within ``pos_radius`` m (any source pair), non-negatives within
    ``neg_radius`` m (spec 4.4: 15 / 60). ``group_batches``: every batch from one world (not
    in the reference; see :class:`~hotformerloc.data.PairBatchSampler`).

    Benchmark folders only: ``root`` may be a list of folders, read as one benchmark (a
    pre-training corpus); ``train_splits`` are the splits trained on (``[train, test,
    buffer]`` for worlds kept for training only); ``val_root`` (a folder or a list) holds
    the validation worlds: when set, validation scores their test queries instead of the
    training benchmark's (model selection never sees test worlds). ``align_yaw``: turn
    every training cloud by its submap's heading (``poses.csv``) to the world's
    orientation, so the network learns descriptors of co-oriented clouds (pair it with
    ``augment.set_mode: 1``, ``set_rot_theta: 180`` and a small ``rot_theta``, and evaluate
    with query views: ``model_overrides: {query_views: 8}``). ``cross_source``: the
    probability of pairing an element with a positive of the other source (ground/aerial;
    see :class:`~hotformerloc.data.PairBatchSampler`; 0 = uniform, as the reference).
    """

    root: str | list[str] = "runs/demo/benchmark"
    val_root: str | list[str] | None = None
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    pos_radius: float = 15.0
    neg_radius: float = 60.0
    num_workers: int = 0
    group_batches: bool = False
    align_yaw: bool = False
    cross_source: float = 0.0

    def __post_init__(self) -> None:
        require(self.pos_radius > 0, "data.pos_radius must be > 0")
        require(self.neg_radius >= self.pos_radius, "data.neg_radius must be >= pos_radius")
        require(self.num_workers >= 0, "data.num_workers must be >= 0")
        require(0 <= self.cross_source <= 1, "data.cross_source must be in [0, 1]")
        require(
            bool(self.train_splits) and set(self.train_splits) <= {"train", "test", "buffer"},
            f"data.train_splits must be a non-empty list of train, test, buffer, got "
            f"{self.train_splits}",
        )
        require(self.root != [], "data.root must name at least one folder")


@dataclass(frozen=True)
class LossSection:
    """Spec 3.1: ``truncated_smooth_ap`` (tau, positives_per_query) or
    ``batch_hard_triplet`` (margin); MESA self-distillation when ``mesa > 0``."""

    name: Literal["truncated_smooth_ap", "batch_hard_triplet"] = "truncated_smooth_ap"
    tau: float = 0.01
    positives_per_query: int = 4
    margin: float = 0.4
    mesa: float = 0.0
    mesa_start_ratio: float = 0.15
    ema_decay: float = 0.9998

    def __post_init__(self) -> None:
        require(self.tau > 0, "loss.tau must be > 0")
        require(self.positives_per_query >= 1, "loss.positives_per_query must be >= 1")
        require(self.mesa >= 0, "loss.mesa must be >= 0")
        require(0 <= self.mesa_start_ratio <= 1, "loss.mesa_start_ratio must be in [0, 1]")
        require(0 < self.ema_decay < 1, "loss.ema_decay must be in (0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (spec 3.4). ``epochs`` of pair batches of ``batch_size`` samples,
    embedded in chunks of ``batch_split_size`` (multi-staged backprop); Adam with L2
    ``weight_decay``; LR warm-up over ``warmup_epochs`` (factor ``max(e / warmup, 1e-3)``),
    then ×``gamma`` at each of ``milestones`` counted *after* the warm-up (as the reference's
    SequentialLR). Validation every ``eval_every`` epochs keeps the best checkpoint by AR@1.
    ``time_budget_min`` > 0 stops after the first epoch that ends past the budget.
    ``weights_ema`` in (0, 1) keeps an exponential moving average of the weights (decay
    ``min(weights_ema, (1 + t) / (10 + t))`` at step ``t``): it is what gets validated and
    saved as ``best``/``last``; 0 validates and saves the raw weights.
    ``schedule``: ``step`` (the milestones above) or ``cosine`` (after the warm-up, the
    factor falls from 1 to ``min_lr_factor`` along a half cosine over the remaining
    epochs; milestones ignored). ``init_weights``: a checkpoint
    (ours or a reference file) whose weights initialise the model (fine-tuning); its
    architecture must match.
    """

    model: str = "hotformerloc-tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_size: int = 64
    batch_split_size: int = 32
    val_batch_size: int = 32
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    milestones: list[int] = field(default_factory=lambda: [15])
    gamma: float = 0.1
    eval_every: int = 5
    seed: int = 42
    device: str = "auto"
    time_budget_min: float = 0.0
    weights_ema: float = 0.0
    schedule: Literal["step", "cosine"] = "step"
    min_lr_factor: float = 0.01
    init_weights: str | None = None

    def __post_init__(self) -> None:
        require(self.batch_size >= 4 and self.batch_size % 2 == 0, "batch_size: even, >= 4")
        require(self.batch_split_size >= 1, "batch_split_size must be >= 1")
        require(self.val_batch_size >= 1, "val_batch_size must be >= 1")
        require(self.epochs >= 1, "epochs must be >= 1")
        require(self.lr > 0, "lr must be > 0")
        require(self.weight_decay >= 0, "weight_decay must be >= 0")
        require(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        require(all(m >= 1 for m in self.milestones), "milestones must be >= 1")
        require(0 < self.gamma <= 1, "gamma must be in (0, 1]")
        require(self.eval_every >= 0, "eval_every must be >= 0 (0: only at the end)")
        require(self.time_budget_min >= 0, "time_budget_min must be >= 0")
        require(0 <= self.weights_ema < 1, "weights_ema must be in [0, 1) (0: off)")
        require(0 <= self.min_lr_factor <= 1, "min_lr_factor must be in [0, 1]")

    def lr_factor(self, epoch: int) -> float:
        """LR multiplier of 0-based ``epoch``: warm-up, then the step schedule."""
        if epoch < self.warmup_epochs:
            return max(epoch / self.warmup_epochs, 1e-3)
        after = epoch - self.warmup_epochs
        if self.schedule == "cosine":
            span = max(1, self.epochs - self.warmup_epochs - 1)
            t = min(after / span, 1.0)
            return self.min_lr_factor + (1 - self.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))
        return self.gamma ** sum(after >= m for m in self.milestones)


def train_presets() -> list[str]:
    """Names of the packaged training configs (``demo``, ``pretrain`` and the paper
    settings, ``train/presets/*.yaml``)."""
    return list_presets("hotformerloc.train")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training config: a preset name (:func:`train_presets`) or a YAML file, plus
    ``overrides`` (:func:`hotformerloc.config.load_config`). A relative ``data.root`` that
    does not exist from the working directory is resolved against the file's folder.

    Raises:
        ConfigError: unknown preset or file, bad YAML, unknown key or invalid value.
    """
    cfg = load_config(TrainConfig, [path], "hotformerloc.train", overrides)
    p = Path(path)

    def resolve(root: str) -> str:
        r = Path(root)
        if not r.is_absolute() and not r.exists() and (p.parent / r).exists():
            return str(p.parent / r)
        return root

    def resolve_all(roots: str | list[str]) -> str | list[str]:
        return resolve(roots) if isinstance(roots, str) else [resolve(r) for r in roots]

    data = replace(cfg.data, root=resolve_all(cfg.data.root))
    if cfg.data.val_root is not None:
        data = replace(data, val_root=resolve_all(cfg.data.val_root))
    return replace(cfg, data=data)


__all__ = [
    "ConfigError",
    "DataSection",
    "LossSection",
    "TrainConfig",
    "load_train_config",
    "train_presets",
]
