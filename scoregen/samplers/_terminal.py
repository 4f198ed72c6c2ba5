"""The first step from ``T`` on a process with zero terminal SNR (``alpha(T) = 0``).

At ``T`` the log-SNR is ``-inf``: ``x_T = eps`` holds no signal, the drift is infinite and every
exponential-integrator step from ``T`` has an infinite length in log-SNR, so no solver can start
there. The limit is simple, though (Lin et al. 2024, sec. 3.2-3.3): a model predicting ``x0`` or
``v`` gives ``x0_hat = E[x0]`` (``x0 = -v`` at ``alpha = 0``) and ``eps_hat = x_T`` exactly, and
the step to the next grid time ``s`` is::

    deterministic:  x_s = alpha_s x0_hat + sigma_s eps_hat                (DDIM, Song et al. 2021a)
    stochastic:     x_s = alpha_s x0_hat + sigma_s z,   z ~ N(0, I)       (the posterior
                    q(x_s | x_T, x0_hat) of Kingma et al. 2021, eq. 33, whose mean has no
                    x_T term and whose variance is sigma_s^2 when alpha_T = 0)

Both are the exact-in-log-SNR updates of first order; the sampler then runs on the rest of the
grid, where the log-SNR is finite, at its own order. :func:`scoregen.sample` applies this step
whenever the grid starts at ``T`` on a process that lacks ``finite_terminal_snr``, and counts its
network call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoregen.infra.shape import bcast
from scoregen.sde.base import FINITE_TERMINAL_SNR, SDE


def starts_at_zero_snr(sde: SDE, ts: Tensor) -> bool:
    """Whether the grid ``ts`` starts at ``T`` of a process with ``alpha(T) = 0``."""
    return FINITE_TERMINAL_SNR not in sde.capabilities and float(ts[0]) >= sde.T


def terminal_step(denoiser: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], sde: SDE,
                  x: Tensor, ts: Tensor, stochastic: bool,
                  noise: Callable[[], Tensor] | None = None) -> Tensor:
    """``x`` at ``ts[1]`` from ``x_T`` at ``ts[0] = T`` (module docstring); ``x0_hat`` when
    ``ts[1] = 0``. ``noise()`` gives the fresh draw of a stochastic sampler."""
    x0_hat, eps_hat = denoiser(x, ts[0])
    s = ts[1:2].to(torch.float64)
    alpha_s, sigma_s = (bcast(c.to(x.dtype).reshape(()), x) for c in (sde.alpha(s), sde.sigma(s)))
    if float(s) == 0:
        return x0_hat
    z = noise() if stochastic and noise is not None else eps_hat
    return alpha_s * x0_hat + sigma_s * z


__all__ = ["starts_at_zero_snr", "terminal_step"]
