"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
of Diffusion Models", Algorithms 1-2, eq. 8 and 10) in data-prediction form on any SDE.

Per step from ``t`` to ``s`` (``h = lambda_s - lambda_t``) with the data predictions ``m_0``
at ``t`` and ``m_j`` at earlier ``lambda_t + r_j h`` (``r_j < 0``, ``j = 1 .. p-1``)::

    D_j   = (m_j - m_0) / r_j,       hh = -h,       B(h) = hh ("bh1") or e^{hh} - 1 ("bh2")
    sum_j a_j r_j^{i-1} = i! hh phi_{i+1}(hh) / B(h),     i = 1 .. p                 (eq. 8)
    x~_s  = (sigma_s/sigma_t) x_t + alpha_s (1 - e^{-h}) m_0 - alpha_s B(h) sum_j a_j D_j   (UniP-p)

UniC-p then evaluates ``m_s = x0_hat(x~_s, s)``, sets ``r_p = 1``, ``D_p = m_s - m_0`` and
re-solves the moments with ``p`` unknowns (eq. 10)::

    x_s = (sigma_s/sigma_t) x_t + alpha_s (1 - e^{-h}) m_0 - alpha_s B(h) sum_{j<=p} a^c_j D_j.

UniP-p is order ``p``; the corrector raises it to ``p + 1`` (their Theorem 3.1). The
evaluation ``m_s`` at the predicted point is reused as the prediction at ``s`` for the next
step, so UniPC costs one evaluation per step and no corrector runs after the last step.
Like the reference code, UniP-2 takes ``a_1 = 1/2`` and UniC-1 ``a^c_1 = 1/2`` (then
UniP-2 with ``bh2`` is DPM-Solver++(2M)). Warm-up and ``lower_order_final`` as in
:func:`scoregen.samplers._exp.step_order`.

A final grid time of ``0`` is solved at order ``order + 1`` from the history by
:class:`~scoregen.samplers._final.FinalInterval` (``final="solve"``), or returns ``x0_hat`` at
the last positive time, i.e. the evaluation ``m_s`` that the last corrector used
(``final="jump"``). NFE on a grid of ``n`` intervals: ``n``. ``order`` is
the predictor's order ``p`` in ``{1, 2, 3}`` (default 2: third-order UniPC).
"""

from __future__ import annotations

import math

from torch import Tensor

from scoregen.samplers._exp import (
    Node,
    check_choice,
    grid_nodes,
    phi,
    solve_moments,
    solver_steps,
    step_order,
)
from scoregen.samplers._final import FinalInterval
from scoregen.samplers.registry import register

VARIANTS = ("bh1", "bh2")


def _b_h(h: float, variant: str) -> float:
    return -h if variant == "bh1" else math.expm1(-h)


def _rhs(h: float, p: int, b_h: float) -> list[float]:
    """``i! hh phi_{i+1}(hh) / B(h)`` for ``i = 1 .. p`` (``hh = -h``), eq. 8."""
    return [math.factorial(i) * -h * phi(i + 1, -h) / b_h for i in range(1, p + 1)]


def _combine(terms: list[tuple[float, Tensor]], base: Tensor) -> Tensor:
    for coef, value in terms:
        base = base + coef * value
    return base


@register("unipc", order=3, stochastic=False, nfe_per_step=1)
def unipc(
    denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback, order: int = 2,
    variant: str = "bh2", lower_order_final: bool = True, final: str = "solve",
) -> Tensor:
    """UniP-``order`` predictor + UniC corrector (one evaluation per step)."""
    check_choice("order", order, (1, 2, 3))
    check_choice("variant", variant, VARIANTS)
    nodes, steps = grid_nodes(sde, ts), solver_steps(ts)
    end = FinalInterval(order + 1, final)
    history: list[tuple[Node, Tensor]] = [(nodes[0], denoiser(x, nodes[0].t).x0)]
    for i in range(len(ts) - 1):
        t, m_0 = history[0]
        if ts[i + 1] == 0:
            x = end.solve(t.alpha, t.sigma_edm, x, m_0)
            callback(i, ts[i + 1], x)
            break
        end.record(t.alpha, t.sigma_edm, x, m_0)
        s = nodes[i + 1]
        p = step_order(order, i, len(history), steps, lower_order_final)
        h = s.lam - t.lam
        b_h = _b_h(h, variant)
        rhs = _rhs(h, p, b_h)
        rs = [(n.lam - t.lam) / h for n, _ in history[1:p]]
        diffs = [(m - m_0) / r for (_, m), r in zip(history[1:p], rs, strict=True)]
        base = (s.sigma / t.sigma) * x + (-s.alpha * math.expm1(-h)) * m_0
        a_p = [] if p == 1 else [0.5] if p == 2 else solve_moments(rs, rhs[: p - 1])
        x = _combine([(-s.alpha * b_h * a, d) for a, d in zip(a_p, diffs, strict=True)], base)
        if i + 1 < len(ts) - 1:  # a later step will evaluate at s: correct with it
            m_s = denoiser(x, s.t).x0
            a_c = [0.5] if p == 1 else solve_moments([*rs, 1.0], rhs[:p])
            x = _combine([(-s.alpha * b_h * a, d)
                          for a, d in zip(a_c, [*diffs, m_s - m_0], strict=True)], base)
            history = [(s, m_s), *history][:order]
        callback(i, ts[i + 1], x)
    return x
