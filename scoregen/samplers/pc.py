"""Predictor–corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", Algorithms 2-5).

Each step from ``t`` to ``s < t`` is one *predictor* step, then ``n_corrector`` Langevin
*corrector* steps at ``s``, all on the EDM scale ``x~ = x / alpha``, ``sigma~ = sigma / alpha``
with ``D = x0_hat`` and ``r = sigma~_s / sigma~_t`` (so no coefficient grows like
``sigma'(t) / sigma(t)``, see :mod:`~scoregen.samplers.euler_maruyama`):

- predictor ``"euler_maruyama"`` (default): Euler–Maruyama in SNR time,
  :func:`~scoregen.samplers.euler_maruyama.snr_step`, i.e. the posterior step
  ``x~_s = r^2 x~_t + (1 - r^2) D + sigma~_s sqrt(1 - r^2) z``;
- predictor ``"reverse_diffusion"`` (their eq. 46, Euler–Maruyama in ``tau = sigma~^2``;
  exactly their VE form)::

      x~_s = x~_t + (tau_t - tau_s) score~ + sqrt(tau_t - tau_s) z
           = r^2 x~_t + (1 - r^2) D + sigma~_t sqrt(1 - r^2) z.

  Its noise has the *current* level ``sigma~_t``, ``1 / r`` times the posterior's: on a
  grid with a step ratio ``r < MIN_RATIO_REVERSE_DIFFUSION = 0.5`` the excess noise is more
  than a corrector can remove, and the sampler refuses the grid (naming the default);
- corrector: annealed Langevin dynamics at ``s`` with signal-to-noise ratio ``snr``
  (their Algorithms 4-5), with ``score~ = (D - x~) / sigma~_s^2``::

      z ~ N(0, I),  e = 2 (snr ||z|| / ||score~||)^2,   x~ <- x~ + e score~ + sqrt(2 e) z.

  ``step_size="sample"`` uses each sample's own norms, as the algorithms are written. That
  step explodes where a sample's score is near zero (close to a mode, common in low
  dimension), and the reference code averages the norms over the batch instead, which ties
  a sample to its batch. The default ``step_size="noise_level"`` replaces the norms by their
  expectations, ``||z||^2 = d`` and ``||score~||^2 <= d / sigma~_s^2`` (the Fisher
  information of data convolved with ``N(0, sigma~_s^2 I)``), giving ``e = 2 snr^2
  sigma~_s^2``: the annealed Langevin step of Song & Ermon 2019 (``alpha_i proportional to
  sigma_i^2``), per sample, and a contraction ``x~ <- (1 - 2 snr^2) x~ + 2 snr^2 D + 2 snr
  sigma~_s z`` for every grid.

A process without the scalar kernel (an augmented state, per-frequency scales) has no EDM
scale; there the predictor is Euler–Maruyama in ``t``
(:func:`~scoregen.samplers.euler_maruyama.euler_maruyama_step`) and the corrector is the same
step written with the kernel's noise operator ``L_s`` (``Sigma_s = L_s L_s^T``, the kernel's
covariance) as preconditioner, Langevin dynamics ``dx = Sigma_s grad log p dt + sqrt(2 Sigma_s)
dw`` (invariant for any fixed positive-definite preconditioner) with step ``e = 2 snr^2``::

    x <- x + e Sigma_s score + sqrt(2 e) L_s z = x + L_s (2 snr z - 2 snr^2 eps_hat),

because ``Sigma_s score = -L_s eps_hat``; for the scalar kernel (``L_s = sigma_s``) it is the
``"noise_level"`` step above. Only the defaults (``predictor="euler_maruyama"``,
``step_size="noise_level"``) apply there.

A final grid time of ``0`` is the denoising step (``x0_hat`` at ``t_min``, no corrector).
NFE: ``1 + n_corrector`` per step, ``1`` for the final denoising step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.samplers.euler_maruyama import euler_maruyama_step, snr_coefficients, snr_step
from scoregen.samplers.registry import CapabilityError, register
from scoregen.sde.base import SCALAR_KERNEL

PREDICTORS = ("euler_maruyama", "reverse_diffusion")
STEP_SIZES = ("noise_level", "sample")
MIN_RATIO_REVERSE_DIFFUSION = 0.5


def reverse_diffusion_step(denoiser, x: Tensor, t: Tensor, coef: tuple[float, float, float],
                           noise) -> Tensor:
    """Reverse-diffusion predictor (Song et al. 2021, eq. 46) with precomputed ``coef = (c_x,
    c_0, std)`` of :func:`_reverse_diffusion_coefficients`."""
    c_x, c_0, std = coef
    return c_x * x + c_0 * denoiser(x, t).x0 + std * noise()


def _reverse_diffusion_coefficients(sde, ts: Tensor) -> list[tuple[float, float, float]]:
    """The posterior step's ``(c_x, c_0)`` with the noise of the current level (docstring)."""
    c_x, c_0, std = snr_coefficients(sde, ts)
    t, s = ts[:-1].double().cpu(), ts[1:].double().cpu().clamp_min(sde.t_min)
    lift = (sde.log_snr(s) - sde.log_snr(t)).exp() * (ts[1:] > 0)  # 1 / r on positive steps
    return list(zip(c_x, c_0, (torch.tensor(std, dtype=torch.float64) * lift).tolist(),
                    strict=True))


def langevin_step(denoiser, x: Tensor, s: Tensor, alpha: float, sigma_edm: float, snr: float,
                  step_size: str, noise) -> Tensor:
    """One Langevin corrector step at time ``s`` on the EDM scale (module docstring)."""
    x0_hat = denoiser(x, s).x0
    x_tilde = x / alpha
    score = (x0_hat - x_tilde) / sigma_edm**2
    z = noise()
    if step_size == "sample":
        ratio = torch.linalg.vector_norm(z.flatten(1), dim=1) / torch.linalg.vector_norm(
            score.flatten(1), dim=1
        ).clamp_min(torch.finfo(x.dtype).tiny)
        step = 2 * (snr * ratio) ** 2
        step = step.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return alpha * (x_tilde + step * score + (2 * step).sqrt() * z)
    step = 2 * (snr * sigma_edm) ** 2
    return alpha * (x_tilde + step * score + math.sqrt(2 * step) * z)


def preconditioned_langevin_step(denoiser, sde, x: Tensor, s: Tensor, snr: float,
                                 noise) -> Tensor:
    """One corrector step at ``s`` preconditioned by the kernel's covariance (module
    docstring): ``x + L_s (2 snr z - 2 snr^2 eps_hat)``."""
    eps_hat = denoiser(x, s).eps
    return x + sde.scale_noise(2 * snr * noise() - 2 * snr**2 * eps_hat, s)


def _generic(denoiser, sde, x: Tensor, ts: Tensor, noise, callback, n_corrector: int,
             snr: float) -> Tensor:
    """PC on a process without the scalar kernel (module docstring)."""
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        if s == 0:
            x = denoiser(x, t).x0
        else:
            x = euler_maruyama_step(denoiser, sde, x, t, s, noise)
            for _ in range(n_corrector):
                x = preconditioned_langevin_step(denoiser, sde, x, s, snr, noise)
        callback(i, s, x)
    return x


@register("pc", order=0.5, stochastic=True, nfe_per_step=2, requires=())
def predictor_corrector(
    denoiser,
    sde,
    x: Tensor,
    ts: Tensor,
    *,
    noise,
    callback,
    predictor: str = "euler_maruyama",
    n_corrector: int = 1,
    snr: float = 0.16,
    step_size: str = "noise_level",
) -> Tensor:
    """PC sampler over ``ts``; ``nfe_per_step`` is declared for the default ``n_corrector=1``."""
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; known: {', '.join(PREDICTORS)}")
    if not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector must be an integer >= 0, got {n_corrector!r}")
    if step_size not in STEP_SIZES:
        raise ValueError(
            f"unknown Langevin step_size {step_size!r}; known: {', '.join(STEP_SIZES)}"
        )
    if not snr > 0:
        raise ValueError(f"the corrector's snr must be positive, got {snr}")
    if SCALAR_KERNEL not in sde.capabilities:
        if predictor != "euler_maruyama" or step_size != "noise_level":
            raise CapabilityError(
                f"pc with predictor={predictor!r}, step_size={step_size!r} is written on the EDM "
                f"scale of the scalar kernel, which {sde.name!r} does not offer; there pc uses "
                "the defaults (Euler–Maruyama in t, the kernel-preconditioned corrector)")
        return _generic(denoiser, sde, x, ts, noise, callback, n_corrector, snr)
    ts64 = ts.double().cpu()
    pos = ts64[ts64 > 0]
    alphas, sigmas = sde.alpha(pos).tolist(), sde.sigma(pos).tolist()
    if predictor == "reverse_diffusion":
        coefs = _reverse_diffusion_coefficients(sde, ts)
        ratios = (sde.log_snr(pos[:-1]) - sde.log_snr(pos[1:])).exp()
        if len(ratios) and float(ratios.min()) < MIN_RATIO_REVERSE_DIFFUSION:
            raise ValueError(
                f"predictor='reverse_diffusion' adds noise at the current level: on this grid "
                f"a step shrinks sigma/alpha by {1 / float(ratios.min()):.3g}x (more than "
                f"{1 / MIN_RATIO_REVERSE_DIFFUSION:g}x), which the corrector cannot undo; use "
                "the default predictor='euler_maruyama' or dpm_solver++_sde, or more steps on "
                "a grid without long steps (spacing='logsnr'; the default 'data' grid takes "
                "long ones where the data is hidden)")
    else:
        coefs = list(zip(*snr_coefficients(sde, ts), strict=True))
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        if s == 0:
            x = denoiser(x, t).x0
        else:
            if predictor == "reverse_diffusion":
                x = reverse_diffusion_step(denoiser, x, t, coefs[i], noise)
            else:
                x = snr_step(denoiser, x, t, s, coefs[i], noise)
            for _ in range(n_corrector):
                x = langevin_step(denoiser, x, s, alphas[i + 1], sigmas[i + 1] / alphas[i + 1],
                                  snr, step_size, noise)
        callback(i, s, x)
    return x
