"""Hybrid score matching for critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis
2022, sec. 3.2-3.3, eq. 14-15).

The initial velocity ``v_0 ~ N(0, gamma M I)`` is drawn with the data, so the kernel of the
state ``u_t = (x_t, v_t)`` given ``x_0`` alone is Gaussian (:mod:`scoregen.sde.cld`: ``u_t =
(a_x, a_v) x_0 + L_t eps``) and its score is ``-L_t^{-T} eps``; the model learns only the
velocity score, ``-eps_v / L_vv``. In eps form, with ``t ~ U(t_min, T)``::

    L = E_t E_{x0, eps} [ w(t) * mean_dims (eps_v_hat(u_t, t) - eps_v)^2 ],

``eps_v_hat`` the velocity half of the model's ``eps`` (any prediction type converts through
the kernel, :mod:`scoregen.models.prediction`). Weightings:

- ``eps``: ``w = 1``, the plain error of the predicted noise (the paper's image default,
  CLD-SGM's ``reweightedv2``);
- ``likelihood``: ``w = 2 Gamma beta(t) / L_vv^2``, the maximum-likelihood weight ``G G^T`` on
  the velocity score error (``lambda(t) = Gamma beta(t)`` in their eq. 9 up to the factor 2
  that DSM's ``likelihood`` weighting also omits).

The model's ``eps`` parameterization adds the Gaussian-data posterior mean of ``eps_v`` (the
"mixed score", sec. 3.3; :meth:`scoregen.sde.cld.CLDSDE.gaussian_eps`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.models.prediction import Model, predict_pair
from scoregen.sde.base import SDE
from scoregen.sde.cld import DAMPED_LANGEVIN
from scoregen.training.batches import Batch
from scoregen.training.objectives.base import Objective, register

WEIGHTINGS = ("eps", "likelihood")


@register("hsm")
class HSM(Objective):
    """Hybrid score matching: the velocity half of the eps error on the CLD kernel."""

    requires = frozenset({DAMPED_LANGEVIN})

    def __init__(self, sde: SDE, *, weighting: str = "eps") -> None:
        super().__init__(sde)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"hsm weighting must be one of {', '.join(WEIGHTINGS)}, got "
                             f"{weighting!r}")
        self.weighting = weighting

    def weight(self, t: Tensor) -> Tensor:
        """``w(t)`` of the chosen weighting (float64)."""
        if self.weighting == "eps":
            return torch.ones_like(t, dtype=torch.float64)
        t64 = t.to(torch.float64)
        return 2 * self.sde.friction * self.sde.beta(t64) / self.sde.kernel(t64)["l_vv"] ** 2

    def loss(self, model: Model, batch: Batch) -> Tensor:
        x0, sde = batch.x0, self.sde
        t = (sde.t_min + (sde.T - sde.t_min) * batch.u.to(torch.float64)).to(x0.device)
        u_t = sde.perturb(x0, t.to(x0.dtype), batch.eps)
        eps_hat = predict_pair(model, u_t, t.to(x0.dtype), batch.cond).eps
        err = (sde.predicted_part(eps_hat) - sde.predicted_part(batch.eps)).pow(2)
        return (self.weight(t).to(x0.dtype) * err.flatten(1).mean(1)).mean()


__all__ = ["HSM", "WEIGHTINGS"]
