"""The one public entry point for sampling: ``scoregen.sample(model, sde, shape_or_xT, ...)``.

It builds (or checks) the time grid (for ``nfe=N`` the step count whose counted NFE is the
largest ``<= N``, :mod:`scoregen.sampling.nfe_budget`; for ``spacing="tuned"`` the model's
fitted grid, :mod:`scoregen.sampling.tuned_grids`), wraps the model in the NFE-counting
:class:`~scoregen.sampling.denoiser.Denoiser`, makes the per-sample noise source, draws ``x_T``
from the prior, runs the registered sampler under ``torch.no_grad`` with an optional progress bar,
and times the run. Samplers themselves stay pure functions (see
:mod:`scoregen.samplers.registry`).
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.models.prediction import Model
from scoregen.samplers import SAMPLERS, check_applies, check_model_kind
from scoregen.samplers._terminal import starts_at_zero_snr, terminal_step
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import TUNED, check_grid, time_grid
from scoregen.sampling.guidance import Classifier, Guidance, Guided, guidance_scale, guide
from scoregen.sampling.nfe_budget import check_plannable, steps_for_budget
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sampling.recommend import AUTO, resolve
from scoregen.sampling.tuned_grids import TunedGrids, as_grids, guidance_key
from scoregen.sde.base import SDE


class SamplerOptionError(TypeError, ValueError):
    """An option the sampler does not take (a ``TypeError`` like any unexpected keyword, and a
    ``ValueError`` like every bad input, so the CLI reports it in one line)."""


class NonFiniteSamplesError(ValueError):
    """A sampler returned NaN or infinite values; the message says how many and what to try."""


@dataclass
class SampleResult:
    """Samples and what it took to make them.

    Attributes:
        x: samples ``(B, *D)``.
        nfe: network evaluations on the batch, counted by wrapping the model.
        ts: the time grid the sampler was given (float64); adaptive solvers report the times
            they actually used in ``info["ts_used"]``.
        seconds: wall time of the sampling loop.
        sampler: registered name of the sampler.
        info: sampler-specific extras (e.g. accepted/rejected steps).
    """

    x: Tensor
    nfe: int
    ts: Tensor
    seconds: float
    sampler: str
    info: dict[str, Any] = field(default_factory=dict)


def sample(
    model: Model,
    sde: SDE,
    shape_or_xT: tuple[int, ...] | torch.Size | Tensor,
    sampler: str = AUTO,
    steps: int | None = 50,
    *,
    ts: Tensor | None = None,
    nfe: int | None = None,
    spacing: str = "auto",
    grids: TunedGrids | str | None = None,
    denoise: bool = True,
    seed: int = 0,
    seeds: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Any = None,
    check_finite: bool = True,
    cond: Tensor | int | None = None,
    guidance: float | Guidance | None = None,
    classifier: Classifier | None = None,
    guidance_interval: tuple[float, float] | None = None,
    threshold: float | None = None,
    **opts: Any,
) -> SampleResult:
    """Draw samples with the sampler registered as ``sampler``.

    Args:
        model: follows :class:`scoregen.models.prediction.Model` and targets ``sde``
            (re-target a model trained for another SDE with
            :func:`scoregen.models.prediction.retarget`), or a distilled student
            (:func:`scoregen.training.distill.load_student`), which samples its own way at the
            ``nfe`` (a budget) or ``steps`` (exactly) asked for: its ``sampling_plan(steps=,
            nfe=)`` gives the model, sampler and grid.
        sde: the process to reverse.
        shape_or_xT: ``(B, *D)`` to draw ``x_T`` from the prior, or ``x_T`` itself.
        sampler: a name from ``scoregen.samplers.list()``, or ``"auto"`` (the default): the
            sampler and options measured best for the budget (``nfe``, else ``steps``) and
            the guidance scale (:func:`scoregen.sampling.recommend.recommend`; on a process
            where that sampler does not run, the process's ``default_sampler``); options
            given here override the recommended ones. ``res.sampler`` and
            ``res.info["options"]`` say what ran. A student samples with its own.
        steps: grid size for :func:`~scoregen.sampling.grid.time_grid` (ignored if ``ts``
            or ``nfe`` is given).
        ts: an explicit descending grid instead of ``steps``/``spacing``/``denoise``.
        nfe: an NFE budget instead of ``steps``: the step count whose counted NFE is the
            largest ``<= nfe`` (:func:`scoregen.sampling.nfe_budget.plan_steps`); self-stepping
            samplers refuse it (set their tolerance instead).
        spacing: a :func:`~scoregen.sampling.grid.time_grid` spacing, or ``"tuned"``: the
            grid fitted for this sampler, its options, ``sde``, the guidance and the budget
            (``nfe`` or ``steps``) in ``grids``. ``"auto"`` (default) takes that tuned grid
            when ``grids`` holds one, else the SDE's default spacing; ``res.info["grid"]``
            says which.
        grids: the tuned grids of the model (:class:`~scoregen.sampling.tuned_grids.TunedGrids`,
            the ``.json`` file or its folder, or the run folder given to ``scoregen tune-grid``:
            the grids of its newest checkpoint). Under guidance the grid fitted for the same
            scale is taken (``scoregen tune-grid --guidance``).
        seed, seeds, generator: sample ``k`` uses seed ``seeds[k]``; by default
            ``seed + k``, where ``seed`` is drawn from ``generator`` when one is given. The
            same seed gives the same noise whatever the batch size, and the same sample up
            to the model's float rounding (docs/outputs.md, "Reproducibility, exactly").
        progress: show a tqdm progress bar over the steps.
        callback: ``callback(i, t, x)`` after every step.
        check_finite: raise :class:`NonFiniteSamplesError` when a sample is NaN or infinite
            (sweeps that score a failed run as NaN pass ``False``).
        cond: class labels ``(B,)`` (or one int for all) of a class-conditional model.
        guidance: the guidance scale ``w`` (0 unconditional, 1 conditional, the default with
            ``cond``; > 1 guided) or a :class:`scoregen.sampling.guidance.Guidance`; classifier-free
            unless ``classifier`` (``(x, t) -> logits``) is given.
        guidance_interval: ``(t_lo, t_hi)``: guide only there (``w = 1`` elsewhere).
        threshold: quantile of dynamic thresholding of ``x0_hat`` (e.g. 0.995; off by default).
            See :mod:`scoregen.sampling.guidance` for the formulas and the NFE convention (one
            NFE per guided call; ``info["network_rows_per_sample"]`` counts the doubled CFG batch).
        **opts: the sampler's own options (e.g. ``eta`` for DDIM); unknown names raise a
            ``ValueError`` listing the known ones.

    A model that declares its ``data_shape`` (:class:`~scoregen.models.ScoreModel` does)
    refuses ``x_T`` of another event shape with a ``ValueError``.
    """
    if hasattr(model, "sampling_plan"):  # a student: its own model, sampler and grid
        if sampler != AUTO or ts is not None:
            raise ValueError("a distilled student samples with its own sampler and grid: give "
                             "nfe= (a budget) or steps= (exact), not sampler= or ts=")
        plan = model.sampling_plan(steps=steps if nfe is None else None, nfe=nfe)
        model, sampler, ts, nfe, opts = plan.model, plan.sampler, plan.ts, None, {
            **plan.options, **opts}
    scale = guidance_scale(model, cond, guidance)
    requested = sampler
    sampler, opts = resolve(sampler, opts, nfe, steps if ts is None else len(ts) - 1, scale,
                            sde)
    fn = SAMPLERS.get(sampler)
    check_applies(sampler, sde)
    check_options(sampler, fn, opts)
    if isinstance(shape_or_xT, Tensor):
        x = shape_or_xT
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"x_T must have a non-empty batch dimension, got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("x_T contains NaN or infinite values")
        dtype, device = x.dtype, x.device
    else:
        shape = tuple(shape_or_xT)
        if len(shape) < 1 or any(not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(f"shape must be positive integers (batch, *dims), got {shape}")
        x = None
    batch = (x.shape if x is not None else shape)[0]
    if seeds is None:
        if generator is not None:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
        seeds = seeds_for(batch, seed)
    seeds = torch.as_tensor(seeds, dtype=torch.int64)
    if seeds.shape != (batch,):
        raise ValueError(f"seeds must have shape ({batch},), got {tuple(seeds.shape)}")
    # a shape is the data's; the process diffuses states of its own shape (SDE.state_shape)
    event = tuple(x.shape[1:]) if x is not None else sde.state_shape(tuple(shape[1:]))
    _check_state_shape(event, getattr(model, "data_shape", None), sde)
    noise = NoiseSource(seeds.to(device), event, dtype=dtype, device=device)
    if x is None:
        x = sde.prior_from_normal(noise())
    else:
        noise.count = 1  # draw 0 is reserved for x_T, whether drawn or given

    grid_used = "given"
    if ts is None:
        guided = guidance_key(cond, guidance, guidance_interval, threshold)
        if guided is None and isinstance(model, Guided):  # a model guided already
            guided = guidance_key(model.labels, model.guidance)
        ts, grid_used = _plan_grid(sampler, sde, tuple(x.shape[1:]), steps, nfe, spacing,
                                   denoise, grids, opts, guided)
    elif nfe is not None:
        raise ValueError("give either an NFE budget nfe or an explicit time grid ts, not both")
    ts = check_grid(ts, sde).to(device)

    check_model_kind(sampler, model)
    model = guide(model, cond, guidance, classifier=classifier, interval=guidance_interval,
                  threshold=threshold, batch=batch)
    denoiser = Denoiser(model, sde)
    denoiser.precompute(ts)
    bar = tqdm(total=len(ts) - 1, desc=sampler, leave=False) if progress else None

    def on_step(i: int, t: Tensor, xi: Tensor) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(nfe=denoiser.nfe)
        if callback is not None:
            callback(i, t, xi)

    start = time.perf_counter()
    with torch.no_grad():
        if starts_at_zero_snr(sde, ts):  # alpha(T) = 0: the first step is taken here
            out = _from_zero_snr(fn, denoiser, sde, x, ts, noise, on_step, sampler, opts)
        else:
            out = fn(denoiser, sde, x, ts, noise=noise, callback=on_step, **opts)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    x_out, info = (out if isinstance(out, tuple) else (out, {}))
    if tuple(x_out.shape[1:]) == event:  # a state (a final denoising step gives data)
        x_out = sde.data_from_state(x_out)
    if check_finite and not torch.isfinite(x_out).all():
        bad = int((~torch.isfinite(x_out)).flatten(1).any(1).sum())
        raise NonFiniteSamplesError(
            f"{sampler} produced NaN or infinite values in {bad} of {x_out.shape[0]} samples; "
            "the model's weights may be diverged (check its checkpoint), or try more steps or "
            "another sampler")
    info = dict(info)
    info["grid"] = grid_used
    if requested == AUTO:
        info["options"] = dict(opts)
    if isinstance(model, Guided):
        info["network_rows_per_sample"] = model.rows
    return SampleResult(x_out, denoiser.nfe, ts.cpu(), seconds, sampler, info)


def _from_zero_snr(fn: Any, denoiser: Denoiser, sde: SDE, x: Tensor, ts: Tensor,
                   noise: NoiseSource, on_step: Any, sampler: str, opts: dict[str, Any]) -> Any:
    """The first step from ``T`` where ``alpha(T) = 0`` (:mod:`scoregen.samplers._terminal`),
    then the sampler on the rest of the grid."""
    if denoiser.kind in ("eps", "score"):
        raise ValueError(
            f"the SDE {sde.name!r} has zero terminal SNR (alpha(T) = 0), where x0 cannot be "
            f"recovered from an {denoiser.kind} prediction; train the model with "
            "model.prediction: v (or x0), as Lin et al. 2024 do, or sample from a grid that "
            "starts below T")
    x = terminal_step(denoiser, sde, x, ts, SAMPLERS.meta(sampler)["stochastic"], noise)
    on_step(0, ts[1], x)
    if len(ts) < 3:  # nothing left but the point reached
        return x
    return fn(denoiser, sde, x, ts[1:], noise=noise,
              callback=lambda i, t, xi: on_step(i + 1, t, xi), **opts)


def _check_state_shape(event: tuple[int, ...], data_shape: tuple[int, ...] | None,
                       sde: SDE) -> None:
    """Refuse states that do not belong to the model's ``data_shape`` (when it declares one)."""
    if data_shape is None:
        return
    expected = sde.state_shape(tuple(data_shape))
    if event != expected:
        state = "" if expected == tuple(data_shape) else f" (states {expected} under {sde.name})"
        raise ValueError(f"x_T has samples of shape {event}, but the model is for data of shape "
                         f"{tuple(data_shape)}{state}; pass (batch, "
                         f"{', '.join(map(str, data_shape))})")


@functools.cache
def _known_options(fn: Any) -> tuple[str, ...] | None:
    """The keyword options of a sampler function (``None``: it takes any)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return tuple(k for k, p in params.items()
                 if p.kind is p.KEYWORD_ONLY and k not in ("noise", "callback"))


def check_options(name: str, fn: Any, opts: dict[str, Any]) -> None:
    """Refuse options the sampler does not take, naming the ones it does."""
    known = _known_options(fn)
    if known is None:
        return
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise SamplerOptionError(
            f"sampler {name!r} got an unexpected keyword option "
            f"{', '.join(map(repr, unknown))}; its options: {', '.join(known) or '(none)'}")


def grid_for(sampler: str, sde: SDE, steps: int, spacing: str = "auto", denoise: bool = True,
             grids: TunedGrids | str | None = None, opts: dict[str, Any] | None = None,
             dim: int | None = None, guided: dict[str, Any] | None = None) -> Tensor:
    """The grid of ``steps`` intervals :func:`sample` uses: the model's tuned grid for
    ``spacing="tuned"`` (from ``grids``, fitted for the guidance ``guided``), else
    :func:`~scoregen.sampling.grid.time_grid` (``dim``: the dimension of a sample, which the
    ``data`` spacing needs)."""
    if spacing == TUNED:
        return as_grids(_tuned_store(grids)).select(sampler, sde, opts, steps=steps,
                                                    guidance=guided)
    return time_grid(sde, steps, spacing, denoise=denoise, dim=dim)


def _tuned_store(grids: TunedGrids | str | None) -> TunedGrids | str:
    if grids is None:
        raise ValueError("spacing='tuned' needs grids=: the run folder or TunedGrids "
                         "written by `scoregen tune-grid`")
    return grids


def _plan_grid(sampler: str, sde: SDE, state_shape: tuple[int, ...], steps: int | None,
               nfe: int | None, spacing: str, denoise: bool, grids: TunedGrids | str | None,
               opts: dict[str, Any], guided: dict[str, Any] | None = None
               ) -> tuple[Tensor, str]:
    """``(grid, what it is)`` for ``steps``, or for the NFE budget ``nfe``
    (:mod:`scoregen.sampling.nfe_budget`; a tuned store selects by the NFE it recorded). A
    tuned grid is the one fitted for the guidance ``guided`` (:func:`guidance_key`), taken for
    ``spacing="auto"`` too when ``grids`` holds one for this sampler and budget."""
    if nfe is None and steps is None:
        raise ValueError("give steps, an NFE budget nfe, or an explicit time grid ts")
    if spacing == TUNED:
        if nfe is None:
            return grid_for(sampler, sde, steps, spacing, denoise, grids, opts,
                            guided=guided), TUNED
        check_plannable(sampler)
        return as_grids(_tuned_store(grids)).select(sampler, sde, opts, nfe=nfe,
                                                    guidance=guided), TUNED
    if spacing == "auto" and grids is not None:
        store = grids if isinstance(grids, TunedGrids) else TunedGrids.load(grids,
                                                                              missing_ok=True)
        found = [g for g in store.matching(sampler, sde, opts, guided)
                 if (g.nfe == nfe if nfe is not None else g.steps == steps)]
        if found:  # else none fitted for this sampler, guidance and budget: the formula grid
            return found[-1].tensor(), TUNED
    dim = math.prod(state_shape)
    named = sde.default_spacing if spacing == "auto" else spacing

    def grid_at(k: int) -> Tensor:
        return grid_for(sampler, sde, k, spacing, denoise, grids, opts, dim=dim)

    if nfe is None:
        return grid_at(steps), named
    planned = steps_for_budget(sampler, sde, nfe, grid_at, state_shape, opts)
    if planned is None:
        raise ValueError(f"no step count of {sampler} fits a budget of {nfe} NFE; give a "
                         "larger nfe")
    return grid_at(planned), named

    planned = steps_for_budget(sampler, sde, nfe, grid_at, state_shape, opts)
    if planned is None:
        raise ValueError(f"no step count of {sampler} fits a budget of {nfe} NFE; give a "
                         "larger nfe")
