"""The variational bound of the SDE model: a cheap upper bound on ``-log p_{t_min}(x)``.

The reverse SDE with score ``s_theta`` started from the prior ``pi`` defines a density
``p^SDE`` at ``t0 = t_min``. For a data point ``x`` (the observation at ``t0``) and the forward
transition ``x_t = a_t x + s_t eps`` from ``t0`` (``a_t = alpha_t / alpha_t0``,
``s_t^2 = sigma_t^2 - a_t^2 sigma_t0^2``; :meth:`scoregen.sde.base.SDE.transition`),
Song, Durkan, Murray & Ermon 2021 ("Maximum Likelihood Training of Score-Based Diffusion
Models", Theorem 3, the denoising form ``L^DSM`` of their bound) give::

    -log p^SDE(x) <= E[-log pi(x_T)]
                     + 1/2 int_t0^T E[ g^2 |s_theta - grad log q_t|^2 - g^2 |grad log q_t|^2
                                       - 2 div f ] dt,

with ``grad log q_t = -eps / s_t`` the score of the transition and ``div f = D f(t)``. The
bracket is ``g^2 (|s_theta|^2 - 2 s_theta . grad log q_t) - 2 D f``; written with the model's
``eps_hat = -sigma_t s_theta`` it needs one network evaluation per ``(t, eps)``. It is the
continuous-time VDM bound (Kingma et al. 2021, the diffusion loss ``L_diff = int dlambda
|eps - eps_hat|^2``) for a density at ``t0`` instead of a decoder: the first term is VDM's
diffusion loss, the others are the prior and the entropy of the transition in closed form.

**Importance-sampled time.** ``lambda = log(alpha/sigma)`` is drawn uniformly on
``[lambda_T, lambda_t0]``: the density ``q(t) = g^2 / (2 sigma_t^2 Lambda)`` (because
``d lambda / dt = -g^2 / (2 sigma^2)`` for every SDE here; ``Lambda = lambda_t0 -
lambda_T``) is the likelihood weighting itself (Song et al. 2021, sec. 5; Kingma et al.
2021: uniform in log-SNR), so the weight ``g^2 / q`` is the constant ``2 sigma^2
Lambda``. Per draw the estimate of the integral is::

    Lambda [ |eps_hat|^2 - 2 (sigma_t / s_t) eps_hat . eps - 2 D f sigma_t^2 / g^2 ].

The ``K`` times per example are stratified (``u_k = (k + U_k) / K``) and each ``eps`` is used
with ``-eps`` as well (antithetic pair): ``sigma_t / s_t`` grows without bound as ``t -> t0``,
and the pair cancels the part of ``eps_hat(x_t) . eps`` that is odd in ``eps``, which keeps the
variance finite there. Far from ``t0`` the estimate follows ``|eps|^2``; the control variate
``beta_t (|eps|^2 - D)`` (mean zero, so the estimate stays unbiased for every model) with
``beta_t = sigma_t^2 / C_t (2 - s_t^2 / C_t)``, ``C_t = alpha_t^2 sigma_data^2 + sigma_t^2``,
removes that part exactly for Gaussian data of std ``sigma_data`` (default 0.5).

The prior term is exact for the Gaussian prior ``N(0, p^2 I)``:
``E[-log pi(x_T)] = (a_T^2 |x|^2 + D s_T^2) / (2 p^2) + D/2 log(2 pi p^2)``.

With the exact score and ``pi = p_T`` the bound is tight for every ``x``: the model's path
measure is the forward one, so the conditional path laws given ``x`` agree. With a learned
score its average over the data exceeds the true NLL by ``J_SM + KL(p_T || pi)`` (Theorem 1
there). Units: nats per example. Cost: ``2 K`` network evaluations per example, no
divergence. Randomness is keyed to the example (``seeds``), as for
:func:`scoregen.evaluation.likelihood.log_likelihood`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from scoregen.infra.shape import bcast
from scoregen.models.prediction import Model
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sde.base import FINITE_TERMINAL_SNR, SDE

# draws of an example's NoiseSource used here (0 and 1..P belong to the likelihood's
# dequantization and probes): eps of time k is draw FIRST_DRAW + k
FIRST_DRAW = 1000
_TIME_DRAW = 999


class BoundResult(NamedTuple):
    """Result of :func:`variational_bound`.

    Attributes:
        nll: ``(B,)`` the bound on ``-log p_{t0}(x)`` in nats (per-example mean over the
            ``K`` draws).
        se: ``(B,)`` Monte-Carlo standard error of ``nll`` (from the ``K`` draws).
        prior: ``(B,)`` the exact prior term ``E[-log pi(x_T)]``.
        nfe: network evaluations on the batch (``2 K`` calls).
    """

    nll: Tensor
    se: Tensor
    prior: Tensor
    nfe: int


def variational_bound(
    model: Model,
    sde: SDE,
    x: Tensor,
    *,
    n_times: int = 16,
    t_min: float | None = None,
    seeds: Tensor | None = None,
    seed: int = 0,
    sigma_data: float = 0.5,
) -> BoundResult:
    """The bound on ``-log p_{t_min}(x)`` of the module docstring, in nats.

    Args:
        model: a :class:`scoregen.models.prediction.Model` for ``sde``.
        x: ``(B, *D)`` data (already dequantized for discrete data).
        n_times: ``K`` stratified log-SNR draws per example (each an antithetic pair).
        sigma_data: data std of the control variate (any value keeps the bound unbiased).
        t_min: the time of the density (default ``sde.t_min``).
        seeds: ``(B,)`` per-example seeds (default ``seed + arange(B)``).
    """
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (B, *D), got shape {tuple(x.shape)}")
    if not (isinstance(n_times, int) and n_times >= 2):
        raise ValueError(f"n_times must be an integer >= 2 (it gives the standard error), "
                         f"got {n_times!r}")
    t0 = sde.t_min if t_min is None else float(t_min)
    if not 0 < t0 < sde.T:
        raise ValueError(f"t_min must lie in (0, T={sde.T}), got {t0}")
    if FINITE_TERMINAL_SNR not in sde.capabilities:
        raise ValueError(f"the bound draws log-SNRs uniformly over [lambda(T), lambda(t_min)], "
                         f"an infinite range on {sde!r} (zero terminal SNR); evaluate sample "
                         "metrics instead")
    B, D = x.shape[0], x[0].numel()
    seeds = seeds_for(B, seed) if seeds is None else torch.as_tensor(seeds, dtype=torch.int64)
    noise = NoiseSource(seeds.to(x.device), tuple(x.shape[1:]), x.dtype, x.device)
    strata = NoiseSource(seeds.to(x.device), (n_times,), torch.float64, x.device)
    f64 = {"dtype": torch.float64, "device": x.device}
    ends = torch.tensor([t0, sde.T], **f64)
    lam0, lamT = sde.log_snr(ends).tolist()
    Lam = lam0 - lamT
    # stratified uniforms in (0, 1): u_k = (k + Phi(z_k)) / K
    phi = 0.5 * (1 + torch.erf(strata.draw(_TIME_DRAW) / math.sqrt(2.0)))
    u = (torch.arange(n_times, **f64) + phi.clamp(1e-12, 1 - 1e-12)) / n_times  # (B, K)
    t_all = sde.t_from_log_snr(lamT + u * Lam).clamp(t0, sde.T)  # (B, K)

    denoiser = Denoiser(model, sde)
    terms = []
    with torch.no_grad():
        for k in range(n_times):
            t = t_all[:, k]
            a, s = sde.transition(torch.full_like(t, t0), t)
            sigma, f, g2 = sde.sigma(t), sde.f(t), sde.g2(t)
            eps = noise.draw(FIRST_DRAW + k)
            xa = bcast(a.to(x.dtype), x) * x
            xs = bcast(s.to(x.dtype), x) * eps
            both = torch.cat([xa + xs, xa - xs])
            eps_hat = denoiser(both, torch.cat([t, t]).to(x.dtype)).eps.to(torch.float64)
            e_plus, e_minus = eps_hat[:B].flatten(1), eps_hat[B:].flatten(1)
            e = eps.to(torch.float64).flatten(1)
            sq = 0.5 * ((e_plus**2).sum(1) + (e_minus**2).sum(1))
            cross = 0.5 * ((e_plus - e_minus) * e).sum(1)  # the pair average of eps_hat . eps
            c = alpha2_var(sde, t, sigma_data) + sigma**2
            beta = sigma**2 / c * (2 - s**2 / c)  # control variate weight (docstring)
            control = beta * ((e**2).sum(1) - D)
            terms.append(Lam * (sq - 2 * (sigma / s) * cross + control
                                - 2 * D * f * sigma**2 / g2))
    est = torch.stack(terms, 1)  # (B, K)
    prior = _prior_term(sde, x, t0)
    nll = prior + est.mean(1)
    se = est.std(1) / math.sqrt(n_times)
    return BoundResult(nll.to(x.dtype), se.to(x.dtype), prior.to(x.dtype), denoiser.nfe)


def alpha2_var(sde: SDE, t: Tensor, sigma_data: float) -> Tensor:
    """``alpha_t^2 sigma_data^2``: the signal variance of data with std ``sigma_data``."""
    return sde.alpha(t) ** 2 * sigma_data**2


def _prior_term(sde: SDE, x: Tensor, t0: float) -> Tensor:
    """``E[-log N(x_T; 0, p^2 I)]`` for ``x_T = a_T x + s_T eps``, in closed form: ``(B,)``."""
    t0_, T = (torch.tensor(v, dtype=torch.float64, device=x.device) for v in (t0, sde.T))
    a_T, s_T = sde.transition(t0_, T)
    p2 = sde.prior_std() ** 2
    D = x[0].numel()
    sq = (x.to(torch.float64) ** 2).flatten(1).sum(1)
    return (a_T**2 * sq + D * s_T**2) / (2 * p2) + 0.5 * D * math.log(2 * math.pi * p2)


__all__ = ["BoundResult", "variational_bound"]
