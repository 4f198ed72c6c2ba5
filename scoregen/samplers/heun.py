"""EDM's Heun sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Algorithm 1, and Algorithm 2's stochastic churn) on any SDE.

Dividing by ``alpha`` turns every process here into the variance-exploding form of Karras et
al. (their eq. 4 with ``s(t) = alpha(t)``)::

    x~ = x / alpha,     sigma~ = sigma / alpha = exp(-lambda),
    dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~,     D(x~; sigma~) = x0_hat(alpha x~, t(sigma~)),

so the sampler runs on ``(x~, sigma~)`` with ``sigma~_i = exp(-lambda(t_i))`` of the grid and
maps back ``x = alpha x~``. Step ``i`` of ``N`` (Algorithm 2)::

    gamma_i  = min(S_churn / N, sqrt(2) - 1)  if S_tmin <= sigma~_i <= S_tmax  else 0
    sigma^   = (1 + gamma_i) sigma~_i,        x^ = x~_i + sqrt(sigma^2 - sigma~_i^2) S_noise z
    d_i      = (x^ - D(x^; sigma^)) / sigma^
    x~_{i+1} = x^ + (sigma~_{i+1} - sigma^) d_i                           (Euler)
    if sigma~_{i+1} != 0:                                                  (Heun correction)
        d'_i     = (x~_{i+1} - D(x~_{i+1}; sigma~_{i+1})) / sigma~_{i+1}
        x~_{i+1} = x^ + (sigma~_{i+1} - sigma^) (d_i + d'_i) / 2

``s_churn = 0`` (default) is Algorithm 1, deterministic. ``S_tmin``, ``S_tmax`` are in units of
``sigma~``; ``sigma^`` is capped at ``sigma~(T)`` so the model is never asked outside the
process. A grid time of ``0`` counts as ``sigma~ = 0``: the Euler step to it returns
``D = x0_hat`` exactly, which is the framework's final denoising step.

NFE: two per step, except the Euler step to a final ``0`` (one): ``2 n - 1`` on a grid of ``n``
intervals ending in ``0`` (``scoregen.sample(..., steps=n)``), ``2 n`` on a grid ending at
``t_min``. Order 2.
"""

from __future__ import annotations

import math

from torch import Tensor

from scoregen.samplers._exp import Node, grid_nodes, node, node_at
from scoregen.samplers._final import FinalInterval
from scoregen.samplers.registry import register

SAFE_RATIO = 0.3  # steps with sigma~_{i+1} / sigma~_i below this correct in u (docstring)


def _slope(denoiser, x_tilde: Tensor, at: Node) -> tuple[Tensor, Tensor]:
    """``(D, d)`` with ``D = x0_hat`` at ``x~`` and ``d = (x~ - D) / sigma~`` (Algorithm 1)."""
    x0_hat = denoiser(at.alpha * x_tilde, at.t).x0
    return x0_hat, (x_tilde - x0_hat) / at.sigma_edm


def _check(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    if not s_churn >= 0:
        raise ValueError(f"s_churn must be >= 0 (0: deterministic), got {s_churn}")
    if not s_noise >= 0:
        raise ValueError(f"s_noise must be >= 0, got {s_noise}")
    if not 0 <= s_tmin <= s_tmax:
        raise ValueError(f"need 0 <= s_tmin <= s_tmax (noise levels sigma/alpha), got "
                         f"s_tmin={s_tmin}, s_tmax={s_tmax}")


@register("heun", order=2, stochastic=False, nfe_per_step=2)
def heun(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, s_churn: float = 0.0,
    s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
    safe_ratio: float = SAFE_RATIO, final: str = "solve",
) -> Tensor:
    """EDM Heun over ``ts``; ``s_churn > 0`` adds Algorithm 2's noise (then stochastic)."""
    _check(s_churn, s_tmin, s_tmax, s_noise)
    if not 0 <= safe_ratio < 1:
        raise ValueError(f"safe_ratio must lie in [0, 1) (0: EDM's corrector on every step), "
                         f"got {safe_ratio}")
    nodes, n = grid_nodes(sde, ts), len(ts) - 1
    gamma = min(s_churn / n, math.sqrt(2) - 1)
    end = FinalInterval(2, final if gamma == 0 else "jump")
    top = node(sde, sde.T).sigma_edm
    x_tilde = x / nodes[0].alpha
    for i in range(n):
        t = hat = nodes[i]
        if gamma > 0 and s_tmin <= t.sigma_edm <= s_tmax and t.sigma_edm < top:
            hat = node_at(sde, -math.log(min((1 + gamma) * t.sigma_edm, top)))
            spread = math.sqrt(max(hat.sigma_edm**2 - t.sigma_edm**2, 0.0))
            x_tilde = x_tilde + (spread * s_noise) * noise()
        x0_hat, d = _slope(denoiser, x_tilde, hat)
        if ts[i + 1] == 0:
            x = end.solve(1.0, hat.sigma_edm, x_tilde, x0_hat)  # the final interval
        else:
            end.record(1.0, hat.sigma_edm, x_tilde, x0_hat)
            s = nodes[i + 1]
            dt = s.sigma_edm - hat.sigma_edm
            x0_next, d_next = _slope(denoiser, x_tilde + dt * d, s)
            ratio = s.sigma_edm / hat.sigma_edm
            if ratio < safe_ratio:  # trapezoid in u = 1 / sigma~: bounded for any ratio
                x_tilde = ratio * x_tilde + (1 - ratio) * 0.5 * (x0_hat + x0_next)
            else:
                x_tilde = x_tilde + dt * 0.5 * (d + d_next)
            x = s.alpha * x_tilde
        callback(i, ts[i + 1], x)
    return x
