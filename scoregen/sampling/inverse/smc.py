"""The particle method: sequential Monte Carlo on the sampler's Gaussian kernel, exact as the
number of particles grows.

Work in the spectral coordinates ``c = V^T x`` of the operator
(:mod:`~scoregen.sampling.inverse.operators`), where the measurement reads ``y_bar_i = c_i +
c_noise_i n_i`` on the observed coordinates (``c_noise_i = sigma_y / s_i``). Each sample runs
``K`` particles through the sampler's transition from ``t`` to ``s < t``, a Gaussian given the
particle's state,

    p(x_s | x_t) = N(m_t, v I)

(``ancestral``: the DDPM posterior; ``ddim`` with ``eta > 0``: ``m_t = alpha_s x0_hat +
sqrt(sigma_s^2 - v) eps_hat``, ``v = (eta std_post)^2``; ``dpm_solver++_sde``: the second-order
multistep mean of SDE-DPM-Solver++(2M), Lu et al. 2022b, with the particle's previous
``x0_hat`` as its history). A proposal ``q`` and twisting functions ``h_t`` with ``h_0`` the
likelihood give the incremental weight

    w = p(x_s | x_t) h_s(x_s) / (q(x_s | x_t) h_t(x_t)),

so the weights telescope and the particles target ``p(x_0) N(y_bar; c_0, c_noise^2)`` under the
sampler's own path law: the posterior, up to the sampler's discretisation error, as ``K ->
infinity``. Two choices (``twist``):

- ``"tds"`` (default; Wu, Trippe, Naesseth, Blei & Cunningham 2023, "Practical and asymptotically
  exact conditional sampling in diffusion models", Algorithm 1): ``h_t(x) = prod_i N(y_bar_i;
  c0_i(x), sigma_t^2 / alpha_t^2 + c_noise_i^2)`` with ``c0 = V^T x0_hat(x)``, the measurement
  given the model's prediction; ``q = N(m_t + v grad log h_t(x_t), v I)`` (one vector-Jacobian
  product); particles start from the prior with weights ``h_T``. ``h_s(x_s)`` needs
  ``x0_hat(x_s)``, so each weight is completed by the next evaluation.
- ``"flat"`` (MCGdiff: Cardoso, Janati, Le Corff & Moulines 2024, "Monte Carlo guided diffusion
  for Bayesian linear inverse problems", Algorithm 1): ``h_t(x) = prod_i N(alpha_t y_bar_i;
  c_i, sigma_t^2 + alpha_t^2 c_noise_i^2)``, the likelihood of ``alpha_t y_bar`` (a forward draw
  of the observed coordinates) under a flat prior; ``q ∝ p h_s`` is Gaussian, so the observed
  coordinates move by the exact product (precision ``1/v + 1/tau_s^2``) and ``w`` is its
  normaliser over ``h_t(x_t)``; no gradient. Particles start from the prior times ``h_T``.

Particles are resampled (systematic) whenever the effective sample size falls below ``ess *
K``. The last interval is the denoising step ``x_0 = x0_hat(x_t)``, weighted by the exact
likelihood ``N(y_bar; c0, c_noise^2)`` over ``h_t``; noiseless coordinates are set to ``y_bar``
(their likelihood is a point mass), weighted by ``N(y_bar; c0, sigma_t^2 / alpha_t^2)``, the
spread of ``x_0`` given ``x_t`` at the last time (with the TDS twist this weight is exactly 1).
One particle per sample is drawn from the final weights.

NFE: every particle's evaluation counts, ``K`` per step. The weights also estimate the
evidence, ``log p(y) ~ sum_steps log sum_k W_k w_k - sum_i log s_i`` (``info["log_evidence"]``;
with ``sigma_y = 0`` the density of ``y`` under the measurement).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.models.prediction import Model, Prediction
from scoregen.samplers._exp import exp_step, grid_nodes, sde_noise_std
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.inverse.base import Measurement
from scoregen.sampling.inverse.operators import Mask
from scoregen.sampling.noise import NoiseSource
from scoregen.sde.base import SDE

KERNELS = ("ancestral", "ddim", "dpm_solver++_sde")
TWISTS = ("tds", "flat")
_SALT = 0x5A1E_C7ED  # the resampling stream differs from the particles'
_PARTICLE_STRIDE = 1_000_003  # particle j of the sample with seed k has seed k * stride + j


def _log_normal(a: Tensor, b: Tensor, var: Tensor | float) -> Tensor:
    var = torch.as_tensor(var, dtype=a.dtype, device=a.device)
    return -0.5 * ((a - b) ** 2 / var + torch.log(2 * math.pi * var))


class Kernel:
    """The sampler's Gaussian transition ``N(mean, std^2 I)`` from grid time ``i`` to ``i + 1``
    (module docstring); ``history`` is the particles' previous ``x0_hat`` (multistep)."""

    def __init__(self, sampler: str, sde: SDE, ts: Tensor, opts: dict[str, Any]) -> None:
        if sampler not in KERNELS:
            raise ValueError(f"the particle method runs on a Gaussian kernel: sampler "
                             f"{', '.join(KERNELS)}; got {sampler}")
        self.sampler, self.sde = sampler, sde
        eta = {"ancestral": 1.0, "ddim": 0.0, "dpm_solver++_sde": 1.0}[sampler]
        self.eta = float(opts.get("eta", eta))
        if not self.eta > 0:
            raise ValueError(f"the particle method needs a stochastic kernel: {sampler} with "
                             "eta > 0")
        if sampler == "ancestral" and opts.get("variance", "posterior") != "posterior":
            raise ValueError("the particle method uses the ancestral posterior variance")
        if sampler == "dpm_solver++_sde" and opts.get("order", 2) != 2:
            raise ValueError("the particle method runs dpm_solver++_sde at order 2")
        self.nodes = grid_nodes(sde, ts)
        self.history: Tensor | None = None

    def __call__(self, i: int, x: Tensor, x0: Tensor, eps: Tensor) -> tuple[Tensor, float]:
        t, s = self.nodes[i], self.nodes[i + 1]
        if self.sampler == "dpm_solver++_sde":
            prev, self.history = self.history, x0
            h = s.lam - t.lam
            preds, rs = ([x0], [0.0]) if prev is None else (
                [x0, prev], [0.0, (self.nodes[i - 1].lam - t.lam) / h])
            mean = exp_step(x, t, s, preds, rs, midpoint=True, eta=self.eta)
            return mean, sde_noise_std(t, s, self.eta)
        std = self.eta * float(self.sde.posterior(t.t, s.t)[2])
        return s.alpha * x0 + math.sqrt(max(s.sigma**2 - std**2, 0.0)) * eps, std

    def reorder(self, index: Tensor) -> None:
        if self.history is not None:
            self.history = self.history[index]


def _repeat(meas: Measurement, k: int) -> Measurement:
    """The measurement of ``K`` particles per sample (sample-major)."""
    op = meas.operator
    if isinstance(op, Mask) and op.per_sample:
        op = Mask(op.mask.repeat_interleave(k, 0), op.shape, op.name)
    return Measurement(op, meas.y.repeat_interleave(k, 0), meas.sigma_y)


def _systematic(log_w: Tensor, u: Tensor) -> Tensor:
    """Systematic resampling of each row of normalised ``log_w: (B, K)``, uniforms ``u: (B,)``."""
    K = log_w.shape[1]
    cdf = torch.exp(log_w).cumsum(1)
    cdf[:, -1] = 1.0
    points = (u[:, None] + torch.arange(K, dtype=cdf.dtype, device=cdf.device)) / K
    return torch.searchsorted(cdf, points.contiguous()).clamp_max(K - 1)


def smc(model: Model, sde: SDE, meas: Measurement, ts: Tensor, *, particles: int,
        seeds: Tensor, sampler: str = "ancestral", sampler_opts: dict[str, Any] | None = None,
        ess: float = 0.5, twist: str = "tds", dtype: torch.dtype = torch.float32,
        progress: bool = False) -> tuple[Tensor, int, dict[str, Any]]:
    """``(x (B, *shape), NFE, info)``: one posterior sample per measurement in ``meas``.

    ``ts``: the descending grid ending in ``0``; ``sampler``: the kernel (:data:`KERNELS`) and
    ``sampler_opts`` its options; ``seeds``: one per sample. ``info``: ``ess`` (mean effective
    sample size after each step's weights), ``resampled`` (resampling events per sample),
    ``log_evidence`` ``(B,)``.
    """
    K, B = int(particles), meas.batch
    if K < 1:
        raise ValueError(f"particles must be an integer >= 1, got {particles}")
    if not 0 <= ess <= 1:
        raise ValueError(f"ess (the resampling threshold) must lie in [0, 1], got {ess}")
    if twist not in TWISTS:
        raise ValueError(f"twist must be one of {', '.join(TWISTS)}, got {twist!r}")
    if float(ts[-1]) != 0.0 or len(ts) < 2:
        raise ValueError("the particle method needs a grid that ends with the denoising step 0")
    kernel = Kernel(sampler, sde, ts[:-1], sampler_opts or {})
    rep = _repeat(meas, K)
    svd, y_bar, c_noise = rep.spectral()
    device, shape = meas.y.device, meas.operator.shape
    y_bar, c_noise = y_bar.to(dtype), c_noise.to(dtype)
    obs = svd.observed(y_bar)
    noiseless = obs & (c_noise == 0)
    pseeds = (seeds[:, None] * _PARTICLE_STRIDE + torch.arange(K)).reshape(-1)
    noise = NoiseSource(pseeds.to(device), shape, dtype=dtype, device=device)
    uniforms = NoiseSource(seeds.to(device) ^ _SALT, (1,), dtype=torch.float64, device=device)
    denoiser = Denoiser(model, sde)
    denoiser.precompute(ts)
    nodes = kernel.nodes

    def total(lp: Tensor) -> Tensor:  # sum over observed coordinates -> (B, K) float64
        return torch.where(obs, lp, torch.zeros_like(lp)).sum(1).reshape(B, K).double()

    def log_f(c: Tensor, i: int) -> Tensor:  # the proposal's potential at grid time i
        a, s = nodes[i].alpha, nodes[i].sigma
        return total(_log_normal(c, a * y_bar, s**2 + a**2 * c_noise**2))

    def log_h(c0: Tensor, i: int) -> Tensor:  # the TDS twisting function
        return total(_log_normal(y_bar, c0, nodes[i].sigma_edm ** 2 + c_noise**2))

    def evaluate(x: Tensor, i: int) -> tuple[Prediction, Tensor | None]:
        """The pair at ``x`` and, for TDS, ``grad_x log h_i(x)`` (one vector-Jacobian product)."""
        if twist == "flat":
            return denoiser(x, ts[i]), None
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            pair = denoiser(xg, ts[i])
            c0 = svd.vt(pair.x0.detach())
            w = torch.where(obs, (y_bar - c0) / (nodes[i].sigma_edm ** 2 + c_noise**2),
                            torch.zeros_like(c0))
            (g,) = torch.autograd.grad(pair.x0, xg, grad_outputs=svd.v(w).to(pair.x0))
        return Prediction(pair.x0.detach(), pair.eps.detach()), g

    a, s = nodes[0].alpha, nodes[0].sigma
    z = svd.vt(noise())
    if twist == "flat":  # x_T from the prior N(0, sigma_T^2 I) times f_T (normaliser Z_0)
        tau2 = s**2 + a**2 * c_noise**2
        prec = 1 / s**2 + 1 / tau2
        c = torch.where(obs, a * y_bar / tau2 / prec + z / prec.sqrt(), s * z)
        log_evidence = total(_log_normal(a * y_bar, torch.zeros_like(y_bar), s**2 + tau2))[:, 0]
    else:  # x_T from the prior
        c = s * z
        log_evidence = torch.zeros(B, dtype=torch.float64, device=device)
    x = svd.v(c)
    log_w = torch.full((B, K), -math.log(K), dtype=torch.float64, device=device)
    pending = torch.zeros_like(log_w)  # the move in flight: all but h_s(x_s) (flat: / f_s)
    ess_trace: list[float] = []
    resampled = torch.zeros(B, dtype=torch.int64, device=device)
    for i in tqdm(range(len(ts) - 1), desc=f"smc K={K}", disable=not progress, leave=False):
        pair, grad = evaluate(x, i)
        c_t, c0 = svd.vt(x), svd.vt(pair.x0)
        here = log_f(c_t, i) if twist == "flat" else log_h(c0, i)
        log_w = log_w + pending + (0.0 if twist == "flat" else here)
        norm = torch.logsumexp(log_w, dim=1)
        log_evidence = log_evidence + norm
        log_w = log_w - norm[:, None]
        eff = 1.0 / torch.exp(2 * log_w).sum(1)
        ess_trace.append(float(eff.mean()))
        u = torch.special.ndtr(uniforms()[:, 0])
        redo = eff < ess * K
        if bool(redo.any()):
            keep = torch.arange(K, device=device).expand(B, K)
            idx = torch.where(redo[:, None], _systematic(log_w, u), keep)
            flat = (idx + K * torch.arange(B, device=device)[:, None]).reshape(-1)
            x, c_t, c0, here = x[flat], c_t[flat], c0[flat], here.reshape(-1)[flat].reshape(B, K)
            pair = Prediction(pair.x0[flat], pair.eps[flat])
            grad = None if grad is None else grad[flat]
            kernel.reorder(flat)
            log_w = torch.where(redo[:, None], torch.full_like(log_w, -math.log(K)), log_w)
            resampled += redo.long()
        if float(ts[i + 1]) > 0:
            mean, std = kernel(i, x, pair.x0, pair.eps)
            z = noise()
            if twist == "flat":  # MCGdiff: the exact product with f_s, weight Z / f_t
                m = svd.vt(mean)
                nxt = nodes[i + 1]
                tau2 = nxt.sigma**2 + nxt.alpha**2 * c_noise**2
                pending = total(_log_normal(nxt.alpha * y_bar, m, std**2 + tau2)) - here
                prec = 1 / std**2 + 1 / tau2
                mean_q = (m / std**2 + nxt.alpha * y_bar / tau2) / prec
                zs = svd.vt(z)
                x = svd.v(torch.where(obs, mean_q + zs / prec.sqrt(), m + std * zs))
            else:  # TDS: the kernel's mean moved by std^2 grad log h_t; weight p / q / h_t
                x = mean + std**2 * grad + std * z
                pending = (-(grad * (x - mean)).flatten(1).sum(1)
                           + 0.5 * std**2 * grad.flatten(1).pow(2).sum(1)).reshape(B, K).double()
                pending = pending - here
        else:  # the denoising step: exact likelihood of the noisy coordinates over h_t
            spread = torch.where(noiseless, torch.full_like(c_noise, nodes[i].sigma_edm ** 2),
                                 c_noise**2)
            log_w = log_w + total(_log_normal(y_bar, c0, spread)) - here
            norm = torch.logsumexp(log_w, dim=1)
            log_evidence = log_evidence + norm
            log_w = log_w - norm[:, None]
            ess_trace.append(float((1.0 / torch.exp(2 * log_w).sum(1)).mean()))
            x = svd.v(torch.where(noiseless, y_bar, c0))
    u = torch.special.ndtr(uniforms()[:, 0])
    cdf = torch.exp(log_w).cumsum(1)
    cdf[:, -1] = 1.0
    pick = torch.searchsorted(cdf, u[:, None].contiguous()).clamp_max(K - 1)[:, 0]
    out = x.reshape(B, K, *shape)[torch.arange(B, device=device), pick]
    log_s = total(torch.log(svd.s.to(y_bar).expand_as(y_bar).clamp_min(1e-300)))[:, 0]
    info = {"particles": K, "twist": twist, "ess": ess_trace,
            "resampled": resampled.cpu().tolist(), "log_evidence": (log_evidence - log_s).cpu()}
    return out, denoiser.nfe * K, info


__all__ = ["KERNELS", "TWISTS", "Kernel", "smc"]
