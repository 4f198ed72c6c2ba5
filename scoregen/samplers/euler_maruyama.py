"""Euler–Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6; Kloeden & Platen 1992), in
the variables where its drift and diffusion are bounded.

In ``t`` the reverse SDE ``dx = [f x - g^2 score] dt + g dw_bar`` has drift and diffusion that
grow like ``sigma'(t) / sigma(t)``; an Euler–Maruyama step over a coarse grid overshoots by
orders of magnitude (sliced W2 up to 2e4 at 5-10 NFE on VE over sigma 0.002..80). On the EDM
scale ``x~ = x / alpha``, ``sigma~ = sigma / alpha`` the reverse SDE of every process is
``dx~ = 2 (x~ - D) / sigma~ dsigma~ + sqrt(-2 sigma~ dsigma~) dw_bar`` (Karras et al. 2022,
eq. 6 with ``beta = sigma~'/sigma~``), ``D = x0_hat``. With the signal-to-noise ratio as time
and ``w = v x~``,

    v = 1 / sigma~^2 = alpha^2 / sigma^2 = e^{2 lambda},     w = v x~ = alpha x / sigma^2,
    dw = D(w / v; t(v)) dv + dB_v,

(Ito: ``d(v x~) = v dx~ + x~ dv``; ``dsigma~ = -sigma~^3 dv / 2``; ``B`` a standard Brownian
motion in ``v``): the drift is the data prediction and the diffusion is ``1``, bounded for
every SDE. Euler–Maruyama from ``t`` to ``s`` (``v_t < v_s``, ``r = sigma~_s / sigma~_t``)::

    w_s = w_t + (v_s - v_t) D + sqrt(v_s - v_t) z,    i.e.
    x_s = (alpha_s / alpha_t) r^2 x_t + alpha_s (1 - r^2) D + sigma_s sqrt(1 - r^2) z,

which is the Gaussian posterior step ``q(x_s | x_t, x0 = D)`` of the ancestral sampler: in this
time the ancestral DDPM/SMLD chain *is* Euler–Maruyama (so ``euler_maruyama`` and
``ancestral`` agree on every grid; ``tests/test_samplers.py`` checks it). ``variable="t"``
keeps the textbook step in ``t``, which needs only the drift, the diffusion and the score, so
it runs on every process (an augmented state, per-frequency scales)::

    x_s = x_t - [f(x_t, t) - G G^T score(x_t, t)] h + G(t) sqrt(h) z,     h = t - s.

``variable="auto"`` (the default) is ``"snr"`` where the process has the scalar kernel and
``"t"`` elsewhere.

A final grid time of ``0`` is the usual denoising step: ``x0_hat`` at ``t_min`` (Tweedie's
formula, Song et al. 2021, app. G). Strong order 1/2, weak order 1. One network evaluation
per step. The step coefficients are computed once per grid, before the loop.
"""

from __future__ import annotations

from torch import Tensor

from scoregen.samplers.registry import CapabilityError, register
from scoregen.sde.base import SCALAR_KERNEL

VARIABLES = ("auto", "snr", "t")


def resolve_variable(name: str, sde, variable: str, scalar: str, generic: str = "t") -> str:
    """``variable`` of sampler ``name`` with ``"auto"`` resolved: ``scalar`` (a form that needs
    the scalar kernel) where ``sde`` has it, else ``generic``; the scalar form on another
    process is a :class:`~scoregen.samplers.registry.CapabilityError`."""
    has = SCALAR_KERNEL in sde.capabilities
    if variable == "auto":
        return scalar if has else generic
    if variable == scalar and not has:
        raise CapabilityError(f"{name} with variable={scalar!r} needs the scalar kernel, which "
                              f"{sde.name!r} does not offer; use variable={generic!r} (the "
                              "default 'auto' picks it)")
    return variable


def snr_coefficients(sde, ts: Tensor) -> tuple[list[float], list[float], list[float]]:
    """Per interval ``(c_x, c_0, std)`` of the SNR-time step ``x_s = c_x x_t + c_0 D + std z``
    (module docstring), vectorised over the grid's positive times (float64)."""
    t, s = ts[:-1].double().cpu(), ts[1:].double().cpu()
    pos = s > 0
    s = s.clamp_min(sde.t_min)  # placeholder for a final 0 (that step is the denoising step)
    alpha_t, alpha_s, sigma_s = sde.alpha(t), sde.alpha(s), sde.sigma(s)
    r2 = (sde.log_snr(t) - sde.log_snr(s)).mul(2).exp()  # (sigma~_s / sigma~_t)^2
    c_x = alpha_s / alpha_t * r2
    c_0 = alpha_s * (1 - r2)
    std = sigma_s * (1 - r2).clamp_min(0).sqrt()
    return (c_x * pos).tolist(), (c_0 * pos).tolist(), (std * pos).tolist()


def euler_maruyama_step(denoiser, sde, x: Tensor, t: Tensor, s: Tensor, noise) -> Tensor:
    """One reverse-SDE Euler–Maruyama step in ``t`` from ``t`` to ``s`` (``x0_hat`` if ``s ==
    0``): the textbook form, ``variable="t"``."""
    pred = denoiser(x, t)
    if s == 0:
        return pred.x0
    h = t - s
    drift = sde.reverse_drift(x, t, sde.score_from_eps(pred.eps, t))
    return x - drift * h + sde.diffuse(noise(), t, h)


def snr_step(denoiser, x: Tensor, t: Tensor, s: Tensor, coef: tuple[float, float, float],
             noise) -> Tensor:
    """One Euler–Maruyama step in SNR time from ``t`` to ``s`` with precomputed ``coef = (c_x,
    c_0, std)`` (``x0_hat`` if ``s == 0``)."""
    x0_hat = denoiser(x, t).x0
    if s == 0:
        return x0_hat
    c_x, c_0, std = coef
    return c_x * x + c_0 * x0_hat + std * noise()


@register("euler_maruyama", order=0.5, stochastic=True, nfe_per_step=1, requires=())
def euler_maruyama(denoiser, sde, x: Tensor, ts: Tensor, *, noise, callback,
                   variable: str = "auto") -> Tensor:
    """Euler–Maruyama over ``ts`` on the reverse SDE, in SNR time (default where the scalar
    kernel defines it) or in ``t``."""
    if variable not in VARIABLES:
        raise ValueError(f"unknown variable {variable!r} for euler_maruyama; known: "
                         f"{', '.join(VARIABLES)} ('snr' is bounded on every scalar kernel)")
    variable = resolve_variable("euler_maruyama", sde, variable, "snr")
    coefs = list(zip(*snr_coefficients(sde, ts), strict=True)) if variable == "snr" else None
    for i in range(len(ts) - 1):
        if coefs is None:
            x = euler_maruyama_step(denoiser, sde, x, ts[i], ts[i + 1], noise)
        else:
            x = snr_step(denoiser, x, ts[i], ts[i + 1], coefs[i], noise)
        callback(i, ts[i + 1], x)
    return x
