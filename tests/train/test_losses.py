"""Training losses (spec 3.1): fast versions checked against literal loop references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hotformerloc.config import ConfigError
from hotformerloc.train.losses import (
    LOSSES,
    LossOutput,
    ModelEma,
    batch_hard_triplet,
    build_loss,
    mesa_loss,
    pairwise_distance,
    truncated_smooth_ap,
)

# ------------------------------------------------------------------ literal references


def _sigma(x: torch.Tensor, tau: float) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(torch.clamp(-x / tau, -50.0, 50.0)))


def _sim(e: torch.Tensor, q: int, z: int, similarity: str) -> torch.Tensor:
    if similarity == "euclidean":
        return -torch.linalg.vector_norm(e[q] - e[z])
    return torch.dot(e[q], e[z])


def truncated_smooth_ap_reference(
    e: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    tau: float = 0.01,
    positives_per_query: int = 4,
    similarity: str = "euclidean",
) -> torch.Tensor:
    """Spec 3.1 written out with Python loops over queries, positives and z."""
    b = e.shape[0]
    aps = []
    for q in range(b):
        positives = [z for z in range(b) if z != q and bool(pos[q, z])]
        negatives = [z for z in range(b) if z != q and bool(neg[q, z])]
        if not positives:
            continue
        ranked = sorted(positives, key=lambda z: -float(_sim(e.detach(), q, z, similarity)))
        ratios = []
        for p in ranked[:positives_per_query]:
            s_qp = _sim(e, q, p, similarity)
            r_p = 1.0
            for z in positives:
                if z != p:
                    r_p = r_p + _sigma(_sim(e, q, z, similarity) - s_qp, tau)
            r_omega = r_p
            for z in negatives:
                r_omega = r_omega + _sigma(_sim(e, q, z, similarity) - s_qp, tau)
            ratios.append(r_p / r_omega)
        aps.append(sum(ratios) / len(ratios))
    if not aps:
        raise ValueError("no query has a positive")
    return 1.0 - sum(aps) / len(aps)


def batch_hard_triplet_reference(
    e: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float = 0.4
) -> torch.Tensor:
    b = e.shape[0]
    terms = []
    for a in range(b):
        d_pos = [torch.linalg.vector_norm(e[a] - e[z]) for z in range(b) if z != a and pos[a, z]]
        d_neg = [torch.linalg.vector_norm(e[a] - e[z]) for z in range(b) if z != a and neg[a, z]]
        if d_pos and d_neg:
            terms.append(torch.relu(max(d_pos) - min(d_neg) + margin))
    return sum(terms) / len(terms)


# ----------------------------------------------------------------------------- batches


def _labelled_batch(seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    """B = 12, D = 8 float64; positive counts per query: 5 (x6), 2 (x3), 1 (x2), 0 (x1).

    Positive: same label; ignored: labels differ by 1; negative: labels differ by >= 2.
    """
    labels = torch.tensor([0] * 6 + [1] * 3 + [3] * 2 + [5])
    gen = torch.Generator().manual_seed(seed)
    e = torch.randn(12, 8, generator=gen, dtype=torch.float64)
    e = scale * e / e.norm(dim=1, keepdim=True)
    diff = (labels[:, None] - labels[None, :]).abs()
    pos = (diff == 0) & ~torch.eye(12, dtype=torch.bool)
    neg = diff >= 2
    return e, pos, neg


def test_labelled_batch_covers_positive_counts() -> None:
    _, pos, neg = _labelled_batch()
    assert sorted(set(pos.sum(1).tolist())) == [0, 1, 2, 5]
    assert not (pos & neg).any()
    assert (~pos & ~neg & ~torch.eye(12, dtype=torch.bool)).any()  # some ignored pairs


# ------------------------------------------------------------------- smooth-AP: values


@pytest.mark.parametrize(
    ("tau", "k", "similarity"),
    [(0.01, 4, "euclidean"), (0.3, 4, "euclidean"), (0.3, 2, "euclidean"), (0.2, 4, "cosine")],
)
def test_smooth_ap_matches_reference_value_and_grad(tau: float, k: int, similarity: str) -> None:
    for seed in range(2):
        e, pos, neg = _labelled_batch(seed)
        e_fast = e.clone().requires_grad_(True)
        e_ref = e.clone().requires_grad_(True)
        out = truncated_smooth_ap(e_fast, pos, neg, tau, k, similarity)
        ref = truncated_smooth_ap_reference(e_ref, pos, neg, tau, k, similarity)
        torch.testing.assert_close(out.loss, ref, rtol=1e-9, atol=1e-10)
        out.loss.backward()
        ref.backward()
        assert torch.isfinite(e_fast.grad).all()
        torch.testing.assert_close(e_fast.grad, e_ref.grad, rtol=1e-6, atol=1e-9)
    assert e_fast.grad.abs().sum() > 0


def test_smooth_ap_hand_computed_b3() -> None:
    # 1-D embeddings e = [0, 1, 3], tau = 1, euclidean: s_01 = s_10 = -1, s_02 = -3, s_12 = -2.
    # q=0: P={1}, N={2}: R_P = 1, R_Omega = 1 + sigma(s_02 - s_01) = 1 + sigma(-2).
    # q=1: P={0}, N={2}: R_P = 1, R_Omega = 1 + sigma(s_12 - s_10) = 1 + sigma(-1).
    # q=2: no positive -> dropped.  sigma(-2) = 0.1192029, sigma(-1) = 0.2689414
    # AP = (1/1.1192029 + 1/1.2689414) / 2 = (0.8934930 + 0.7880584) / 2 = 0.8407757
    # loss = 1 - 0.8407757 = 0.1592243
    e = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    pos = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    neg = torch.tensor([[0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.bool)
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    expected = 1.0 - (1.0 / (1.0 + sig(-2.0)) + 1.0 / (1.0 + sig(-1.0))) / 2.0
    assert expected == pytest.approx(0.1592243, abs=1e-7)
    out = truncated_smooth_ap(e, pos, neg, tau=1.0)
    assert float(out.loss) == pytest.approx(expected, abs=1e-12)
    assert out.stats["num_queries"] == 2.0
    assert out.stats["ap"] == pytest.approx(1.0 - expected, abs=1e-12)
    assert out.stats["mean_pos_dist"] == pytest.approx(1.0)
    assert out.stats["mean_neg_dist"] == pytest.approx((3 + 2 + 3 + 2) / 4)


def test_smooth_ap_hand_computed_two_positives() -> None:
    # e = [0, 1, 2, 0.5], tau = 1, only q=0 has a positive: P={1, 2}, N={3} (asymmetric masks).
    # s_01 = -1, s_02 = -2, s_03 = -0.5.
    # p=1: R_P = 1 + sigma(-2+1) = 1.2689414, R_Omega = R_P + sigma(-0.5+1) = 1.8914007
    # p=2: R_P = 1 + sigma(-1+2) = 1.7310586, R_Omega = R_P + sigma(-0.5+2) = 2.5486330
    # AP_0 = (1.2689414/1.8914007 + 1.7310586/2.5486330) / 2 = (0.6709003 + 0.6792106) / 2
    # loss = 1 - 0.6750555 = 0.3249445
    e = torch.tensor([[0.0], [1.0], [2.0], [0.5]], dtype=torch.float64)
    pos = torch.zeros(4, 4, dtype=torch.bool)
    neg = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[0, 2] = True
    neg[0, 3] = True
    out = truncated_smooth_ap(e, pos, neg, tau=1.0)
    assert float(out.loss) == pytest.approx(0.3249445, abs=1e-7)
    assert out.stats["num_queries"] == 1.0


def test_smooth_ap_perfect_separation_is_near_zero() -> None:
    gen = torch.Generator().manual_seed(3)
    centres = torch.eye(4, dtype=torch.float64)
    labels = torch.arange(4).repeat_interleave(3)
    e = centres[labels] + 1e-4 * torch.randn(12, 4, generator=gen, dtype=torch.float64)
    pos = (labels[:, None] == labels[None, :]) & ~torch.eye(12, dtype=torch.bool)
    neg = labels[:, None] != labels[None, :]
    e32 = e.float().requires_grad_(True)
    out = truncated_smooth_ap(e32, pos, neg)
    assert 0.0 <= float(out.loss.detach()) < 1e-6
    out.loss.backward()  # float32, |x/tau| ~ 140: the exponent clamp keeps this finite
    assert torch.isfinite(e32.grad).all()
    assert out.stats["ap"] == pytest.approx(1.0, abs=1e-6)
    # and a bad ranking (negatives closer than positives) gives a large loss
    bad = truncated_smooth_ap(e.float(), neg & (labels[:, None] - labels[None, :]).abs().eq(1), pos)
    assert float(bad.loss) > 0.3


def test_smooth_ap_permutation_equivariance() -> None:
    e, pos, neg = _labelled_batch(seed=5)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    e1 = e.clone().requires_grad_(True)
    e2 = e[perm].clone().requires_grad_(True)
    out1 = truncated_smooth_ap(e1, pos, neg, tau=0.3)
    out2 = truncated_smooth_ap(e2, pos[perm][:, perm], neg[perm][:, perm], tau=0.3)
    torch.testing.assert_close(out1.loss, out2.loss, rtol=1e-12, atol=1e-12)
    out1.loss.backward()
    out2.loss.backward()
    torch.testing.assert_close(e2.grad, e1.grad[perm], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------ smooth-AP: edge contracts


def test_smooth_ap_ignores_diagonal_and_has_finite_grads() -> None:
    e, pos, neg = _labelled_batch(seed=2)
    e[1] = e[0]  # duplicate embeddings: zero distance off the diagonal as well
    eye = torch.eye(12, dtype=torch.bool)
    base = truncated_smooth_ap(e, pos, neg, tau=0.3)
    e_grad = e.clone().requires_grad_(True)
    with_diag = truncated_smooth_ap(e_grad, pos | eye, neg | eye, tau=0.3)
    assert float(with_diag.loss.detach()) == pytest.approx(float(base.loss), abs=1e-12)
    with_diag.loss.backward()
    assert torch.isfinite(e_grad.grad).all()


def test_smooth_ap_output_contract() -> None:
    e, pos, neg = _labelled_batch()
    out = truncated_smooth_ap(e.float(), pos, neg, positives_per_query=50)  # k > B is fine
    assert isinstance(out, LossOutput)
    assert out.loss.ndim == 0 and out.loss.dtype == torch.float32
    assert 0.0 <= float(out.loss) <= 1.0
    assert set(out.stats) >= {"loss", "ap", "num_queries", "mean_pos_dist", "mean_neg_dist"}
    assert out.stats["num_queries"] == 11.0
    assert all(isinstance(v, float) for v in out.stats.values())
    with pytest.raises(AttributeError):
        out.loss = torch.tensor(0.0)  # type: ignore[misc]


def test_smooth_ap_errors() -> None:
    e, pos, neg = _labelled_batch()
    none = torch.zeros_like(pos)
    with pytest.raises(ValueError, match="no query"):
        truncated_smooth_ap(e, none, neg)
    with pytest.raises(ValueError, match="no query"):
        truncated_smooth_ap(e, torch.eye(12, dtype=torch.bool), neg)  # diagonal only
    with pytest.raises(ValueError, match="overlap"):
        truncated_smooth_ap(e, pos, neg | pos)
    with pytest.raises(ValueError, match="bool"):
        truncated_smooth_ap(e, pos.float(), neg)
    with pytest.raises(ValueError, match="bool"):
        truncated_smooth_ap(e, pos[:5, :5], neg)
    with pytest.raises(ValueError, match="similarity"):
        truncated_smooth_ap(e, pos, neg, similarity="l1")
    with pytest.raises(ValueError, match="tau"):
        truncated_smooth_ap(e, pos, neg, tau=0.0)


def test_pairwise_distance() -> None:
    e, _, _ = _labelled_batch()
    d = pairwise_distance(e)
    torch.testing.assert_close(d, torch.cdist(e, e).fill_diagonal_(1e-6), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ batch-hard triplet


def test_triplet_matches_reference() -> None:
    for seed in range(2):
        e, pos, neg = _labelled_batch(seed)
        e_fast = e.clone().requires_grad_(True)
        e_ref = e.clone().requires_grad_(True)
        out = batch_hard_triplet(e_fast, pos, neg, margin=0.4)
        ref = batch_hard_triplet_reference(e_ref, pos, neg, margin=0.4)
        torch.testing.assert_close(out.loss, ref, rtol=1e-9, atol=1e-10)
        out.loss.backward()
        ref.backward()
        torch.testing.assert_close(e_fast.grad, e_ref.grad, rtol=1e-7, atol=1e-10)


def test_triplet_hand_made() -> None:
    # e = [0, 1, 3, 0.2]; q=0: P={1}, N={2,3}: relu(1 - 0.2 + 0.4) = 1.2
    # q=1: P={0}, N={2}: relu(1 - 2 + 0.4) = 0; q=2, q=3: no positive -> skipped.
    e = torch.tensor([[0.0], [1.0], [3.0], [0.2]], dtype=torch.float64)
    pos = torch.zeros(4, 4, dtype=torch.bool)
    neg = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True
    neg[0, 2] = neg[0, 3] = neg[1, 2] = True
    out = batch_hard_triplet(e, pos, neg)
    assert float(out.loss) == pytest.approx(0.6)
    assert out.stats["num_triplets"] == 2.0
    assert out.stats["num_non_zero"] == 1.0
    with pytest.raises(ValueError, match="both"):
        batch_hard_triplet(e, pos, torch.zeros_like(neg))


# --------------------------------------------------------------------------- factory


def test_build_loss() -> None:
    e, pos, neg = _labelled_batch()
    assert set(LOSSES) == {"truncated_smooth_ap", "batch_hard_triplet"}
    fn = build_loss("truncated_smooth_ap", tau=0.3, positives_per_query=2)
    expected = truncated_smooth_ap(e, pos, neg, tau=0.3, positives_per_query=2)
    assert float(fn(e, pos, neg).loss) == float(expected.loss)
    assert build_loss("TruncatedSmoothAP").keywords == {}  # original config spelling
    tri = build_loss("batch_hard_triplet", margin=0.2)
    assert float(tri(e, pos, neg).loss) == float(batch_hard_triplet(e, pos, neg, 0.2).loss)
    with pytest.raises(ValueError, match="truncated_smooth_ap, batch_hard_triplet"):
        build_loss("contrastive")
    with pytest.raises(ConfigError, match=r"unknown parameter.*'tau1'.*valid: tau"):
        build_loss("truncated_smooth_ap", tau1=0.01)
    with pytest.raises(ConfigError, match="margin"):
        build_loss("batch_hard_triplet", margin=-1.0)
    with pytest.raises(ConfigError, match="similarity"):
        build_loss("truncated_smooth_ap", similarity="manhattan")


# ------------------------------------------------------------------------------ MESA


def test_mesa_loss_values() -> None:
    s = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    # row 0: KL([.75, .25] || [.5, .5]) = .75 ln 1.5 + .25 ln .5
    # row 1: KL([.5, .5] || [.75, .25]) = .5 ln(2/3) + .5 ln 2 ; batchmean = sum / 2
    kl = (
        (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) + (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    ) / 2
    assert float(mesa_loss(s, t, temperature=1.0, weight=1.0)) == pytest.approx(kl, rel=1e-5)
    # defaults T = 3, weight = 50: scaling the logits by 3 gives the same softmaxes
    assert float(mesa_loss(3 * s, 3 * t)) == pytest.approx(50 * kl, rel=1e-5)
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    assert float(mesa_loss(x, x.clone())) == pytest.approx(0.0, abs=1e-5)
    assert float(mesa_loss(x, x.flip(0))) > 0.0


def test_mesa_teacher_gets_no_gradient() -> None:
    student = torch.randn(4, 8, requires_grad=True)
    teacher = torch.randn(4, 8, requires_grad=True)
    mesa_loss(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        mesa_loss(student, teacher[:2])


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_model_ema_update() -> None:
    model = _tiny_model()
    ema = ModelEma(model, decay=0.75)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    old = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(6, 3))  # changes the BatchNorm running stats
    ema.update(model)
    new = model.state_dict()
    param_names = {n for n, _ in model.named_parameters()}
    for name, value in ema.state_dict().items():
        if name in param_names:
            torch.testing.assert_close(value, 0.75 * old[name] + 0.25 * new[name])
        else:
            torch.testing.assert_close(value, new[name])  # buffers copied
    assert int(ema.state_dict()["1.num_batches_tracked"]) == 1
    assert not ema(torch.randn(2, 3)).requires_grad
    assert ModelEma(model).decay == 0.9998


def test_model_ema_state_dict_roundtrip() -> None:
    model = _tiny_model()
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    ema.update(model)
    other = ModelEma(_tiny_model())
    other.load_state_dict(ema.state_dict())
    for (k1, v1), (k2, v2) in zip(
        ema.state_dict().items(), other.state_dict().items(), strict=True
    ):
        assert k1 == k2
        torch.testing.assert_close(v1, v2)
    with pytest.raises(ValueError, match="do not match"):
        ema.update(nn.Linear(3, 2))
