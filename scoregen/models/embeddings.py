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

from scoregen.infra.registry import Registry

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


class LabelEmbedding(nn.Module):
    """A learned embedding of class labels ``0 .. num_classes - 1`` plus the null label
    ``num_classes`` (the unconditional model of classifier-free guidance, Ho & Salimans
    2022); zero-initialised, so a fresh conditional network equals its unconditional twin.

    ``labels: (B,)`` int64 -> ``(B, dim)``; out-of-range labels raise a ``ValueError``.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.zeros_(self.table.weight)

    def forward(self, labels: Tensor) -> Tensor:
        if labels.dtype not in (torch.int64, torch.int32) or labels.ndim != 1:
            raise ValueError(f"labels must be a (B,) integer tensor, got {labels.dtype} of "
                             f"shape {tuple(labels.shape)}")
        if ((labels < 0) | (labels > self.num_classes)).any():
            bad = labels[(labels < 0) | (labels > self.num_classes)][0]
            raise ValueError(f"label {int(bad)} is outside [0, {self.num_classes}) "
                             f"({self.num_classes} is the null label)")
        return self.table(labels)

