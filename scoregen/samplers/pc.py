"""Predictor–corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", Algorithms 2-5).

Each step from ``t`` to ``s < t`` is one *predictor* step, then ``n_corrector`` Langevin
*corrector* steps at ``s``:

- predictor ``"reverse_diffusion"`` (their eq. 46, from the forward transition
  ``x_t = a x_s + sqrt(v) z`` with ``a = alpha_t/alpha_s``, ``v = sigma_t^2 - a^2 sigma_s^2``)::

      x_s = x_t - (a - 1) x_t + v score(x_t, t) + sqrt(v) z

  which is their VE (``a = 1``, ``v = sigma_t^2 - sigma_s^2``) and DDPM-VP (``a = sqrt(1 -
  beta)``, ``v = beta``) discretisations in one formula;
- predictor ``"euler_maruyama"``: :func:`~scoregen.samplers.euler_maruyama.euler_maruyama_step`;
- corrector: annealed Langevin dynamics with signal-to-noise ratio ``r = snr``
  (their Algorithms 4-5)::

      g = score(x, s),  z ~ N(0, I),  e = 2 a^2 (r ||z|| / ||g||)^2,
      x <- x + e g + sqrt(2 e) z.

  ``a^2`` is the step's ``alpha_t^2 / alpha_s^2`` (their ``alpha_i = 1 - beta_i`` for VP, ``1``
  for VE). ``step_size="sample"`` uses each sample's own norms, as the algorithms are
  written. That step explodes where a sample's score is near zero (close to a mode, common in
  low dimension), and the reference code averages the norms over the batch instead, which
  ties a sample to its batch. The default ``step_size="noise_level"`` replaces the norms by
  their expectations, ``||z||^2 = d`` and ``||g||^2 <= d / sigma_s^2`` (the Fisher
  information of data convolved with ``N(0, sigma_s^2 I)``), giving ``e = 2 a^2 r^2
  sigma_s^2``: the annealed Langevin step of Song & Ermon 2019 (``alpha_i proportional to
  sigma_i^2``), per sample and never larger than the batch-averaged one in expectation.

A final grid time of ``0`` is the denoising step (``x0_hat`` at ``t_min``, no corrector).
NFE: ``1 + n_corrector`` per step, ``1`` for the final denoising step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen._shape import bcast
from scoregen.samplers.euler_maruyama import euler_maruyama_step
from scoregen.samplers.registry import register

PREDICTORS = ("reverse_diffusion", "euler_maruyama")
STEP_SIZES = ("noise_level", "sample")


def reverse_diffusion_step(denoiser, sde, x: Tensor, t: Tensor, s: Tensor, noise) -> Tensor:
    """Reverse-diffusion predictor step from ``t`` to ``s`` (Song et al. 2021, eq. 46)."""
    a, std = sde.transition(s, t)
    score = sde.score_from_eps(denoiser(x, t).eps, t)
    return (2 - a) * x + std**2 * score + std * noise()


def langevin_step(
    denoiser, sde, x: Tensor, s: Tensor, a2: Tensor, snr: float, step_size: str, noise
) -> Tensor:
    """One Langevin corrector step at time ``s`` (Song et al. 2021, Algorithms 4-5)."""
    score = sde.score_from_eps(denoiser(x, s).eps, s)
    z = noise()
    if step_size == "sample":
        ratio = torch.linalg.vector_norm(z.flatten(1), dim=1) / torch.linalg.vector_norm(
            score.flatten(1), dim=1
        ).clamp_min(torch.finfo(x.dtype).tiny)
    else:
        ratio = sde.sigma(s)
    step = bcast(2 * a2 * (snr * ratio) ** 2, x)
    return x + step * score + (2 * step).sqrt() * z


@register("pc", order=0.5, stochastic=True, nfe_per_step=2)
def predictor_corrector(
    denoiser,
    sde,
    x: Tensor,
    ts: Tensor,
    *,
    noise,
    callback,
    predictor: str = "reverse_diffusion",
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
    step = reverse_diffusion_step if predictor == "reverse_diffusion" else euler_maruyama_step
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        if s == 0:
            x = denoiser(x, t).x0
        else:
            x = step(denoiser, sde, x, t, s, noise)
            a2 = sde.transition(s, t)[0] ** 2
            for _ in range(n_corrector):
                x = langevin_step(denoiser, sde, x, s, a2, snr, step_size, noise)
        callback(i, s, x)
    return x
