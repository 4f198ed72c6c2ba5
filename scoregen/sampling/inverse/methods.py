"""Posterior-sampling methods for ``y = A x + sigma_y n``: one registry, one mechanism.

Every method that acts on predictions reaches every sampler the way guidance does: the
model is wrapped (:class:`Conditioned`) so that the ``(x0_hat, eps_hat)`` pair the
:class:`~scoregen.sampling.denoiser.Denoiser` reads is the method's, with no sampler code.
Notation: ``x_t = alpha x0 + sigma eps`` at time ``t``, ``x0_hat(x)`` the model's posterior mean;
spectral coordinates ``c = V^T x`` with singular values ``s_i``, ``y_bar_i = (U^T y)_i / s_i``
and noise ``c_i = sigma_y / s_i`` on the observed coordinates
(:mod:`~scoregen.sampling.inverse.operators`); ``r_t^2 = tau^2 sigma^2 / (alpha^2 tau^2 +
sigma^2)`` is the variance of ``x0 | x_t`` under a ``N(0, tau^2 I)`` prior (``tau^2 =
data_var``, 1 by default, Song et al. 2023's choice).

- ``replacement`` (Song et al. 2021, app. I.2; for any operator with an SVD: the projection of
  Song, Shen, Xing & Ermon 2022): the observed coordinates of the state are replaced by a forward
  draw ``alpha y_bar + sigma z`` before the model sees it, and those of ``x0_hat`` by
  ``y_bar``. ``z`` is drawn afresh at every evaluation (``known_noise="fresh"``) or once per
  sample (``"fixed"``). Exact only where the observed coordinates are independent of the rest;
  with ``sigma_y > 0`` it treats the noisy ``y_bar`` as exact.
- ``repaint`` (Lugmayr et al. 2022): replacement plus resampling, a loop over the grid
  (:mod:`~scoregen.sampling.inverse.solve`).
- ``ddnm`` (Wang et al. 2023, eq. 13): ``x0_hat <- x0_hat + A^+ (y - A x0_hat)``, the range of
  ``A`` from ``y`` and the null space from the model. With ``sigma_y > 0`` the correction is
  the Gaussian one, ``lambda_i = r_t^2 / (r_t^2 + c_i^2)`` per observed coordinate (DDNM+ shrinks
  the same way but also rescales the ancestral noise, which ties it to one sampler).
- ``pigdm`` (Song et al. 2023, "Pseudoinverse-guided diffusion models", eq. 7): the score gains
  ``grad_x log N(y; A x0_hat(x), r_t^2 A A^T + sigma_y^2 I)`` with ``x0_hat``'s Jacobian held
  fixed in the covariance,

      g = (d x0_hat / d x)^T A^T (r_t^2 A A^T + sigma_y^2 I)^{-1} (y - A x0_hat),

  one vector-Jacobian product per evaluation; exact for a ``N(mu, tau^2 I)`` prior. The
  inverse comes from the SVD, or from conjugate gradients on ``A A^T`` when there is none.
- ``dps`` (Chung et al. 2023, "Diffusion posterior sampling", Algorithm 1): each step of a
  1000-step DDPM chain moves ``x`` by ``-zeta grad_x ||y - A x0_hat(x)||``. As a score (one
  mechanism for every sampler) that is ``zeta grad / (g^2(t) T / 1000)``: the reference chain
  adds ``g^2 T / 1000`` of variance per step, so the 1000-step ancestral sampler takes exactly
  the paper's steps and other grids integrate the same correction.
- ``smc``: the particle method (:mod:`~scoregen.sampling.inverse.smc`), a loop.

Score corrections enter the pair as ``eps <- eps - sigma g``, ``x0 <- x0 + (sigma^2 / alpha) g``.
Methods that differentiate through the model (``pigdm``, ``dps``) cost one backward pass per
NFE besides the forward one (the NFE counts forward evaluations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from scoregen.infra.registry import Registry
from scoregen.infra.shape import batch_times, bcast
from scoregen.models.prediction import Model, Prediction, check_model, from_x0_eps, predict_pair
from scoregen.sampling.inverse.base import Measurement
from scoregen.sampling.noise import NoiseSource

PairFn = Callable[["Conditioned", Tensor, Tensor], Prediction]


@dataclass(frozen=True)
class Method:
    """A registered method: ``pair`` (a prediction-level correction, or ``None`` for a method
    that is its own loop), whether it ``needs_svd``, whether it differentiates through the model
    (``gradient``), the samplers it fits (``None``: every one; the first is the default), its
    ``options`` with defaults, and whether a noiseless measurement is imposed on the result
    (``project``: ``x <- x + A^+ (y - A x)``, for methods that take the range of ``A`` from
    ``y``, since a multistage solver's last step mixes the state into its output)."""

    name: str
    pair: PairFn | None
    needs_svd: bool
    gradient: bool = False
    samplers: tuple[str, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    project: bool = False
    summary: str = ""


METHODS: Registry[Method] = Registry("inverse method")


def register(method: Method) -> Method:
    METHODS.register(method.name)(method)
    return method


class Conditioned:
    """``model`` conditioned on a measurement by a prediction-level method, as a model.

    ``options``: the method's options (defaults filled in); ``noise``: the stream of the
    replacement noise (``None`` for methods without one). Calls must use the batch of ``y``.
    """

    def __init__(self, model: Model, meas: Measurement, method: Method,
                 options: dict[str, Any] | None = None, noise: NoiseSource | None = None
                 ) -> None:
        check_model(model, model.sde)
        if method.pair is None:
            raise ValueError(f"method {method.name} is a sampling loop, not a model wrapper")
        self.model, self.sde, self.prediction = model, model.sde, model.prediction
        self.meas, self.method = meas, method
        self.options = {**method.options, **(options or {})}
        self.noise = noise
        self.backward = 0  # vector-Jacobian products taken
        self.spectral = meas.spectral() if method.needs_svd else None
        fixed = self.options.get("known_noise") == "fixed"
        self._z = noise() if (noise is not None and fixed) else None

    # -- pieces the methods share ----------------------------------------------------------------
    def base_pair(self, x: Tensor, t: Tensor) -> Prediction:
        """The wrapped model's own ``(x0_hat, eps_hat)``."""
        return predict_pair(self.model, x, t)

    def coefficients(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.sde.alpha(t).to(x.dtype), self.sde.sigma(t).to(x.dtype)

    def r2(self, t: Tensor, x: Tensor) -> Tensor:
        """``r_t^2 = tau^2 sigma^2 / (alpha^2 tau^2 + sigma^2)`` as ``(B, 1)``."""
        alpha, sigma = self.coefficients(t, x)
        tau2 = float(self.options.get("data_var", 1.0))
        return (tau2 * sigma**2 / (alpha**2 * tau2 + sigma**2))[:, None]

    def known_noise(self) -> Tensor:
        return self._z if self._z is not None else self.noise()

    def with_score(self, x: Tensor, t: Tensor, pair: Prediction, g: Tensor) -> Prediction:
        """The pair whose score is the model's plus ``g``."""
        alpha, sigma = self.coefficients(t, x)
        a, s = bcast(alpha, x), bcast(sigma, x)
        return Prediction(pair.x0 + s**2 / a * g, pair.eps - s * g)

    def from_x0(self, x: Tensor, t: Tensor, x0: Tensor) -> Prediction:
        """The pair of a corrected ``x0`` at ``x``: ``eps = (x - alpha x0) / sigma``."""
        alpha, sigma = self.coefficients(t, x)
        return Prediction(x0, (x - bcast(alpha, x) * x0) / bcast(sigma, x))

    def vjp(self, x: Tensor, t: Tensor, direction: Callable[[Tensor], Tensor]
            ) -> tuple[Prediction, Tensor]:
        """The pair at ``x`` and ``(d x0_hat / d x)^T v`` for ``v = direction(x0_hat)``
        (autograd, also under ``no_grad``)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            pair = self.base_pair(xg, t)
            v = direction(pair.x0.detach())
            (g,) = torch.autograd.grad(pair.x0, xg, grad_outputs=v.to(pair.x0))
        self.backward += 1
        return Prediction(pair.x0.detach(), pair.eps.detach()), g

    # -- the model interface -----------------------------------------------------------------------
    def predict_pair(self, x: Tensor, t: Tensor) -> Prediction:
        t = batch_times(t, x)
        if x.shape[0] != self.meas.batch:
            raise ValueError(f"the measurement holds {self.meas.batch} samples but the model "
                             f"was called on a batch of {x.shape[0]}")
        return self.method.pair(self, x, t)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        t = batch_times(t, x)
        alpha, sigma = self.coefficients(t, x)
        return from_x0_eps(self.predict_pair(x, t), self.prediction, alpha, sigma)


# -- prediction-level methods ----------------------------------------------------------------
def _replacement(ctx: Conditioned, x: Tensor, t: Tensor) -> Prediction:
    svd, y_bar, _ = ctx.spectral
    alpha, sigma = ctx.coefficients(t, x)
    c = svd.vt(x)
    obs = svd.observed(c)
    z = svd.vt(ctx.known_noise().to(x))
    x_in = svd.v(torch.where(obs, alpha[:, None] * y_bar.to(x) + sigma[:, None] * z, c))
    pair = ctx.base_pair(x_in, t)
    x0 = svd.v(torch.where(obs, y_bar.to(x), svd.vt(pair.x0)))
    return ctx.from_x0(x, t, x0)


def _ddnm(ctx: Conditioned, x: Tensor, t: Tensor) -> Prediction:
    svd, y_bar, c_noise = ctx.spectral
    pair = ctx.base_pair(x, t)
    c0 = svd.vt(pair.x0)
    r2 = ctx.r2(t, x)
    lam = torch.where(svd.observed(c0), r2 / (r2 + c_noise.to(x) ** 2), torch.zeros_like(c0))
    return ctx.from_x0(x, t, svd.v(c0 + lam * (y_bar.to(x) - c0)))


def _pigdm(ctx: Conditioned, x: Tensor, t: Tensor) -> Prediction:
    meas = ctx.meas
    r2 = ctx.r2(t, x)

    def direction(x0: Tensor) -> Tensor:
        if ctx.spectral is not None:  # A^T (r2 A A^T + sigma_y^2)^-1 (y - A x0) = V w
            svd, y_bar, _ = ctx.spectral
            c0 = svd.vt(x0)
            s2 = svd.s.to(x0).expand_as(c0) ** 2
            w = torch.where(s2 > 0, s2 * (y_bar.to(x0) - c0) / (r2 * s2 + meas.sigma_y**2),
                            torch.zeros_like(c0))
            return svd.v(w)
        op = meas.operator
        resid = meas.y.to(x0) - op.A(x0)
        return op.AT(conjugate_gradient(lambda u: bcast(r2[:, 0], u) * op.A(op.AT(u))
                                        + meas.sigma_y**2 * u, resid))

    pair, g = ctx.vjp(x, t, direction)
    return ctx.with_score(x, t, pair, g)


def _dps(ctx: Conditioned, x: Tensor, t: Tensor) -> Prediction:
    op, y = ctx.meas.operator, ctx.meas.y

    def direction(x0: Tensor) -> Tensor:  # -grad_{x0} ||y - A x0|| = A^T r / ||r||
        r = y.to(x0) - op.A(x0)
        norm = r.flatten(1).norm(dim=1).clamp_min(1e-12)
        return op.AT(r / bcast(norm, r))

    pair, g = ctx.vjp(x, t, direction)
    sde = ctx.sde
    step = sde.g2(t.to(torch.float64)) * (sde.T / 1000)
    return ctx.with_score(x, t, pair, bcast((float(ctx.options["zeta"]) / step).to(x), x) * g)


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, iters: int = 50,
                       tol: float = 1e-10) -> Tensor:
    """Solve ``apply(u) = b`` per sample for a symmetric positive-definite ``apply``
    (Hestenes & Stiefel 1952), ``b: (B, *m)``."""
    u = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r.flatten(1).pow(2).sum(1)
    stop = tol * rs.clamp_min(1e-300)
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        step = rs / (p * ap).flatten(1).sum(1).clamp_min(1e-300)
        u = u + bcast(step, p) * p
        r = r - bcast(step, p) * ap
        rs_new = r.flatten(1).pow(2).sum(1)
        p = r + bcast(rs_new / rs.clamp_min(1e-300), p) * p
        rs = rs_new
    return u


register(Method("replacement", _replacement, needs_svd=True,
                options={"known_noise": "fresh"}, project=True,
                summary="observed coordinates of the state replaced by a forward draw of y"))
register(Method("repaint", _replacement, needs_svd=True,
                options={"known_noise": "fresh", "resample": 5, "jump": 1}, project=True,
                summary="replacement with RePaint resampling (r-fold NFE)"))
register(Method("ddnm", _ddnm, needs_svd=True, options={"data_var": 1.0}, project=True,
                summary="x0_hat projected on A x0 = y (range from y, null space from the model)"))
register(Method("pigdm", _pigdm, needs_svd=False, gradient=True, options={"data_var": 1.0},
                summary="score + J^T A^T (r^2 A A^T + sigma_y^2)^-1 (y - A x0_hat)"))
register(Method("dps", _dps, needs_svd=False, gradient=True, options={"zeta": 1.0},
                summary="score + zeta J^T A^T r / ||r|| per step of a 1000-step chain"))
register(Method("smc", None, needs_svd=True,
                samplers=("dpm_solver++_sde", "ancestral", "ddim"),
                options={"particles": 16, "ess": 0.5, "twist": "tds"},
                summary="particles on the sampler's Gaussian kernel, TDS twisting (or "
                        "MCGdiff's); exact as particles grow"))


__all__ = ["METHODS", "Conditioned", "Method", "conjugate_gradient", "register"]
