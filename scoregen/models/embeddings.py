"""Embeddings of the noise level ``c_noise`` (a scalar per sample) for the networks.

- ``sinusoidal``: the Transformer positional embedding used by DDPM (Ho et al. 2020,
  app. B; Vaswani et al. 2017, sec. 3.5): ``[cos(c w_k), sin(c w_k)]`` with frequencies
  ``w_k = max_period^(-k / half)``; ``c`` is scaled by ``scale`` first so the log-SNR-sized
  inputs used here (|c| <~ 5) cover many periods.
- ``fourier``: random Fourier features (Tancik et al. 2020; Song et al. 2021, app. H.1,
  "Gaussian Fourier projection"): ``[cos(2 pi c b_k), sin(2 pi c b_k)]`` with fixed
  ``b_k ~ N(0, scale^2)`` drawn from a seeded generator (so the buffer is reproducible).

Both are followed by a two-layer SiLU MLP in :class:`NoiseEmbedding`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoregen.registry import Registry

EMBEDDINGS: Registry[type] = Registry("noise embedding")


@EMBEDDINGS.register("sinusoidal")
class SinusoidalEmbedding(nn.Module):
    """``c: (B,) -> (B, dim)``: ``[cos(s c w_k), sin(s c w_k)]``, ``w_k = P^(-k/half)``."""

    def __init__(self, dim: int, scale: float = 100.0, max_period: float = 10_000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"embedding dim must be an even number >= 2, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.register_buffer("freqs", scale * freqs)

    def forward(self, c: Tensor) -> Tensor:
        arg = c.float()[:, None] * self.freqs[None]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


@EMBEDDINGS.register("fourier")
class FourierEmbedding(nn.Module):
    """``c: (B,) -> (B, dim)``: ``[cos(2 pi c b_k), sin(2 pi c b_k)]``, ``b_k ~ N(0, scale^2)``."""

    def __init__(self, dim: int, scale: float = 4.0, seed: int = 0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"embedding dim must be an even number >= 2, got {dim}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("b", scale * torch.randn(dim // 2, generator=g))

    def forward(self, c: Tensor) -> Tensor:
        arg = (2 * math.pi) * c.float()[:, None] * self.b[None]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class NoiseEmbedding(nn.Module):
    """``c_noise: (B,) -> (B, out_dim)``: a registered embedding followed by Linear-SiLU-Linear."""

    def __init__(self, out_dim: int, kind: str = "fourier", dim: int = 64) -> None:
        super().__init__()
        self.embed = EMBEDDINGS.get(kind)(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        return self.mlp(self.embed(c_noise))
