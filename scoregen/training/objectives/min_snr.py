"""Min-SNR-gamma weighting of the eps error (Hang et al. 2023), the worked example of
``docs/adding-an-objective.md`` (the page shows this module's code; a test keeps them equal).

    L = E_{t ~ U(t_min, T)} E [ min(SNR(t), gamma) / SNR(t) * mean_dims (eps_hat - eps)^2 ],
    SNR = alpha^2 / sigma^2 = exp(2 lambda).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.sde.base import SDE
from scoregen.training.batches import Batch
from scoregen.training.objectives.base import Objective, eps_error, register


@register("min_snr")
class MinSNR(Objective):
    """Min-SNR-gamma weighted eps-MSE (Hang et al. 2023, eq. 12), t uniform on [t_min, T]."""

    def __init__(self, sde: SDE, *, gamma: float = 5.0) -> None:
        super().__init__(sde)
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.gamma = float(gamma)

    def weight(self, t: Tensor) -> Tensor:
        """min(SNR, gamma) / SNR at times t."""
        snr = torch.exp(2 * self.sde.log_snr(t))
        return snr.clamp(max=self.gamma) / snr

    def loss(self, model, batch: Batch) -> Tensor:
        sde, x0 = self.sde, batch.x0
        t = (sde.t_min + (sde.T - sde.t_min) * batch.u).to(x0)
        err = eps_error(model, x0, t, batch.eps, batch.cond)
        return (self.weight(t) * err).mean()
