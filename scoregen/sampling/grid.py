"""Time grids shared by all samplers.

``time_grid(sde, steps, spacing)`` returns ``steps + 1`` descending float64 times starting at
``T``. With ``denoise=True`` (default) the last time is ``0``: the grid is ``steps`` points
from ``T`` down to ``t_min`` followed by ``0``, and the final interval is the denoising step
``x <- x0_hat(x, t_min)`` (Ho et al. 2020, Algorithm 2 returns the posterior mean at its
last step; Song et al. 2021 add a Tweedie denoising step). Every step then costs the
sampler's NFE per step, so ``steps`` counts network evaluations for one-NFE samplers. With
``denoise=False`` the grid is ``steps + 1`` points from ``T`` to ``t_min``.

Spacings (``u`` runs uniformly from 0 to 1 along the grid):

- ``uniform``:   uniform in ``t``; on the discrete DDPM schedule it hits the knots exactly.
- ``quadratic``: ``t = t_min + (T - t_min) (1 - u)^2`` (Song et al. 2021, DDIM, app. D.2).
- ``log``:       uniform in ``log t``, ``t = T (t_min / T)^u``: steps proportional to ``t``, for
  processes without log-SNR whose flow is stiff like ``1 / t`` near ``0`` (critically-damped
  Langevin: the velocity kernel's variance grows like ``t``).
- ``logsnr``:    uniform in ``lambda = log(alpha/sigma)`` (Lu et al. 2022, DPM-Solver, sec. 3.3).
- ``edm``:       ``s = sigma/alpha = exp(-lambda)`` with
  ``s_i = (s_max^{1/rho} + u (s_min^{1/rho} - s_max^{1/rho}))^rho``, ``rho = 7``
  (Karras et al. 2022, eq. 5).
- ``trailing``:  uniform in ``t`` from ``T`` down to ``T / steps``: ``t_i = T (1 - i / steps)``
  (Lin et al. 2024, sec. 3.3, Table 2; diffusers' ``timestep_spacing="trailing"``), so the
  grid starts at ``T`` and on the discrete DDPM schedule with ``steps`` dividing ``N`` hits the
  knots; ``t_min`` is ignored. The default of a process with zero terminal SNR, where the
  log-SNR spacings are undefined (``lambda(T) = -inf``).
- ``data``:      uniform in ``lambda`` where the data is resolved, steps growing
  geometrically above the noise level where it is not (below; needs ``dim``).
- ``auto``:      the SDE's ``default_spacing`` (``data`` for every scalar kernel shipped: never
  worse than ``logsnr`` and 2.5x better in the geometric mean, on 75 measured cells,
  ``experiments/default_grid.py``; ``trailing`` with zero terminal SNR; a spacing in ``t`` for
  processes without log-SNR).
- ``tuned``:     a grid fitted to one model and sampler by :mod:`scoregen.sampling.grid_tuning` and
  stored with the model (:mod:`scoregen.sampling.tuned_grids`); it is not a formula of the SDE, so
  ``scoregen.sample(..., spacing="tuned", grids=...)`` looks it up instead of this function.

**The ``data`` spacing.** The data-prediction solvers (:mod:`scoregen.samplers._exp`)
integrate ``x0_hat`` along ``lambda`` and err where it varies. Above the noise level
``sigma~_0 = sigma_data sqrt(D)`` (``D`` values per sample of scale ``sigma_data``, 0.5 for
data in ``[-1, 1]``, the constant of Karras et al. 2022), the noise in any one direction
exceeds the norm of a whole data vector: the posterior mean is nearly linear in ``x``,
``x0_hat ~ E[x0] + Cov x / sigma~^2``, and along the flow ``(x ~ sigma~ z)`` its change with
``lambda`` falls like ``e^lambda``. A first-order step's local error ``h^2 |dx0_hat/dlambda|``
is then equidistributed by the step density ``M(lambda) = exp((lambda - lambda_0) / 2)``
below ``lambda_0 = -log sigma~_0`` and by a uniform density above it, where every scale of
the data down to ``t_min`` matters. The grid is uniform in ``m(lambda) = integral of M``:

    m(lambda) = lambda - lambda_0                  (lambda >= lambda_0)
    m(lambda) = 2 (exp((lambda - lambda_0)/2) - 1) (lambda <  lambda_0),

so the steps are uniform in ``lambda`` once the data emerges from the noise and grow by a
constant factor per step above it. Uniform in ``lambda`` (``logsnr``) spends a third of a
VP grid on ``sigma~ > 8`` where nothing is resolved. Measured against ``logsnr`` on the exact
mixtures (ring8 in 2-D, mix16, mix64; VP, DDPM, cosine VP, VE and VE over the EDM range;
5-100 NFE; the best of six solvers per cell): never worse in 75 cells, 2.5x lower endpoint
error in the geometric mean, 2-6x at 5 NFE on ring8 (docs/fast-samplers.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.sde.base import SDE

SPACINGS = ("auto", "uniform", "quadratic", "log", "logsnr", "edm", "trailing", "data")
TUNED = "tuned"  # a model's fitted grid (scoregen.sampling.tuned_grids), not a formula of the SDE
SIGMA_DATA = 0.5  # per-coordinate scale of the data for the ``data`` spacing (module docstring)


def time_grid(
    sde: SDE,
    steps: int,
    spacing: str = "auto",
    *,
    denoise: bool = True,
    rho: float = 7.0,
    t_min: float | None = None,
    T: float | None = None,
    dim: int | None = None,
    sigma_data: float = SIGMA_DATA,
) -> Tensor:
    """``steps + 1`` descending times from ``T`` (see module docstring). Float64, CPU.

    ``dim``: values per sample, which the ``data`` spacing needs (``scoregen.sample`` passes
    it); ``sigma_data``: their scale for that spacing."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if spacing == TUNED:
        raise ValueError("spacing='tuned' is a grid fitted to a model, not a formula: pass "
                         "grids=<run folder or TunedGrids> to scoregen.sample (fit one with "
                         "`scoregen tune-grid`)")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; known: {', '.join(SPACINGS)}")
    if spacing == "auto":
        spacing = sde.default_spacing
    t_hi = sde.T if T is None else float(T)
    t_lo = sde.t_min if t_min is None else float(t_min)
    if not 0 < t_lo < t_hi <= sde.T:
        raise ValueError(f"need 0 < t_min < T <= {sde.T}, got t_min={t_lo}, T={t_hi}")
    n = steps if denoise else steps + 1
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    hi = torch.tensor(t_hi, dtype=torch.float64)
    lo = torch.tensor(t_lo, dtype=torch.float64)
    if spacing in ("logsnr", "edm", "data"):
        lam_hi, lam_lo = _end_log_snrs(sde, spacing, hi, lo)
    if spacing == "trailing":
        ts = hi * (1 - torch.arange(n, dtype=torch.float64) / n)
    elif n == 1:
        ts = hi.reshape(1)
    elif spacing == "uniform":
        ts = hi + u * (lo - hi)
    elif spacing == "quadratic":
        ts = lo + (hi - lo) * (1 - u) ** 2
    elif spacing == "log":
        ts = hi * (lo / hi) ** u
        ts[0], ts[-1] = hi, lo
    elif spacing == "logsnr":
        lam = lam_hi + u * (lam_lo - lam_hi)
        ts = _times_at(sde, lam, hi, lo)
    elif spacing == "data":
        if dim is None or not dim >= 1:
            raise ValueError("the 'data' spacing needs dim=, the number of values per sample "
                             "(scoregen.sample passes it); or give another spacing")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data!r}")
        ts = _times_at(sde, data_log_snrs(float(lam_hi), float(lam_lo), u,
                                          -math.log(sigma_data * math.sqrt(dim))), hi, lo)
    else:  # edm
        s_hi, s_lo = torch.exp(-lam_hi), torch.exp(-lam_lo)
        s = (s_hi ** (1 / rho) + u * (s_lo ** (1 / rho) - s_hi ** (1 / rho))) ** rho
        ts = _times_at(sde, -torch.log(s), hi, lo)
    if denoise:
        ts = torch.cat([ts, ts.new_zeros(1)])
    return ts


def _end_log_snrs(sde: SDE, spacing: str, hi: Tensor, lo: Tensor) -> tuple[Tensor, Tensor]:
    """The log-SNR at both ends of a grid in log-SNR, each computed once; a clear error where
    the process has none or it is ``-inf`` at ``T``."""
    try:
        lam_hi = sde.log_snr(hi)
    except NotImplementedError:
        raise ValueError(f"spacing {spacing!r} is a formula in log-SNR, which {sde.name!r} does "
                         f"not define (no scalar kernel); use 'uniform' or 'quadratic' ('auto' "
                         f"is {sde.default_spacing!r} for {sde.name!r})") from None
    if not torch.isfinite(lam_hi):
        raise ValueError(f"spacing {spacing!r} is uniform in a function of the log-SNR, which "
                         f"is -inf at T on {sde!r} (zero terminal SNR); use spacing "
                         "'trailing' (its default), 'uniform' or 'quadratic'")
    return lam_hi, sde.log_snr(lo)


def data_log_snrs(lam_T: float, lam_min: float, u: Tensor, lam_0: float) -> Tensor:
    """Log-SNRs of the ``data`` spacing at positions ``u`` in ``[0, 1]``, from ``lam_T`` (the
    noisiest) to ``lam_min``: uniform in ``m(lambda)`` (module docstring); ``lam_0`` is the
    log-SNR where the data emerges from the noise."""

    def m(lam: float) -> float:
        return lam - lam_0 if lam >= lam_0 else 2.0 * math.expm1((lam - lam_0) / 2)

    mu = m(lam_T) + u * (m(lam_min) - m(lam_T))
    below = lam_0 + 2.0 * torch.log1p(mu.clamp(max=0) / 2)
    return torch.where(mu >= 0, lam_0 + mu, below)


def _times_at(sde: SDE, lam: Tensor, hi: Tensor, lo: Tensor) -> Tensor:
    """Times with log-SNR ``lam``, endpoints pinned exactly to ``hi`` and ``lo``."""
    ts = sde.t_from_log_snr(lam)
    ts[0], ts[-1] = hi, lo
    return ts


def check_grid(ts: Tensor, sde: SDE) -> Tensor:
    """Validate a user grid: 1-D, at least two times, strictly decreasing, within ``[0, T]``,
    and only the last time may be ``0``. Returns it as float64."""
    ts = torch.as_tensor(ts, dtype=torch.float64).cpu()
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"a time grid must be a 1-D tensor of at least 2 times, got {ts}")
    if not torch.isfinite(ts).all():
        raise ValueError("the time grid contains NaN or infinite times")
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError("the time grid must be strictly decreasing (from T towards 0)")
    if ts[0] > sde.T * (1 + 1e-9) or ts[-1] < 0:
        raise ValueError(f"grid times must lie in [0, T={sde.T}], got [{ts[-1]}, {ts[0]}]")
    if (ts[:-1] <= 0).any():
        raise ValueError("only the last time of a grid may be 0 (the final denoising step)")
    return ts
