"""A residual MLP for low-dimensional data (2-D toy sets, mixture presets).

``x: (B, *D)`` is flattened to ``(B, d)``; the noise level enters every block through a
learned projection of :class:`~scoregen.models.embeddings.NoiseEmbedding`::

    h_0     = W_in x
    h_{k+1} = h_k + W_2 SiLU(W_1 SiLU(LN(h_k)) + E_k(c_noise))      (pre-activation ResNet,
                                                                    He et al. 2016)
    out     = W_out SiLU(LN(h_K))                                   (W_out zero-initialised)

so a fresh network predicts 0 (for ``eps`` prediction: the optimum at pure noise).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from scoregen.models.embeddings import NoiseEmbedding
from scoregen.models.registry import register


class _ResBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.fc1(self.act(self.norm(h))) + self.emb(emb)
        return h + self.fc2(self.act(z))


@register("mlp", kind="vector")
class MLP(nn.Module):
    """Residual MLP ``(x: (B, *shape), c_noise: (B,)) -> (B, *shape)``.

    Args:
        shape: event shape of one sample, e.g. ``(2,)``.
        width: hidden width; depth: number of residual blocks.
        emb_dim: width of the noise embedding; embedding: ``fourier`` or ``sinusoidal``.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        width: int = 128,
        depth: int = 3,
        emb_dim: int = 64,
        embedding: str = "fourier",
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        d = math.prod(self.shape)
        self.embed = NoiseEmbedding(emb_dim, embedding)
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList(_ResBlock(width, emb_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.embed(c_noise)
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.norm(h))).view_as(x)
