"""Inpainting / imputation for every sampler: known coordinates re-imposed during sampling.

:func:`inpaint` is :func:`scoregen.solve_inverse` with the mask operator
(:class:`~scoregen.sampling.inverse.operators.Mask`, noiseless): by default the replacement
method (Song et al. 2021, sec. 5 and app. I.2, ``controllable_generation.py`` of score_sde).
At every model evaluation the known coordinates of the state are replaced by a sample of the
forward process at that time,

    x_t[K] <- alpha(t) y[K] + sigma(t) z,            z ~ N(0, I),

before the network sees it, and the prediction's ``x0_hat[K]`` is ``y[K]``. Every sampler here
updates each coordinate from its own state and the prediction (the drift ``f(t) x`` is
elementwise), so replacing at the model input is the same as replacing the state after every
step and stage, with no sampler code; the returned samples carry ``y[K]`` exactly. ``z`` is
drawn afresh at every evaluation (``known_noise="fresh"``, the default, for every sampler);
``"fixed"`` draws it once per sample, and ``"auto"`` (fixed for deterministic samplers, fresh
for stochastic ones) keeps an ODE solver's right-hand side smooth but is more biased than
replacement (docs/results.md, "Inverse problems"): the deterministic flow carries the one
draw ``z`` into the unknown coordinates. With fresh noise a self-stepping ODE solver's error
control sees the re-draws: ``ode_dopri5`` takes thousands of steps (use a fixed-step sampler).

RePaint resampling (Lugmayr et al. 2022, Algorithm 1): ``resample = r > 1`` runs the grid in
segments of ``jump`` intervals, each pushed back up by the forward kernel and run again, ``r``
times in all (:func:`scoregen.sampling.inverse.solve.repaint`); NFE grow ``r``-fold.

Replacement is biased: the unknown coordinates only feel the known ones through the noisy
``x_t[K]``, never through ``y`` itself, so it does not sample ``p(x_U | x_K = y)`` exactly.
:meth:`scoregen.models.analytic.GaussianMixture.condition` gives that law in closed form for a
mixture; ``experiments/inpaint_default.py`` and ``scoregen compare --inverse`` measure every
method against it, including the less biased ones (``scoregen.solve_inverse(...,
method="smc")``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.models.prediction import Model
from scoregen.samplers import SAMPLERS
from scoregen.sampling.api import SampleResult
from scoregen.sampling.inverse.operators import Mask
from scoregen.sampling.inverse.regions import MASKS, region_mask
from scoregen.sampling.inverse.solve import renoise, solve_inverse


def check_mask(known: Tensor, mask: Tensor) -> Tensor:
    """``mask`` (True = known) broadcast to ``known: (B, *D)``; clear errors otherwise."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() and not torch.isfinite(mask).all():
            raise ValueError("mask contains NaN or infinite values")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must be boolean (True or 1 = known coordinate)")
        mask = mask.to(torch.bool)
    if mask.shape == known.shape[1:]:
        mask = mask.expand_as(known)
    if mask.shape != known.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the known data "
                         f"{tuple(known.shape)}: give one mask of the event shape "
                         f"{tuple(known.shape[1:])} or one per sample {tuple(known.shape)}")
    if not mask.any():
        raise ValueError("mask marks no coordinate as known: that is plain sampling")
    return mask.to(known.device)


def inpaint(
    model: Model,
    sde,
    known: Tensor,
    mask: Tensor,
    sampler: str = "ddim",
    steps: int | None = 50,
    *,
    ts: Tensor | None = None,
    spacing: str = "auto",
    resample: int = 1,
    jump: int = 1,
    known_noise: str = "fresh",
    seed: int = 0,
    seeds: Tensor | None = None,
    cond: Tensor | int | None = None,
    guidance: float | None = None,
    progress: bool = False,
    **opts: object,
) -> SampleResult:
    """Fill in the unknown coordinates of ``known`` with any registered sampler.

    Args:
        known: ``(B, *D)``: the data whose ``mask`` coordinates are kept (the rest is
            ignored).
        mask: ``(*D)`` or ``(B, *D)`` boolean, True where ``known`` is known.
        resample, jump: RePaint resampling (module docstring); ``1`` is plain replacement.
        known_noise: ``fresh`` (new noise each evaluation, the default), ``fixed`` (one draw
            per sample) or ``auto`` (fixed for deterministic samplers, fresh for stochastic
            ones; more biased, module docstring).
        cond, guidance: class labels and guidance scale, as in :func:`scoregen.sample`.
        other arguments: as in :func:`scoregen.sample`.

    Returns a :class:`~scoregen.sampling.SampleResult` whose ``x`` equals ``known`` on
    ``mask``. For the other posterior-sampling methods, see :func:`scoregen.solve_inverse`.
    """
    known = torch.as_tensor(known)
    if known.ndim < 2 or not torch.isfinite(known).all():
        raise ValueError(f"known must be a finite (batch, *dims) tensor, got shape "
                         f"{tuple(known.shape)}")
    mask = check_mask(known, mask)
    if not (isinstance(resample, int) and resample >= 1 and isinstance(jump, int) and jump >= 1):
        raise ValueError(f"resample and jump must be integers >= 1, got {resample}, {jump}")
    if known_noise not in ("auto", "fresh", "fixed"):
        raise ValueError(f"known_noise must be fresh, fixed or auto, got {known_noise!r}")
    if known_noise == "auto":
        known_noise = "fresh" if SAMPLERS.meta(sampler)["stochastic"] else "fixed"
    op = Mask(mask, tuple(known.shape[1:]), name="inpaint")
    method = "replacement" if resample == 1 else "repaint"
    extra = {} if resample == 1 else {"resample": resample, "jump": jump}
    res = solve_inverse(model, sde, op, known, method, sampler, steps, ts=ts, spacing=spacing,
                        seed=seed, seeds=seeds, cond=cond, guidance=guidance, progress=progress,
                        known_noise=known_noise, **extra, **opts)
    res.x = torch.where(mask, known.to(res.x), res.x)
    return res


__all__ = ["MASKS", "check_mask", "inpaint", "region_mask", "renoise"]
