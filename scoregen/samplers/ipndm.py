"""iPNDM: improved pseudo-numerical methods (Zhang & Chen 2023, "Fast Sampling of Diffusion
Models with Exponential Integrator", DEIS, sec. 4 and app. "iPNDM"; Liu et al. 2022, PNDM).

Multistep Adams-Bashforth on the probability-flow ODE in the variance-exploding form of
Karras et al. 2022 (eq. 4 with ``s(t) = alpha(t)``; see :mod:`~scoregen.samplers.heun`)::

    x~ = x / alpha,   sigma~ = sigma / alpha = e^{-lambda},
    dx~/dsigma~ = d(x~, sigma~) = (x~ - D(x~; sigma~)) / sigma~ = eps_hat,

where ``D = x0_hat`` is the data prediction of the model. Step ``i`` (``sigma~_i ->
sigma~_{i+1}``, ``Delta_i = sigma~_{i+1} - sigma~_i``) uses the current slope and up to three
earlier ones::

    x~_{i+1} = x~_i + Delta_i sum_{j=0}^{k-1} b_j d_{i-j},

- ``variable_step=False`` (the published iPNDM, and the solver of the GITS tables, Chen et
  al. 2024): the constant-step Adams-Bashforth weights ``b = (1)``, ``(3, -1)/2``, ``(23,
  -16, 5)/12``, ``(55, -59, 37, -9)/24`` whatever the grid;
- ``variable_step=True`` (default; k-diffusion's ``sample_ipndm_v``): ``b_j`` integrate the
  Lagrange polynomial through ``(sigma~_{i-j}, d_{i-j})`` exactly over the step, i.e.
  ``sum_j b_j r_j^m = 1/(m+1)`` with ``r_j = (sigma~_{i-j} - sigma~_i)/Delta_i`` (the moment
  system of :func:`scoregen.samplers._exp.solve_moments`). On a uniform grid both agree;
  on the log-SNR and tuned grids only this one keeps the order.

Warm start: step ``i`` uses ``k = min(order, i + 1)`` slopes (Euler, then AB2, AB3, AB4), one
evaluation per step. With ``lower_order_final`` (default on, as for DPM-Solver++) grids of
fewer than 10 steps also lower the order over the last steps. A final grid time of ``0`` is
solved at the solver's order from its own history by
:class:`~scoregen.samplers._final.FinalInterval` (``final="solve"``, the default) or is the
plain denoising jump ``x0_hat`` (``final="jump"``, and always for ``order=1``, which is DDIM);
either way ``steps=n`` costs ``n`` NFE.
Measured order: see ``tests/test_ipndm.py`` and ``docs/fast-samplers.md``.
"""

from __future__ import annotations

from torch import Tensor

from scoregen.samplers._exp import check_choice, grid_nodes, solve_moments, solver_steps, step_order
from scoregen.samplers._final import FinalInterval
from scoregen.samplers.registry import register

# constant-step Adams-Bashforth weights of orders 1-4 (newest slope first)
_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12),
       4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def adams_weights(sigmas: list[float], target: float) -> list[float]:
    """Weights ``b_j`` (per unit step ``Delta = target - sigmas[0]``) of the polynomial through
    slopes at ``sigmas`` (newest first), integrated exactly from ``sigmas[0]`` to ``target``."""
    delta = target - sigmas[0]
    rs = [(s - sigmas[0]) / delta for s in sigmas]
    return solve_moments(rs, [1.0 / (m + 1) for m in range(len(rs))])


@register("ipndm", order=3, stochastic=False, nfe_per_step=1)
def ipndm(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, order: int = 4,
    variable_step: bool = True, lower_order_final: bool = True, final: str = "solve",
) -> Tensor:
    """iPNDM (Adams-Bashforth of ``order`` 1-4 on ``dx~/dsigma~``, lower-order warm start)."""
    check_choice("order", order, (1, 2, 3, 4))
    if not isinstance(variable_step, bool):
        raise ValueError(f"variable_step must be True or False, got {variable_step!r}")
    nodes, steps = grid_nodes(sde, ts), solver_steps(ts)
    history: list[tuple[float, Tensor]] = []  # (sigma~, slope d), newest first
    end = FinalInterval(min(order, 3), final if order > 1 else "jump")  # order 1: DDIM's jump
    x_tilde = x / nodes[0].alpha
    for i in range(len(ts) - 1):
        t = nodes[i]
        x0_hat = denoiser(t.alpha * x_tilde, t.t).x0
        if ts[i + 1] == 0:
            x = end.solve(t.alpha, t.sigma_edm, t.alpha * x_tilde, x0_hat)
        else:
            end.record(t.alpha, t.sigma_edm, t.alpha * x_tilde, x0_hat)
            s = nodes[i + 1]
            history = [(t.sigma_edm, (x_tilde - x0_hat) / t.sigma_edm), *history][:order]
            k = step_order(order, i, len(history), steps, lower_order_final)
            if variable_step:
                b = adams_weights([sig for sig, _ in history[:k]], s.sigma_edm)
            else:
                b = _AB[k]
            slope = sum(bj * dj for bj, (_, dj) in zip(b, history[:k], strict=True))
            x_tilde = x_tilde + (s.sigma_edm - t.sigma_edm) * slope
            x = s.alpha * x_tilde
        callback(i, ts[i + 1], x)
    return x
