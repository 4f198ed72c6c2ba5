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

- On a kernel diagonal in an orthonormal basis (blurring diffusion's DCT frequencies,
  Hoogeboom & Salimans 2023, sec. 3.2) the same posterior holds coordinate by coordinate with
  each coordinate's ``alpha_k``, ``sigma_k``: the step is taken on ``B x_t``, ``B x0_hat`` and
  mapped back (:data:`~scoregen.sde.base.DIAGONAL_KERNEL`); the scalar kernel is ``B = I``.

One network evaluation per step; the coefficients of every step are computed once, before
the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.samplers.registry import register
from scoregen.sde.base import DIAGONAL_KERNEL

VARIANCES = ("posterior", "transition")


def per_step(coef: Tensor, like: Tensor) -> list:
    """A coefficient of every step of a grid: Python floats for one value per step (the scalar
    kernel), else one tensor per step in ``like``'s dtype and device (one per coordinate)."""
    if coef.ndim <= 1:
        return coef.reshape(-1).tolist()
    return list(coef.to(dtype=like.dtype, device=like.device).unbind(0))


@register("ancestral", order=0.5, stochastic=True, nfe_per_step=1, requires=(DIAGONAL_KERNEL,))
def ancestral(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, variance: str = "posterior"
) -> Tensor:
    """Ancestral DDPM/SMLD chain over ``ts`` with the ``variance`` choice of Ho et al. 2020."""
    if variance not in VARIANCES:
        raise ValueError(f"unknown ancestral variance {variance!r}; known: {', '.join(VARIANCES)}")
    shape = tuple(x.shape[1:])
    t, s = ts[:-1].double().cpu(), ts[1:].double().cpu().clamp_min(sde.t_min)
    # every step at once; a final 0 is replaced below
    c_x, c_0, std = sde.diagonal_posterior(t, s, shape)
    if variance == "transition":
        std = sde.diagonal_transition(s, t, shape)[1]
    coefs = list(zip(per_step(c_x, x), per_step(c_0, x), per_step(std, x),
                     (ts[1:] == 0).tolist(), strict=True))
    for i, (a, b, c, last) in enumerate(coefs):
        x0 = denoiser(x, ts[i]).x0
        if last:
            x = x0
        elif isinstance(a, float):
            x = torch.mul(x, a).add_(x0, alpha=b).add_(noise(), alpha=c)
        else:
            x = sde.from_basis(a * sde.to_basis(x) + b * sde.to_basis(x0) + c * noise())
        callback(i, ts[i + 1], x)
    return x
