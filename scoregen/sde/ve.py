"""Variance-exploding SDE, the continuous limit of SMLD / NCSN (Song et al. 2021, eq. 9, 30).

    dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw,
    sigma(t) = sigma_min (sigma_max / sigma_min)^t,   alpha(t) = 1.

The process starts at ``t = 0`` with noise ``sigma_min`` already present (as in the paper),
so ``x_t | x_0 ~ N(x_0, sigma(t)^2 I)`` holds exactly, and the prior is
``N(0, sigma_max^2 I)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.sde.base import SDE, Params, increasing, positive
from scoregen.sde.registry import register


@register("ve")
class VESDE(SDE):
    """Variance-exploding SDE with a geometric noise schedule."""

    def __init__(
        self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0, t_min: float = 1e-5
    ) -> None:
        super().__init__(T=T, t_min=t_min)
        self.sigma_min = positive("sigma_min", sigma_min)
        self.sigma_max = positive("sigma_max", sigma_max)
        increasing("sigma_min", self.sigma_min, "sigma_max", self.sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t / self.T * self._log_ratio)

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        """``d sigma^2 / dt = 2 sigma^2 log(sigma_max / sigma_min) / T``."""
        return 2 * self.sigma(t) ** 2 * (self._log_ratio / self.T)

    def log_snr(self, t: Tensor) -> Tensor:
        return -torch.log(self.sigma(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return ((-lam - math.log(self.sigma_min)) * (self.T / self._log_ratio)).clamp(0, self.T)

    def alpha_from_log_snr(self, lam: Tensor) -> Tensor:
        return torch.ones_like(lam)

    def params(self) -> Params:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, **super().params()}
