"""The trainer (spec 3): pair batches, Truncated Smooth-AP, multi-staged backprop, Adam with
warm-up and step schedule, MESA, validation, atomic checkpoints, exact resume, DDP.

Output folder::

    config.yaml            the resolved config
    resume.safetensors     full state after the last finished epoch (see train.state)
    last.safetensors       model checkpoint after the last finished epoch
    best.safetensors       model checkpoint with the best validation AR@1
    log.csv, log.jsonl     one row per epoch (loss, AP, LR, time, validation)
    done.json              written when the run ends (all epochs, or the time budget)

Multi-GPU / multi-node: launch with ``torchrun`` (``WORLD_SIZE`` > 1): every rank draws the
same batches; each embeds its share of the chunks, the embeddings are all-gathered so every
rank computes the same loss on the full batch, and DDP all-reduces the gradients of the
re-embedded chunks (``gloo`` on CPU, ``nccl`` on CUDA). Rank 0 writes the files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import Tensor, nn

from hotformerloc.config import ConfigError, to_dict
from hotformerloc.data import (
    Batch,
    Benchmark,
    Collate,
    PairBatchSampler,
    SubmapDataset,
    build_tuples,
    make_loader,
)
from hotformerloc.data.prepared import SUBMAPS_FILE, PreparedDataset
from hotformerloc.io.atomic import atomic_write_text
from hotformerloc.model import HOTFormerLoc, create_model, resolve_device
from hotformerloc.model.checkpoint import CheckpointError, load_model, load_weights, save_checkpoint
from hotformerloc.octree import Octree
from hotformerloc.train.config import TrainConfig
from hotformerloc.train.losses import LossOutput, ModelEma, build_loss, mesa_loss
from hotformerloc.train.state import TrainState, load_state, save_state

LossFn = Callable[[Tensor, Tensor, Tensor], LossOutput]
Validate = Callable[[HOTFormerLoc], dict[str, float]]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def from_env(device: torch.device) -> Distributed:
        """Join the process group described by torchrun's environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Distributed()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return Distributed(dist.get_rank(), dist.get_world_size())


def multistage_step(
    model: nn.Module,
    octrees: Sequence[Octree],
    chunks: Sequence[slice],
    positives: Tensor,
    negatives: Tensor,
    loss_fn: LossFn,
    teacher: nn.Module | None = None,
    mesa_weight: float = 0.0,
    ddp: Distributed = Distributed(),
) -> tuple[LossOutput, Tensor]:
    """One multi-staged backprop pass (spec 3.2); accumulates gradients into ``model``.

    1. embed every chunk without grad (train mode); 2. loss on the full (B, D) embedding
    matrix and its gradient dL/de; 3. re-embed each chunk with grad and backprop dL/de of
    its rows. With stochastic depth off this gives the full-batch gradient exactly (tested).
    A single chunk outside DDP skips stage 1 (one forward with grad: the same result).
    Under DDP (``model`` a DistributedDataParallel) rank r handles chunks r, r + W, ...

    Returns the loss output and the (B, D) embeddings of stage 1.
    """
    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if len(chunks) == 1 and not ddp.active:  # one chunk: a plain forward/backward is the same
        emb = model(octrees[0])
        out, total = _loss(emb, octrees, positives, negatives, loss_fn, teacher, mesa_weight)
        total.backward()
        return out, emb.detach()
    mine = [i for i in range(len(chunks)) if i % ddp.world_size == ddp.rank]
    with torch.no_grad():
        own = [module(octrees[i]) for i in mine]
    dim = int(getattr(getattr(module, "config", None), "output_dim", 0)) or None
    emb = (
        _gather_chunks(own, chunks, ddp, dim, octrees[0].points.device)
        if ddp.active
        else torch.cat(own)
    )
    emb = emb.detach().requires_grad_(True)
    with torch.enable_grad():
        out, total = _loss(emb, octrees, positives, negatives, loss_fn, teacher, mesa_weight)
        (grad,) = torch.autograd.grad(total, emb)
    scale = float(ddp.world_size)  # DDP averages gradients over ranks; we need their sum
    for n, i in enumerate(mine):
        last = n == len(mine) - 1
        sync: AbstractContextManager[Any] = nullcontext()
        if ddp.active and not last:
            if not isinstance(model, nn.parallel.DistributedDataParallel):
                raise TypeError("multistage_step: under DDP, model must be DistributedDataParallel")
            sync = model.no_sync()
        with sync:
            e = model(octrees[i])
            e.backward(grad[chunks[i]] * scale)
    if not mine and ddp.active:  # more ranks than chunks: join the all-reduce with zeros
        (model(octrees[0]).sum() * 0.0).backward()
    return out, emb.detach()


def _loss(
    emb: Tensor,
    octrees: Sequence[Octree],
    positives: Tensor,
    negatives: Tensor,
    loss_fn: LossFn,
    teacher: nn.Module | None,
    mesa_weight: float,
) -> tuple[LossOutput, Tensor]:
    """The loss on the (B, D) embeddings, plus MESA against ``teacher``'s embeddings of the
    same octrees when ``mesa_weight`` > 0; returns (loss output, total to differentiate)."""
    out = loss_fn(emb, positives, negatives)
    total = out.loss
    if teacher is not None and mesa_weight > 0:
        with torch.no_grad():
            t = torch.cat([teacher(o) for o in octrees])
        total = total + mesa_weight * mesa_loss(emb, t)
        out.stats["mesa"] = float(total.detach() - out.loss.detach())
    return out, total


def _gather_chunks(
    own: list[Tensor],
    chunks: Sequence[slice],
    ddp: Distributed,
    dim: int | None,
    device: torch.device,
) -> Tensor:
    """All-gather every rank's chunk embeddings into the (B, D) matrix in chunk order."""
    sizes = [c.stop - c.start for c in chunks]
    dim = own[0].shape[1] if own else dim
    if dim is None:
        raise RuntimeError("a rank without chunks cannot infer the embedding size")
    per_rank = [
        sum(sizes[i] for i in range(len(chunks)) if i % ddp.world_size == r)
        for r in range(ddp.world_size)
    ]
    width = max(per_rank)
    local = torch.cat(own) if own else torch.zeros(0, dim, device=device)
    padded = local.new_zeros(width, dim)
    padded[: local.shape[0]] = local
    bufs = [torch.empty_like(padded) for _ in range(ddp.world_size)]
    dist.all_gather(bufs, padded)
    out = local.new_empty(sum(sizes), dim)
    offsets = [0] * ddp.world_size
    for i, c in enumerate(chunks):
        r = i % ddp.world_size
        out[c] = bufs[r][offsets[r] : offsets[r] + sizes[i]]
        offsets[r] += sizes[i]
    return out


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`Trainer.fit` did."""

    out_dir: Path
    epochs_run: int
    last_epoch: int
    best_epoch: int | None
    best_score: float | None
    stopped_by_budget: bool
    log: list[dict[str, Any]]


class Trainer:
    """Train ``config`` into ``out_dir`` (see the module doc for the files).

    ``validate(model) -> metrics`` (with key ``ar1``, percent) runs every
    ``config.eval_every`` epochs and after the last one; default: the benchmark's
    ground-to-ground and ground-to-aerial protocols (:mod:`hotformerloc.eval.benchmark`).
    ``progress(epoch, batch, num_batches, stats)`` is called after each step.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        validate: Validate | None = None,
        progress: Callable[[int, int, int, dict[str, float]], None] | None = None,
    ):
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(config.device)
        self.ddp = Distributed.from_env(self.device)
        self.progress = progress
        root = config.data.root
        self.benchmark: Benchmark
        self.val_benchmark: Benchmark | None = None
        overrides = dict(config.model_overrides)
        if isinstance(root, str) and (Path(root) / SUBMAPS_FILE).is_file():  # a prepared set
            if config.data.align_yaw:
                raise ConfigError(f"{root}: data.align_yaw needs a benchmark folder with poses")
            prepared = PreparedDataset.load(root)
            self.benchmark = prepared
            overrides["input_scale"] = prepared.scale  # the dataset's units decide
            self.train_index, self.tuples = prepared.train_index, prepared.tuples
        else:
            self.benchmark = Benchmark.load(root)
            self.train_index = self.benchmark.select(split=config.data.train_splits)
            if config.data.val_root is not None:
                self.val_benchmark = Benchmark.load(config.data.val_root)
            self.tuples = build_tuples(
                self.benchmark.xy[self.train_index],
                self.benchmark.world[self.train_index],
                config.data.pos_radius,
                config.data.neg_radius,
            )
        if len(self.train_index) == 0:
            raise ValueError(
                f"{config.data.root}: no training submaps (split in {config.data.train_splits})"
            )
        torch.manual_seed(config.seed)
        self.model = create_model(config.model, **overrides)
        if config.init_weights is not None:
            _, init = load_model(config.init_weights)
            if init is None:
                raise CheckpointError(config.init_weights, "init_weights must be a checkpoint")
            load_weights(self.model, init, config.init_weights)
        self.model = self.model.to(self.device)
        self.validate = validate or self._default_validate
        self.loss_fn: LossFn = _make_loss(config)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.ema = ModelEma(self.model, config.loss.ema_decay) if config.loss.mesa > 0 else None
        self.average = ModelEma(self.model, config.weights_ema) if config.weights_ema else None
        self.steps = 0
        self.sampler = PairBatchSampler(
            self.tuples,
            config.batch_size,
            seed=config.seed,
            groups=self.benchmark.world[self.train_index] if config.data.group_batches else None,
            sources=self.benchmark.source[self.train_index],
            cross_source=config.data.cross_source,
        )
        chunk = min(config.batch_split_size, max(1, config.batch_size // self.ddp.world_size))
        self.collate = Collate(
            self.model.config, self.tuples, config.augment, chunk, seed=config.seed
        )
        dataset = SubmapDataset(self.benchmark, self.train_index, align_yaw=config.data.align_yaw)
        self.loader = make_loader(dataset, self.sampler, self.collate, config.data.num_workers)

    # ------------------------------------------------------------------ helpers
    @property
    def is_main(self) -> bool:
        return self.ddp.rank == 0

    def _default_validate(self, model: HOTFormerLoc) -> dict[str, float]:
        if isinstance(self.benchmark, PreparedDataset):
            from hotformerloc.eval.prepared import evaluate_prepared_model

            res = evaluate_prepared_model(
                model,
                self.benchmark,
                batch_size=self.config.val_batch_size,
                num_workers=self.config.data.num_workers,
            )
            return {"ar1": res.r1, "ar1pct": res.recall_1pct, "mrr": res.mrr_hits}
        from hotformerloc.eval.benchmark import evaluate_model

        return evaluate_model(
            model,
            self.val_benchmark if self.val_benchmark is not None else self.benchmark,
            batch_size=self.config.val_batch_size,
            num_workers=self.config.data.num_workers,
        ).summary()

    def _state(self, epoch: int, meta: dict[str, Any]) -> TrainState:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return TrainState(
            model=dict(self.model.state_dict()),
            optimizer=self.optimizer.state_dict(),
            ema=dict(self.ema.state_dict()) if self.ema is not None else None,
            rng=rng,
            meta={**meta, "epoch": epoch, "steps": self.steps},
            average=dict(self.average.state_dict()) if self.average is not None else None,
        )

    def _restore(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        if self.ema is not None and state.ema is not None:
            self.ema.load_state_dict(state.ema)
        if self.average is not None and state.average is not None:
            self.average.load_state_dict(state.average)
        self.steps = int(state.meta.get("steps", 0))
        torch.set_rng_state(state.rng["torch"])
        if "cuda" in state.rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(state.rng["cuda"], self.device)

    def _write_log(self, log: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for row in log:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(log)
        atomic_write_text(self.out_dir / "log.csv", buf.getvalue())
        atomic_write_text(
            self.out_dir / "log.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in log)
        )

    @property
    def eval_model(self) -> HOTFormerLoc:
        """The weights that are validated and saved: the weight average when on."""
        return self.average.module if self.average is not None else self.model

    def _checkpoint(self, name: str, extra: dict[str, Any]) -> None:
        save_checkpoint(
            self.out_dir / name,
            self.eval_model,
            self.config.model,
            to_dict(self.model.config),
            extra=extra,
        )

    def _agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (clocks differ between processes)."""
        if not self.ddp.active:
            return flag
        t = torch.tensor([int(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, src=0)
        return bool(t.item())

    # ------------------------------------------------------------------ training
    def train_epoch(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """One epoch of multi-staged backprop steps; returns mean loss statistics."""
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * cfg.lr_factor(epoch)
        self.sampler.set_epoch(epoch)
        mesa = cfg.loss.mesa if (epoch / cfg.epochs) > cfg.loss.mesa_start_ratio else 0.0
        teacher = self.ema.module if (self.ema is not None and mesa > 0) else None
        self.model.train()
        sums: dict[str, float] = {}
        num_batches = len(self.sampler)
        n = 0
        for b, batch in enumerate(self.loader):
            batch = batch.to(self.device)
            stats = self._step(model, batch, teacher, mesa)
            n += 1
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            if self.progress is not None:
                self.progress(epoch, b + 1, num_batches, stats)
        return {k: v / max(n, 1) for k, v in sums.items()} | {"batches": float(n)}

    def _step(
        self, model: nn.Module, batch: Batch, teacher: nn.Module | None, mesa: float
    ) -> dict[str, float]:
        assert batch.positives_mask is not None and batch.negatives_mask is not None
        self.optimizer.zero_grad(set_to_none=True)
        out, _ = multistage_step(
            model,
            batch.octrees,
            batch.chunks,
            batch.positives_mask,
            batch.negatives_mask,
            self.loss_fn,
            teacher,
            mesa,
            self.ddp,
        )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.steps += 1
        if self.average is not None:
            t = self.steps
            self.average.update(self.model, min(self.average.decay, (1 + t) / (10 + t)))
        return {"loss": float(out.loss.detach()), **{k: float(v) for k, v in out.stats.items()}}

    def fit(self, resume: bool = False) -> TrainResult:
        """Run (or, with ``resume``, continue) training; see the class doc."""
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.out_dir / "resume.safetensors"
        start, best_score, best_epoch, log = 0, None, None, []
        if resume:
            state = load_state(state_path)
            if state.meta.get("config") != to_dict(cfg):
                raise ValueError(
                    f"{state_path}: the run was started with another config; "
                    "resume with the same config (see config.yaml in the run folder)"
                )
            self._restore(state)
            start = int(state.meta["epoch"])
            best_score, best_epoch = state.meta.get("best_score"), state.meta.get("best_epoch")
            log = list(state.meta.get("log", []))
        elif self.is_main:
            if state_path.exists():
                raise FileExistsError(
                    f"{self.out_dir}: already holds a training run; use --resume to continue "
                    "it or choose another output folder"
                )
            atomic_write_text(
                self.out_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False)
            )
        model: nn.Module = self.model
        if self.ddp.active:
            model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # GeM pooling reads the finest level only: the coarse levels' last H-OSA
                # blocks get no gradient
                find_unused_parameters=self.model.config.pooling == "gem",
            )
        t_start = time.monotonic()
        stopped = False
        epoch = start
        for epoch in range(start, cfg.epochs):
            t0 = time.monotonic()
            stats = self.train_epoch(epoch, model)
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": cfg.lr * cfg.lr_factor(epoch),
                "seconds": round(time.monotonic() - t0, 3),
                **{k: round(v, 6) for k, v in stats.items()},
            }
            last = epoch + 1 == cfg.epochs
            # stop when another epoch like this one would end past the budget
            elapsed_min = (time.monotonic() - t_start) / 60
            epoch_min = (time.monotonic() - t0) / 60
            stopped = self._agree(
                cfg.time_budget_min > 0
                and not last
                and elapsed_min + epoch_min > cfg.time_budget_min
            )
            validate = (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or last or stopped
            if validate and self.is_main:  # other ranks go on to the next collective
                self.eval_model.eval()
                with torch.inference_mode():
                    metrics = self.validate(self.eval_model)
                row.update({f"val_{k}": round(v, 4) for k, v in metrics.items()})
                score = metrics.get("ar1", math.nan)
                if best_score is None or score > best_score:
                    best_score, best_epoch = score, epoch + 1
                    self._checkpoint("best.safetensors", {"epoch": epoch + 1, "val": metrics})
            log.append(row)
            if self.is_main:
                meta = {
                    "config": to_dict(cfg),
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "log": log,
                }
                self._checkpoint("last.safetensors", {"epoch": epoch + 1})
                save_state(state_path, self._state(epoch + 1, meta))
                self._write_log(log)
            if stopped:
                break
        result = TrainResult(
            out_dir=self.out_dir,
            epochs_run=epoch + 1 - start if start < cfg.epochs else 0,
            last_epoch=epoch + 1 if start < cfg.epochs else start,
            best_epoch=best_epoch,
            best_score=best_score,
            stopped_by_budget=stopped,
            log=log,
        )
        if self.is_main:
            summary = {
                "model": cfg.model,
                "last_epoch": result.last_epoch,
                "best_epoch": best_epoch,
                "best_score": best_score,
                "stopped_by_budget": stopped,
                "minutes": round((time.monotonic() - t_start) / 60, 3),
            }
            atomic_write_text(self.out_dir / "done.json", json.dumps(summary, indent=1) + "\n")
        return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_main(
    rank: int, env: dict[str, str], threads: int, config: TrainConfig, out: str, resume: bool
) -> None:
    """A spawned rank of :func:`fit_local`; ends with ``os._exit`` (0 on success, else 1).

    A spawned interpreter that exits normally runs the C++ static destructors, and with
    gloo loaded these abort now and then ("terminate called without an active exception",
    exit -6: 2 runs in 20 on a loaded 2-core machine). ``os._exit`` skips them.
    """
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    code = 1
    try:
        Trainer(config, out).fit(resume=resume)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fit_local(
    config: TrainConfig,
    out_dir: str | Path,
    nproc: int = 1,
    resume: bool = False,
    progress: Callable[[int, int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train with ``nproc`` data-parallel processes on this machine (gloo on CPU).

    This process is rank 0 (progress, validation, files); ranks 1..nproc-1 are spawned.
    Each rank gets ``cpus // nproc`` threads: on a small CPU, single-thread ranks use the
    cores better than one multi-thread process (``docs/training.md``).
    ``nproc`` 1 is a plain :class:`Trainer` run.
    """
    if nproc <= 1:
        return Trainer(config, out_dir, progress=progress).fit(resume=resume)
    out = Path(out_dir)
    if not resume and (out / "resume.safetensors").exists():
        raise FileExistsError(
            f"{out}: already holds a training run; use --resume to continue it or choose "
            "another output folder"
        )
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cpus or 1) // nproc)
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(nproc),
    }
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_rank_main, args=(r, env, threads, config, str(out), resume), daemon=True
        )
        for r in range(1, nproc)
    ]
    saved_env = {k: os.environ.get(k) for k in (*env, "RANK", "LOCAL_RANK")}
    saved_threads = torch.get_num_threads()
    for p in procs:
        p.start()
    try:
        os.environ.update(env, RANK="0", LOCAL_RANK="0")
        torch.set_num_threads(threads)
        result = Trainer(config, out, progress=progress).fit(resume=resume)
        for p in procs:
            p.join(timeout=120)
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"training rank processes failed (exit codes {failed})")
        return result
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        if dist.is_initialized():
            dist.destroy_process_group()
        torch.set_num_threads(saved_threads)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _make_loss(cfg: TrainConfig) -> LossFn:
    lc = cfg.loss
    if lc.name == "truncated_smooth_ap":
        fn = build_loss(lc.name, tau=lc.tau, positives_per_query=lc.positives_per_query)
    else:
        fn = build_loss(lc.name, margin=lc.margin)
    return fn


__all__ = [
    "Distributed",
    "TrainResult",
    "Trainer",
    "fit_local",
    "multistage_step",
]
