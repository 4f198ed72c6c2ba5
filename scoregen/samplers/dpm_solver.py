"""DPM-Solver++ (Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models"): exponential integrators in log-SNR on the data prediction.

All three solvers are :func:`scoregen.samplers._exp.exp_step` with different sources for the
predictions ``D_j = x0_hat`` at ``lambda_t + r_j h`` (``h = lambda_s - lambda_t``):

- ``dpm_solver++`` (multistep, Algorithm 2 for order 2): the current and the previous
  ``order - 1`` evaluations. Order 2 ("2M", ``r_1 = -h_{i-1}/h_i``)::

      x_s = (sigma_s/sigma_t) x_t + alpha_s (1 - e^{-h}) [(1 + 1/(2r)) D_0 - 1/(2r) D_1],
      r = h_{i-1}/h_i      (``solver_type="midpoint"``, the paper; ``"taylor"`` uses the
                           exact integral of the linear interpolant instead)

  Order 3 ("3M"): the quadratic through three evaluations, integrated exactly (see the
  note on the reference code's weights in :mod:`~scoregen.samplers._exp`). The first steps
  use the lower orders their history allows (warm-up); with ``lower_order_final`` and a grid
  of fewer than 10 steps, the last steps use lower orders too (reference code). One
  evaluation per step, at the start of the step.
- ``dpm_solver++_single`` (singlestep, Algorithm 1 for order 2, "2S"): intermediate stages
  at ``lambda_t + r h`` inside each step. Order 2: ``r = 1/2``, a DDIM step to the stage,
  then the midpoint (or taylor) 2-point step; 2 evaluations per step. Order 3: ``r_1 = 1/3,
  r_2 = 2/3`` as DPM-Solver-3 (Lu et al. 2022a, "DPM-Solver", sec. 3.3, Algorithm 2, in
  the data-prediction form of the reference code's third-order singlestep update): DDIM to
  ``r_1``, the 2-point step through ``(0, r_1)`` to ``r_2``, the 2-point step through
  ``(0, r_2)`` to ``s``; 3 evaluations per step.
- ``dpm_solver++_sde`` (SDE-DPM-Solver++(2M), Lu et al. 2022b sec. 5; k-diffusion's
  ``sample_dpmpp_2m_sde``): the multistep solver in the SDE form with noise level ``eta``
  (``eta = 0`` is ``dpm_solver++`` exactly)::

      x_s = (sigma_s/sigma_t) e^{-eta h} x_t + alpha_s (1 - e^{-(1+eta) h}) D_0
            + [2M correction at h_eta = (1+eta) h] + sigma_s sqrt(1 - e^{-2 eta h}) z.

A final grid time of ``0`` is solved at the solver's order from its own history by
:class:`~scoregen.samplers._final.FinalInterval` (``final="solve"``, the default; for the SDE
form only at ``eta = 0``), or is the denoising step ``x0_hat`` at the last positive time
(``final="jump"``: the ``h -> inf`` limit of every step here), one evaluation either way.
NFE on a grid with ``n`` intervals:
``n`` for the multistep solvers; ``order * (n - 1) + 1`` for singlestep on a grid ending in
``0`` (``order * n`` otherwise).
"""

from __future__ import annotations

import itertools

from torch import Tensor

from scoregen.samplers._exp import (
    check_choice,
    exp_step,
    grid_nodes,
    nodes_at,
    sde_noise_std,
    solver_steps,
    step_order,
)
from scoregen.samplers._final import FinalInterval
from scoregen.samplers.registry import register

SOLVER_TYPES = ("midpoint", "taylor")


def _multistep(denoiser, sde, x: Tensor, ts: Tensor, noise, callback, order: int,
               solver_type: str, lower_order_final: bool, eta: float,
               final: str = "jump") -> Tensor:
    """Multistep DPM-Solver++ of ``order`` in the SDE form with noise level ``eta``."""
    check_choice("order", order, (1, 2, 3))
    check_choice("solver_type", solver_type, SOLVER_TYPES)
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0 (0: ODE, 1: reverse SDE), got {eta}")
    nodes, steps = grid_nodes(sde, ts), solver_steps(ts)
    end = FinalInterval(order, final if eta == 0 else "jump")
    history: list[tuple[float, Tensor]] = []  # (lambda, x0_hat), most recent first
    for i in range(len(ts) - 1):
        t = nodes[i]
        x0_hat = denoiser(x, t.t).x0
        history = [(t.lam, x0_hat), *history][:order]
        if ts[i + 1] == 0:
            x = end.solve(t.alpha, t.sigma_edm, x, x0_hat)
        else:
            s = nodes[i + 1]
            k = step_order(order, i, len(history), steps, lower_order_final)
            h = s.lam - t.lam
            rs = [(lam - t.lam) / h for lam, _ in history[:k]]
            end.record(t.alpha, t.sigma_edm, x, x0_hat)
            x = exp_step(x, t, s, [d for _, d in history[:k]], rs,
                         midpoint=solver_type == "midpoint", eta=eta)
            if eta:
                x = x + sde_noise_std(t, s, eta) * noise()
        callback(i, ts[i + 1], x)
    return x


@register("dpm_solver++", order=2, stochastic=False, nfe_per_step=1)
def dpm_solver_pp(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, order: int = 2,
    solver_type: str = "midpoint", lower_order_final: bool = True, final: str = "solve",
) -> Tensor:
    """Multistep DPM-Solver++ (2M or 3M) on the probability-flow ODE."""
    check_choice("order", order, (2, 3))
    return _multistep(denoiser, sde, x, ts, noise, callback, order, solver_type,
                      lower_order_final, eta=0.0, final=final)


@register("dpm_solver++_sde", order=1, stochastic=True, nfe_per_step=1)
def dpm_solver_pp_sde(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, eta: float = 1.0, order: int = 2,
    solver_type: str = "midpoint", lower_order_final: bool = True, final: str = "solve",
) -> Tensor:
    """SDE-DPM-Solver++ (2M by default) with noise level ``eta`` (1: the reverse SDE); the
    final interval is solved only for ``eta = 0`` (the ODE)."""
    check_choice("order", order, (2, 3))
    return _multistep(denoiser, sde, x, ts, noise, callback, order, solver_type,
                      lower_order_final, eta=eta, final=final)


@register("dpm_solver++_single", order=2, stochastic=False, nfe_per_step=2)
def dpm_solver_pp_single(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, order: int = 2,
    solver_type: str = "midpoint", final: str = "solve",
) -> Tensor:
    """Singlestep DPM-Solver++ (2S, or 3S as DPM-Solver-3); ``order`` evaluations per step."""
    check_choice("order", order, (2, 3))
    check_choice("solver_type", solver_type, SOLVER_TYPES)
    nodes = grid_nodes(sde, ts)
    end = FinalInterval(order, final)
    fractions = (0.5,) if order == 2 else (1 / 3, 2 / 3)
    pairs = list(itertools.pairwise(nodes))
    stages = nodes_at(sde, [t.lam + f * (s.lam - t.lam) for t, s in pairs for f in fractions],
                      denoiser)
    for i in range(len(ts) - 1):
        t = nodes[i]
        x0_hat = denoiser(x, t.t).x0
        if ts[i + 1] == 0:
            x = end.solve(t.alpha, t.sigma_edm, x, x0_hat)
        else:
            end.record(t.alpha, t.sigma_edm, x, x0_hat)
            s = nodes[i + 1]
            h = s.lam - t.lam
            if order == 2:
                u = stages[i]
                x0_u = denoiser(exp_step(x, t, u, [x0_hat], [0.0]), u.t).x0
                x = exp_step(x, t, s, [x0_hat, x0_u], [0.0, (u.lam - t.lam) / h],
                             midpoint=solver_type == "midpoint")
            else:
                u1, u2 = stages[2 * i], stages[2 * i + 1]
                x0_u1 = denoiser(exp_step(x, t, u1, [x0_hat], [0.0]), u1.t).x0
                r12 = (u1.lam - t.lam) / (u2.lam - t.lam)
                x0_u2 = denoiser(exp_step(x, t, u2, [x0_hat, x0_u1], [0.0, r12]), u2.t).x0
                x = exp_step(x, t, s, [x0_hat, x0_u2], [0.0, (u2.lam - t.lam) / h])
        callback(i, ts[i + 1], x)
    return x
