"""Rectified flow on a coupling (Liu, Gong & Liu 2022, "Flow Straight and Fast", eq. 1 and
sec. 2.3): flow matching on pairs ``(x0, z)`` of data and noise that a teacher's ODE coupled.

On the ``linear`` process ``x_t = (1 - t) x0 + t z`` the velocity of the straight path is ``dx_t
/ dt = z - x0``, and the model's velocity is ``u_hat = eps_hat - x0_hat`` (its prediction read
as the pair, :mod:`scoregen.models.prediction`)::

    L = E_{(x0, z), t} mean_dims (u_hat(x_t, t) - (z - x0))^2.

With independent ``(x0, z)`` this is the first rectified flow (flow matching); with ``z`` the
noise a teacher's ODE maps to ``x0`` (*reflow*) the new flow is straighter (their Theorem 3.6)
and fewer Euler steps suffice. ``steps = 0`` draws ``t ~ U(t_min, T)`` (reflow); ``steps = k``
draws ``t`` from the ``k`` evaluation times of the ``k``-step Euler grid ``T, T (k-1)/k, ...,
T/k`` (:func:`euler_grid`): *k-step distillation* of the straightened flow (their sec. 2.3 for
``k = 1``). At ``t = T`` the input is the state the sampler starts from, the prior sample
``x_T = sigma(T) z`` (the interpolant there, ``(1 - T) x0 + T z``, would carry a trace of the
answer that sampling does not have), and the target the velocity whose Euler step lands on
the line, ``(x_T - x_s) / (T - s)`` at the next node ``s`` (``(x_T - x0) / T`` for one step),
so one step learns the map from ``x_T`` to ``x0`` exactly; for ``k > 1`` the pair's straight
line stands for the later Euler iterates, which it is once the flow is straight. On
``linear`` the registered ``ddim`` is exactly Euler in ``t`` (``x_s = x_t + (s - t) u_hat``),
so a student samples with ``ddim`` on :func:`euler_grid`.

Each training example is a pair stacked as ``(2, *D)``: ``x0 = example[0]``, ``z =
example[1]`` (registered ``data="pairs"``); the objective is defined on ``linear`` only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.models.prediction import Model, predict_pair
from scoregen.sde.base import SDE
from scoregen.training.batches import Batch
from scoregen.training.objectives.base import Objective, register


def euler_grid(sde: SDE, steps: int) -> Tensor:
    """``steps`` uniform Euler steps from ``T`` to ``0``: ``T, T (k-1)/k, ..., T/k, 0``."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return sde.T * torch.arange(steps, -1, -1, dtype=torch.float64) / steps


@register("reflow", processes=("linear",), data="pairs")
class Reflow(Objective):
    """Flow matching on coupled pairs (module docstring); ``steps > 0``: ``t`` on the
    ``steps``-step Euler grid (k-step distillation)."""

    def __init__(self, sde: SDE, *, steps: int = 0) -> None:
        super().__init__(sde)
        if sde.name != "linear":
            raise ValueError(f"reflow trains on the linear process (straight paths x_t = (1 - "
                             f"t) x0 + t z), not on {sde.name!r}; distil onto sde 'linear'")
        if not (isinstance(steps, int) and steps >= 0):
            raise ValueError(f"steps must be an integer >= 0 (0: t uniform; k: the k-step "
                             f"Euler grid), got {steps!r}")
        if steps and sde.T / steps < sde.t_min:
            raise ValueError(f"{steps} Euler steps put a time below t_min = {sde.t_min}")
        self.steps = steps

    def loss(self, model: Model, batch: Batch) -> Tensor:
        pairs = batch.x0
        if pairs.ndim < 2 or pairs.shape[1] != 2:
            raise ValueError(f"reflow trains on pairs stacked as (batch, 2, *D), got data of "
                             f"shape {tuple(pairs.shape)}")
        x0, z = pairs[:, 0], pairs[:, 1]
        sde, u = self.sde, batch.u.to(torch.float64)
        target = z - x0
        if self.steps:
            k = (u * self.steps).floor().clamp(0, self.steps - 1)
            t = (sde.T * (self.steps - k) / self.steps).to(x0)
            x_t = sde.perturb(x0, t, z)
            # the first node starts from the prior sample, as the sampler does, and its step
            # ends on the line: u = (x_T - x_s) / (T - s) with x_s = (1 - s) x0 + s z
            s = (sde.T * (self.steps - 1) / self.steps)
            first = (k == 0).to(x0.device).reshape((-1,) + (1,) * (x0.ndim - 1))
            x_T = sde.prior_from_normal(z)
            x_t = torch.where(first, x_T, x_t)
            target = torch.where(first, (x_T - sde.perturb(x0, torch.full_like(t, s), z))
                                 / (sde.T - s), target)
        else:
            t = (sde.t_min + (sde.T - sde.t_min) * u).to(x0)
            x_t = sde.perturb(x0, t, z)
        pair = predict_pair(model, x_t, t, batch.cond)
        return (pair.eps - pair.x0 - target).pow(2).flatten(1).mean(1).mean()


__all__ = ["Reflow", "euler_grid"]
