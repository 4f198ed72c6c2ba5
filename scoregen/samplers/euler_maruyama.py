"""Euler–Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6; Kloeden & Platen 1992).

The reverse SDE ``dx = [f(t) x - g(t)^2 grad log p_t(x)] dt + g(t) dw_bar`` is stepped from
``t`` down to ``s < t`` with ``h = t - s``::

    x_s = x_t - [f(t) x_t - g(t)^2 score(x_t, t)] h + g(t) sqrt(h) z,     z ~ N(0, I).

A final grid time of ``0`` is the usual denoising step: ``x0_hat`` at ``t_min`` (Tweedie's
formula, Song et al. 2021, app. G), on by default through ``denoise=True`` of the grid.
Strong order 1/2, weak order 1. One network evaluation per step.
"""

from __future__ import annotations

from torch import Tensor

from scoregen._shape import bcast
from scoregen.samplers.registry import register


def euler_maruyama_step(denoiser, sde, x: Tensor, t: Tensor, s: Tensor, noise) -> Tensor:
    """One reverse-SDE Euler–Maruyama step from ``t`` to ``s`` (``x0_hat`` if ``s == 0``)."""
    pred = denoiser(x, t)
    if s == 0:
        return pred.x0
    h = t - s
    drift = sde.reverse_drift(x, t, sde.score_from_eps(pred.eps, t))
    return x - drift * h + bcast((sde.g2(t) * h).sqrt(), x) * noise()


@register("euler_maruyama", order=0.5, stochastic=True, nfe_per_step=1)
def euler_maruyama(denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback) -> Tensor:
    """Euler–Maruyama over ``ts`` on the reverse SDE."""
    for i in range(len(ts) - 1):
        x = euler_maruyama_step(denoiser, sde, x, ts[i], ts[i + 1], noise)
        callback(i, ts[i + 1], x)
    return x
