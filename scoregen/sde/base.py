"""The one abstract SDE every noise process in scoregen derives from.

All processes here are linear SDEs with Gaussian marginals of one form
(Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 5 and app. B;
Kingma et al. 2021, "Variational Diffusion Models", sec. 2)::

    dx = f(t) x dt + g(t) dw,       x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I).

A subclass gives ``alpha(t)`` and ``sigma(t)`` (and ``T``, ``t_min``). The drift and
diffusion coefficients follow from them (Kingma et al. 2021, eq. 21-22 / app. A):

    f(t)   = d log alpha / dt
    g(t)^2 = d sigma^2 / dt - 2 f(t) sigma^2

and are derived here by autograd unless the subclass gives a closed form. Everything else
(marginal sampling, log-SNR, prior, reverse-SDE and probability-flow drifts) lives once in
this class.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoregen.infra.shape import bcast

Params = dict[str, Any]
CHECKED = ("alpha", "sigma", "f", "g2", "log_snr")  # coefficient methods that check their times


def _checked_times(method: Callable[[Any, Tensor], Tensor]) -> Callable[[Any, Tensor], Tensor]:
    """``method(self, t)`` that first checks ``t`` lies in ``[0, T]`` (:meth:`SDE.check_t`)."""
    if getattr(method, "_checks_times", False):
        return method

    @functools.wraps(method)
    def checked(self: SDE, t: Tensor) -> Tensor:
        self.check_t(t)
        return method(self, t)

    checked._checks_times = True  # type: ignore[attr-defined]
    return checked


class SDE:
    """Base class of a linear SDE with marginals ``x_t = alpha(t) x_0 + sigma(t) eps``.

    Subclasses set ``name`` (the registry key), implement :meth:`alpha` and :meth:`sigma`,
    and may override :meth:`f`, :meth:`g2`, :meth:`t_from_log_snr` and :meth:`prior_std`
    with closed forms. Times are tensors of shape ``()`` or ``(B,)``; coefficients come back
    with the same shape and dtype.

    Attributes:
        T: final time of the forward process; the prior lives there.
        t_min: smallest time samplers integrate to and training samples (the model is never
            asked for ``t < t_min``); the valid time range of the process is ``[0, T]``.
        default_spacing: the time grid ``spacing="auto"`` picks for this process:
            ``"data"`` (uniform in log-SNR where the data is resolved, geometric above; see
            :mod:`scoregen.sampling.grid`) for every SDE shipped, never worse than uniform in
            log-SNR on the cells of ``experiments/default_grid.py`` (docs/fast-samplers.md);
            a new SDE sets its own.
    """

    name: str = "sde"
    default_spacing: str = "data"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every ``alpha``/``sigma``/``f``/``g2``/``log_snr`` a subclass defines checks its
        times, so a time outside ``[0, T]`` (or NaN) is a ``ValueError`` naming the SDE, never
        a silent value."""
        super().__init_subclass__(**kwargs)
        for name in CHECKED:
            if name in cls.__dict__:
                setattr(cls, name, _checked_times(cls.__dict__[name]))

    def __init__(self, T: float = 1.0, t_min: float = 1e-3) -> None:
        if not (T > 0 and math.isfinite(T)):
            raise ValueError(f"T must be a positive finite number, got {T}")
        if not 0 < t_min < T:
            raise ValueError(f"t_min must satisfy 0 < t_min < T={T}, got t_min={t_min}")
        self.T = float(T)
        self.t_min = float(t_min)

    # -- the two functions a subclass must give ------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale ``alpha(t)`` of the marginal."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale ``sigma(t)`` of the marginal."""
        raise NotImplementedError

    # -- derived coefficients (override with closed forms where known) --------------------
    @_checked_times
    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient ``f(t) = d log alpha(t) / dt`` (autograd by default)."""
        return _time_derivative(lambda s: torch.log(self.alpha(s)), t)

    @_checked_times
    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion ``g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2`` (autograd by default)."""
        dvar = _time_derivative(lambda s: self.sigma(s) ** 2, t)
        return dvar - 2 * self.f(t) * self.sigma(t) ** 2

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Forward drift ``f(t) x``; ``x: (B, *D)``, ``t: ()`` or ``(B,)``."""
        return bcast(self.f(t), x) * x

    def diffusion(self, t: Tensor) -> Tensor:
        """Diffusion coefficient ``g(t)``."""
        return self.g2(t).clamp_min(0).sqrt()

    def log_snr(self, t: Tensor) -> Tensor:
        """Half log signal-to-noise ratio ``lambda(t) = log(alpha(t) / sigma(t))``.

        Decreasing in ``t``. DDIM and DPM-Solver integrate exactly in ``lambda``
        (Lu et al. 2022, eq. 3.4).
        """
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr` on ``[0, T]``, by bisection (values outside are clamped).

        Subclasses with a closed form override this; the shared tests check the round trip.
        """
        lam64 = lam.detach().to(torch.float64)
        lo = torch.zeros_like(lam64)
        hi = torch.full_like(lam64, self.T)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            too_noisy = self.log_snr(mid) < lam64  # lambda decreases: answer lies below mid
            hi = torch.where(too_noisy, mid, hi)
            lo = torch.where(too_noisy, lo, mid)
        return (0.5 * (lo + hi)).to(lam.dtype)

    def alpha_from_log_snr(self, lam: Tensor) -> Tensor:
        """``alpha`` at the time whose log-SNR is ``lam`` (then ``sigma = alpha e^{-lam}``).

        By :meth:`t_from_log_snr` here; processes with a closed form in ``lam`` override it
        (variance preserving: ``alpha^2 = sigmoid(2 lam)``; variance exploding: ``1``), which
        saves solvers that step in log-SNR a coefficient call per evaluation.
        """
        return self.alpha(self.t_from_log_snr(lam))

    # -- marginals -------------------------------------------------------------------------
    def check_t(self, t: Tensor) -> None:
        """Raise ``ValueError`` unless every time lies in the process range ``[0, T]``."""
        t = torch.as_tensor(t).detach()
        if t.numel() == 0:
            return
        if t.numel() == 1:  # the common case of samplers: one time per step
            lo = hi = float(t)
        else:
            lo, hi = (float(v) for v in torch.aminmax(t.reshape(-1)))
        tol = 1e-6 * self.T
        if lo >= -tol and hi <= self.T + tol:  # False for NaN too
            return
        if not torch.isfinite(t).all():
            raise ValueError(f"{self.name}: times must be finite numbers, got {t}")
        raise ValueError(
            f"{self.name}: time outside the SDE's range [0, {self.T}] (got min {lo:.6g}, max "
            f"{hi:.6g}); pass times with 0 <= t <= {self.T}"
        )

    def marginal_params(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))`` after checking that ``t`` is in range."""
        self.check_t(t)
        return self.alpha(t), self.sigma(t)

    def marginal(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """A sample of ``x_t | x_0``: ``alpha(t) x0 + sigma(t) eps`` (Song et al. 2021, eq. 29)."""
        if eps.shape != x0.shape:
            raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has {tuple(x0.shape)}")
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        alpha, sigma = self.marginal_params(t)
        return bcast(alpha, x0) * x0 + bcast(sigma, x0) * eps

    # -- Gaussian transitions between two times ---------------------------------------------
    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``x_t | x_s ~ N(alpha_ts x_s, sigma_ts^2 I)`` for ``s < t``: ``(alpha_ts, sigma_ts)``.

        ``alpha_ts = alpha_t / alpha_s``, ``sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2``
        (Kingma et al. 2021, eq. 32).
        """
        alpha_ts = self.alpha(t) / self.alpha(s)
        var_ts = self.sigma(t) ** 2 - alpha_ts**2 * self.sigma(s) ** 2
        return alpha_ts, var_ts.clamp_min(0).sqrt()

    def posterior(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q(x_s | x_t, x0) = N(c_x x_t + c_0 x0, std^2 I)`` for ``s < t``: ``(c_x, c_0, std)``.

        ``c_x = alpha_ts sigma_s^2 / sigma_t^2``, ``c_0 = alpha_s sigma_ts^2 / sigma_t^2``,
        ``std^2 = sigma_ts^2 sigma_s^2 / sigma_t^2`` (Kingma et al. 2021, eq. 33). With the
        discrete DDPM schedule and ``s = t - 1/N`` this is Ho et al. 2020, eq. 6-7.
        """
        alpha_ts, sigma_ts = self.transition(s, t)
        var_t, var_s = self.sigma(t) ** 2, self.sigma(s) ** 2
        c_x = alpha_ts * var_s / var_t
        c_0 = self.alpha(s) * sigma_ts**2 / var_t
        return c_x, c_0, (sigma_ts**2 * var_s / var_t).sqrt()

    # -- prior at T -------------------------------------------------------------------------
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at ``T`` (``sigma(T)``)."""
        return float(self.sigma(torch.tensor(self.T, dtype=torch.float64)))

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``x_T ~ N(0, prior_std^2 I)`` of the given ``(B, *D)`` shape."""
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return self.prior_std() * z

    def prior_logp(self, x: Tensor) -> Tensor:
        """``log N(x; 0, prior_std^2 I)`` summed over all but the batch dimension: ``(B,)``."""
        s = self.prior_std()
        d = x[0].numel()
        log_norm = d * (math.log(s) + 0.5 * math.log(2 * math.pi))
        return -0.5 * (x**2).flatten(1).sum(1) / s**2 - log_norm

    # -- reverse-time dynamics given a score -----------------------------------------------------
    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the reverse SDE ``f x - g^2 score`` (Song et al. 2021, eq. 6)."""
        return self.drift(x, t) - bcast(self.g2(t), x) * score

    def ode_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Probability-flow ODE ``dx/dt = f x - g^2 score / 2`` (Song et al. 2021, eq. 13)."""
        return self.drift(x, t) - 0.5 * bcast(self.g2(t), x) * score

    def score_from_eps(self, eps: Tensor, t: Tensor) -> Tensor:
        """``grad log p_t(x) = -E[eps | x_t] / sigma(t)``."""
        return -eps / bcast(self.sigma(t), eps)

    # -- identity, serialisation -------------------------------------------------------------------
    def params(self) -> Params:
        """Constructor arguments that rebuild this SDE (stored in checkpoints)."""
        return {"T": self.T, "t_min": self.t_min}

    def config(self) -> Params:
        """``{"name": ..., **params}``; :func:`scoregen.sde.from_config` inverts it."""
        return {"name": self.name, **self.params()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SDE) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if not isinstance(v, list))
        return f"{type(self).__name__}({args})"


def _time_derivative(fn, t: Tensor) -> Tensor:
    """Elementwise ``d fn(t) / dt`` by autograd; works under ``no_grad`` and inference mode."""
    with torch.inference_mode(False), torch.enable_grad():
        tt = t.detach().clone().requires_grad_(True)
        y = fn(tt)
        if not y.requires_grad:  # constant in t (e.g. alpha = 1 for VE)
            return torch.zeros_like(t)
        (d,) = torch.autograd.grad(y.sum(), tt, allow_unused=True, materialize_grads=True)
    return d.detach()


def positive(name: str, value: float) -> float:
    """Validate a schedule parameter that must be a positive finite number."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def increasing(lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    """Validate that a schedule's endpoints increase (e.g. ``beta_min < beta_max``)."""
    if not lo < hi:
        raise ValueError(f"{lo_name} must be smaller than {hi_name}, got {lo} >= {hi}")
