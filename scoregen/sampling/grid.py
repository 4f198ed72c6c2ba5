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
- ``auto``:      the SDE's ``default_spacing`` (``logsnr`` for every SDE shipped: the best
  of edm/logsnr/uniform at 5-50 NFE in ``experiments/fast_samplers_sweep.py``).
- ``tuned``:     a grid fitted to one model and sampler by :mod:`scoregen.sampling.grid_tuning` and
  stored with the model (:mod:`scoregen.sampling.tuned_grids`); it is not a formula of the SDE, so
  ``scoregen.sample(..., spacing="tuned", grids=...)`` looks it up instead of this function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.sde.base import SDE

SPACINGS = ("auto", "uniform", "quadratic", "log", "logsnr", "edm", "trailing")
TUNED = "tuned"  # a model's fitted grid (scoregen.sampling.tuned_grids), not a formula of the SDE


def time_grid(
    sde: SDE,
    steps: int,
    spacing: str = "auto",
    *,
    denoise: bool = True,
    rho: float = 7.0,
    t_min: float | None = None,
    T: float | None = None,
) -> Tensor:
    """``steps + 1`` descending times from ``T`` (see module docstring). Float64, CPU."""
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
    if spacing in ("logsnr", "edm") and not has_log_snr(sde):
        raise ValueError(f"spacing {spacing!r} is a formula in log-SNR, which {sde.name!r} does "
                         f"not define (no scalar kernel); use 'uniform' or 'quadratic' ('auto' "
                         f"is {sde.default_spacing!r} for {sde.name!r})")
    n = steps if denoise else steps + 1
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    hi = torch.tensor(t_hi, dtype=torch.float64)
    lo = torch.tensor(t_lo, dtype=torch.float64)
    if spacing in ("logsnr", "edm") and not torch.isfinite(sde.log_snr(hi)):
        raise ValueError(f"spacing {spacing!r} is uniform in a function of the log-SNR, which "
                         f"is -inf at T on {sde!r} (zero terminal SNR); use spacing "
                         "'trailing' (its default), 'uniform' or 'quadratic'")
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
        lam = sde.log_snr(hi) + u * (sde.log_snr(lo) - sde.log_snr(hi))
        ts = _times_at(sde, lam, hi, lo)
    else:  # edm
        s_hi, s_lo = torch.exp(-sde.log_snr(hi)), torch.exp(-sde.log_snr(lo))
        s = (s_hi ** (1 / rho) + u * (s_lo ** (1 / rho) - s_hi ** (1 / rho))) ** rho
        ts = _times_at(sde, -torch.log(s), hi, lo)
    if denoise:
        ts = torch.cat([ts, ts.new_zeros(1)])
    return ts


def has_log_snr(sde: SDE) -> bool:
    """Whether ``sde`` defines ``log_snr`` (every scalar kernel; blurring: its DC frequency)."""
    try:
        sde.log_snr(torch.tensor(sde.T, dtype=torch.float64))
    except NotImplementedError:
        return False
    return True


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
