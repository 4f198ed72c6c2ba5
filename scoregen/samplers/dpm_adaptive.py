"""Adaptive DPM-Solver++: an embedded exponential-integrator pair with error-controlled steps
in log-SNR on the data prediction (Lu et al. 2022a, "DPM-Solver", sec. 4.2 and Algorithm 5,
"DPM-Solver-12/23"; in the data-prediction form of Lu et al. 2022b, DPM-Solver++).

Every stage is :func:`scoregen.samplers._exp.exp_step`. A step from ``t`` to ``s`` (``h =
lambda_s - lambda_t``) with ``order=3`` (default; "DPM-Solver-23") evaluates ``D_0 =
x0_hat(x_t, t)``, DDIM to ``r_1 = 1/3`` for ``D_1``, the 2-point step through ``(0, r_1)`` to
``r_2 = 2/3`` for ``D_2``, and pairs::

    x_low  = exp_step(x_t; D_0, D_1 at r = 0, 1/3)     second order
    x_high = exp_step(x_t; D_0, D_2 at r = 0, 2/3)     third order (DPM-Solver-3)

(``order=2``, "DPM-Solver-12": DDIM and the 2S step with ``r = 1/2``). The error estimate is
the RMS over the batch of ``(x_high - x_low) / delta`` with ``delta = max(atol, rtol
max(|x_low|, |x_prev|))`` (Lu et al. 2022a, eq. 4.4, with ``x_prev`` the previous accepted
low-order solution). A step is accepted when ``E <= 1``; the next step is ``h <- h min(
max_factor, max(min_factor, safety E^{-1/order}))``, shortened to land on the last positive
time. The solution continues from ``x_high`` (local extrapolation).

Two choices over k-diffusion's ``sample_dpm_adaptive`` (which steps the same pair in the
noise-prediction form): the data-prediction form, whose steps stay bounded where ``alpha``
is small; and a rejected step keeps its ``D_0`` (the state and time are unchanged), so a
rejection costs ``order - 1`` evaluations, not ``order``. The batch shares one step size,
so a sample depends on the batch it is in through where its steps fall.

The grid given is ``[T, t_min, 0]`` (or ``[T, t_min]``): interior times are ignored; a final
``0`` adds the interval from ``t_min`` to ``sigma = 0``, solved at the solver's order from the
accepted steps' evaluations by :class:`~scoregen.samplers._final.FinalInterval`
(``final="solve"``, the default) or the denoising step ``x0_hat`` (``final="jump"``, what
k-diffusion does), one evaluation either way. Options: ``rtol``
(0.05, k-diffusion's default) and ``atol`` (default ``None``: ``0.156 rtol``, k-diffusion's
ratio 0.0078 / 0.05, so one tolerance sets both; ``compare`` runs it at tolerances of
``rtol``), ``order`` (3), ``h_init`` (0.5, the
first step in log-SNR), ``safety`` (0.9), ``max_steps`` (10000 attempted steps), ``final``
(``"solve"``). Returns
``(x, info)`` with ``info["ts_used"]`` (accepted times), ``accepted``, ``rejected``,
``solver_nfe``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scoregen.samplers._exp import Node, check_choice, exp_step, node, nodes_at
from scoregen.samplers._final import FinalInterval
from scoregen.samplers.registry import register
from scoregen.sde.base import FINITE_TERMINAL_SNR, SCALAR_KERNEL

MIN_FACTOR, MAX_FACTOR = 0.2, 5.0
ATOL_PER_RTOL = 0.0078 / 0.05


def _pair(denoiser, sde, x: Tensor, t: Node, s: Node | None, s_lam: float, d0: Tensor,
          order: int) -> tuple[Node, Tensor, Tensor]:
    """``(s, x_low, x_high)`` of the embedded pair from ``t`` to log-SNR ``s_lam`` (module
    docstring). ``s`` is the end node when the step lands on it, else ``None``: its node and
    the stages' are then found in one vectorised call."""
    fractions = (1 / 2,) if order == 2 else (1 / 3, 2 / 3)
    lams = [t.lam + f * (s_lam - t.lam) for f in fractions] + ([] if s else [s_lam])
    found = nodes_at(sde, lams, denoiser)
    stages, s = (found, s) if s else (found[:-1], found[-1])
    h = s.lam - t.lam
    rs = [(u.lam - t.lam) / h for u in stages]
    if order == 2:
        (u,) = stages
        d_u = denoiser(exp_step(x, t, u, [d0], [0.0]), u.t).x0
        return s, exp_step(x, t, s, [d0], [0.0]), exp_step(x, t, s, [d0, d_u], [0.0, rs[0]])
    (u1, u2), (r1, r2) = stages, rs
    d1 = denoiser(exp_step(x, t, u1, [d0], [0.0]), u1.t).x0
    d2 = denoiser(exp_step(x, t, u2, [d0, d1], [0.0, r1 / r2]), u2.t).x0
    return s, exp_step(x, t, s, [d0, d1], [0.0, r1]), exp_step(x, t, s, [d0, d2], [0.0, r2])


def _check(rtol: float, atol: float, h_init: float, safety: float, max_steps: int) -> None:
    if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
        raise ValueError(f"dpm_solver++_adaptive needs rtol >= 0 and atol >= 0, not both 0; "
                         f"got rtol={rtol}, atol={atol}")
    if not h_init > 0:
        raise ValueError(f"h_init (the first step in log-SNR) must be positive, got {h_init}")
    if not 0 < safety <= 1:
        raise ValueError(f"safety must lie in (0, 1], got {safety}")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")


@register("dpm_solver++_adaptive", order=3, stochastic=False, nfe_per_step=None,
          tolerance_options=("rtol",), requires=(SCALAR_KERNEL, FINITE_TERMINAL_SNR))
def dpm_solver_pp_adaptive(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, rtol: float = 0.05,
    atol: float | None = None, order: int = 3, h_init: float = 0.5, safety: float = 0.9,
    max_steps: int = 10_000, final: str = "solve",
) -> tuple[Tensor, dict[str, Any]]:
    """DPM-Solver-23 (or 12) with embedded error control, data prediction, steps in log-SNR."""
    check_choice("order", order, (2, 3))
    atol = ATOL_PER_RTOL * rtol if atol is None else atol
    _check(rtol, atol, h_init, safety, max_steps)
    to_zero = bool(ts[-1] == 0)
    end = node(sde, ts[-2] if to_zero else ts[-1])
    last = FinalInterval(order, final)
    t, x_prev = node(sde, ts[0]), x
    if not t.lam < end.lam:
        raise ValueError("dpm_solver++_adaptive needs a grid from high to low noise "
                         f"(log-SNR {t.lam:g} to {end.lam:g})")
    h, d0 = h_init, None
    used, accepted, rejected = [float(t.t)], 0, 0
    while t.lam < end.lam:
        if accepted + rejected == max_steps:
            raise RuntimeError(f"dpm_solver++_adaptive took {max_steps} steps without reaching "
                               f"t={float(end.t):g}; loosen rtol/atol or raise max_steps")
        lands = t.lam + h >= end.lam * (1 - 1e-12) - 1e-12
        if d0 is None:
            d0 = denoiser(x, t.t).x0
            last.record(t.alpha, t.sigma_edm, x, d0)
        s, x_low, x_high = _pair(denoiser, sde, x, t, end if lands else None,
                                 end.lam if lands else t.lam + h, d0, order)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        err = float(((x_high - x_low) / delta).pow(2).mean().sqrt())
        if err != err:
            raise FloatingPointError("dpm_solver++_adaptive produced NaN; check the model")
        step = s.lam - t.lam
        if err <= 1:
            accepted += 1
            x, x_prev, t, d0 = x_high, x_low, s, None
            used.append(float(t.t))
        else:
            rejected += 1
        h = step * min(MAX_FACTOR, max(MIN_FACTOR, safety * max(err, 1e-10) ** (-1 / order)))
    callback(0, end.t, x)
    solver_nfe = denoiser.nfe
    if to_zero:
        x = last.solve(end.alpha, end.sigma_edm, x, denoiser(x, end.t).x0)
        callback(len(ts) - 2, ts[-1], x)
    info = {"ts_used": torch.tensor(used, dtype=torch.float64), "accepted": accepted,
            "rejected": rejected, "solver_nfe": solver_nfe, "rtol": rtol, "atol": atol}
    return x, info
