"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12) on any SDE.

With ``(x0_hat, eps_hat)`` at time ``t`` and the next time ``s < t``::

    c      = eta * std_post(t, s)                      (std of q(x_s | x_t, x0), eq. 16)
    x_s    = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,   z ~ N(0, I).

``eta = 0`` is deterministic and is the first-order exponential integrator of the
probability-flow ODE in log-SNR (Lu et al. 2022, DPM-Solver-1, eq. 3.7); ``eta = 1`` draws
exactly from the Gaussian posterior, i.e. the ancestral sampler on the same grid. A final
time of ``0`` returns ``x0_hat`` (``final="jump"``, the default: DDIM's own ``h -> inf`` limit,
first order like the sampler, and what diffusers and k-diffusion do); ``final="solve"`` with
``eta = 0`` takes :class:`~scoregen.samplers._final.FinalInterval`'s first-order step in
``tau = sigma~^2`` instead, ``x~_0 = (x~_N + x0_hat) / 2``. One network evaluation per step.

On a kernel diagonal in an orthonormal basis ``B`` (blurring diffusion's DCT frequencies) the
step is taken coordinate by coordinate on ``B x0_hat`` and ``B eps_hat`` with each coordinate's
``alpha_k``, ``sigma_k`` and mapped back (:data:`~scoregen.sde.base.DIAGONAL_KERNEL`; the
scalar kernel is ``B = I``); the final interval is then the jump.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.samplers._final import FinalInterval
from scoregen.samplers.ancestral import per_step
from scoregen.samplers.registry import register
from scoregen.sde.base import DIAGONAL_KERNEL, SCALAR_KERNEL


@register("ddim", order=1, stochastic=False, nfe_per_step=1, requires=(DIAGONAL_KERNEL,))
def ddim(denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, eta: float = 0.0,
         final: str = "jump") -> Tensor:
    """DDIM with ``eta`` in ``[0, 1]`` (0: deterministic, 1: ancestral)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must lie in [0, 1], got {eta}")
    end = FinalInterval(1, final if eta == 0 else "jump")
    if end.final == "solve" and SCALAR_KERNEL not in sde.capabilities:
        raise ValueError(f"ddim final='solve' steps in the EDM scale of the scalar kernel, which "
                         f"{sde.name!r} does not offer; use final='jump'")
    c_0, c_eps, c_z = _coefficients(sde, ts, eta, x)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        pred = denoiser(x, t)
        if s == 0 and end.final == "solve":
            a, sigma = float(sde.alpha(t)), float(sde.sigma(t))
            x = end.solve(a, sigma / a, x, pred.x0)
        elif s == 0:
            x = pred.x0
        else:
            y = c_0[i] * sde.to_basis(pred.x0) + c_eps[i] * sde.to_basis(pred.eps)
            if eta:
                y = y + c_z[i] * noise()
            x = sde.from_basis(y)
        callback(i, s, x)
    return x


def _coefficients(sde, ts: Tensor, eta: float, x: Tensor) -> tuple[list, list, list]:
    """``(alpha_s, sqrt(sigma_s^2 - c^2), c)`` of every step, vectorised over the grid (floats,
    or tensors of one value per coordinate of the basis: :func:`~scoregen.samplers.ancestral.
    per_step`)."""
    t, s = ts[:-1].double().cpu(), ts[1:].double().cpu()
    s_pos = s.clamp_min(sde.t_min)  # a final 0 is the denoising step: placeholder values
    shape = tuple(x.shape[1:])
    alpha_s, sigma_s = sde.diagonal_kernel(s_pos, shape)
    c = eta * sde.diagonal_posterior(t, s_pos, shape)[2] if eta else torch.zeros_like(sigma_s)
    return (per_step(alpha_s, x), per_step((sigma_s**2 - c**2).clamp_min(0).sqrt(), x),
            per_step(c, x))
