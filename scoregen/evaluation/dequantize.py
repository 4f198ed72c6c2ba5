"""Discrete data on the model's ``[-1, 1]`` scale: uniform dequantization and bits per dimension.

Image data are integers ``v = 0 .. L-1`` (``L = 256`` for 8-bit images, ``L = 17`` for the
scikit-learn digits, whose pixels are ``0 .. 16``). scoregen's datasets map them to

    x = -1 + 2 v / (L - 1) = -1 + Delta v,          Delta = 2 / (L - 1),

so level ``v`` owns the bin ``[x_v - Delta/2, x_v + Delta/2)`` of width ``Delta`` on the model's
scale and width 1 on the integer scale. A continuous density ``p_x`` on ``[-1, 1]``-scale
data is a density on the integer scale by the change of variables ``p_v(v') = p_x(x(v'))
Delta^D`` (``dx/dv = Delta`` in each of the ``D`` dimensions), and the discrete model
``P(v) = int_bin p_v`` satisfies, with ``u ~ U(-1/2, 1/2)^D`` and Jensen's inequality (Theis
et al. 2016, sec. 3.1; Ho et al. 2020, sec. 3.3)::

    log P(v) = log E_u p_x(x_v + Delta u) + D log Delta
             >= E_u log p_x(x_v + Delta u) + D log Delta.

So the estimate of the discrete code length of one example is, in nats and in bits per
dimension::

    nll = -(log p_x(x_v + Delta u) + D log Delta),          bpd = nll / (D ln 2),

an upper bound in expectation over ``u`` (no magic offset: ``D log Delta`` is the Jacobian
of the map from the integer grid to ``[-1, 1]``). For ``L = 256`` the offset is ``-log2(2/255)
= 6.99`` bits/dim (Song et al. 2021 use ``Delta = 2/256``, i.e. 7 bits/dim exactly, which
counts the levels as ``[0, 1) * 256``; the difference is ``log2(256/255) = 0.0056``); for the
digits it is ``-log2(1/8) = 3`` bits/dim. Without dequantization (``L`` absent) the data are
continuous and the results are plain nats (and ``nll / (D ln 2)`` bits/dim of the density).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Grey levels of the datasets registered in scoregen.data (their own bit depth).
DATASET_LEVELS: dict[str, int] = {"digits": 17, "mnist": 256, "images": 256}


@dataclass(frozen=True)
class Quantization:
    """``L`` evenly spaced levels ``x_v = -1 + 2 v / (L - 1)`` on ``[-1, 1]``."""

    levels: int

    def __post_init__(self) -> None:
        if not (isinstance(self.levels, int) and not isinstance(self.levels, bool)
                and self.levels >= 2):
            raise ValueError(f"the number of grey levels must be an integer >= 2, got "
                             f"{self.levels!r} (256 for 8-bit images, 17 for the digits)")

    @property
    def bin_width(self) -> float:
        """``Delta = 2 / (L - 1)``."""
        return 2.0 / (self.levels - 1)

    def log_jacobian(self, dim: int) -> float:
        """``D log Delta``: the log-volume of one bin on the ``[-1, 1]`` scale."""
        return dim * math.log(self.bin_width)

    def check_on_grid(self, x: Tensor, name: str = "data") -> None:
        """Raise unless every value is one of the ``L`` levels (to float32 precision)."""
        v = (x.to(torch.float64) + 1) / self.bin_width
        off = (v - v.round()).abs().max()
        if off > 1e-3 or v.min() < -1e-3 or v.max() > self.levels - 1 + 1e-3:
            raise ValueError(f"{name} are not on the grid of {self.levels} levels in [-1, 1] "
                             f"(largest offset {float(off):.3g} bins); give the right number "
                             "of levels, or treat the data as continuous (levels 0)")

    def dequantize(self, x: Tensor, u: Tensor) -> Tensor:
        """``x + Delta u`` for ``u`` uniform on ``[-1/2, 1/2)^D``."""
        return x + self.bin_width * u

    def nll(self, logp: Tensor, dim: int) -> Tensor:
        """Discrete code length in nats, ``-(logp + D log Delta)``, of dequantized points."""
        return -(logp + self.log_jacobian(dim))

    def bits_per_dim(self, logp: Tensor, dim: int) -> Tensor:
        """``-(logp + D log Delta) / (D ln 2)``."""
        return self.nll(logp, dim) / (dim * math.log(2))


def uniform_from_normal(z: Tensor) -> Tensor:
    """``Phi(z) - 1/2``: standard normal draws mapped to ``U(-1/2, 1/2)`` (per-sample noise
    of :class:`scoregen.sampling.noise.NoiseSource` turned into dequantization noise)."""
    return 0.5 * torch.erf(z / math.sqrt(2.0))


def levels_for(dataset: str | None, levels: int | None = None) -> Quantization | None:
    """The quantization of ``dataset`` (``levels`` overrides; ``0`` means continuous)."""
    if levels is not None:
        return None if levels == 0 else Quantization(int(levels))
    n = DATASET_LEVELS.get(dataset or "")
    return None if n is None else Quantization(n)


__all__ = ["DATASET_LEVELS", "Quantization", "levels_for", "uniform_from_normal"]
