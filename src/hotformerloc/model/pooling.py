"""Global descriptor heads (spec 2.6): PyramidAttnPoolMixer, OctGeM and PyramidOctGeM.

Every head maps the pyramid's local features ``feats[j]`` (N_j, C) (finest level first) and
their :class:`~hotformerloc.model.blocks.DepthView` s to an un-normalised (B, output_dim)
descriptor; samples never interact (per-sample grouping and key masks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hotformerloc.model.blocks import DepthView
from hotformerloc.model.config import ModelConfig
from hotformerloc.model.layers import init_linear, matmul_threads


class MixerLayer(nn.Module):
    """Residual token-wise MLP: ``z + Linear(GELU(Linear(LN(z))))`` (C -> C -> C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, z: Tensor) -> Tensor:
        return z + self.fc2(self.act(self.fc1(self.norm(z))))


class PyramidAttnPoolMixer(nn.Module):
    """Per-level learned-query attention pooling, then an MLP-Mixer head.

    Level j: ``P_j = softmax(Q_j X_j^T / sqrt(C) + mask) X_j`` with k_j learned queries
    ``Q_j`` (k_j, C) ~ N(0, 1), single head, no projections, ``X_j`` the sample's tokens.
    ``Z = cat_j P_j`` (B, M, C) -> 4 :class:`MixerLayer` -> Linear over tokens M -> M/4 ->
    Linear over channels C -> output_dim / (M/4) -> flatten (B, output_dim).
    """

    def __init__(
        self, dim: int, k_pooled_tokens: tuple[int, ...], output_dim: int, num_mixers: int = 4
    ):
        super().__init__()
        self.queries = nn.ParameterList(nn.Parameter(torch.randn(k, dim)) for k in k_pooled_tokens)
        self.mixer = nn.Sequential(*(MixerLayer(dim) for _ in range(num_mixers)))
        init_linear(self.mixer)
        total = sum(k_pooled_tokens)
        rows = total // 4
        self.token_proj = nn.Linear(total, rows)
        self.channel_proj = nn.Linear(dim, output_dim // rows)

    def forward(self, feats: list[Tensor], views: list[DepthView]) -> Tensor:
        """-> (B, output_dim), not normalised."""
        pooled = []
        for q, x, view in zip(self.queries, feats, views, strict=True):
            layout = view.sample_layout
            tokens = layout.gather(x)[:, None]  # (B, 1, Nmax, C)
            query = q.to(x.dtype).expand(tokens.shape[0], 1, -1, -1)
            with matmul_threads():
                out = F.scaled_dot_product_attention(
                    query, tokens, tokens, attn_mask=layout.key_mask(x.dtype)
                )
            pooled.append(out[:, 0])
        z = torch.cat(pooled, 1)  # (B, M, C)
        z = self.mixer(z)
        z = self.token_proj(z.transpose(1, 2)).transpose(1, 2)  # (B, M/4, C)
        return self.channel_proj(z).flatten(1)


def _segment_mean(x: Tensor, batch_id: Tensor, batch_size: int) -> Tensor:
    """Per-sample mean of (N, C) rows -> (B, C)."""
    sums = x.new_zeros(batch_size, x.shape[1]).index_add_(0, batch_id, x)
    counts = torch.bincount(batch_id, minlength=batch_size).clamp_min(1)
    return sums / counts.to(x.dtype)[:, None]


class GeM(nn.Module):
    """Generalised-mean pooling per sample, learnable p (init 3), eps 1e-6:
    ``(mean_n max(x, eps)^p)^(1/p)``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), p))
        self.eps = eps

    def forward(self, x: Tensor, view: DepthView) -> Tensor:
        """``x`` (N, C) -> (B, C)."""
        p = self.p.to(x.dtype)
        pooled = _segment_mean(x.clamp(min=self.eps).pow(p), view.batch_id, view.batch_size)
        return pooled.pow(1.0 / p)


class OctGeM(nn.Module):
    """GeM on the finest pyramid level only (-> (B, C); output_dim == C)."""

    def __init__(self) -> None:
        super().__init__()
        self.gem = GeM()

    def forward(self, feats: list[Tensor], views: list[DepthView]) -> Tensor:
        return self.gem(feats[0], views[0])


class PyramidOctGeM(nn.Module):
    """Per-level GeM (own p each), concat (B, L*C) -> Linear(L*C, output_dim, no bias) ->
    BatchNorm1d(output_dim)."""

    def __init__(self, dim: int, num_levels: int, output_dim: int):
        super().__init__()
        self.gems = nn.ModuleList(GeM() for _ in range(num_levels))
        self.fc = nn.Linear(num_levels * dim, output_dim, bias=False)
        self.norm = nn.BatchNorm1d(output_dim)

    def forward(self, feats: list[Tensor], views: list[DepthView]) -> Tensor:
        pooled = [g(x, v) for g, x, v in zip(self.gems, feats, views, strict=True)]
        return self.norm(self.fc(torch.cat(pooled, 1)))


def build_pooling(config: ModelConfig) -> nn.Module:
    """The pooling head named by ``config.pooling``."""
    dim = config.channels[1]
    if config.pooling == "pyramid_attn":
        return PyramidAttnPoolMixer(dim, config.k_pooled_tokens, config.output_dim)
    if config.pooling == "gem":
        return OctGeM()
    return PyramidOctGeM(dim, config.num_pyramid_levels, config.output_dim)
