"""The discrete DDPM loss (Ho et al. 2020, Algorithm 1) on the ``ddpm`` process.

With ``N`` steps, ``i ~ U{1..N}``, ``t = i / N`` (where ``alpha(t)^2 = alpha_bar_i`` exactly,
:mod:`scoregen.sde.ddpm`) and the eps-MSE ``mean_dims (eps_hat(x_t, t) - eps)^2``. Each
example's ``i`` is ``1 + floor(N u)`` of its own uniform ``u``. The default objective (``auto``)
on the ``ddpm`` process.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.models.prediction import Model
from scoregen.sde.base import SDE
from scoregen.training.batches import Batch
from scoregen.training.objectives.base import Objective, eps_error, register


@register("ddpm", processes=("ddpm",))
class DDPMLoss(Objective):
    """Ho et al. 2020, Algorithm 1: integer steps of the discrete ``ddpm`` process."""

    def __init__(self, sde: SDE) -> None:
        super().__init__(sde)
        self.n = getattr(sde, "n", None)
        if sde.name != "ddpm" or self.n is None:
            raise ValueError(f"the discrete DDPM objective needs the 'ddpm' SDE, got {sde!r}; "
                             "use objective.name: dsm for continuous SDEs")

    def loss(self, model: Model, batch: Batch) -> Tensor:
        x0, n = batch.x0, self.n
        i = (1 + (batch.u.to(torch.float64).cpu() * n).floor().to(torch.int64)).clamp(1, n)
        t = (i.to(torch.float64) / n).to(device=x0.device, dtype=x0.dtype)
        return eps_error(model, x0, t, batch.eps, batch.cond).mean()


__all__ = ["DDPMLoss"]
