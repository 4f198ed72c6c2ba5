"""Denoising score matching in continuous time, in eps form, with weightings and time samplings.

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
  sigma_data^2`` (``sigma_data``: the model's).

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

Offset noise (``offset_noise = c > 0``; Guttenberg 2023, "Diffusion with Offset Noise"): the
noise of each example becomes ``eps' = eps + c z`` with ``z ~ N(0, 1)`` drawn once per channel
and constant over the other axes (shape ``(C, 1, ..., 1)`` for images ``(C, H, W)``, one value
for vectors), ``x_t = alpha x0 + sigma eps'`` and the model learns ``eps'``. Independent
per-pixel noise barely moves an image's mean, whose SNR is ``H W`` times the per-pixel SNR, so a
model never learns to change the mean brightness it starts from; the shared offset trains
exactly that low frequency. It changes the model's target (``eps'`` has variance ``1 + c^2`` and
is correlated within a channel), which the samplers, written for ``eps ~ N(0, I)``, do not know
of: a heuristic with a price, measured in ``docs/results.md``. The draw is the example's own
(draw 2 of its key), so runs stay reproducible at any number of processes.

Dequantization (``dequantize = d > 0``): each example's data become ``x0 + d (u - 1/2)`` with
``u ~ U(0, 1)`` per value (draw 3 of its key), the uniform dequantization of data on a grid of
spacing ``d`` (Theis et al. 2016; Song et al. 2021b, sec. 5), so the model learns the
density of dequantized data that the bound and the ODE likelihood score (``2/16`` for the 17
grey levels of digits, ``2/255`` for 8-bit images).

Processes without the scalar kernel (e.g. blurring diffusion) train with ``sigma2`` and
``uniform`` (the eps error needs only the kernel's operations); the other choices are written in
``alpha``, ``sigma`` and log-SNR and are refused there, naming the capability.

The loss is a mean over batch and dimensions, so an eps-MSE of 1 means "predicts 0". Class
labels of the batch reach the model (``model(x_t, t, cond=labels)``); the trainer replaces a
fraction of them by the null label (``train.label_dropout``), which trains the conditional and
the unconditional model of classifier-free guidance in one network (Ho & Salimans 2022,
Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoregen.infra.registry import Registry
from scoregen.models.prediction import Model
from scoregen.sampling.noise import NoiseSource
from scoregen.sde.base import SCALAR_KERNEL, SDE
from scoregen.training.batches import Batch
from scoregen.training.objectives.base import Objective, eps_error, register

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


@register("dsm")
class DSM(Objective):
    """Continuous-time denoising score matching with a weighting and a time sampling.

    Each example's ``t`` comes from its own uniform ``u`` (:mod:`scoregen.training.batches`)
    through the chosen time sampling, its noise is the batch's ``eps``.
    """

    requires = frozenset()

    def __init__(self, sde: SDE, *, weighting: str = "sigma2", t_sampling: str = "uniform",
                 p_mean: float = -1.2, p_std: float = 1.2, offset_noise: float = 0.0,
                 dequantize: float = 0.0) -> None:
        super().__init__(sde)
        if SCALAR_KERNEL not in sde.capabilities and (weighting, t_sampling) != (
                "sigma2", "uniform"):
            raise ValueError(f"dsm with weighting={weighting!r}, t_sampling={t_sampling!r} is "
                             f"written in alpha, sigma and log-SNR (scalar_kernel), which the SDE "
                             f"{sde.name!r} does not offer; use weighting: sigma2, t_sampling: "
                             "uniform")
        if not dequantize >= 0:
            raise ValueError(f"dequantize must be >= 0 (0: off; the data's grid spacing, e.g. "
                             f"2/16 for digits), got {dequantize!r}")
        self.dequantize = float(dequantize)
        if not offset_noise >= 0:
            raise ValueError(f"offset_noise must be >= 0 (0: off; 0.1 is Guttenberg's), got "
                             f"{offset_noise!r}")
        self.offset_noise = float(offset_noise)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS.list())}, got "
                             f"{weighting!r}")
        if t_sampling not in T_SAMPLINGS:
            raise ValueError(f"t_sampling must be one of {', '.join(T_SAMPLINGS)}, got "
                             f"{t_sampling!r}")
        if not p_std > 0:
            raise ValueError(f"p_std must be > 0, got {p_std!r}")
        self.weighting, self.t_sampling = weighting, t_sampling
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self._table: tuple[float, Tensor, Tensor, Tensor] | None = None

    def weight(self, t: Tensor, sigma_data: float = 0.5) -> Tensor:
        """``w(t)`` of the chosen weighting."""
        return WEIGHTINGS.get(self.weighting)(self.sde, t, sigma_data)

    def sample_t(self, n: int, generator: torch.Generator | None = None,
                 u: Tensor | None = None, sigma_data: float = 0.5) -> tuple[Tensor, Tensor]:
        """``n`` times (float64) and their loss weights; from the uniforms ``u`` in ``(0, 1)``
        when given (one per example, :mod:`scoregen.training.batches`), else drawn from
        ``generator`` on the CPU."""
        sde = self.sde
        if self.t_sampling == "lognormal":
            z = (torch.randn(n, generator=generator, dtype=torch.float64) if u is None
                 else torch.special.ndtri(u.to(torch.float64)))
            t = sde.t_from_log_snr(-(self.p_mean + self.p_std * z)).clamp(sde.t_min, sde.T)
            return t, self.weight(t, sigma_data)
        if u is None:
            u = torch.rand(n, generator=generator, dtype=torch.float64)
        u = u.to(torch.float64).cpu()
        if self.t_sampling == "uniform":
            t = sde.t_min + (sde.T - sde.t_min) * u
            return t, self.weight(t, sigma_data)
        knots, cdf, dens = self._importance_table(sigma_data)
        k = torch.searchsorted(cdf, u, right=True).clamp(1, len(knots) - 1)
        frac = (u - cdf[k - 1]) / (cdf[k] - cdf[k - 1]).clamp_min(1e-300)
        t = knots[k - 1] + frac * (knots[k] - knots[k - 1])
        return t, self.weight(t, sigma_data) / dens[k - 1]

    def _importance_table(self, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
        """Knots (uniform in log-SNR), CDF of ``q ∝ w`` and ``Z q`` per interval."""
        if self._table is not None and self._table[0] == sigma_data:
            return self._table[1:]
        sde = self.sde
        ends = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
        lam = sde.log_snr(ends)
        lam_grid = torch.linspace(float(lam[0]), float(lam[1]), 2049, dtype=torch.float64)
        knots = sde.t_from_log_snr(lam_grid).flip(0)
        knots[0], knots[-1] = sde.t_min, sde.T
        knots = torch.unique(knots)  # sorted, strictly increasing
        mid = 0.5 * (knots[1:] + knots[:-1])
        mass = self.weight(mid, sigma_data) * (knots[1:] - knots[:-1])  # midpoint rule per interval
        total = mass.sum()
        cdf = torch.cat([mass.new_zeros(1), torch.cumsum(mass, 0) / total])
        z = total / (sde.T - sde.t_min)  # mean weight under U(t_min, T)
        dens = z * (mass / total) / (knots[1:] - knots[:-1])  # Z q(t) per interval
        self._table = (sigma_data, knots, cdf, dens)
        return knots, cdf, dens

    def loss(self, model: Model, batch: Batch) -> Tensor:
        x0 = batch.x0
        sigma_data = getattr(model, "sigma_data", 0.5)
        t, w = self.sample_t(len(x0), u=batch.u, sigma_data=sigma_data)
        t = t.to(device=x0.device, dtype=x0.dtype)
        if self.dequantize > 0:
            z = NoiseSource(batch.keys, tuple(x0.shape[1:]), x0.dtype, x0.device).draw(3)
            x0 = x0 + self.dequantize * (torch.special.ndtr(z) - 0.5)
        err = eps_error(model, x0, t, self.noise(batch), batch.cond)
        return (w.to(device=x0.device, dtype=x0.dtype) * err).mean()

    def noise(self, batch: Batch) -> Tensor:
        """The batch's ``eps``, plus the per-channel offset ``c z`` when ``offset_noise = c``."""
        eps = batch.eps
        if self.offset_noise == 0:
            return eps
        shape = (eps.shape[1],) + (1,) * (eps.ndim - 2) if eps.ndim > 2 else (1,)
        z = NoiseSource(batch.keys, shape, eps.dtype, eps.device).draw(2)
        return eps + self.offset_noise * z


def irreducible_gaussian(alpha: Tensor, sigma: Tensor, var: float) -> Tensor:
    """Per-dimension ``E (eps - E[eps | x_t])^2`` for data ``N(mu, var I)``.

    ``x_t = alpha x0 + sigma eps`` is jointly Gaussian with ``eps``; ``Cov(eps, x_t) = sigma``,
    ``Var(x_t) = alpha^2 var + sigma^2``, so ``Var(eps | x_t) = 1 - sigma^2 / (alpha^2 var +
    sigma^2) = alpha^2 var / (alpha^2 var + sigma^2)``: the floor of the eps-MSE at ``t``.
    """
    return alpha**2 * var / (alpha**2 * var + sigma**2)


__all__ = ["DSM", "T_SAMPLINGS", "WEIGHTINGS", "irreducible_gaussian"]
