"""Exponential integrators of the probability-flow ODE in log-SNR, data-prediction form.

Shared by the DPM-Solver++ family (:mod:`~scoregen.samplers.dpm_solver`), UniPC
(:mod:`~scoregen.samplers.unipc`) and EDM Heun (:mod:`~scoregen.samplers.heun`); the
leading underscore keeps this module out of the sampler registry.

With ``lambda = log(alpha / sigma)`` and the data prediction ``x0_hat``, the probability-flow
ODE of every SDE here has the exact solution from ``t`` to ``s < t`` (``h = lambda_s -
lambda_t > 0``; Lu et al. 2022b, "DPM-Solver++", eq. 9)::

    x_s = (sigma_s/sigma_t) x_t + sigma_s int_{lambda_t}^{lambda_s} e^lambda x0_hat(lambda) dlambda.

Replacing ``x0_hat`` by the polynomial through known predictions ``D_j`` at ``lambda_t + r_j
h`` (``r_0 = 0`` the current point; ``r_j < 0`` earlier points of a multistep method, ``0 <
r_j <= 1`` stages of a singlestep one) and integrating it exactly gives::

    x_s = (sigma_s / sigma_t) x_t + alpha_s sum_j w_j D_j,
    sum_j w_j r_j^m = c_m = h m! phi_{m+1}(-h),     m = 0 .. k-1,            (moments)

with ``phi_1(z) = (e^z - 1) / z``, ``phi_{m+1}(z) = (phi_m(z) - 1/m!) / z`` (Hochbruck &
Ostermann 2010, "Exponential integrators", eq. 2.10). ``k`` points give a method of order
``k`` (local error ``O(h^{k+1})``). ``c_0 = 1 - e^{-h}`` alone is DDIM (DPM-Solver++-1).
The "midpoint" variant of Lu et al. 2022b (Algorithms 1-2, their 2S and 2M solvers) takes
``c_1 = c_0 / 2`` instead of ``h phi_2(-h)``; both are second order.

**SDE form.** SDE-DPM-Solver++ (Lu et al. 2022b, sec. 5; k-diffusion's ``dpmpp_2m_sde``
with noise level ``eta``) integrates the reverse SDE in the same variables::

    x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s sum_j w_j D_j
          + sigma_s sqrt(1 - e^{-2 eta h}) z,

with the moments taken at ``h_eta = (1 + eta) h`` (same ``r_j``). For a point mass this
keeps the marginal ``N(alpha_s x0, sigma_s^2)`` exactly for every ``eta >= 0``; ``eta = 0``
is the ODE solver, ``eta = 1`` the reverse SDE.

**Third-order multistep weights.** The moments make the 3-point step exact for quadratic
``x0_hat(lambda)``. The reference DPM-Solver++(3M) code (``multistep_dpm_solver_third_update``
of Lu et al., also diffusers and k-diffusion's ``dpmpp_3m_sde``) weights its second divided
difference ``D2`` by ``phi_3`` where exact integration of a quadratic needs ``2 phi_3``
(``D2 ~ h^2 x0_hat''/2``), which leaves a local error ``O(h^3)``. scoregen's 3M uses the
moments; ``tests/test_fast_samplers.py`` checks exactness on quadratics and the measured
order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scoregen.sde.base import SDE

_SERIES_BELOW = 1.0  # |z| under which phi_k is summed as a series (avoids cancellation)
_SERIES_TERMS = 30


@dataclass(frozen=True)
class Node:
    """A time with its marginal coefficients: ``x_t = alpha x0 + sigma eps``, ``lam =
    log(alpha / sigma)``. ``t`` is a 0-dim float64 tensor, the rest Python floats."""

    t: Tensor
    alpha: float
    sigma: float
    lam: float

    @property
    def sigma_edm(self) -> float:
        """Karras et al. 2022's noise level ``sigma / alpha = exp(-lambda)`` (``inf`` where
        ``alpha = 0``: zero terminal SNR)."""
        return self.sigma / self.alpha if self.alpha > 0 else math.inf


def node(sde: SDE, t: Tensor | float) -> Node:
    """The :class:`Node` of ``sde`` at time ``t > 0``."""
    t = torch.as_tensor(t, dtype=torch.float64).cpu().reshape(())
    return Node(t, float(sde.alpha(t)), float(sde.sigma(t)), float(sde.log_snr(t)))


def node_at(sde: SDE, lam: float) -> Node:
    """The :class:`Node` at log-SNR ``lam`` (its ``lam`` is recomputed from the time found, so
    every coefficient belongs to the time the model is evaluated at)."""
    return node(sde, sde.t_from_log_snr(torch.tensor(float(lam), dtype=torch.float64)))


def grid_nodes(sde: SDE, ts: Tensor) -> list[Node]:
    """Nodes of the positive times of a grid (a final ``0`` has none: it is the denoising
    step), their coefficients computed in one vectorised call."""
    ts = torch.as_tensor(ts, dtype=torch.float64).cpu()
    ts = ts[ts > 0]
    coefs = zip(sde.alpha(ts).tolist(), sde.sigma(ts).tolist(), sde.log_snr(ts).tolist(),
                strict=True)
    return [Node(t, a, s, lam) for t, (a, s, lam) in zip(ts, coefs, strict=True)]


def nodes_at(sde: SDE, lams: Sequence[float], denoiser=None) -> list[Node]:
    """:func:`node_at` for many log-SNR values in one vectorised call (e.g. every stage of a
    grid, before the sampling loop). Given the ``denoiser`` that will be evaluated at these
    times, it is handed their ``alpha`` and ``sigma`` too, so it need not compute them."""
    if not len(lams):
        return []
    ts = sde.t_from_log_snr(torch.tensor(list(lams), dtype=torch.float64))
    alpha, sigma = sde.alpha(ts), sde.sigma(ts)
    if denoiser is not None:
        denoiser.precompute(ts, alpha, sigma)
    coefs = zip(alpha.tolist(), sigma.tolist(), sde.log_snr(ts).tolist(), strict=True)
    return [Node(t, a, s, lam) for t, (a, s, lam) in zip(ts, coefs, strict=True)]


def solver_steps(ts: Tensor) -> int:
    """Number of integration steps on ``ts`` (intervals, less the final denoising one)."""
    return len(ts) - 1 - int(ts[-1] == 0)


def phi(k: int, z: float) -> float:
    """``phi_k(z) = sum_{j>=0} z^j / (j + k)!`` (``phi_0 = e^z``), float64.

    A series for ``|z| < 1`` and the recurrence ``phi_{k+1} = (phi_k - 1/k!) / z`` above, so
    that small steps keep full relative precision.
    """
    if k < 0:
        raise ValueError(f"phi_k needs k >= 0, got {k}")
    if abs(z) < _SERIES_BELOW:
        term, total = 1.0 / math.factorial(k), 0.0
        for j in range(_SERIES_TERMS):
            total += term
            term *= z / (j + k + 1)
            if abs(term) < 1e-18 * abs(total):  # below a float64 ulp of the sum
                break
        return total
    value = math.exp(z)
    if k >= 1:
        value = math.expm1(z) / z
    for m in range(1, k):
        value = (value - 1.0 / math.factorial(m)) / z
    return value


def solve_moments(rs: Sequence[float], c: Sequence[float]) -> list[float]:
    """Weights ``w`` with ``sum_j w_j r_j^m = c_m`` for ``m = 0 .. k-1`` (a transposed
    Vandermonde system; ``k = len(rs) = len(c)``, distinct ``r_j``).

    Solved in Python floats by Gaussian elimination with partial pivoting: ``k <= 4`` here,
    where a tensor solve would cost more in dispatch than the arithmetic (it runs at every
    step, outside the network)."""
    k = len(rs)
    if k != len(c):
        raise ValueError(f"{k} nodes but {len(c)} moments")
    if len(set(rs)) != k:
        raise ValueError(f"interpolation nodes must be distinct, got {list(rs)}")
    a = [[float(r) ** m for r in rs] + [float(c[m])] for m in range(k)]
    for col in range(k):
        pivot = max(range(col, k), key=lambda row: abs(a[row][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for row in range(col + 1, k):
            f = a[row][col] / a[col][col]
            a[row] = [v - f * p for v, p in zip(a[row], a[col], strict=True)]
    w = [0.0] * k
    for row in reversed(range(k)):
        w[row] = (a[row][k] - sum(a[row][j] * w[j] for j in range(row + 1, k))) / a[row][row]
    return w


def moments(h: float, k: int, midpoint: bool = False) -> list[float]:
    """``c_m = h m! phi_{m+1}(-h)`` for ``m < k``; ``midpoint``: ``c_1 = c_0 / 2`` (module
    docstring)."""
    c = [h * math.factorial(m) * phi(m + 1, -h) for m in range(k)]
    if midpoint and k == 2:
        c[1] = c[0] / 2
    return c


def exp_step(
    x: Tensor,
    t: Node,
    s: Node,
    preds: Sequence[Tensor],
    rs: Sequence[float],
    *,
    midpoint: bool = False,
    eta: float = 0.0,
) -> Tensor:
    """One exponential-integrator step from ``t`` to ``s`` (module docstring), without the
    noise term of the SDE form: ``(sigma_s/sigma_t) e^{-eta h} x + alpha_s sum_j w_j D_j``.

    ``preds[j]`` is ``x0_hat`` at log-SNR ``lambda_t + rs[j] h`` (``rs[0] = 0``).
    """
    h = s.lam - t.lam
    w = solve_moments(rs, moments((1.0 + eta) * h, len(rs), midpoint))
    out = torch.mul(x, s.sigma / t.sigma * math.exp(-eta * h))
    for wj, dj in zip(w, preds, strict=True):
        out.add_(dj, alpha=s.alpha * wj)  # out is a fresh tensor: fused in place
    return out


def sde_noise_std(t: Node, s: Node, eta: float) -> float:
    """Standard deviation ``sigma_s sqrt(1 - e^{-2 eta h})`` of the SDE form's noise."""
    return s.sigma * math.sqrt(-math.expm1(-2.0 * eta * (s.lam - t.lam)))


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """Raise a ``ValueError`` naming the option and its allowed values."""
    if value not in allowed or isinstance(value, bool):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def step_order(order: int, i: int, history: int, steps: int, lower_order_final: bool) -> int:
    """Order of multistep step ``i`` (0-based) of ``steps``: at most the ``history`` points
    available (warm-up) and, with ``lower_order_final`` on grids of fewer than 10 steps, at
    most the steps left (Lu et al.'s reference code: lower orders at the end stabilise
    sampling at very low NFE)."""
    k = min(order, history)
    if lower_order_final and steps < 10:
        k = min(k, steps - i)
    return k


__all__ = [
    "Node",
    "check_choice",
    "exp_step",
    "grid_nodes",
    "moments",
    "node",
    "node_at",
    "nodes_at",
    "phi",
    "sde_noise_std",
    "solve_moments",
    "solver_steps",
    "step_order",
]
