"""Inpainting / imputation for every sampler: known coordinates re-imposed during sampling.

One mechanism: :class:`Imputed` wraps the model so that at every evaluation the known
coordinates of the state are replaced by a sample of the forward process at that time,

    x_t[K] <- alpha(t) y[K] + sigma(t) z,            z ~ N(0, I),

before the network sees it (the replacement method of Song et al. 2021, sec. 5 and app. I.2,
``controllable_generation.py`` of score_sde), and the prediction's ``x0_hat[K]`` is ``y[K]``.
Every sampler here updates each coordinate from its own state and the prediction (the
drift ``f(t) x`` is elementwise), so replacing at the model input is the same as replacing
the state after every step and stage, with no sampler code; the returned samples carry
``y[K]`` exactly. ``z`` is drawn afresh at every evaluation for stochastic samplers (Song et
al.) and once per sample for deterministic ones (``known_noise="auto"``), so ODE solvers see
a smooth right-hand side.

RePaint resampling (Lugmayr et al. 2022, Algorithm 1): ``resample = r > 1`` runs the grid in
segments of ``jump`` intervals; after a segment from ``t`` down to ``s`` the state is pushed
back to ``t`` by the forward kernel ``x_t = (alpha_t / alpha_s) x_s + sqrt(sigma_t^2 -
(alpha_t / alpha_s)^2 sigma_s^2) z`` and the segment is run again, ``r`` times in all, which
lets the unknown part harmonise with the known one. Each segment calls the registered sampler
on its sub-grid, so multistep solvers restart their history per segment. NFE grow ``r``-fold.

Replacement is biased: the unknown coordinates only feel the known ones through the noisy
``x_t[K]``, never through ``y`` itself, so it does not sample ``p(x_U | x_K = y)`` exactly.
:meth:`scoregen.models.analytic.GaussianMixture.condition` gives that law in closed form for a
mixture; ``experiments/inpaint_bias.py`` measures each method against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.infra.registry import Registry
from scoregen.infra.shape import batch_times, bcast
from scoregen.models.prediction import Model, Prediction, check_model, from_x0_eps, to_x0_eps
from scoregen.samplers import SAMPLERS
from scoregen.sampling.api import SampleResult, sample
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import check_grid, time_grid
from scoregen.sampling.guidance import guide
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sde.base import SDE

_SALT = 0x5EED_1A7A  # the known-coordinate noise stream differs from the sampler's

MaskFn = Callable[[tuple[int, ...]], Tensor]
MASKS: Registry[MaskFn] = Registry("mask")


def _half(dim: int, upper: bool) -> MaskFn:
    def fn(shape: tuple[int, ...]) -> Tensor:
        m = torch.zeros(shape, dtype=torch.bool)
        n = shape[dim]
        idx = [slice(None)] * len(shape)
        idx[dim] = slice(n // 2, None) if upper else slice(0, n // 2)
        m[tuple(idx)] = True
        return m
    return fn


@MASKS.register("right-half")
def right_half(shape: tuple[int, ...]) -> Tensor:
    """The right half of an image (last axis), or the second half of a vector."""
    return _half(len(shape) - 1, True)(shape)


@MASKS.register("left-half")
def left_half(shape: tuple[int, ...]) -> Tensor:
    """The left half of an image (last axis), or the first half of a vector."""
    return _half(len(shape) - 1, False)(shape)


@MASKS.register("bottom-half")
def bottom_half(shape: tuple[int, ...]) -> Tensor:
    """The bottom half of an image (second-to-last axis)."""
    if len(shape) < 2:
        raise ValueError(f"mask bottom-half needs images (C, H, W), got samples of shape {shape}")
    return _half(len(shape) - 2, True)(shape)


@MASKS.register("top-half")
def top_half(shape: tuple[int, ...]) -> Tensor:
    """The top half of an image (second-to-last axis)."""
    if len(shape) < 2:
        raise ValueError(f"mask top-half needs images (C, H, W), got samples of shape {shape}")
    return _half(len(shape) - 2, False)(shape)


@MASKS.register("center")
def center(shape: tuple[int, ...]) -> Tensor:
    """The central square of side H/2 of an image."""
    if len(shape) < 2:
        raise ValueError(f"mask center needs images (C, H, W), got samples of shape {shape}")
    m = torch.zeros(shape, dtype=torch.bool)
    h, w = shape[-2], shape[-1]
    m[..., h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = True
    return m


def region_mask(name: str, shape: tuple[int, ...]) -> Tensor:
    """The named region (``MASKS``) to *fill* for samples of event shape ``shape``."""
    return MASKS.get(name)(tuple(shape))


def check_mask(known: Tensor, mask: Tensor) -> Tensor:
    """``mask`` (True = known) broadcast to ``known: (B, *D)``; clear errors otherwise."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
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


class Imputed:
    """``model`` with the coordinates ``mask`` (True = known) pinned to ``known``.

    ``noise`` draws the forward-process noise of the known coordinates; ``fresh`` draws it
    anew at every call, else once.
    """

    def __init__(self, model: Model, known: Tensor, mask: Tensor, noise: NoiseSource,
                 fresh: bool) -> None:
        check_model(model, model.sde)
        self.model, self.sde, self.prediction = model, model.sde, model.prediction
        self.known, self.mask = known, check_mask(known, mask)
        self.noise, self.fresh = noise, fresh
        self._z = None if fresh else noise()

    def predict_pair(self, x: Tensor, t: Tensor) -> Prediction:
        t = batch_times(t, x)
        if x.shape != self.known.shape:
            raise ValueError(f"inpainting was set up for a batch {tuple(self.known.shape)}, "
                             f"called with {tuple(x.shape)}")
        alpha, sigma = self.sde.alpha(t).to(x.dtype), self.sde.sigma(t).to(x.dtype)
        z = self.noise() if self.fresh else self._z
        x_in = torch.where(self.mask, bcast(alpha, x) * self.known + bcast(sigma, x) * z, x)
        pair_fn = getattr(self.model, "predict_pair", None)
        pair = pair_fn(x_in, t) if pair_fn is not None else to_x0_eps(
            self.model(x_in, t), self.prediction, x_in, alpha, sigma)
        x0 = torch.where(self.mask, self.known, pair.x0)
        return Prediction(x0, (x - bcast(alpha, x) * x0) / bcast(sigma, x))

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        t = batch_times(t, x)
        return from_x0_eps(self.predict_pair(x, t), self.prediction,
                           self.sde.alpha(t).to(x.dtype), self.sde.sigma(t).to(x.dtype))


def renoise(sde: SDE, x_s: Tensor, s: Tensor, t: Tensor, z: Tensor) -> Tensor:
    """A draw of ``x_t`` given ``x_s`` (``s < t``) under the forward process."""
    a_ts = sde.alpha(t) / sde.alpha(s)
    var = (sde.sigma(t) ** 2 - a_ts**2 * sde.sigma(s) ** 2).clamp_min(0)
    return a_ts.to(x_s.dtype) * x_s + var.sqrt().to(x_s.dtype) * z


def inpaint(
    model: Model,
    sde: SDE,
    known: Tensor,
    mask: Tensor,
    sampler: str = "ddim",
    steps: int | None = 50,
    *,
    ts: Tensor | None = None,
    spacing: str = "auto",
    resample: int = 1,
    jump: int = 1,
    known_noise: str = "auto",
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
        known_noise: ``fresh`` (new noise each evaluation), ``fixed`` (one draw per sample) or
            ``auto`` (fresh for stochastic samplers, fixed for deterministic ones).
        cond, guidance: class labels and guidance scale, as in :func:`scoregen.sample`.
        other arguments: as in :func:`scoregen.sample`.

    Returns a :class:`~scoregen.sampling.SampleResult` whose ``x`` equals ``known`` on
    ``mask``.
    """
    known = torch.as_tensor(known)
    if known.ndim < 2 or not torch.isfinite(known).all():
        raise ValueError(f"known must be a finite (batch, *dims) tensor, got shape "
                         f"{tuple(known.shape)}")
    mask = check_mask(known, mask)
    if not (isinstance(resample, int) and resample >= 1 and isinstance(jump, int) and jump >= 1):
        raise ValueError(f"resample and jump must be integers >= 1, got {resample}, {jump}")
    meta = SAMPLERS.meta(sampler)
    if known_noise not in ("auto", "fresh", "fixed"):
        raise ValueError(f"known_noise must be auto, fresh or fixed, got {known_noise!r}")
    fresh = meta["stochastic"] if known_noise == "auto" else known_noise == "fresh"
    batch = known.shape[0]
    seeds = seeds_for(batch, seed) if seeds is None else torch.as_tensor(seeds)
    base = guide(model, cond, guidance, batch=batch)
    imputed = Imputed(base, known, mask, NoiseSource(seeds ^ _SALT, tuple(known.shape[1:]),
                                                     known.dtype, known.device), fresh)
    if resample == 1:
        res = sample(imputed, sde, tuple(known.shape), sampler, steps, ts=ts, spacing=spacing,
                     seeds=seeds, dtype=known.dtype, device=known.device, progress=progress,
                     **opts)
        res.x = torch.where(mask, known, res.x)
        return res
    if meta["nfe_per_step"] is None:
        raise ValueError(f"RePaint resampling needs a fixed-step sampler; {sampler!r} "
                         "chooses its own steps (use resample=1)")
    if ts is None:
        ts = time_grid(sde, steps, spacing, dim=known[0].numel())
    ts = check_grid(ts, sde).to(known.device)
    noise = NoiseSource(seeds, tuple(known.shape[1:]), known.dtype, known.device)
    denoiser = Denoiser(imputed, sde)
    fn = SAMPLERS.get(sampler)
    x = sde.prior_std() * noise()
    start = time.perf_counter()
    segments = range(0, len(ts) - 1, jump)
    with torch.no_grad():
        for a in tqdm(segments, desc=f"inpaint {sampler}", disable=not progress, leave=False):
            seg = ts[a: a + jump + 1]
            for r in range(resample):
                out = fn(denoiser, sde, x, seg, noise=noise, callback=lambda *_: None, **opts)
                x_s = out[0] if isinstance(out, tuple) else out
                x = renoise(sde, x_s, seg[-1], seg[0], noise()) if r < resample - 1 else x_s
    x = torch.where(mask, known, x)
    return SampleResult(x, denoiser.nfe, ts.cpu(), time.perf_counter() - start, sampler,
                        {"resample": resample, "jump": jump})


__all__ = ["MASKS", "Imputed", "check_mask", "inpaint", "region_mask", "renoise"]
