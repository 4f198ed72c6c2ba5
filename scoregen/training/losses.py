"""Denoising score matching (continuous t) and the discrete DDPM loss, in eps form.

Denoising score matching (Vincent 2011; Song et al. 2021, eq. 7) with weight ``w(t)``::

    L = E_t E_{x0, eps} [ w(t) * mean_dims (eps_hat(x_t, t) - eps)^2 ],
        x_t = alpha(t) x0 + sigma(t) eps,   t ~ U(t_min, T).

Song's weight ``lambda(t)`` on the score error equals ``lambda(t) / sigma^2`` on the eps error
(``score = -eps / sigma``). The registered weightings (``WEIGHTINGS``) give ``w(t)``:

- ``sigma2``:     ``lambda = sigma^2``, i.e. ``w = 1``: the plain eps-MSE (Ho et al. 2020,
  "L_simple"; Song et al. 2021's default).
- ``likelihood``: ``lambda = g^2`` (Song, Durkan, Murray & Ermon 2021, "Maximum Likelihood
  Training of Score-Based Diffusion Models", Theorem 1), ``w = g^2 / sigma^2``. Since
  ``g^2 / sigma^2 = -2 d lambda_t / dt`` (log-SNR ``lambda_t``) this weight is uniform in
  log-SNR.
- ``edm``:        EDM's ``lambda(sigma_e) = (sigma_e^2 + sigma_data^2) / (sigma_e sigma_data)^2``
  on the x0 error (Karras et al. 2022, eq. 8 and Table 1), with ``sigma_e = sigma / alpha``;
  because ``x0_hat - x0 = -sigma_e (eps_hat - eps)``, ``w = (sigma_e^2 + sigma_data^2) /
  sigma_data^2``.

Time sampling (``t_sampling``):

- ``uniform``:    ``t ~ U(t_min, T)``, loss weight ``w(t)``.
- ``importance``: ``t ~ q(t) ∝ w(t)`` on ``[t_min, T]`` (Song et al. 2021b, sec. 5:
  importance sampling of the likelihood weighting), loss weight ``w(t) / (Z q(t))`` with
  ``Z = mean_{U(t_min,T)} w``, which is 1 up to the tabulation of ``q`` and makes the
  estimate unbiased for ``L / Z``: same minimiser, same gradient direction, lower variance.
  ``q`` is tabulated on 2048 intervals placed uniformly in log-SNR and inverted exactly
  (piecewise-constant density).
- ``lognormal``:  EDM's training distribution ``ln sigma_e ~ N(p_mean, p_std^2)`` (Karras et
  al. 2022, sec. 5, ``P_mean = -1.2``, ``P_std = 1.2``) mapped to ``t`` by log-SNR and clipped
  to ``[t_min, T]``; loss weight ``w(t)`` (with ``edm`` weighting: EDM's loss, eq. 2 and 8).

Discrete DDPM loss (Ho et al. 2020, Algorithm 1): on the ``ddpm`` SDE with ``N`` steps,
``i ~ U{1..N}``, ``t = i / N`` (where ``alpha(t)^2 = alpha_bar_i`` exactly), eps-MSE.
:func:`loss_for` picks it automatically for that SDE.

All losses are means over batch and dimensions, so an eps-MSE of 1 means "predicts 0".
Every loss takes optional class labels ``cond: (B,)`` and passes them to the model
(``model(x_t, t, cond=cond)``); the trainer replaces a fraction of them by the null label
(``train.label_dropout``), which trains the conditional and the unconditional model of
classifier-free guidance in one network (Ho & Salimans 2022, Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoregen.infra.registry import Registry
from scoregen.models.prediction import Model, to_x0_eps
from scoregen.sde.base import SDE

WeightFn = Callable[[SDE, Tensor, float], Tensor]
WEIGHTINGS: Registry[WeightFn] = Registry("loss weighting")
T_SAMPLINGS = ("uniform", "importance", "lognormal")


@WEIGHTINGS.register("sigma2")
def sigma2_weight(sde: SDE, t: Tensor, sigma_data: float) -> Tensor:
    """``w = 1`` (score weight ``sigma^2``)."""
    return torch.ones_like(t)


@WEIGHTINGS.register("likelihood")
def likelihood_weight(sde: SDE, t: Tensor, sigma_data: float) -> Tensor:
    """``w = g^2 / sigma^2`` (score weight ``g^2``)."""
    return sde.g2(t) / sde.sigma(t) ** 2


@WEIGHTINGS.register("edm")
def edm_weight(sde: SDE, t: Tensor, sigma_data: float) -> Tensor:
    """``w = (sigma_e^2 + sigma_data^2) / sigma_data^2`` with ``sigma_e = sigma / alpha``."""
    sigma_e2 = (sde.sigma(t) / sde.alpha(t)) ** 2
    return (sigma_e2 + sigma_data**2) / sigma_data**2


def eps_error(model: Model, x0: Tensor, t: Tensor, eps: Tensor, cond: Tensor | None = None
              ) -> Tensor:
    """Per-sample ``mean_dims (eps_hat(x_t, t) - eps)^2``, ``x_t = alpha x0 + sigma eps``: ``(B,)``.

    The model's prediction (any type) is converted by :func:`scoregen.models.prediction.to_x0_eps`.
    """
    sde = model.sde
    x_t = sde.marginal(x0, t, eps)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    pred = model(x_t, t) if cond is None else model(x_t, t, cond=cond)
    eps_hat = to_x0_eps(pred, model.prediction, x_t, alpha.to(x_t.dtype), sigma.to(x_t.dtype)).eps
    return (eps_hat - eps).pow(2).flatten(1).mean(1)


@dataclass
class DSMLoss:
    """Continuous-time denoising score matching (module docstring).

    ``loss(model, x0, generator)`` draws ``t`` and ``eps`` from ``generator`` (on the CPU, so
    a run is reproducible on any device) and returns the scalar loss;
    ``loss(model, x0, u=u, eps=eps)`` takes each example's own uniform ``u`` (which picks
    ``t``) and noise instead, as the trainer does (:mod:`scoregen.training.batches`).
    """

    weighting: str = "sigma2"
    t_sampling: str = "uniform"
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self) -> None:
        WEIGHTINGS.get(self.weighting)
        if self.t_sampling not in T_SAMPLINGS:
            raise ValueError(f"unknown t_sampling {self.t_sampling!r}; known: "
                             f"{', '.join(T_SAMPLINGS)}")
        self._table: tuple[SDE, Tensor, Tensor, Tensor] | None = None

    def weight(self, sde: SDE, t: Tensor) -> Tensor:
        """``w(t)`` of the chosen weighting."""
        return WEIGHTINGS.get(self.weighting)(sde, t, self.sigma_data)

    def sample_t(self, sde: SDE, n: int, generator: torch.Generator | None = None,
                 u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` times (float64) and their loss weights; from the uniforms ``u`` in ``(0, 1)``
        when given (one per example, :mod:`scoregen.training.batches`), else drawn from
        ``generator`` on the CPU."""
        if self.t_sampling == "lognormal":
            z = (torch.randn(n, generator=generator, dtype=torch.float64) if u is None
                 else torch.special.ndtri(u.to(torch.float64)))
            t = sde.t_from_log_snr(-(self.p_mean + self.p_std * z)).clamp(sde.t_min, sde.T)
            return t, self.weight(sde, t)
        if u is None:
            u = torch.rand(n, generator=generator, dtype=torch.float64)
        u = u.to(torch.float64).cpu()
        if self.t_sampling == "uniform":
            t = sde.t_min + (sde.T - sde.t_min) * u
            return t, self.weight(sde, t)
        knots, cdf, dens = self._importance_table(sde)
        k = torch.searchsorted(cdf, u, right=True).clamp(1, len(knots) - 1)
        frac = (u - cdf[k - 1]) / (cdf[k] - cdf[k - 1]).clamp_min(1e-300)
        t = knots[k - 1] + frac * (knots[k] - knots[k - 1])
        return t, self.weight(sde, t) / dens[k - 1]

    def _importance_table(self, sde: SDE) -> tuple[Tensor, Tensor, Tensor]:
        """Knots (uniform in log-SNR), CDF of ``q ∝ w`` and ``Z q`` per interval."""
        if self._table is not None and self._table[0] == sde:
            return self._table[1:]
        ends = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
        lam = sde.log_snr(ends)
        lam_grid = torch.linspace(float(lam[0]), float(lam[1]), 2049, dtype=torch.float64)
        knots = sde.t_from_log_snr(lam_grid).flip(0)
        knots[0], knots[-1] = sde.t_min, sde.T
        knots = torch.unique(knots)  # sorted, strictly increasing
        mid = 0.5 * (knots[1:] + knots[:-1])
        mass = self.weight(sde, mid) * (knots[1:] - knots[:-1])  # midpoint rule per interval
        total = mass.sum()
        cdf = torch.cat([mass.new_zeros(1), torch.cumsum(mass, 0) / total])
        z = total / (sde.T - sde.t_min)  # mean weight under U(t_min, T)
        dens = z * (mass / total) / (knots[1:] - knots[:-1])  # Z q(t) per interval
        self._table = (sde, knots, cdf, dens)
        return knots, cdf, dens

    def __call__(self, model: Model, x0: Tensor, generator: torch.Generator | None = None,
                 cond: Tensor | None = None, *, u: Tensor | None = None,
                 eps: Tensor | None = None) -> Tensor:
        t, w = self.sample_t(model.sde, x0.shape[0], generator, u)
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        t = t.to(device=x0.device, dtype=x0.dtype)
        err = eps_error(model, x0, t, eps, cond)
        return (w.to(device=x0.device, dtype=x0.dtype) * err).mean()


@dataclass
class DDPMLoss:
    """Ho et al. 2020, Algorithm 1: ``i ~ U{1..N}``, ``t = i/N``, eps-MSE (ddpm SDE only)."""

    def __call__(self, model: Model, x0: Tensor, generator: torch.Generator | None = None,
                 cond: Tensor | None = None, *, u: Tensor | None = None,
                 eps: Tensor | None = None) -> Tensor:
        n = getattr(model.sde, "n", None)
        if model.sde.name != "ddpm" or n is None:
            raise ValueError(f"the discrete DDPM loss needs the 'ddpm' SDE, got {model.sde!r}; "
                             "use loss.kind: dsm for continuous SDEs")
        if u is None:
            i = torch.randint(1, n + 1, (x0.shape[0],), generator=generator)
        else:  # i = 1 + floor(n u): uniform on 1..n for u uniform in (0, 1)
            i = (1 + (u.to(torch.float64).cpu() * n).floor().to(torch.int64)).clamp(1, n)
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        t = (i.to(torch.float64) / n).to(device=x0.device, dtype=x0.dtype)
        return eps_error(model, x0, t, eps, cond).mean()


LossFn = Callable[..., Tensor]  # (model, x0, generator=None, cond=None, *, u=, eps=)
LOSS_KINDS = ("auto", "dsm", "ddpm")


def loss_for(sde: SDE, kind: str = "auto", weighting: str = "sigma2",
             t_sampling: str = "uniform", sigma_data: float = 0.5, **edm: float) -> LossFn:
    """The loss for ``sde``: ``auto`` is the discrete DDPM loss on the ``ddpm`` SDE and
    DSM otherwise; ``dsm`` / ``ddpm`` force one."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; known: {', '.join(LOSS_KINDS)}")
    if kind == "ddpm" or (kind == "auto" and sde.name == "ddpm" and weighting == "sigma2"
                          and t_sampling == "uniform"):
        return DDPMLoss()
    return DSMLoss(weighting, t_sampling, sigma_data, **edm)


def irreducible_gaussian(alpha: Tensor, sigma: Tensor, var: float) -> Tensor:
    """Per-dimension ``E (eps - E[eps | x_t])^2`` for data ``N(mu, var I)``.

    ``x_t = alpha x0 + sigma eps`` is jointly Gaussian with ``eps``; ``Cov(eps, x_t) = sigma``,
    ``Var(x_t) = alpha^2 var + sigma^2``, so ``Var(eps | x_t) = 1 - sigma^2 / (alpha^2 var +
    sigma^2) = alpha^2 var / (alpha^2 var + sigma^2)``: the floor of the eps-MSE at ``t``.
    """
    return alpha**2 * var / (alpha**2 * var + sigma**2)


__all__ = [
    "LOSS_KINDS",
    "T_SAMPLINGS",
    "WEIGHTINGS",
    "DDPMLoss",
    "DSMLoss",
    "eps_error",
    "irreducible_gaussian",
    "loss_for",
]
