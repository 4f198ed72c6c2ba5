"""Reference solutions of the probability-flow ODE on exact mixture scores, down to ``sigma = 0``.

The endpoint error of a deterministic sampler is its distance to the exact flow of the same
``x_T``. The flow is solved in two pieces, both by dopri5 in float64 at a tight tolerance:

1. from ``T`` to ``t_min`` by ``ode_dopri5`` (the flow in ``(y, u)``, docs/samplers.md);
2. from ``sigma~_N = sigma(t_min)/alpha(t_min)`` to ``0`` in ``tau = sigma~^2`` on the EDM
   scale ``x~ = x / alpha``, where the flow is ``dx~/dtau = -grad log p(x~; sigma~) / 2`` with
   the mixture's exact score, finite at ``tau = 0`` (the data density's score).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchdiffeq import odeint

from scoregen.models.analytic import GaussianMixture
from scoregen.sde.base import SDE


class _EDMScale:
    """The variance-exploding process ``x~ = x0 + sqrt(tau) eps`` indexed by ``tau`` (for the
    mixture's exact quantities)."""

    def marginal_params(self, tau: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(tau), tau.clamp_min(0).sqrt()


def flow_to_clean(mixture: GaussianMixture, x_tilde: Tensor, sigma_edm: float,
                  tol: float = 1e-12) -> Tensor:
    """The exact flow from ``x~`` at ``sigma~ = sigma_edm`` to ``sigma~ = 0`` (float64)."""
    scale = _EDMScale()

    def g(tau: Tensor, x: Tensor) -> Tensor:
        return -0.5 * mixture.score(x, scale, tau)

    span = torch.tensor([sigma_edm**2, 0.0], dtype=torch.float64)
    return odeint(g, x_tilde.to(torch.float64), span, method="dopri5", rtol=tol, atol=tol)[-1]


def pf_ode_endpoint(mixture: GaussianMixture, sde: SDE, x_T: Tensor, tol: float = 1e-11) -> Tensor:
    """The exact probability-flow ODE solution at ``sigma = 0`` of every start in ``x_T``."""
    from scoregen.sampling.api import sample

    ts = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    x_min = sample(mixture.model(sde), sde, x_T.to(torch.float64), "ode_dopri5", None, ts=ts,
                   rtol=tol, atol=tol).x
    t = torch.tensor(sde.t_min, dtype=torch.float64)
    alpha = float(sde.alpha(t))
    return flow_to_clean(mixture, x_min / alpha, float(sde.sigma(t)) / alpha, tol=tol * 10)


__all__ = ["flow_to_clean", "pf_ode_endpoint"]
