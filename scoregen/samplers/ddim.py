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
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.samplers._final import FinalInterval
from scoregen.samplers.registry import register


@register("ddim", order=1, stochastic=False, nfe_per_step=1)
def ddim(denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, eta: float = 0.0,
         final: str = "jump") -> Tensor:
    """DDIM with ``eta`` in ``[0, 1]`` (0: deterministic, 1: ancestral)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must lie in [0, 1], got {eta}")
    end = FinalInterval(1, final if eta == 0 else "jump")
    c_0, c_eps, c_z = _coefficients(sde, ts, eta)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        pred = denoiser(x, t)
        if s == 0 and end.final == "solve":
            a, sigma = float(sde.alpha(t)), float(sde.sigma(t))
            x = end.solve(a, sigma / a, x, pred.x0)
        elif s == 0:
            x = pred.x0
        else:
            x = c_0[i] * pred.x0 + c_eps[i] * pred.eps
            if eta:
                x = x + c_z[i] * noise()
        callback(i, s, x)
    return x


def _coefficients(sde, ts: Tensor, eta: float) -> tuple[list[float], list[float], list[float]]:
    """``(alpha_s, sqrt(sigma_s^2 - c^2), c)`` of every step, vectorised over the grid."""
    t, s = ts[:-1].double().cpu(), ts[1:].double().cpu()
    s_pos = s.clamp_min(sde.t_min)  # a final 0 is the denoising step: placeholder values
    sigma_s = sde.sigma(s_pos)
    c = eta * sde.posterior(t, s_pos)[2] if eta else torch.zeros_like(sigma_s)
    return (sde.alpha(s_pos).tolist(), (sigma_s**2 - c**2).clamp_min(0).sqrt().tolist(),
            c.tolist())
