"""Noise-conditional classifiers ``p_t(y | x_t)`` for classifier guidance, for any SDE.

A classifier of noisy inputs (Song et al. 2021, sec. 5 and app. I; Dhariwal & Nichol 2021,
sec. 4: "the downsampling trunk of the UNet ... with an attention pool") sees ``x_t`` and the
noise level and returns class logits; its gradient ``grad_x log p_t(y | x)`` is the
guidance term of :mod:`scoregen.sampling.guidance`. :class:`NoisyClassifier` wraps a
registered classifier network exactly as :class:`~scoregen.models.ScoreModel` wraps a score
network, so one architecture serves every SDE:

    c_in    = 1 / sqrt(alpha^2 sigma_data^2 + sigma^2),   c_noise = -lambda / 4
    logits  = network(c_in x_t, c_noise)                    (B, num_classes)

(``lambda`` clamped at :data:`~scoregen.models.score_model.LOG_SNR_FLOOR`). Networks with
``kind="classifier"`` in :data:`~scoregen.models.registry.NETWORKS`:

- ``classifier``: for images ``(C, H, W)`` the U-Net's encoder (residual blocks with the noise
  embedding, strided down-sampling, attention at ``attn_res`` and one in the middle), then
  GroupNorm, SiLU, global average pooling and a linear head; for vectors ``(D,)`` an MLP of
  residual blocks with the same embedding. A zero-initialised head starts at uniform
  probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from scoregen.infra.shape import batch_times, bcast
from scoregen.models.embeddings import NoiseEmbedding
from scoregen.models.mlp import _ResBlock as _VectorBlock
from scoregen.models.registry import register
from scoregen.models.score_model import LOG_SNR_FLOOR
from scoregen.models.unet import _Attention, _norm, _ResBlock, _zero
from scoregen.sde.base import SDE


@register("classifier", kind="classifier")
class ClassifierNet(nn.Module):
    """Noise-conditional classifier ``(x: (B, *shape), c_noise: (B,)) -> logits (B, C)``.

    Args:
        shape: ``(C, H, W)`` or ``(D,)``.
        num_classes: number of classes.
        channels, mult, blocks, attn_res, groups, heads: as for ``unet`` (images); ``channels``
            is the MLP width and ``blocks`` its depth for vectors.
        embedding: ``fourier`` or ``sinusoidal`` noise embedding.
    """

    def __init__(self, shape: tuple[int, ...], num_classes: int = 10, channels: int = 32,
                 mult: tuple[int, ...] | list[int] = (1, 2), blocks: int = 1,
                 attn_res: tuple[int, ...] | list[int] = (), groups: int = 8, heads: int = 1,
                 embedding: str = "fourier") -> None:
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 2):
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        emb_dim = 4 * channels
        self.embed = NoiseEmbedding(emb_dim, embedding)
        self.image = len(shape) == 3
        if self.image:
            C, H, W = shape
            self.conv_in = nn.Conv2d(C, channels, 3, padding=1)
            layers: list[nn.Module] = []
            ch, res = channels, min(H, W)
            for i, m in enumerate(mult):
                for _ in range(blocks):
                    layers.append(_ResBlock(ch, channels * m, emb_dim, groups))
                    ch = channels * m
                    if res in attn_res:
                        layers.append(_Attention(ch, groups, heads))
                if i < len(mult) - 1:
                    layers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                    res = (res + 1) // 2
            layers += [_ResBlock(ch, ch, emb_dim, groups), _Attention(ch, groups, heads)]
            self.trunk = nn.ModuleList(layers)
            self.norm_out = _norm(ch, groups)
        elif len(shape) == 1:
            self.conv_in = nn.Linear(shape[0], channels)
            self.trunk = nn.ModuleList(_VectorBlock(channels, emb_dim) for _ in range(blocks))
            self.norm_out = nn.LayerNorm(channels)
            ch = channels
        else:
            raise ValueError(f"classifier needs images (C, H, W) or vectors (D,), got {shape}")
        self.head = _zero(nn.Linear(ch, num_classes))

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        for layer in self.trunk:
            h = layer(h, emb) if isinstance(layer, _ResBlock | _VectorBlock) else layer(h)
        h = F.silu(self.norm_out(h))
        return self.head(h.mean(dim=(2, 3)) if self.image else h)


class NoisyClassifier(nn.Module):
    """A classifier network as ``classifier(x_t, t) -> logits`` for ``sde`` (module
    docstring); the ``classifier`` argument of :func:`scoregen.sample` and of
    :class:`~scoregen.sampling.guidance.Guidance`."""

    kind = "classifier"

    def __init__(self, network: nn.Module, sde: SDE, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.network = network
        self.sde = sde
        self.sigma_data = float(sigma_data)

    @property
    def num_classes(self) -> int:
        return int(self.network.num_classes)

    @property
    def data_shape(self) -> tuple[int, ...] | None:
        shape = getattr(self.network, "spec", {}).get("shape")
        return tuple(shape) if shape is not None else None

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` at ``x: (B, *D)``, ``t: ()`` or ``(B,)``."""
        if self.data_shape is not None and tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"the classifier is for data of shape {self.data_shape}, got x of "
                             f"shape {tuple(x.shape)}")
        t64 = batch_times(t, x).detach().to(torch.float64)
        alpha, sigma = self.sde.alpha(t64), self.sde.sigma(t64)
        c_in = torch.rsqrt(alpha**2 * self.sigma_data**2 + sigma**2)
        c_noise = -self.sde.log_snr(t64).clamp_min(LOG_SNR_FLOOR) / 4
        dtype = next(self.network.parameters()).dtype
        return self.network((bcast(c_in, x) * x).to(dtype), c_noise.to(dtype)).to(x.dtype)

    def config(self) -> dict[str, Any]:
        """Everything that rebuilds the classifier (weights aside); stored in checkpoints."""
        return {"kind": self.kind, "network": dict(getattr(self.network, "spec", {})),
                "sde": self.sde.config(), "sigma_data": self.sigma_data}


def build_classifier(config: dict[str, Any]) -> NoisyClassifier:
    """Inverse of :meth:`NoisyClassifier.config` (fresh weights)."""
    from scoregen.models.registry import build_network
    from scoregen.sde import from_config

    net_cfg = dict(config["network"])
    net = build_network(net_cfg.pop("name"), net_cfg.pop("shape"), **net_cfg)
    return NoisyClassifier(net, from_config(config["sde"]), config.get("sigma_data", 0.5))


__all__ = ["ClassifierNet", "NoisyClassifier", "build_classifier"]
