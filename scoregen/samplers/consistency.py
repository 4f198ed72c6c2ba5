"""Multistep consistency sampling (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models",
Algorithm 1) over a consistency function.

A consistency function ``f(x_t, t)`` maps every point of a probability-flow trajectory to its
end at ``t_min``, in the EDM scale ``x~ = x / alpha`` where ``f(x, t_min) = x / alpha(t_min)``
(:mod:`scoregen.models.prediction`, the ``consistency`` parameterizations); the denoiser reports
it as ``x0_hat``. On a grid ``T = tau_0 > tau_1 > ... > tau_{n-1} > 0`` (then ``0``)::

    x~ = f(x_T, T)
    for tau in tau_1 .. tau_{n-1}:
        x_tau = alpha(tau) (x~ + sqrt(sigma~(tau)^2 - sigma~_min^2) z),   z ~ N(0, I)
        x~    = f(x_tau, tau)
    return x~

with ``sigma~ = sigma / alpha`` and ``sigma~_min = sigma~(t_min)``: ``x~`` carries noise of level
``sigma~_min``, so the re-noising adds the rest (the paper's ``sqrt(tau_n^2 - eps^2)``). For an
exact consistency function each ``x_tau`` is an exact draw from the marginal at ``tau`` and the
output an exact draw at ``t_min``, at any number of steps; one step (grid ``[T, 0]``) is
deterministic. The re-noising times decide the quality at few steps: a distilled student
(:mod:`scoregen.training.distill`) records the times chosen for each NFE.

The sampler needs a consistency function: on a denoiser (``x0_hat`` the posterior mean) the
re-noised state is under-dispersed (on a Gaussian of variance ``s^2`` its variance tends to
``s^2 / 2`` on fine grids), so it registers ``model="consistency"`` and ``scoregen.sample``
refuses other models. One network evaluation per step. A grid that does not end in ``0``
returns the re-noised state at its last time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.samplers.registry import register


@register("consistency", order=1, stochastic=True, nfe_per_step=1, model="consistency")
def consistency(denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback) -> Tensor:
    """Song et al. 2023, Algorithm 1, on the grid ``ts`` (module docstring)."""
    t_min = torch.tensor(sde.t_min, dtype=torch.float64)
    sigma_min = float(sde.sigma(t_min) / sde.alpha(t_min))
    for i in range(len(ts) - 1):
        x_tilde = denoiser(x, ts[i]).x0
        s = ts[i + 1]
        if s == 0:
            x = x_tilde
        else:
            alpha, sigma = float(sde.alpha(s)), float(sde.sigma(s))
            spread = math.sqrt(max((sigma / alpha) ** 2 - sigma_min**2, 0.0))
            x = alpha * (x_tilde + spread * noise())
        callback(i, s, x)
    return x
