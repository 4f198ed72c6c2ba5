"""The continuous-time VDM loss (Kingma, Salimans, Poole & Ho 2021, "Variational Diffusion
Models", sec. 4-5 and app. I): the variational bound itself, in nats per dimension.

The model's density at ``t0 = t_min`` (the one :mod:`scoregen.evaluation.bound` reports) is
bounded, with the transition ``x_t = a_t x + s_t eps`` from ``t0`` and ``eps_hat`` the model's
noise prediction at ``x_t`` (Song, Durkan, Murray & Ermon 2021, Theorem 3; VDM's eq. 17 with the
density at ``t0`` in place of a decoder)::

    -log p(x) <= E[-log pi(x_T)]
                 + int_t0^T (g^2 / 2 sigma^2) E[ |eps_hat|^2 - 2 (sigma / s_t) eps_hat . eps ] dt
                 - D int_t0^T f dt.

With ``t`` uniform on ``[t0, T]`` the integrand is weighted by ``(T - t0) g^2 / (2 sigma^2) =
-(T - t0) d lambda / dt`` (VDM's ``gamma'(t) / 2`` on the eps error: ``lambda = -gamma / 2`` on a VP
process); ``sigma / s_t`` grows without bound as ``t -> t0``, so each example is evaluated at
``eps`` and ``-eps`` (an antithetic pair, as in the bound, which cancels the part of
``eps_hat . eps`` odd in ``eps``: two network evaluations per example). The prior term is exact
for the Gaussian prior ``N(0, p^2 I)``: ``(a_T^2 |x|^2 + D s_T^2) / (2 p^2) + D/2 log(2 pi p^2)``.

- ``t_sampling``: ``low_discrepancy`` (default; VDM's app. I.1): example ``k`` of the step's
  global batch takes ``u = frac(offset + k phi)``, ``phi = (sqrt 5 - 1) / 2``, with the step's
  shared ``offset`` (:class:`~scoregen.training.batches.Batch`), a sequence that covers
  ``[0, 1]`` evenly for any batch size and sharding; or ``uniform``: each example's own ``u``.
- ``variance`` (default on): with a learned schedule (:mod:`scoregen.sde.vdm`) its shape is
  trained on the variance of this estimate instead of on its mean (VDM sec. 5.2: the bound
  depends on the schedule only through its endpoints): the gradient reaching the shape through
  example ``i`` is multiplied by ``2 L_i``, which gives ``grad E[L^2]`` for the shape
  parameters and ``grad E[L]`` for the endpoints and the network, in one backward pass.
- ``dequantize``: ``L`` grey levels of discrete data in ``[-1, 1]`` (``0``: off): uniform noise of
  one bin width ``2 / (L - 1)`` is added to the data (draw 2 of each example's key), so the
  model is trained on the dequantized data whose bits/dim ``scoregen evaluate`` reports.

Any scalar kernel trains with it (a fixed schedule: likelihood training); the learned schedule's
default objective is this one.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import Tensor

from scoregen.models.prediction import Model, predict_pair
from scoregen.sampling.noise import NoiseSource
from scoregen.sde.base import SDE
from scoregen.training.batches import Batch
from scoregen.training.objectives.base import Objective, register

T_SAMPLINGS = ("low_discrepancy", "uniform")
PHI = (math.sqrt(5) - 1) / 2


@register("vdm")
class VDMLoss(Objective):
    """The continuous-time variational bound of the density at ``t_min`` (VDM's loss)."""

    def __init__(self, sde: SDE, *, t_sampling: str = "low_discrepancy", variance: bool = True,
                 dequantize: int = 0) -> None:
        super().__init__(sde)
        if t_sampling not in T_SAMPLINGS:
            raise ValueError(f"t_sampling must be one of {', '.join(T_SAMPLINGS)}, got "
                             f"{t_sampling!r}")
        if not (isinstance(dequantize, int) and (dequantize == 0 or dequantize >= 2)):
            raise ValueError(f"dequantize must be 0 (off) or the number of grey levels >= 2, "
                             f"got {dequantize!r}")
        self.t_sampling, self.variance, self.dequantize = t_sampling, bool(variance), dequantize

    def times(self, batch: Batch) -> Tensor:
        """Each example's ``t`` on ``[t_min, T]`` (float64)."""
        if self.t_sampling == "uniform":
            u = batch.u.to(torch.float64)
        else:
            u = torch.frac(batch.offset + batch.index.to(torch.float64).cpu() * PHI)
        sde = self.sde
        return sde.t_min + (sde.T - sde.t_min) * u.to(batch.x0.device)

    def per_example(self, model: Model, batch: Batch) -> Tensor:
        """The bound's estimate for each example, in nats per dimension ``(b,)`` (float64)."""
        sde, x = self.sde, batch.x0
        if self.dequantize:
            width = 2 / (self.dequantize - 1)
            z = NoiseSource(batch.keys, tuple(x.shape[1:]), torch.float64, x.device).draw(2)
            x = x + (width * (torch.special.ndtr(z) - 0.5)).to(x.dtype)
        B, D = x.shape[0], x[0].numel()
        t = self.times(batch)
        t0 = torch.tensor(sde.t_min, dtype=torch.float64, device=x.device)
        T = torch.tensor(sde.T, dtype=torch.float64, device=x.device)
        a, s = sde.transition(t0, t)
        sigma, f, g2 = sde.sigma(t), sde.f(t), sde.g2(t)
        eps = batch.eps
        view = (B,) + (1,) * (x.ndim - 1)
        xa = a.to(x.dtype).reshape(view) * x
        xs = s.to(x.dtype).reshape(view) * eps
        cond = None if batch.cond is None else torch.cat([batch.cond, batch.cond])
        tt = torch.cat([t, t]).to(x.dtype)
        eps_hat = predict_pair(model, torch.cat([xa + xs, xa - xs]), tt, cond).eps.flatten(1)
        e_plus, e_minus, e = eps_hat[:B], eps_hat[B:], eps.flatten(1)
        sq = 0.5 * ((e_plus**2).sum(1) + (e_minus**2).sum(1))
        cross = 0.5 * ((e_plus - e_minus) * e).sum(1)
        w = (sde.T - sde.t_min) * g2 / (2 * sigma**2)
        diffusion = w * (sq - 2 * (sigma / s) * cross) - (sde.T - sde.t_min) * D * f
        a_T, s_T = sde.transition(t0, T)
        p2 = sde.prior_std() ** 2
        sq_x = (x.to(torch.float64) ** 2).flatten(1).sum(1)
        prior = (a_T**2 * sq_x + D * s_T**2) / (2 * p2) + 0.5 * D * math.log(2 * math.pi * p2)
        return (prior + diffusion) / D

    def loss(self, model: Model, batch: Batch) -> Tensor:
        learned = getattr(self.sde, "variance_gradient", None)
        use = learned is not None and self.variance and torch.is_grad_enabled()
        with learned() if use else nullcontext() as handle:
            per = self.per_example(model, batch)
        if use:
            handle.weights = 2 * per.detach()
        return per.mean().to(batch.x0.dtype)


__all__ = ["PHI", "T_SAMPLINGS", "VDMLoss"]
