"""The probability-flow ODE solved with torchdiffeq (Song et al. 2021, eq. 13; Chen 2018).

    dx/dt = f(t) x - g(t)^2 score(x, t) / 2,    score = -eps_hat / sigma(t),

integrated from ``ts[0]`` down the grid. One mechanism, one registered sampler per
torchdiffeq method:

- fixed-step ``ode_euler`` (1 NFE per step, order 1), ``ode_midpoint`` (2, order 2) and
  ``ode_rk4`` (4, order 4; torchdiffeq's 3/8-rule RK4) take exactly the grid's steps;
- adaptive ``ode_dopri5`` (Dormand–Prince 5(4)) ignores the interior of the grid, picks its
  own steps from ``ts[0]`` to the last positive time under ``rtol``/``atol`` (torchdiffeq's
  mixed error norm over the whole batch, so the steps are shared by the batch), and reports
  the NFE it really used.

A final grid time of ``0`` is the denoising step (``x0_hat`` at the last positive time).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint

from scoregen.samplers.registry import register

CHUNK = 64  # grid points per odeint call: bounds the memory of the returned trajectory
FIRST_STEP = 1e-2  # first adaptive step, as a fraction of the time span


def _ode_func(denoiser, sde):
    def func(t: Tensor, x: Tensor) -> Tensor:
        return sde.ode_drift(x, t, sde.score_from_eps(denoiser(x, t).eps, t))

    return func


def _split_final(ts: Tensor) -> tuple[Tensor, bool]:
    """The grid to integrate and whether a final denoising step to ``0`` follows it."""
    return (ts[:-1], True) if ts[-1] == 0 else (ts, False)


def _fixed_grid(method: str):
    def solve(denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback) -> Tensor:
        grid, final = _split_final(ts)
        func = _ode_func(denoiser, sde)
        i = 0
        for start in range(0, len(grid) - 1, CHUNK):
            chunk = grid[start : start + CHUNK + 1]
            path = odeint(func, x, chunk.to(x.dtype), method=method)
            for k in range(1, len(chunk)):
                callback(i, chunk[k], path[k])
                i += 1
            x = path[-1]
        if final:
            x = denoiser(x, grid[-1]).x0
            callback(i, ts[-1], x)
        return x

    solve.__doc__ = f"The probability-flow ODE with torchdiffeq's fixed-step {method!r}."
    return solve


def _adaptive(method: str):
    def solve(
        denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, rtol: float = 1e-5,
        atol: float = 1e-5,
    ) -> tuple[Tensor, dict[str, Any]]:
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"{method} needs rtol > 0 and atol > 0, got {rtol}, {atol}")
        grid, final = _split_final(ts)
        if len(grid) < 2:
            raise ValueError(f"{method} integrates between the first and last positive times "
                             "of the grid: give steps >= 2 or ts=[T, t_min, 0]")
        span = torch.stack([grid[0], grid[-1]]).to(x.dtype)
        # Never evaluate outside [t_end, t_start]: a small first step instead of torchdiffeq's
        # probing heuristic, and the last step lands on t_end instead of overshooting it.
        options = {"first_step": float(span[0] - span[1]) * FIRST_STEP, "step_t": span[1:]}
        x = odeint(_ode_func(denoiser, sde), x, span, method=method, rtol=rtol, atol=atol,
                   options=options)[-1]
        solver_nfe = denoiser.nfe
        callback(0, grid[-1], x)
        if final:
            x = denoiser(x, grid[-1]).x0
        callback(len(ts) - 2, ts[-1], x)
        return x, {"solver_nfe": solver_nfe, "rtol": rtol, "atol": atol}

    solve.__doc__ = f"The probability-flow ODE with torchdiffeq's adaptive {method!r}."
    return solve


for _method, _nfe, _order in (("euler", 1, 1), ("midpoint", 2, 2), ("rk4", 4, 4)):
    register(f"ode_{_method}", order=_order, stochastic=False, nfe_per_step=_nfe)(
        _fixed_grid(_method)
    )
register("ode_dopri5", order=5, stochastic=False, nfe_per_step=None,
         tolerance_options=("rtol", "atol"))(_adaptive("dopri5"))
