"""Training losses (spec 3.1): Truncated Smooth-AP, batch-hard triplet, MESA self-distillation.

All metric losses take the full batch embedding matrix and two explicit boolean masks:

* ``embeddings``: float tensor ``(B, D)`` (L2-normalised in practice, not required);
* ``positives_mask``: bool ``(B, B)``, ``[q, z]`` true when ``z`` is a positive of ``q``;
* ``negatives_mask``: bool ``(B, B)``, ``[q, z]`` true when ``z`` is a negative of ``q``
  (``~non_negatives`` as built by the data side, spec 3.2).

Pairs that are neither positive nor negative are ignored. The diagonal is ignored in both
masks (an anchor is never its own positive nor its own negative). A pair may not be both
positive and negative (``ValueError``). Each loss returns a :class:`LossOutput`: a scalar
loss with a graph back to ``embeddings`` and a few detached float statistics for logging.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hotformerloc.config import ConfigError

__all__ = [
    "LOSSES",
    "LossFn",
    "LossOutput",
    "ModelEma",
    "batch_hard_triplet",
    "build_loss",
    "mesa_loss",
    "pairwise_distance",
    "truncated_smooth_ap",
]

SIMILARITIES = ("euclidean", "cosine")
_SQ_EPS = 1e-12  # squared-distance floor before sqrt: keeps gradients finite at d = 0


@dataclass(frozen=True)
class LossOutput:
    """Result of a metric loss.

    * ``loss``: 0-dim tensor, differentiable wrt the embeddings;
    * ``stats``: detached Python floats for logging (keys depend on the loss; ``"loss"`` is
      always present). Means over an empty set are ``nan``.
    """

    loss: Tensor
    stats: dict[str, float] = field(default_factory=dict)


LossFn = Callable[[Tensor, Tensor, Tensor], LossOutput]


# ---------------------------------------------------------------------------- helpers


def pairwise_distance(embeddings: Tensor) -> Tensor:
    """L2 distances ``(B, B)`` between the rows of ``embeddings`` ``(B, D)``.

    Uses ``|a|² + |b|² − 2a·b`` (no ``(B, B, D)`` intermediate), clamped at 1e-12 before
    the square root, with the diagonal forced to that floor: values are ``>= 1e-6`` and
    gradients are finite everywhere (zero through the clamped entries, e.g. the diagonal).
    """
    sq = embeddings.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (embeddings @ embeddings.T)
    eye = torch.eye(embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
    return d2.masked_fill(eye, 0.0).clamp_min(_SQ_EPS).sqrt()


def _check_inputs(embeddings: Tensor, positives_mask: Tensor, negatives_mask: Tensor) -> None:
    if embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise ValueError(
            f"embeddings must be a float (B, D) tensor, got {tuple(embeddings.shape)} "
            f"{embeddings.dtype}"
        )
    b = embeddings.shape[0]
    for name, mask in (("positives_mask", positives_mask), ("negatives_mask", negatives_mask)):
        if mask.dtype != torch.bool or tuple(mask.shape) != (b, b):
            raise ValueError(
                f"{name} must be a bool ({b}, {b}) tensor, got {tuple(mask.shape)} {mask.dtype}"
            )


def _clean_masks(positives_mask: Tensor, negatives_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Masks with the diagonal cleared; raises if a pair is both positive and negative."""
    b = positives_mask.shape[0]
    off_diag = ~torch.eye(b, dtype=torch.bool, device=positives_mask.device)
    pos = positives_mask & off_diag
    neg = negatives_mask & off_diag
    if bool((pos & neg).any()):
        raise ValueError("positives_mask and negatives_mask overlap: a pair cannot be both")
    return pos, neg


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    n = int(mask.sum())
    return float(values[mask].sum()) / n if n else math.nan


def _check_smooth_ap_params(tau: float, positives_per_query: int, similarity: str) -> None:
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if isinstance(positives_per_query, bool) or not isinstance(positives_per_query, int):
        raise ValueError(f"positives_per_query must be an int, got {positives_per_query!r}")
    if positives_per_query < 1:
        raise ValueError(f"positives_per_query must be >= 1, got {positives_per_query}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")


def _check_triplet_params(margin: float) -> None:
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")


# ---------------------------------------------------------------- truncated smooth-AP


def truncated_smooth_ap(
    embeddings: Tensor,
    positives_mask: Tensor,
    negatives_mask: Tensor,
    tau: float = 0.01,
    positives_per_query: int = 4,
    similarity: str = "euclidean",
) -> LossOutput:
    """Truncated Smooth-AP (spec 3.1), vectorised over queries.

    ``s_qz = −‖e_q − e_z‖₂`` (``"euclidean"``) or ``e_q·e_z`` (``"cosine"``). Per query the
    ``positives_per_query`` most similar positives are selected (no gradient through the
    selection); for each selected ``p``, with ``σ(x) = 1/(1+exp(clamp(−x/τ, −50, 50)))``:
    ``R_P = 1 + Σ_{z∈P, z≠p} σ(s_qz − s_qp)``, ``R_Ω = R_P + Σ_{z∈N} σ(s_qz − s_qp)``;
    ``AP_q`` = mean of ``R_P/R_Ω`` over the selected positives. Queries without a positive are
    dropped; loss = ``1 − mean_q AP_q`` in ``[0, 1)``.

    Memory is ``O(B · positives_per_query · B)``. Raises ``ValueError`` on bad shapes or
    params, overlapping masks, or when no query has a positive.

    Stats: ``loss``, ``ap``, ``num_queries`` (queries with a positive), ``mean_pos_dist``,
    ``mean_neg_dist`` (L2 over all positive / negative pairs), ``mean_num_positives``.
    """
    _check_smooth_ap_params(tau, positives_per_query, similarity)
    _check_inputs(embeddings, positives_mask, negatives_mask)
    pos, neg = _clean_masks(positives_mask, negatives_mask)
    has_pos = pos.any(dim=1)
    if not bool(has_pos.any()):
        raise ValueError("truncated_smooth_ap: no query in the batch has a positive")

    if similarity == "euclidean":
        dist = pairwise_distance(embeddings)
        sim = -dist
    else:
        sim = embeddings @ embeddings.T
        with torch.no_grad():
            dist = pairwise_distance(embeddings)
    b = embeddings.shape[0]
    k = min(positives_per_query, b)

    with torch.no_grad():
        masked = sim.detach().masked_fill(~pos, -math.inf)
        sel = masked.topk(k, dim=1).indices  # (B, k), most similar positives first
        sel_valid = pos.gather(1, sel)  # (B, k): slot holds a real positive

    s_qp = sim.gather(1, sel)  # (B, k)
    x = sim[:, None, :] - s_qp[:, :, None]  # (B, k, B): s_qz − s_qp
    sig = 1.0 / (1.0 + torch.exp((-x / tau).clamp(-50.0, 50.0)))

    pos_other = pos[:, None, :].expand(b, k, b).clone()
    pos_other.scatter_(2, sel[:, :, None], False)  # z ≠ p
    r_p = 1.0 + (sig * pos_other).sum(dim=2)  # (B, k)
    r_omega = r_p + (sig * neg[:, None, :]).sum(dim=2)
    ratio = (r_p / r_omega) * sel_valid

    n_sel = sel_valid.sum(dim=1)  # (B,)
    ap_q = ratio.sum(dim=1)[has_pos] / n_sel[has_pos]
    ap = ap_q.mean()
    loss = 1.0 - ap

    with torch.no_grad():
        d = dist.detach()
        stats = {
            "loss": float(loss.detach()),
            "ap": float(ap.detach()),
            "num_queries": float(has_pos.sum()),
            "mean_pos_dist": _masked_mean(d, pos),
            "mean_neg_dist": _masked_mean(d, neg),
            "mean_num_positives": float(pos.sum(dim=1)[has_pos].float().mean()),
        }
    return LossOutput(loss=loss, stats=stats)


# ------------------------------------------------------------------ batch-hard triplet


def batch_hard_triplet(
    embeddings: Tensor,
    positives_mask: Tensor,
    negatives_mask: Tensor,
    margin: float = 0.4,
) -> LossOutput:
    """Batch-hard triplet loss on L2 distances.

    For every anchor with at least one positive and one negative: hardest positive
    (largest distance) and hardest negative (smallest distance);
    loss = mean over those anchors of ``relu(d_ap − d_an + margin)``, ``>= 0``. Raises
    ``ValueError`` on bad shapes or params, overlapping masks, or when no anchor has both.

    Stats: ``loss``, ``num_triplets`` (anchors used), ``num_non_zero`` (triplets with a
    positive loss), ``mean_pos_dist`` / ``mean_neg_dist`` (hardest ones, per anchor).
    """
    _check_triplet_params(margin)
    _check_inputs(embeddings, positives_mask, negatives_mask)
    pos, neg = _clean_masks(positives_mask, negatives_mask)
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not bool(valid.any()):
        raise ValueError("batch_hard_triplet: no anchor has both a positive and a negative")

    dist = pairwise_distance(embeddings)
    hardest_pos = dist.masked_fill(~pos, -math.inf).max(dim=1).values[valid]
    hardest_neg = dist.masked_fill(~neg, math.inf).min(dim=1).values[valid]
    per_anchor = F.relu(hardest_pos - hardest_neg + margin)
    loss = per_anchor.mean()

    with torch.no_grad():
        stats = {
            "loss": float(loss.detach()),
            "num_triplets": float(valid.sum()),
            "num_non_zero": float((per_anchor.detach() > 0).sum()),
            "mean_pos_dist": float(hardest_pos.detach().mean()),
            "mean_neg_dist": float(hardest_neg.detach().mean()),
        }
    return LossOutput(loss=loss, stats=stats)


# ---------------------------------------------------------------------------- factory

LOSSES: dict[str, Callable[..., LossOutput]] = {
    "truncated_smooth_ap": truncated_smooth_ap,
    "batch_hard_triplet": batch_hard_triplet,
}
_VALIDATORS: dict[str, Callable[..., None]] = {
    "truncated_smooth_ap": _check_smooth_ap_params,
    "batch_hard_triplet": _check_triplet_params,
}
_TENSOR_ARGS = ("embeddings", "positives_mask", "negatives_mask")


def _canonical(name: str) -> str | None:
    key = name.replace("_", "").replace("-", "").lower()
    return next((n for n in LOSSES if n.replace("_", "") == key), None)


def build_loss(name: str, **params: Any) -> LossFn:
    """Loss callable ``(embeddings, positives_mask, negatives_mask) -> LossOutput``.

    ``name``: ``"truncated_smooth_ap"`` or ``"batch_hard_triplet"`` (case, ``_`` and ``-``
    are ignored, so the original config value ``"TruncatedSmoothAP"`` also works).
    ``params``: keyword arguments of that function (``tau``, ``positives_per_query``,
    ``similarity`` / ``margin``), validated now. Unknown name or param, or a bad value,
    raises :class:`~hotformerloc.config.ConfigError` (a ``ValueError``). The result is a
    ``functools.partial`` (``.func``, ``.keywords`` show what was built).
    """
    canon = _canonical(name)
    if canon is None:
        raise ConfigError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")
    fn = LOSSES[canon]
    allowed = [p for p in inspect.signature(fn).parameters if p not in _TENSOR_ARGS]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown} for loss {canon!r}; valid: {', '.join(allowed)}"
        )
    defaults = {p: v.default for p, v in inspect.signature(fn).parameters.items() if p in allowed}
    try:
        _VALIDATORS[canon](**{**defaults, **params})
    except ValueError as exc:
        raise ConfigError(f"loss {canon!r}: {exc}") from exc
    return functools.partial(fn, **params)


# ------------------------------------------------------------------------------- MESA


def mesa_loss(
    student: Tensor, teacher: Tensor, temperature: float = 3.0, weight: float = 50.0
) -> Tensor:
    """MESA self-distillation term (spec 3.1): ``weight · KL(softmax(t/T) ‖ softmax(s/T))``.

    ``student``, ``teacher``: float ``(B, D)``; the softmax runs over ``D``. Computed as
    ``F.kl_div(log_softmax(student/T), softmax(teacher/T), reduction="batchmean")`` (sum
    over all elements / B). The teacher is detached. Returns a 0-dim tensor ``>= 0`` (0 iff
    the rows' softmaxes match). The caller applies the ``mesa`` factor and start ratio.
    """
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher must be (B, D) of the same shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_student = F.log_softmax(student / temperature, dim=1)
    p_teacher = F.softmax(teacher.detach().to(student.dtype) / temperature, dim=1)
    return weight * F.kl_div(log_p_student, p_teacher, reduction="batchmean")


_M = TypeVar("_M", bound=nn.Module)


class ModelEma(Generic[_M]):
    """Exponential moving average copy of a model (the MESA teacher).

    ``module`` is a deep copy of ``model`` in eval mode with ``requires_grad=False``.
    :meth:`update` (call after each optimiser step) sets every floating parameter to
    ``decay · ema + (1 − decay) · current`` and copies every buffer (non-float parameters
    are copied too). Parameters and buffers are matched by name, so pass the same
    (unwrapped) model class every time. Not an ``nn.Module``: it is never registered inside
    the trained model or its optimiser. Calling the object runs ``module`` under
    ``torch.no_grad()``.
    """

    def __init__(self, model: _M, decay: float = 0.9998) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.module: _M = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """One EMA step from ``model``'s current parameters and buffers (``decay``
        overrides the constructor's for this step)."""
        d = self.decay if decay is None else float(decay)
        ema_params = dict(self.module.named_parameters())
        cur_params = dict(model.named_parameters())
        ema_bufs = dict(self.module.named_buffers())
        cur_bufs = dict(model.named_buffers())
        if ema_params.keys() != cur_params.keys() or ema_bufs.keys() != cur_bufs.keys():
            raise ValueError("ModelEma.update: model parameters/buffers do not match the EMA copy")
        for name, ema_p in ema_params.items():
            cur = cur_params[name].detach()
            if ema_p.is_floating_point():
                ema_p.lerp_(cur.to(ema_p.dtype), 1.0 - d)
            else:
                ema_p.copy_(cur)
        for name, ema_b in ema_bufs.items():
            ema_b.copy_(cur_bufs[name])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """The EMA module's ``state_dict`` (loadable into a plain model too)."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict produced by :meth:`state_dict` (strict)."""
        self.module.load_state_dict(state_dict)
