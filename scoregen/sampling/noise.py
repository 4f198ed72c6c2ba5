"""Per-sample, batch-independent Gaussian noise from a counter-based generator.

Sample ``k`` of a run owns a 64-bit seed; its ``j``-th noise draw is a pure function of
``(seed_k, j, element index)``, built from the SplitMix64 mixer (Steele et al. 2014,
"Fast splittable pseudorandom number generators") and the Box-Muller transform (one 64-bit
word per pair of normals: its high and low 32 bits are the two uniforms, so the tails are
exact out to ``sqrt(64 ln 2) = 6.66`` standard deviations). So sample
``k`` is identical whether it is drawn alone or in a batch of 1024, on CPU or GPU, and no
generator state is shared between samples (the habit of EDM's ``StackedRandomGenerator``,
without one generator object per sample).

All arithmetic is on int64 tensors: multiplication wraps modulo 2^64 and logical right
shifts are emulated with a mask, which reproduces unsigned SplitMix64 bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _signed(u: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return u - (1 << 64) if u >= 1 << 63 else u


_GAMMA = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
_LOW32 = (1 << 32) - 1
_TO_UNIT = 1.0 / (1 << 32)
_FIRST_BLOCK = 8  # draws made ahead at the first noise() call (then doubling)


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bits."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(z: Tensor) -> Tensor:
    """The SplitMix64 finaliser applied to ``z + gamma`` (int64 tensor in, int64 out)."""
    z = z + _GAMMA
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def _splitmix64_(z: Tensor) -> Tensor:
    """:func:`splitmix64` in place on a fresh int64 tensor (the same bits, fewer buffers)."""
    z.add_(_GAMMA)
    for shift, mult in ((30, _M1), (27, _M2)):
        z.bitwise_xor_(_shr(z, shift)).mul_(mult)
    return z.bitwise_xor_(_shr(z, 31))


def _splitmix64_int(j: int) -> int:
    """:func:`splitmix64` of one integer in exact Python arithmetic (uint64 result)."""
    mask = (1 << 64) - 1
    z = (j + (_GAMMA & mask)) & mask
    z = ((z ^ (z >> 30)) * (_M1 & mask)) & mask
    z = ((z ^ (z >> 27)) * (_M2 & mask)) & mask
    return z ^ (z >> 31)


class NoiseSource:
    """Standard normal draws ``(B, *shape)``; sample ``k``'s values depend only on ``seeds[k]``.

    ``noise.draw(j)`` is the ``j``-th draw (a pure function) and ``noise.draws(j, k)`` the
    draws ``j .. j + k - 1`` stacked, computed in one vectorised pass with the same bits.
    Calling ``noise()`` returns the next draw, starting at ``first_draw`` (``count`` is the
    index of that next draw; setting it moves the stream). ``sample()`` uses draw 0 for
    ``x_T``. A sampler calls ``noise()`` once per step, so the draws are made ahead in blocks
    whose size doubles from 8 draws up to about ``block_elements`` normals: the per-call cost of
    the ~25 elementwise kernels is shared by the block instead of paid at every step, and the
    values are the same as one draw at a time.
    """

    def __init__(
        self,
        seeds: Tensor,
        shape: tuple[int, ...],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        first_draw: int = 0,
        block_elements: int = 1 << 14,
    ) -> None:
        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=device)
        if seeds.ndim != 1:
            raise ValueError(f"seeds must be a 1-D tensor of integers, got shape {seeds.shape}")
        self.seeds = seeds
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = seeds.device
        self._keys = splitmix64(splitmix64(seeds))
        n = math.prod(self.shape)
        self._pairs = (n + 1) // 2
        self._n = n
        counter = torch.arange(self._pairs, dtype=torch.int64, device=self.device)
        self._offsets = counter * _GAMMA  # the per-element counters, premultiplied once
        self._max_block = max(1, block_elements // max(1, 2 * self._pairs * len(seeds)))
        self.count = first_draw

    @property
    def batch_size(self) -> int:
        return self.seeds.shape[0]

    @property
    def count(self) -> int:
        """Index of the draw the next ``noise()`` returns."""
        return self._next

    @count.setter
    def count(self, j: int) -> None:
        self._next = int(j)
        self._ahead: Tensor | None = None  # draws made ahead; row _used is draw _next
        self._used = 0
        self._block = min(_FIRST_BLOCK, self._max_block)

    def draw(self, j: int) -> Tensor:
        """The ``j``-th standard normal draw, ``(B, *shape)``."""
        return self.draws(j, 1)[0]

    def draws(self, j: int, k: int) -> Tensor:
        """Draws ``j .. j + k - 1`` as ``(k, B, *shape)``: one batched pass over every draw,
        sample and element (no per-sample Python work). Each 64-bit word gives one
        Box-Muller pair from its two 32-bit halves."""
        salts = torch.tensor([_signed(_splitmix64_int(i)) for i in range(j, j + k)],
                             dtype=torch.int64, device=self.device)
        stream = splitmix64(self._keys ^ salts[:, None])  # (k, B)
        bits = _splitmix64_(stream[:, :, None] + self._offsets)  # (k, B, P)
        u1 = (_shr(bits, 32).to(torch.float64) + 1.0).mul_(_TO_UNIT)  # (0, 1]
        u2 = (bits & _LOW32).to(torch.float64).mul_(_TO_UNIT)  # [0, 1)
        radius = u1.log_().mul_(-2.0).sqrt_()
        angle = u2.mul_(2 * math.pi)
        z = torch.cat([radius * torch.cos(angle), radius.mul_(torch.sin(angle))], dim=2)
        return z[:, :, : self._n].reshape(k, self.batch_size, *self.shape).to(self.dtype)

    def __call__(self) -> Tensor:
        if self._ahead is None or self._used == len(self._ahead):
            self._ahead, self._used = self.draws(self._next, self._block), 0
            self._block = min(2 * self._block, self._max_block)
        z = self._ahead[self._used]
        self._used += 1
        self._next += 1
        return z


def seeds_for(batch: int, seed: int = 0, device: torch.device | str | None = None) -> Tensor:
    """Seeds ``seed, seed + 1, ..., seed + batch - 1``: sample ``k`` of a run gets ``seed + k``."""
    return torch.arange(seed, seed + batch, dtype=torch.int64, device=device)
