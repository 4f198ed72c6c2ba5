"""Sub-VP SDE (Song et al. 2021, eq. 12 and app. B).

    dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw,
    alpha(t) = exp(-B(t)/2),   sigma(t) = 1 - exp(-B(t)),

with the linear ``beta(t)`` of the VP SDE. Its variance is bounded by the VP variance at
every ``t``, hence the name. The prior is ``N(0, I)`` as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.sde.base import SDE, Params
from scoregen.sde.registry import register
from scoregen.sde.vp import LinearBeta


@register("subvp")
class SubVPSDE(LinearBeta, SDE):
    """Sub-variance-preserving SDE with linear ``beta(t)``."""

    def __init__(
        self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, t_min: float = 1e-3
    ) -> None:
        super().__init__(T=T, t_min=t_min)
        self._init_beta(beta_min, beta_max)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.beta_integral(t))

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.beta_integral(t))

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g2(self, t: Tensor) -> Tensor:
        """``beta(t) (1 - exp(-2 B(t)))``."""
        return -self.beta(t) * torch.expm1(-2 * self.beta_integral(t))

    def prior_std(self) -> float:
        return 1.0

    def params(self) -> Params:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, **super().params()}
