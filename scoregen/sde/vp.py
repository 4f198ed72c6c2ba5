"""Variance-preserving processes: ``alpha(t)^2 + sigma(t)^2 = 1``.

For every VP process ``sigma = sqrt(1 - alpha^2)`` and ``g^2 = -2 f`` (because
``d sigma^2/dt = -2 f alpha^2``), so an instance gives only ``log alpha(t)`` and its
derivative ``f(t)``. Three instances:

- ``vp``: linear ``beta(t) = beta_min + t (beta_max - beta_min)``, the continuous limit of
  DDPM (Song et al. 2021, eq. 11 and 32): ``log alpha = -B(t)/2`` with
  ``B(t) = beta_min t + (beta_max - beta_min) t^2 / 2``.
- ``vp-cosine``: ``alpha_bar(t) = cos^2((t+s)/(1+s) pi/2) / cos^2(s/(1+s) pi/2)``
  (Nichol & Dhariwal 2021, eq. 17); ``T`` stops short of 1 where ``alpha`` vanishes
  (Lu et al. 2022, app. D, use ``T = 0.9946``).
- ``ddpm`` (in :mod:`scoregen.sde.ddpm`): a discrete beta sequence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.sde.base import SDE, Params, increasing, positive
from scoregen.sde.registry import register


class VariancePreserving(SDE):
    """Base of VP processes: give :meth:`log_alpha` and :meth:`f`; the rest follows."""

    def log_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def g2(self, t: Tensor) -> Tensor:
        return -2 * self.f(t)

    def log_snr(self, t: Tensor) -> Tensor:
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def alpha_from_log_snr(self, lam: Tensor) -> Tensor:
        """``alpha^2 = SNR / (1 + SNR) = sigmoid(2 lambda)`` (Kingma et al. 2021, sec. 3)."""
        return torch.sigmoid(2 * lam).sqrt()

    def prior_std(self) -> float:
        """Unit Gaussian prior ``N(0, I)`` (Ho et al. 2020, Algorithm 2)."""
        return 1.0


class LinearBeta:
    """``beta(t) = beta_min + t (beta_max - beta_min)`` and its integral ``B(t)``."""

    beta_min: float
    beta_max: float

    def _init_beta(self, beta_min: float, beta_max: float) -> None:
        self.beta_min = positive("beta_min", beta_min)
        self.beta_max = positive("beta_max", beta_max)
        increasing("beta_min", self.beta_min, "beta_max", self.beta_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta(s) ds``."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def t_from_beta_integral(self, B: Tensor) -> Tensor:
        """Positive root of ``B(t) = B``."""
        d = self.beta_max - self.beta_min
        return (torch.sqrt(self.beta_min**2 + 2 * d * B) - self.beta_min) / d


@register("vp")
class VPSDE(LinearBeta, VariancePreserving):
    """Continuous DDPM: ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` (Song et al. 2021, eq. 11)."""

    def __init__(
        self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, t_min: float = 1e-3
    ) -> None:
        super().__init__(T=T, t_min=t_min)
        self._init_beta(beta_min, beta_max)

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta_integral(t)

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def log_snr(self, t: Tensor) -> Tensor:
        """``lambda = -log(expm1(B(t))) / 2``."""
        return -0.5 * torch.log(torch.expm1(self.beta_integral(t)))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """``B = log1p(exp(-2 lambda))``, then the root of the quadratic ``B(t) = B``."""
        B = torch.nn.functional.softplus(-2 * lam)
        return self.t_from_beta_integral(B).clamp(0, self.T)

    def params(self) -> Params:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, **super().params()}


@register("vp-cosine")
class CosineVPSDE(VariancePreserving):
    """VP process with the cosine schedule of Nichol & Dhariwal 2021 (eq. 17)."""

    def __init__(self, s: float = 0.008, T: float = 0.9946, t_min: float = 1e-3) -> None:
        if T >= 1.0:
            raise ValueError(f"vp-cosine needs T < 1 (alpha vanishes at t=1), got T={T}")
        super().__init__(T=T, t_min=t_min)
        self.s = positive("s", s)
        self._log_cos0 = math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))

    def _theta(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.log(torch.cos(self._theta(t))) - self._log_cos0

    def f(self, t: Tensor) -> Tensor:
        """``d log alpha/dt = -tan(theta) pi / (2 (1 + s))``."""
        return -torch.tan(self._theta(t)) * (math.pi / (2 * (1 + self.s)))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """``alpha^2 = sigmoid(2 lambda)`` inverted through ``arccos``."""
        cos_theta = math.exp(self._log_cos0) * torch.sigmoid(2 * lam).sqrt()
        t = torch.arccos(cos_theta) * (2 * (1 + self.s) / math.pi) - self.s
        return t.clamp(0, self.T)

    def params(self) -> Params:
        return {"s": self.s, **super().params()}
