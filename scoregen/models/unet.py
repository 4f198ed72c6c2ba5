"""A compact U-Net for small images (8x8 digits, 28x28 MNIST).

The DDPM architecture (Ho et al. 2020, app. B; Ronneberger et al. 2015) scaled down:
residual blocks ``GN -> SiLU -> conv`` with the noise embedding added between the two
convolutions, skip connections from every down-sampling block to its up-sampling twin,
self-attention (Vaswani et al. 2017) at the resolutions listed in ``attn_res`` and in the
middle block, and zero-initialised output layers so every block starts as the identity.

Level ``i`` works at resolution ``H / 2^i``, so ``H`` and ``W`` must be divisible by
``2^(len(mult) - 1)`` (8x8 with ``mult=(1, 2)``: 8, 4; 28x28 with ``mult=(1, 2, 2)``:
28, 14, 7). With ``num_classes > 0`` a label embedding (with a null label) is added to the
noise embedding, as in the MLP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from scoregen.models.embeddings import LabelEmbedding, NoiseEmbedding
from scoregen.models.mlp import conditioned
from scoregen.models.registry import register


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, ch), ch)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _ResBlock(nn.Module):
    """``h = conv(SiLU(GN(x))) + W e``; ``out = skip(x) + conv(SiLU(GN(h)))``."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = _norm(cout, groups)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class _Attention(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions, residual."""

    def __init__(self, ch: int, groups: int, heads: int = 1) -> None:
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention heads ({heads}) must divide the channels ({ch})")
        self.heads = heads
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                             v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


@register("unet", kind="image")
class UNet(nn.Module):
    """U-Net ``(x: (B, C, H, W), c_noise: (B,)) -> (B, C, H, W)``.

    Args:
        shape: ``(C, H, W)``.
        channels: width at full resolution; level ``i`` has ``channels * mult[i]``.
        mult: channel multipliers, one per resolution level.
        blocks: residual blocks per level on the way down (one more on the way up).
        attn_res: resolutions (the smaller side, e.g. ``4`` or ``7``) with self-attention;
            the middle block always has one.
        groups: GroupNorm groups; heads: attention heads; embedding: ``fourier`` or
            ``sinusoidal``.
        in_shape: ``(C_in, H, W)`` when the input has other channels than the output (the
            state of an augmented process, e.g. critically-damped Langevin's ``(x, v)``).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        channels: int = 32,
        mult: tuple[int, ...] | list[int] = (1, 2),
        blocks: int = 1,
        attn_res: tuple[int, ...] | list[int] = (),
        groups: int = 8,
        heads: int = 1,
        embedding: str = "fourier",
        num_classes: int = 0,
        in_shape: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"unet needs image samples of shape (C, H, W), got {tuple(shape)}")
        C, H, W = shape
        c_in = C if in_shape is None else in_shape[0]
        if in_shape is not None and (len(in_shape) != 3 or tuple(in_shape[1:]) != (H, W)):
            raise ValueError(f"unet: in_shape {tuple(in_shape)} must be (C_in, {H}, {W})")
        factor = 2 ** (len(mult) - 1)
        if H % factor or W % factor:
            raise ValueError(
                f"unet with {len(mult)} levels needs H and W divisible by {factor}, got {H}x{W}; "
                "use fewer levels (model.mult) or pad the images"
            )
        emb_dim = 4 * channels
        self.embed = NoiseEmbedding(emb_dim, embedding)
        self.num_classes = int(num_classes)
        if self.num_classes:
            self.label_embed = LabelEmbedding(self.num_classes, emb_dim)
        self.conv_in = nn.Conv2d(c_in, channels, 3, padding=1)
        widths = [channels * m for m in mult]

        self.down = nn.ModuleList()
        skips, ch, res = [channels], channels, min(H, W)
        for i, w in enumerate(widths):
            for _ in range(blocks):
                self.down.append(self._level_block(ch, w, emb_dim, groups, heads, res in attn_res))
                ch = w
                skips.append(ch)
            if i < len(widths) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([_ResBlock(ch, ch, emb_dim, groups), _Attention(ch, groups, heads),
                                  _ResBlock(ch, ch, emb_dim, groups)])
        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(self._level_block(ch + skips.pop(), w, emb_dim, groups, heads,
                                                 res in attn_res))
                ch = w
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                res *= 2
        self.norm_out = _norm(ch, groups)
        self.conv_out = _zero(nn.Conv2d(ch, C, 3, padding=1))

    @staticmethod
    def _level_block(cin: int, cout: int, emb_dim: int, groups: int, heads: int,
                     attn: bool) -> nn.ModuleList:
        layers = [_ResBlock(cin, cout, emb_dim, groups)]
        if attn:
            layers.append(_Attention(cout, groups, heads))
        return nn.ModuleList(layers)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        emb = conditioned(self, self.embed(c_noise), cond)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = self._run_layer(layer, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, nn.Upsample):
                h = layer(h)
            else:
                h = self._run_layer(layer, torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    @staticmethod
    def _run_layer(layer: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        if isinstance(layer, nn.ModuleList):  # a residual block, maybe followed by attention
            h = layer[0](h, emb)
            return layer[1](h) if len(layer) > 1 else h
        return layer(h)  # down-sampling convolution
