"""Broadcasting of per-sample time coefficients against data of any shape.

Every coefficient of an SDE (``alpha(t)``, ``sigma(t)``, ...) is a tensor of shape ``()``
or ``(B,)``; data is ``(B, *D)``. :func:`bcast` appends singleton dimensions so that
vectors ``(B, D)`` and images ``(B, C, H, W)`` share one code path.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bcast(coef: Tensor, x: Tensor) -> Tensor:
    """Reshape ``coef`` of shape ``()`` or ``(B,)`` so it broadcasts against ``x: (B, *D)``."""
    if coef.ndim == 0:
        return coef
    if coef.ndim != 1 or coef.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"time coefficient of shape {tuple(coef.shape)} does not match a batch of shape "
            f"{tuple(x.shape)}: pass t as a scalar or a (batch,) tensor"
        )
    return coef.reshape(coef.shape + (1,) * (x.ndim - 1))


def batch_times(t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` as a ``(B,)`` tensor on ``x``'s device and dtype (scalars are expanded)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t has shape {tuple(t.shape)}, expected () or ({x.shape[0]},)")
    return t
