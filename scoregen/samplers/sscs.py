"""Symmetric splitting CLD sampler, SSCS (Dockhorn, Vahdat & Kreis 2022, sec. 3.4 and app. D).

The reverse SDE of critically-damped Langevin diffusion (:mod:`scoregen.sde.cld`) in reverse
time ``tau``, with the velocity score ``s_v = grad_v log p_t``, mass ``M``, friction
``Gamma = 2 sqrt(M)`` and ``beta(t)``::

    du/dtau = beta (-F u) + 2 Gamma beta e_v s_v + sqrt(2 Gamma beta) e_v xi,

splits with ``s_v = -v / M + (s_v + v / M)`` into a linear part that is solved exactly and a
kick by the part of the score that is not Gaussian:

- linear: ``du/dtau = beta A u + sqrt(2 Gamma beta) e_v xi`` with ``A = -F - (2 Gamma / M) e_v
  e_v^T = [[0, -1/M], [1, -Gamma/M]]``: critically damped again (``A + (2/Gamma) I`` is
  nilpotent) with the stationary law ``N(0, diag(1, M))`` of the forward process. Over a
  stretch with ``b = int beta`` and ``y = 2 b / Gamma`` it is Gaussian,
  ``u <- E u + L z`` with ``E = e^{-y} [[1 + y, -4 b / Gamma^2], [b, 1 - y]]`` and covariance
  ``diag(1, M) - E diag(1, M) E^T``::

      C_xx = 1 - e^{-2y} (1 + 2y + 2y^2),  C_xv = -2 y b e^{-2y},
      C_vv = M - e^{-2y} (b^2 + M (1 - y)^2);

- kick: ``v <- v + 2 Gamma beta(m) h (s_v(u, m) + v / M)``, one network evaluation.

A step from ``t`` to ``s`` is Strang's symmetric composition: the linear part over ``[m, t]``
(``m = (t + s) / 2``), the kick over the whole step at ``m``, the linear part over ``[s, m]``
(the paper's reference code evaluates the kick at ``t``; the midpoint makes the composition
symmetric). A final grid time of ``0`` is the denoising step (``x0_hat`` at the last positive
time). One NFE per step; two normal draws of the state's shape per step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.samplers.registry import register
from scoregen.sde.cld import DAMPED_LANGEVIN


def linear_part(sde, b: float) -> tuple[float, float, float, float, float, float, float]:
    """``E`` (``e_xx, e_xv, e_vx, e_vv``) and the Cholesky factor ``(l_xx, l_xv, l_vv)`` of the
    exact linear step over ``b = int beta`` (module docstring; float64 arithmetic)."""
    G, M = sde.friction, sde.mass
    y = 2 * b / G
    e1, e2 = math.exp(-y), math.exp(-2 * y)
    c_xx = -math.expm1(-2 * y) - e2 * (2 * y + 2 * y * y)
    c_xv = -2 * y * b * e2
    c_vv = M - e2 * (b * b + M * (1 - y) ** 2)
    l_xx = math.sqrt(max(c_xx, 1e-300))
    l_xv = c_xv / l_xx
    l_vv = math.sqrt(max(c_vv - l_xv**2, 0.0))
    return (e1 * (1 + y), -e1 * 4 * b / G**2, e1 * b, e1 * (1 - y), l_xx, l_xv, l_vv)


def _linear_step(sde, u: Tensor, coef: tuple[float, ...], z: Tensor) -> Tensor:
    e_xx, e_xv, e_vx, e_vv, l_xx, l_xv, l_vv = coef
    x, v = sde.split(u)
    zx, zv = sde.split(z)
    return torch.cat([e_xx * x + e_xv * v + l_xx * zx,
                      e_vx * x + e_vv * v + l_xv * zx + l_vv * zv], dim=1)


@register("sscs", order=0.5, stochastic=True, nfe_per_step=1, requires=(DAMPED_LANGEVIN,))
def sscs(denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback) -> Tensor:
    """SSCS over ``ts`` on critically-damped Langevin diffusion (module docstring)."""
    ts64 = ts.double().cpu()
    for i in range(len(ts) - 1):
        t, s = ts64[i], ts64[i + 1]
        if s == 0:
            x = denoiser(x, ts[i]).x0
            callback(i, ts[i + 1], x)
            continue
        m = 0.5 * (t + s)
        B = sde.beta_integral(torch.stack([t, m, s])).tolist()
        x = _linear_step(sde, x, linear_part(sde, B[0] - B[1]), noise())
        s_v = sde.predicted_part(denoiser.score(x, m.to(x.dtype)))
        xx, v = sde.split(x)
        kick = 2 * sde.friction * float(sde.beta(m)) * float(t - s)
        x = torch.cat([xx, v + kick * (s_v + v / sde.mass)], dim=1)
        x = _linear_step(sde, x, linear_part(sde, B[1] - B[2]), noise())
        callback(i, ts[i + 1], x)
    return x


__all__ = ["linear_part", "sscs"]
