"""The discrete DDPM schedule as an exact continuous-time VP process.

Ho et al. 2020 define ``alpha_bar_i = prod_{j<=i} (1 - beta_j)`` for ``i = 1..N``. We place
step ``i`` at time ``t_i = i / N`` (so ``T = 1``) and interpolate ``log alpha_bar``
linearly between the knots ``(t_i, log alpha_bar_i)`` with ``alpha_bar_0 = 1``. Then

    alpha(t_i)^2 = alpha_bar_i   exactly,
    f(t) = N log(1 - beta_i) / 2   on  [t_{i-1}, t_i),     g^2 = -2 f  (VP),

so the ancestral step between ``t_i`` and ``t_{i-1}`` is exactly Algorithm 2 of Ho et al.
2020, and between arbitrary times this is a genuine VP SDE every sampler can integrate.
``t_min`` defaults to ``t_1 = 1/N``, the least-noisy step of the chain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from scoregen.sde.base import Params
from scoregen.sde.registry import register
from scoregen.sde.vp import VariancePreserving


def linear_betas(n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> list[float]:
    """The linear beta sequence of Ho et al. 2020 (sec. 4): ``n`` values from start to end."""
    return torch.linspace(beta_start, beta_end, n, dtype=torch.float64).tolist()


@register("ddpm")
class DiscreteVPSDE(VariancePreserving):
    """VP process whose ``alpha^2`` hits a discrete ``alpha_bar`` sequence at ``t_i = i/N``."""

    default_objective = "ddpm"

    def __init__(
        self,
        betas: Sequence[float] | None = None,
        n: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        t_min: float | None = None,
        zero_terminal_snr: bool = False,
    ) -> None:
        if betas is None:
            if not (isinstance(n, int) and n >= 1):
                raise ValueError(f"n (number of DDPM steps) must be a positive integer, got {n!r}")
            if not 0 < beta_start <= beta_end < 1:
                raise ValueError(
                    f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}"
                )
            betas = linear_betas(n, beta_start, beta_end)
            self._spec: Params = {"n": n, "beta_start": beta_start, "beta_end": beta_end}
        else:
            self._spec = {"betas": [float(b) for b in betas]}
        b = torch.as_tensor(list(betas), dtype=torch.float64)
        if b.ndim != 1 or b.numel() == 0:
            raise ValueError("betas must be a non-empty 1-D sequence")
        if not ((b > 0) & (b < 1)).all():
            raise ValueError("every beta must lie in (0, 1)")
        self.n = b.numel()
        super().__init__(T=1.0, t_min=1.0 / self.n if t_min is None else t_min)
        self.betas = b
        self._log_alpha_bar = torch.cat([b.new_zeros(1), torch.cumsum(torch.log1p(-b), 0)])
        self._rising = -self._log_alpha_bar  # increasing knots, for searchsorted
        self._slopes = self._log_alpha_bar.diff()  # per interval, so one lookup per call
        self._init_terminal_snr(zero_terminal_snr)

    def alpha_bar(self) -> Tensor:
        """``alpha_bar_i`` for ``i = 1..N`` (float64), the cumulative product of ``1 - beta``."""
        return torch.exp(self._log_alpha_bar[1:])

    def _interval(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Index ``i`` of the interval ``[t_i, t_{i+1})`` holding ``t`` and the offset in it."""
        u = t.to(torch.float64) * self.n
        i = u.floor().clamp(0, self.n - 1)
        return i.long(), u - i

    def schedule_log_alpha(self, t: Tensor) -> Tensor:
        i, w = self._interval(t)
        lab = torch.addcmul(self._log_alpha_bar.to(t.device)[i], w, self._slopes.to(t.device)[i])
        return lab.mul_(0.5).to(t.dtype)

    def schedule_t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Exact inverse: ``log alpha_bar = -softplus(-2 lambda)``, then the knot interval
        holding it and the linear interpolation inside it (no bisection)."""
        rising = torch.nn.functional.softplus(-2 * lam.to(torch.float64)).contiguous()
        knots = self._rising.to(rising.device)  # -log alpha_bar, increasing from 0
        i = torch.searchsorted(knots, rising).clamp_(1, self.n).sub_(1)
        w = (rising - knots[i]).div_(self._slopes.to(rising.device)[i]).neg_().clamp_(0, 1)
        return w.add_(i).div_(self.n).clamp_(0, self.T).to(lam.dtype)

    def schedule_f(self, t: Tensor) -> Tensor:
        i, _ = self._interval(t)
        slope = self.n * torch.log1p(-self.betas.to(t.device))[i]
        return (0.5 * slope).to(t.dtype)

    def params(self) -> Params:
        return {**self._spec, "t_min": self.t_min, **self._terminal_params()}
