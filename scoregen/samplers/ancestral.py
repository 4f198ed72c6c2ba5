"""Ancestral sampling: draw ``x_s`` from the Gaussian posterior ``q(x_s | x_t, x0_hat)``.

Between consecutive grid times ``s < t`` (Kingma et al. 2021, eq. 33; Ho et al. 2020, eq. 6-7)::

    x_s = c_x x_t + c_0 x0_hat + std z,       z ~ N(0, I),
    c_x = alpha_ts sigma_s^2 / sigma_t^2,  c_0 = alpha_s sigma_ts^2 / sigma_t^2,
    std^2 = sigma_ts^2 sigma_s^2 / sigma_t^2     ("posterior", Ho's sigma_t^2 = beta_tilde_t)
    std^2 = sigma_ts^2                           ("transition", Ho's sigma_t^2 = beta_t)

with ``alpha_ts = alpha_t / alpha_s`` and ``sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2``.

- On the discrete DDPM SDE (``scoregen.sde.get("ddpm")``) with all ``N`` steps (uniform grid,
  ``steps=N``) this is Algorithm 2 of Ho et al. 2020 step by step: ``c_x x_t + c_0 x0_hat``
  equals ``(x_t - beta_t eps_hat / sqrt(1 - alpha_bar_t)) / sqrt(alpha_t)`` (their eq. 11),
  and the last step (to ``t = 0``) returns ``x0_hat`` without noise, which at ``t_1`` is
  exactly their ``z = 0`` step. With fewer steps it strides over the chain.
- On VE (``alpha = 1``) it is the ancestral sampler of SMLD (Song et al. 2021, eq. 47).

One network evaluation per step; the coefficients of every step are computed once, before
the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.samplers.registry import register

VARIANCES = ("posterior", "transition")


@register("ancestral", order=0.5, stochastic=True, nfe_per_step=1)
def ancestral(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, variance: str = "posterior"
) -> Tensor:
    """Ancestral DDPM/SMLD chain over ``ts`` with the ``variance`` choice of Ho et al. 2020."""
    if variance not in VARIANCES:
        raise ValueError(f"unknown ancestral variance {variance!r}; known: {', '.join(VARIANCES)}")
    t, s = ts[:-1].double().cpu(), ts[1:].double().cpu().clamp_min(sde.t_min)
    c_x, c_0, std = sde.posterior(t, s)  # every step at once; a final 0 is replaced below
    if variance == "transition":
        std = sde.transition(s, t)[1]
    coefs = list(zip(c_x.tolist(), c_0.tolist(), std.tolist(), (ts[1:] == 0).tolist(),
                     strict=True))
    for i, (a, b, c, last) in enumerate(coefs):
        x0 = denoiser(x, ts[i]).x0
        x = x0 if last else torch.mul(x, a).add_(x0, alpha=b).add_(noise(), alpha=c)
        callback(i, ts[i + 1], x)
    return x
