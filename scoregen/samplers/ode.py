"""The probability-flow ODE (Song et al. 2021, eq. 13) by Runge-Kutta methods, fixed-step and
torchdiffeq's adaptive dopri5 (Chen 2018), in the variables where every step stays bounded.

In ``t`` the flow ``dx/dt = f(t) x + g(t)^2 eps_hat / (2 sigma)`` has coefficients that grow
like ``sigma'(t) / sigma(t)`` where ``sigma`` is small, so explicit Runge-Kutta steps of a
coarse grid leave every stability region (the VE SDE on sigma 0.002..80: ``ode_rk4`` at 20
NFE misses the reference by 5 on the 2-D ring). With the EDM scale ``x~ = x / alpha``,
``sigma~ = sigma / alpha = exp(-lambda)`` (Karras et al. 2022, eq. 4) the flow of every SDE
is ``dx~/dsigma~ = (x~ - D) / sigma~`` with ``D = x0_hat``; dividing by ``sigma~`` once more,

    y = x~ / sigma~ = x / sigma,     u = 1 / sigma~ = alpha / sigma = e^lambda,
    dy/du = D(sigma y; t(u)),

the right-hand side is the data prediction itself: bounded by the data, whatever the step
(this is the exact solution ``x_s = (sigma_s/sigma_t) x_t + sigma_s int e^lambda D dlambda`` of
Lu et al. 2022b, eq. 9, read as an ODE in ``u``). torchdiffeq integrates ``y`` over the
grid's ``u_i = e^{lambda(t_i)}``, and each stage asks the model at ``t(u)`` (the SDE's
``t_from_log_snr``). Back in ``x``, a step of any explicit Runge-Kutta method with weights
``b_j`` and stages ``c_j`` is::

    x~_s = r x~_t + (1 - r) sum_j b_j D_j,     r = sigma~_s / sigma~_t,

a combination of the data predictions with bounded weights for every step ratio ``r``:
``ode_euler`` is DDIM exactly. The map is smooth, so each method keeps its order:

- fixed-step ``ode_euler`` (1 NFE per step, order 1), ``ode_midpoint`` (2, order 2) and
  ``ode_rk4`` (4, order 4; the 3/8-rule RK4 of torchdiffeq's ``rk4``) take exactly the
  grid's steps, as explicit Butcher tableaus (:data:`TABLEAUS`, torchdiffeq's methods) whose
  stage times are computed for the whole grid before the loop;
- adaptive ``ode_dopri5`` (Dormand–Prince 5(4)) ignores the interior of the grid, picks its
  own steps in ``u`` from ``ts[0]`` to the last positive time under ``rtol``/``atol`` (on
  ``y``: torchdiffeq's mixed norm, shared by the batch), and reports the NFE it used.

A final grid time of ``0`` is solved by :class:`~scoregen.samplers._final.FinalInterval` at
the method's order (``final="solve"``; ``order`` nodes of the grid's own evaluations, no
extra NFE; ``ode_dopri5`` evaluates 4 more points near ``t_min`` for its order-5 interval), or
is the denoising jump ``x0_hat`` (``final="jump"``, the default of the first-order
``ode_euler``).

**Any process.** ``(y, u)`` needs the scalar kernel. ``variable="t"`` integrates the flow
``dx/dt = f(x, t) - G G^T score(x, t) / 2`` itself with torchdiffeq (the same method: its
fixed-grid ``euler``/``midpoint``/``rk4`` on the grid, or adaptive ``dopri5`` from the first to
the last positive time), which needs only the drift, the diffusion and the score and so runs on
every process (an augmented state, per-frequency scales); its final interval is the jump.
``variable="auto"`` (the default) is ``"u"`` where the process has the scalar kernel and ``"t"``
elsewhere.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint

from scoregen.samplers._final import FinalInterval
from scoregen.samplers.euler_maruyama import resolve_variable
from scoregen.samplers.registry import register
from scoregen.sde.base import FINITE_TERMINAL_SNR

VARIABLES = ("auto", "u", "t")

DOPRI5_FINAL_NODES = 5  # nodes tau_N * 2^k, k < 5, of ode_dopri5's final interval


class _Flow:
    """``dy/du = D(sigma y; t(u))`` (module docstring) over a counting denoiser; records the
    evaluations at grid nodes for the final interval."""

    def __init__(self, denoiser, sde, nodes: Tensor, final: FinalInterval) -> None:
        self.denoiser, self.sde, self.final = denoiser, sde, final
        self._known = dict(zip(self.u_grid(nodes).tolist(), nodes.tolist(), strict=True))

    def u_grid(self, ts: Tensor) -> Tensor:
        """``u = e^lambda`` at the times ``ts`` (float64)."""
        return torch.exp(self.sde.log_snr(ts.to(torch.float64)))

    def coefficients(self, u: float) -> tuple[Tensor, float, float]:
        """``(t, alpha, sigma)`` at ``u`` (grid nodes: their exact times)."""
        t_known = self._known.get(u)
        if t_known is None:
            lam = torch.tensor([math.log(u)], dtype=torch.float64)
            t = self.sde.t_from_log_snr(lam)
            alpha = float(self.sde.alpha_from_log_snr(lam))
        else:
            t = torch.tensor([t_known], dtype=torch.float64)
            alpha = float(self.sde.alpha(t))
        sigma = alpha / u  # u = alpha / sigma
        self.denoiser.precompute(t, [alpha], [sigma])  # the model is asked at t next
        return t[0], alpha, sigma

    def __call__(self, u: Tensor, y: Tensor) -> Tensor:
        u = float(u)
        t, alpha, sigma = self.coefficients(u)
        x = sigma * y
        x0_hat = self.denoiser(x, t).x0
        if u in self._known:
            self.final.record(alpha, sigma / alpha, x, x0_hat)
        return x0_hat

    def finish(self, x: Tensor, t: Tensor) -> Tensor:
        """The final interval from ``t`` (the last positive time) to ``0``."""
        t = t.to(torch.float64).cpu()
        alpha, sigma = float(self.sde.alpha(t)), float(self.sde.sigma(t))
        return self.final.solve(alpha, sigma / alpha, x, self.denoiser(x, t).x0)


def _split_final(ts: Tensor) -> tuple[Tensor, bool]:
    """The grid to integrate and whether a final interval to ``0`` follows it."""
    return (ts[:-1], True) if ts[-1] == 0 else (ts, False)


# Butcher tableaus (c, A, b) of torchdiffeq's fixed-grid methods: "rk4" is its 3/8 rule
TABLEAUS: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "euler": ((0.0,), ((),), (1.0,)),
    "midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "rk4": ((0.0, 1 / 3, 2 / 3, 1.0), ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
            (1 / 8, 3 / 8, 3 / 8, 1 / 8)),
}


def _stage_coefficients(sde, u: Tensor, c: tuple[float, ...]) -> tuple[Tensor, list, list]:
    """Times, ``sigma`` and ``alpha`` of every stage ``u_i + c_j (u_{i+1} - u_i)`` of the
    grid, in one vectorised call: ``(times (n, s), sigmas, alphas)``."""
    cs = torch.tensor(c, dtype=torch.float64)
    stage_u = u[:-1, None] + cs[None, :] * (u[1:] - u[:-1])[:, None]
    times = sde.t_from_log_snr(stage_u.log())
    return times, sde.sigma(times).tolist(), sde.alpha(times).tolist()


def _variable(name: str, sde, variable: str, final: str | None, default_final: str
              ) -> tuple[str, str]:
    """``(variable, final)`` with ``auto`` and the default ``final`` resolved (module
    docstring): in ``t`` the final interval is the jump."""
    if variable not in VARIABLES:
        raise ValueError(f"unknown variable {variable!r} for {name}; known: "
                         f"{', '.join(VARIABLES)}")
    variable = resolve_variable(name, sde, variable, "u")
    if variable == "t":
        if final not in (None, "jump"):
            raise ValueError(f"{name} in t ends with the denoising jump (final='jump'); "
                             f"final={final!r} is solved in (y, u), which needs the scalar kernel")
        return variable, "jump"
    return variable, default_final if final is None else final


def pf_ode_drift(denoiser, sde):
    """``dx/dt = f(x, t) - G G^T score / 2`` for torchdiffeq (Song et al. 2021, eq. 13)."""

    def drift(t: Tensor, x: Tensor) -> Tensor:
        return sde.ode_drift(x, t, denoiser.score(x, t))

    return drift


def _fixed_in_t(method: str, denoiser, sde, x: Tensor, ts: Tensor, callback) -> Tensor:
    """torchdiffeq's fixed-grid ``method`` on the flow in ``t``, one step per interval; a final
    ``0`` is the jump."""
    grid, last = _split_final(ts)
    drift = pf_ode_drift(denoiser, sde)
    for i in range(len(grid) - 1):
        x = odeint(drift, x, grid[i:i + 2].to(x.dtype), method=method)[-1]
        callback(i, grid[i + 1], x)
    if last:
        x = denoiser(x, grid[-1]).x0
        callback(len(grid) - 1, ts[-1], x)
    return x


def _fixed_grid(method: str, order: int, default_final: str):
    c, a, b = TABLEAUS[method]
    name = f"ode_{method}"

    def solve(denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback,
              final: str | None = None, variable: str = "auto") -> Tensor:
        variable, final = _variable(name, sde, variable, final, default_final)
        if variable == "t":
            return _fixed_in_t(method, denoiser, sde, x, ts, callback)
        grid, last = _split_final(ts)
        grid64 = grid.to(torch.float64).cpu()
        end = FinalInterval(order, final)
        u = torch.exp(sde.log_snr(grid64))
        times, sigmas, alphas = _stage_coefficients(sde, u, c)
        times[:, 0] = grid64[:-1]  # stages on grid nodes get the nodes' exact times
        if c[-1] == 1.0:
            times[:, -1] = grid64[1:]
        sigma_grid = sde.sigma(grid64).tolist()
        du = (u[1:] - u[:-1]).tolist()
        y = x / sigma_grid[0]
        for i in range(len(grid) - 1):
            ks: list[Tensor] = []
            for j in range(len(c)):
                y_j = y
                for a_jl, k_l in zip(a[j], ks, strict=False):
                    y_j = y_j + (du[i] * a_jl) * k_l
                x_j = sigmas[i][j] * y_j
                ks.append(denoiser(x_j, times[i, j]).x0)
                if j == 0:
                    end.record(alphas[i][0], sigmas[i][0] / alphas[i][0], x_j, ks[0])
            for b_l, k_l in zip(b, ks, strict=True):
                if b_l:
                    y = y + (du[i] * b_l) * k_l
            x = sigma_grid[i + 1] * y
            callback(i, grid[i + 1], x)
        if last:
            t = grid64[-1]
            alpha, sigma = float(sde.alpha(t)), float(sde.sigma(t))
            x = end.solve(alpha, sigma / alpha, x, denoiser(x, grid[-1]).x0)
            callback(len(grid) - 1, ts[-1], x)
        return x

    solve.__doc__ = (f"The probability-flow ODE in ``(y, u)`` (or in ``t``) with the fixed-step "
                     f"{method!r} tableau; ``final``: 'solve' or 'jump' (default {default_final!r}"
                     " in (y, u); module docstring).")
    return solve


def _adaptive_in_t(method: str, denoiser, sde, x: Tensor, ts: Tensor, rtol: float,
                   atol: float, callback) -> tuple[Tensor, dict[str, Any]]:
    """torchdiffeq's adaptive ``method`` on the flow in ``t`` from the first to the last
    positive time of the grid; a final ``0`` is the jump."""
    grid, last = _split_final(ts)
    span = torch.stack([grid[0], grid[-1]]).to(x.dtype)
    # a given first step (no probe of the initial step size) and steps that land on the end,
    # so the model is never asked outside [t_min, T]
    options = {"first_step": float(span[0] - span[1]) / 100, "step_t": span[-1:]}
    x = odeint(pf_ode_drift(denoiser, sde), x, span, method=method, rtol=rtol, atol=atol,
               options=options)[-1]
    solver_nfe = denoiser.nfe
    callback(0, grid[-1], x)
    if last:
        x = denoiser(x, grid[-1]).x0
    callback(len(ts) - 2, ts[-1], x)
    return x, {"solver_nfe": solver_nfe, "rtol": rtol, "atol": atol}


def _adaptive(method: str, order: int):
    name = f"ode_{method}"

    def solve(
        denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, rtol: float = 1e-5,
        atol: float = 1e-5, final: str | None = None, variable: str = "auto",
    ) -> tuple[Tensor, dict[str, Any]]:
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"{method} needs rtol > 0 and atol > 0, got {rtol}, {atol}")
        variable, final = _variable(name, sde, variable, final, "solve")
        grid, last = _split_final(ts)
        if len(grid) < 2:
            raise ValueError(f"{method} integrates between the first and last positive times "
                             "of the grid: give steps >= 2 or ts=[T, t_min, 0]")
        if variable == "t":
            return _adaptive_in_t(method, denoiser, sde, x, ts, rtol, atol, callback)
        ends = torch.stack([grid[0], grid[-1]]).to(torch.float64).cpu()
        end = FinalInterval(order, final)
        flow = _Flow(denoiser, sde, ends[:1], end)
        u_ends = flow.u_grid(ends)
        span = u_ends
        if last and end.final == "solve":  # dense output at tau_N * 2^k for the final interval
            u_n = float(u_ends[1])
            extra = [u_n * 2 ** (-k / 2) for k in range(DOPRI5_FINAL_NODES - 1, 0, -1)]
            extra = [v for v in extra if v > float(u_ends[0])]
            span = torch.tensor([float(u_ends[0]), *extra, u_n], dtype=torch.float64)
        # A first step of one u_T (the flow is nearly linear at high noise); the last step
        # lands on u_end instead of overshooting it, so the model is never asked beyond t_min.
        options = {"first_step": float(span[0]), "step_t": span[-1:]}
        path = odeint(flow, x / float(sde.sigma(ends[0])), span, method=method, rtol=rtol,
                      atol=atol, options=options)
        solver_nfe = denoiser.nfe
        for k in range(1, len(span) - 1):  # the final interval's extra nodes
            t, alpha, sigma = flow.coefficients(float(span[k]))
            xk = sigma * path[k]
            end.record(alpha, sigma / alpha, xk, denoiser(xk, t).x0)
        x = float(sde.sigma(ends[1])) * path[-1]
        callback(0, grid[-1], x)
        if last:
            x = flow.finish(x, grid[-1])
        callback(len(ts) - 2, ts[-1], x)
        return x, {"solver_nfe": solver_nfe, "rtol": rtol, "atol": atol}

    solve.__doc__ = (f"The probability-flow ODE in ``(y, u)`` (or in ``t``), torchdiffeq's "
                     f"adaptive {method!r}.")
    return solve


for _method, _nfe, _order, _final in (("euler", 1, 1, "jump"), ("midpoint", 2, 2, "solve"),
                                      ("rk4", 4, 4, "solve")):
    register(f"ode_{_method}", order=_order, stochastic=False, nfe_per_step=_nfe, requires=())(
        _fixed_grid(_method, _order, _final)
    )
register("ode_dopri5", order=5, stochastic=False, nfe_per_step=None,
         tolerance_options=("rtol", "atol"), requires=(FINITE_TERMINAL_SNR,))(
    _adaptive("dopri5", DOPRI5_FINAL_NODES))
