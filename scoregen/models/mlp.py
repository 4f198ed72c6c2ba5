"""A residual MLP for low-dimensional data (2-D toy sets, mixture presets).

``x: (B, *D)`` is flattened to ``(B, d)``; the noise level enters every block through a
learned projection of :class:`~scoregen.models.embeddings.NoiseEmbedding`::

    h_0     = W_in x
    h_{k+1} = h_k + W_2 SiLU(W_1 SiLU(LN(h_k)) + E_k(c_noise))      (pre-activation ResNet,
                                                                    He et al. 2016)
    out     = W_out SiLU(LN(h_K))                                   (W_out zero-initialised)

so a fresh network predicts 0 (for ``eps`` prediction: the optimum at pure noise).
With ``num_classes > 0`` a learned label embedding (with a null label) is added to the noise
embedding: ``emb = E(c_noise) + L(y)`` (:class:`~scoregen.models.embeddings.LabelEmbedding`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoregen.models.embeddings import LabelEmbedding, NoiseEmbedding
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


def conditioned(net: nn.Module, emb: Tensor, cond: Tensor | None) -> Tensor:
    """``emb + L(cond)`` for a class-conditional network (``cond=None``: the null label)."""
    if not net.num_classes:
        if cond is not None:
            raise ValueError("labels were given to a network without classes; build it with "
                             "num_classes (model.num_classes in the config)")
        return emb
    if cond is None:
        cond = torch.full((emb.shape[0],), net.num_classes, dtype=torch.long, device=emb.device)
    return emb + net.label_embed(cond.to(emb.device)).to(emb.dtype)


@register("mlp", kind="vector")
class MLP(nn.Module):
    """Residual MLP ``(x: (B, *in_shape), c_noise: (B,)) -> (B, *shape)``.

    Args:
        shape: event shape of one sample, e.g. ``(2,)``.
        width: hidden width; depth: number of residual blocks.
        emb_dim: width of the noise embedding; embedding: ``fourier`` or ``sinusoidal``.
        num_classes: number of classes of a class-conditional network (0: unconditional);
            label ``num_classes`` is the null label.
        in_shape: event shape of the input when it differs from the output's ``shape`` (the
            state of an augmented process, e.g. critically-damped Langevin's ``(x, v)``).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        width: int = 128,
        depth: int = 3,
        emb_dim: int = 64,
        embedding: str = "fourier",
        num_classes: int = 0,
        in_shape: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        d = math.prod(self.shape)
        d_in = d if in_shape is None else math.prod(in_shape)
        self.embed = NoiseEmbedding(emb_dim, embedding)
        self.num_classes = int(num_classes)
        if self.num_classes:
            self.label_embed = LabelEmbedding(self.num_classes, emb_dim)
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(_ResBlock(width, emb_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        emb = conditioned(self, self.embed(c_noise), cond)
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.norm(h))).view(x.shape[0], *self.shape)
