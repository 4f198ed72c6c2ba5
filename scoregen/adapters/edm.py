"""EDM / k-diffusion denoisers ``D(x, sigma)`` as scoregen x0 models on any SDE.

Karras et al. 2022 ("Elucidating the Design Space", sec. 2 and eq. 4) write every process
here in the variance-exploding form ``x_edm = x0 + sigma_edm eps``; with scoregen's marginal
``x_t = alpha(t) x0 + sigma(t) eps`` that is ``x_edm = x_t / alpha(t)``,
``sigma_edm = sigma(t) / alpha(t) = exp(-lambda(t))``. A denoiser ``D(x_edm, sigma_edm)``
(k-diffusion's model convention: ``model(x, sigma) -> denoised``) is therefore the x0
prediction::

    x0_hat(x_t, t) = D(x_t / alpha(t), sigma(t) / alpha(t)).

On the VE SDE (``alpha = 1``) this is ``D(x, sigma(t))``: choose ``sigma_min`` /
``sigma_max`` of the VE process to cover the denoiser's training range.

:func:`edm_precond` builds ``D`` from a raw network ``F`` with EDM's preconditioning
(Table 1, ``EDMPrecond``; k-diffusion's ``layers.Denoiser``)::

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise),
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2),     c_noise = ln(sigma) / 4.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from scoregen.infra.shape import batch_times, bcast
from scoregen.models.prediction import PARAMETERIZATIONS
from scoregen.sde.base import SDE

DenoiserFn = Callable[[Tensor, Tensor], Tensor]


class EDMDenoiserModel(nn.Module):
    """``D(x, sigma)`` as an x0 :class:`~scoregen.models.prediction.Model` for ``sde`` (module
    docstring).

    Args:
        denoiser: ``D(x: (B, *D), sigma: (B,)) -> x0_hat: (B, *D)``.
        sde: the process to present it on (VE is the denoiser's own form).
        sigma_data: the data standard deviation the denoiser was trained with (recorded
            for users; ``D`` already includes it).
        shape: event shape of one sample, when known.
    """

    prediction = "x0"

    def __init__(self, denoiser: DenoiserFn, sde: SDE, sigma_data: float | None = None,
                 shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.sde = sde
        self.sigma_data = sigma_data
        self.shape = None if shape is None else tuple(shape)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = batch_times(t, x)
        t64 = t.to(torch.float64)
        alpha, sigma = self.sde.alpha(t64), self.sde.sigma(t64)
        x_edm = x / bcast(alpha.to(x.dtype), x)
        return self.denoiser(x_edm, (sigma / alpha).to(x.dtype))


_EDM = PARAMETERIZATIONS["edm"]


class EDMPrecond(nn.Module):
    """``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` (module docstring)."""

    def __init__(self, network: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.network = network
        self.sigma_data = float(sigma_data)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """EDM's denoiser on its own scale (``alpha = 1``): the ``edm`` parameterization of
        :mod:`scoregen.models.prediction`, with ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``."""
        sigma = batch_times(sigma, x)
        one = torch.ones_like(sigma)
        c_in = torch.rsqrt(sigma**2 + self.sigma_data**2)
        F = self.network(bcast(c_in, x) * x, torch.log(sigma) / 4)
        return _EDM.output(x, F, one, sigma, self.sigma_data)


def edm_precond(network: nn.Module, sigma_data: float = 0.5) -> EDMPrecond:
    """EDM's preconditioned denoiser around a raw network ``F(x_in, c_noise)``."""
    return EDMPrecond(network, sigma_data)


__all__ = ["EDMDenoiserModel", "EDMPrecond", "edm_precond"]
