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

**Zero terminal SNR** (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps
are Flawed", sec. 3.1 and Algorithm 1): every VP process takes ``zero_terminal_snr=True``,
which rescales its schedule so that the prior is pure noise, ``alpha(T) = 0``::

    alpha_z(t) = (alpha(t) - alpha(T)) / (1 - alpha(T)),     sigma_z = sqrt(1 - alpha_z^2),

keeping ``alpha_z(0) = alpha(0) = 1`` (Lin et al. keep ``alpha`` of the first discrete step,
``1 - beta_1``; the difference is below ``beta_1 alpha(T)``). The drift follows as
``f_z = d log alpha_z / dt = f alpha / (alpha - alpha(T))`` (``-inf`` at ``T``, so ``g_z^2 =
-2 f_z`` too), the log-SNR is ``-inf`` at ``T``, and ``t_from_log_snr`` maps back through
``alpha = alpha(T) + (1 - alpha(T)) alpha_z``. Such a process does not offer
``finite_terminal_snr``: its default grid is ``trailing`` (uniform in ``t`` from ``T``,
Lin et al. sec. 3.3), the log-SNR spacings refuse it, and :func:`scoregen.sample` takes the
first step from ``T`` itself, where a model predicting ``x0`` or ``v`` gives ``x0_hat`` and
``eps_hat = x_T`` (:mod:`scoregen.samplers._terminal`); samplers that choose their own steps
declare that they need the capability and are refused.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.sde.base import (
    FINITE_TERMINAL_SNR,
    SDE,
    Params,
    bisect_log_snr,
    increasing,
    positive,
)
from scoregen.sde.registry import register


class VariancePreserving(SDE):
    """Base of VP processes: an instance gives its schedule's ``log alpha(t)`` and ``f(t)``
    (:meth:`schedule_log_alpha`, :meth:`schedule_f`; optionally closed forms
    :meth:`schedule_log_snr`, :meth:`schedule_t_from_log_snr`) and calls
    :meth:`_init_terminal_snr` at the end of its ``__init__``; the rest follows, with the zero
    terminal SNR rescaling when asked (module docstring)."""

    zero_terminal_snr: bool = False
    _terminal_alpha: float = 0.0

    def schedule_log_alpha(self, t: Tensor) -> Tensor:
        """``log alpha(t)`` of the schedule before any rescaling."""
        raise NotImplementedError

    def schedule_f(self, t: Tensor) -> Tensor:
        """``f(t) = d log alpha / dt`` of the schedule before any rescaling."""
        raise NotImplementedError

    def schedule_log_snr(self, t: Tensor) -> Tensor:
        """Log-SNR of the schedule before any rescaling (override with a closed form)."""
        la = self.schedule_log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def schedule_t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`schedule_log_snr` (bisection; override with a closed form)."""
        return bisect_log_snr(self.schedule_log_snr, lam, self.T)

    def _init_terminal_snr(self, zero_terminal_snr: bool) -> None:
        """Turn the zero terminal SNR rescaling on (``alpha(T)`` of the schedule is kept in
        float64); the process then lacks ``finite_terminal_snr`` and defaults to ``trailing``
        grids."""
        if not isinstance(zero_terminal_snr, bool):
            raise ValueError(f"zero_terminal_snr must be true or false, got {zero_terminal_snr!r}")
        self.zero_terminal_snr = zero_terminal_snr
        if zero_terminal_snr:
            T = torch.tensor(self.T, dtype=torch.float64)
            self._terminal_alpha = float(torch.exp(self.schedule_log_alpha(T)))
            self.capabilities = self.capabilities - {FINITE_TERMINAL_SNR}
            self.default_spacing = "trailing"

    def _terminal_params(self) -> Params:
        """``{"zero_terminal_snr": True}`` when on (configs of plain schedules unchanged)."""
        return {"zero_terminal_snr": True} if self.zero_terminal_snr else {}

    def log_alpha(self, t: Tensor) -> Tensor:
        """``log alpha_z = log alpha + log1p(-alpha(T)/alpha) - log1p(-alpha(T))`` when
        rescaled (``-inf`` at ``T`` exactly), else the schedule's."""
        la = self.schedule_log_alpha(t)
        if not self.zero_terminal_snr:
            return la
        a_T, la64 = self._terminal_alpha, la.to(torch.float64)  # float64: exact at t = 0 too
        rescaled = la64 + torch.log1p((-a_T * torch.exp(-la64)).clamp_min(-1)) - math.log1p(-a_T)
        rescaled = rescaled.to(la.dtype)
        return torch.where(t >= self.T, torch.full_like(rescaled, -math.inf), rescaled)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def f(self, t: Tensor) -> Tensor:
        """``f_z = f alpha / (alpha - alpha(T))`` when rescaled, else the schedule's."""
        f = self.schedule_f(t)
        if not self.zero_terminal_snr:
            return f
        ratio = torch.log(torch.full_like(f, self._terminal_alpha)) - self.schedule_log_alpha(t)
        rescaled = f / -torch.expm1(ratio)
        return torch.where(t >= self.T, torch.full_like(f, -math.inf), rescaled)

    def g2(self, t: Tensor) -> Tensor:
        return -2 * self.f(t)

    def log_snr(self, t: Tensor) -> Tensor:
        if not self.zero_terminal_snr:
            return self.schedule_log_snr(t)
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """The schedule's inverse; when rescaled, through ``alpha = alpha(T) + (1 - alpha(T))
        alpha_z`` with ``alpha_z^2 = sigmoid(2 lambda)``, written so that ``1 - alpha`` keeps
        its precision near ``t = 0``."""
        if not self.zero_terminal_snr:
            return self.schedule_t_from_log_snr(lam)
        lam64 = lam.to(torch.float64)
        a_T = self._terminal_alpha
        alpha_z = torch.sigmoid(2 * lam64).sqrt()
        one_minus_z = torch.sigmoid(-2 * lam64) / (1 + alpha_z)
        alpha = a_T + (1 - a_T) * alpha_z
        one_minus = (1 - a_T) * one_minus_z
        raw = torch.log(alpha) - 0.5 * torch.log(one_minus * (1 + alpha))
        return self.schedule_t_from_log_snr(raw).clamp(0, self.T).to(lam.dtype)

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
        self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, t_min: float = 1e-3,
        zero_terminal_snr: bool = False,
    ) -> None:
        super().__init__(T=T, t_min=t_min)
        self._init_beta(beta_min, beta_max)
        self._init_terminal_snr(zero_terminal_snr)

    def schedule_log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta_integral(t)

    def schedule_f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def schedule_log_snr(self, t: Tensor) -> Tensor:
        """``lambda = -log(expm1(B(t))) / 2``."""
        return -0.5 * torch.log(torch.expm1(self.beta_integral(t)))

    def schedule_t_from_log_snr(self, lam: Tensor) -> Tensor:
        """``B = log1p(exp(-2 lambda))``, then the root of the quadratic ``B(t) = B``."""
        B = torch.nn.functional.softplus(-2 * lam)
        return self.t_from_beta_integral(B).clamp(0, self.T)

    def params(self) -> Params:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, **super().params(),
                **self._terminal_params()}


@register("vp-cosine")
class CosineVPSDE(VariancePreserving):
    """VP process with the cosine schedule of Nichol & Dhariwal 2021 (eq. 17)."""

    def __init__(self, s: float = 0.008, T: float = 0.9946, t_min: float = 1e-3,
                 zero_terminal_snr: bool = False) -> None:
        if T >= 1.0:
            raise ValueError(f"vp-cosine needs T < 1 (alpha vanishes at t=1), got T={T}")
        super().__init__(T=T, t_min=t_min)
        self.s = positive("s", s)
        self._log_cos0 = math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))
        self._init_terminal_snr(zero_terminal_snr)

    def _theta(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def schedule_log_alpha(self, t: Tensor) -> Tensor:
        return torch.log(torch.cos(self._theta(t))) - self._log_cos0

    def schedule_f(self, t: Tensor) -> Tensor:
        """``d log alpha/dt = -tan(theta) pi / (2 (1 + s))``."""
        return -torch.tan(self._theta(t)) * (math.pi / (2 * (1 + self.s)))

    def schedule_t_from_log_snr(self, lam: Tensor) -> Tensor:
        """``alpha^2 = sigmoid(2 lambda)`` inverted through ``arccos``."""
        cos_theta = math.exp(self._log_cos0) * torch.sigmoid(2 * lam).sqrt()
        t = torch.arccos(cos_theta) * (2 * (1 + self.s) / math.pi) - self.s
        return t.clamp(0, self.T)

    def params(self) -> Params:
        return {"s": self.s, **super().params(), **self._terminal_params()}
