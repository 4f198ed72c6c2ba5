"""Training batches whose randomness belongs to the example, not to the process.

Step ``s`` of a run trains on a global batch of ``B`` examples, ``k = 0 .. B-1``. Example
``k`` of step ``s`` owns the 64-bit key ``key(seed, s, k)`` (SplitMix64, as the per-sample
noise of :mod:`scoregen.sampling.noise`), and every random quantity of the example is a pure
function of that key:

- ``u``: one uniform number in ``(0, 1)`` that the loss maps to ``t`` (or to ``i`` of the
  discrete DDPM loss): ``u = Phi(z_0)``, with ``z`` draw 0 of the key's normal stream
  (:class:`scoregen.sampling.noise.NoiseSource`, float64, one value more than the data has);
- ``eps``: the noise of ``x_t = alpha x0 + sigma eps``: the rest of ``z``.

The data index comes from :class:`EpochOrder`: the examples are visited epoch after epoch,
each epoch a fresh permutation of ``range(N)`` seeded by ``(seed, epoch)``; example ``k`` of
a step that starts at stream position ``p`` is item ``p + k`` of that stream. So a batch does
not depend on how many processes share it (nor on gradient accumulation): rank ``r`` of
``W`` computes the contiguous slice ``k in [r B/W, (r+1) B/W)`` and the averaged gradient is
the gradient of the whole batch, up to the order of the floating-point sums. Resuming needs
only the step and the stream position, at any number of processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scoregen.sampling.noise import NoiseSource, splitmix64

_U_EPS = 2.0**-53


@dataclass
class Batch:
    """One micro-batch: clean data and each example's own randomness.

    Attributes:
        x0: ``(b, *D)`` data in ``[-1, 1]``.
        u: ``(b,)`` float64 uniforms in ``(0, 1)`` that pick ``t``.
        eps: ``(b, *S)`` standard normal noise of the process's state shape ``S``
            (:meth:`scoregen.sde.base.SDE.state_shape`; the data's shape ``D`` for most).
        index: ``(b,)`` the examples' global positions ``k`` in the step's batch.
        keys: ``(b,)`` int64 keys; further per-example draws use
            ``NoiseSource(keys, shape).draw(j)`` with ``j >= 1`` (draw 1: label dropout).
        cond: ``(b,)`` class labels of a class-conditional run (after label dropout).
        step: the optimizer step the batch belongs to (schedules of some objectives).
        offset: one uniform in ``(0, 1)`` shared by every example of the step (key
            ``(seed, step, -1)``), for low-discrepancy time sampling across the global batch
            (``frac(offset + k phi)`` for example ``k``; Kingma et al. 2021, app. I.1).
    """

    x0: Tensor
    u: Tensor
    eps: Tensor
    index: Tensor
    keys: Tensor
    cond: Tensor | None = None
    step: int = 0
    offset: float = 0.5


def example_keys(seed: int, step: int, index: Tensor) -> Tensor:
    """``key(seed, step, k)`` for the global example indices ``index`` (int64 tensor)."""
    base = splitmix64(splitmix64(torch.tensor(seed, dtype=torch.int64)) ^ step)
    return splitmix64(index.to(torch.int64) ^ int(base))


def draw_batch(x0: Tensor, seed: int, step: int, index: Tensor,
               state_shape: tuple[int, ...] | None = None) -> Batch:
    """The :class:`Batch` of examples ``index`` of step ``step`` with data ``x0``; ``eps`` has
    the event shape ``state_shape`` of the process's state (default: the data's)."""
    keys = example_keys(seed, step, index.to(x0.device))
    shape = tuple(x0.shape[1:]) if state_shape is None else tuple(state_shape)
    z = NoiseSource(keys, (1 + math.prod(shape),), torch.float64, x0.device).draw(0)
    u = torch.special.ndtr(z[:, 0]).clamp(_U_EPS, 1 - _U_EPS)
    eps = z[:, 1:].to(x0.dtype).reshape(len(x0), *shape)
    step_key = example_keys(seed, step, torch.full((1,), -1, dtype=torch.int64))
    offset = float(torch.special.ndtr(NoiseSource(step_key, (1,), torch.float64).draw(0))[0, 0])
    return Batch(x0, u, eps, index, keys, step=step, offset=offset)


class EpochOrder:
    """Item ``p`` of the data stream: epoch ``p // N`` permuted by ``(seed, epoch)``.

    ``indices(start, count)`` returns the data indices of stream positions
    ``start .. start + count - 1`` (int64). Permutations are made with a CPU
    ``torch.Generator``, the same on every process; the last two are cached.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        if n < 1:
            raise ValueError(f"the training data is empty (n={n})")
        self.n = n
        self.seed = seed
        self._cache: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            key = int(example_keys(self.seed, -1 - epoch, torch.zeros(1, dtype=torch.int64)))
            g = torch.Generator().manual_seed(key & ((1 << 63) - 1))
            self._cache = {e: p for e, p in self._cache.items() if e == epoch - 1}
            self._cache[epoch] = torch.randperm(self.n, generator=g)
        return self._cache[epoch]

    def indices(self, start: int, count: int) -> Tensor:
        pos = torch.arange(start, start + count, dtype=torch.int64)
        epochs = pos // self.n
        out = torch.empty(count, dtype=torch.int64)
        for e in torch.unique(epochs).tolist():
            sel = epochs == e
            out[sel] = self.permutation(e)[pos[sel] - e * self.n]
        return out


def local_slices(batch_size: int, world: int, rank: int, accumulate: int) -> list[Tensor]:
    """The global example indices of each of ``rank``'s ``accumulate`` micro-batches.

    Raises a ``ValueError`` with the nearest valid sizes when ``batch_size`` does not split
    evenly over ``world * accumulate`` micro-batches.
    """
    parts = world * accumulate
    if batch_size % parts:
        lo = max(parts, batch_size // parts * parts)
        raise ValueError(
            f"train.batch_size={batch_size} is the global batch and must split evenly over "
            f"{world} process(es) x {accumulate} accumulation step(s) = {parts} micro-batches; "
            f"set train.batch_size to a multiple of {parts} (e.g. {lo} or {lo + parts})")
    micro = batch_size // parts
    first = rank * accumulate
    return [torch.arange((first + m) * micro, (first + m + 1) * micro, dtype=torch.int64)
            for m in range(accumulate)]


__all__ = ["Batch", "EpochOrder", "draw_batch", "example_keys", "local_slices"]
