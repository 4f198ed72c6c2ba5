"""``scoregen.solve_inverse``: posterior samples for ``y = A x + sigma_y n`` with any method.

One call for every method of :data:`~scoregen.sampling.inverse.methods.METHODS`: methods that
act on predictions wrap the model (:class:`~scoregen.sampling.inverse.methods.Conditioned`) and
run the registered sampler through :func:`scoregen.sample`; RePaint runs the sampler over
segments of the grid with resampling; the particle method runs its own loop on the sampler's
Gaussian kernel (:mod:`~scoregen.sampling.inverse.smc`). NFE budgets become step counts by
counting (:func:`scoregen.sampling.nfe_budget.plan_steps`, counted on a one-sample run, so
every particle and every RePaint pass is included).

RePaint resampling (Lugmayr et al. 2022, Algorithm 1): ``resample = r`` runs the grid in
segments of ``jump`` intervals; after a segment from ``t`` down to ``s`` the state is pushed
back to ``t`` by the forward kernel ``x_t = (alpha_t / alpha_s) x_s + sqrt(sigma_t^2 -
(alpha_t / alpha_s)^2 sigma_s^2) z`` and the segment is run again, ``r`` times in all. Each
segment calls the registered sampler on its sub-grid, so multistep solvers restart their
history per segment. NFE grow ``r``-fold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.models.prediction import Model
from scoregen.samplers import SAMPLERS
from scoregen.sampling.api import SampleResult, SamplerOptionError, check_options, sample
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import check_grid, time_grid
from scoregen.sampling.guidance import guide
from scoregen.sampling.inverse.base import Measurement, Operator, measurement
from scoregen.sampling.inverse.methods import METHODS, Conditioned, Method
from scoregen.sampling.inverse.operators import operator
from scoregen.sampling.inverse.smc import smc
from scoregen.sampling.nfe_budget import check_plannable, count_nfe, plan_steps
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sde.base import SDE

KNOWN_NOISE_SALT = 0x5EED_1A7A  # the replacement noise stream differs from the sampler's


def check_method(method: str, op: Operator, sampler: str, opts: dict[str, Any]) -> Method:
    """The registered ``method``; a clear error where it does not fit ``op`` or ``sampler``."""
    meth = METHODS.get(method)
    SAMPLERS.meta(sampler)  # a KeyError naming the known samplers
    if meth.needs_svd and op.svd is None:
        fits = ", ".join(n for n in METHODS.list() if not METHODS.get(n).needs_svd)
        raise ValueError(f"method {method} needs the SVD of the operator, and {op.name} has "
                         f"no closed-form SVD; use one of: {fits}")
    if meth.samplers is not None and sampler not in meth.samplers:
        raise ValueError(f"method {method} runs on a Gaussian transition kernel: sampler "
                         f"{' or '.join(meth.samplers)}, not {sampler}")
    if method == "smc" and sampler == "ddim" and not opts.get("eta", 0.0):
        raise ValueError("method smc needs a stochastic kernel: ddim with eta > 0 (e.g. "
                         "eta=1.0), ancestral or dpm_solver++_sde")
    if method == "repaint" and SAMPLERS.meta(sampler)["nfe_per_step"] is None:
        raise ValueError(f"RePaint resampling needs a fixed-step sampler; {sampler!r} chooses "
                         "its own steps")
    return meth


def split_options(meth: Method, sampler: str, options: dict[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (the method's, the sampler's); unknown names raise one error naming both
    sets."""
    mine = {k: v for k, v in options.items() if k in meth.options}
    rest = {k: v for k, v in options.items() if k not in meth.options}
    try:
        check_options(sampler, SAMPLERS.get(sampler), rest)
    except SamplerOptionError as err:
        raise SamplerOptionError(f"{err}; options of method {meth.name}: "
                                 f"{', '.join(meth.options) or '(none)'}") from None
    if "known_noise" in mine and mine["known_noise"] not in ("fresh", "fixed"):
        raise ValueError(f"known_noise must be fresh or fixed, got {mine['known_noise']!r}")
    for key in ("particles", "resample", "jump"):
        if key in mine and not (isinstance(mine[key], int) and mine[key] >= 1):
            raise ValueError(f"{key} must be an integer >= 1, got {mine[key]!r}")
    return {**meth.options, **mine}, rest


def solve_inverse(
    model: Model,
    sde: SDE,
    operator_or_spec: Operator | str,
    y: Tensor,
    method: str = "smc",
    sampler: str | None = None,
    steps: int | None = 50,
    *,
    nfe: int | None = None,
    sigma_y: float = 0.0,
    shape: tuple[int, ...] | None = None,
    ts: Tensor | None = None,
    spacing: str = "auto",
    seed: int = 0,
    seeds: Tensor | None = None,
    dtype: torch.dtype | None = None,
    cond: Tensor | int | None = None,
    guidance: float | None = None,
    progress: bool = False,
    check_finite: bool = True,
    **options: Any,
) -> SampleResult:
    """Posterior samples given ``y = A x + sigma_y n``: one per measurement in ``y``.

    Args:
        model, sde: as in :func:`scoregen.sample`.
        operator_or_spec: an :class:`~scoregen.sampling.inverse.operators.Operator` or a spec
            of :data:`~scoregen.sampling.inverse.operators.OPERATORS` (``inpaint:right-half``,
            ``downsample:2``, ``blur:1``, ``project:16``).
        y: ``(B, *out_shape)`` measurements, or one ``(*out_shape)`` (then ``B = 1``).
        method: a name of :data:`~scoregen.sampling.inverse.methods.METHODS`: ``replacement``,
            ``repaint``, ``ddnm``, ``pigdm``, ``dps``, ``smc`` (the default: the particle
            method, exact as the number of particles grows; 16 particles).
        sampler: a registered sampler (default: the method's first fitting sampler,
            ``dpm_solver++_sde`` for ``smc``, else ``ddim``).
        steps, nfe, ts, spacing, seed, seeds: as in :func:`scoregen.sample`; ``nfe`` counts
            every particle's and every RePaint pass's evaluations.
        sigma_y: the measurement noise (``>= 0``).
        shape: the event shape of ``x`` for a spec (default: ``model.data_shape``).
        cond, guidance: class labels and guidance of a conditional model.
        **options: the method's options (``particles``, ``ess``, ``resample``, ``jump``,
            ``known_noise``, ``zeta``, ``data_var``; see ``METHODS``) and the sampler's.

    Returns a :class:`~scoregen.sampling.SampleResult` whose ``info`` names the method and
    holds its extras (backward passes, effective sample sizes, evidence estimates).
    """
    event = shape or getattr(model, "data_shape", None) or (
        operator_or_spec.shape if isinstance(operator_or_spec, Operator) else None)
    if event is None:
        raise ValueError("give shape= (the event shape of x): the operator spec "
                         f"{operator_or_spec!r} needs it and the model does not declare it")
    op = operator(operator_or_spec, tuple(event))
    if sampler is None:
        fits = METHODS.get(method).samplers
        sampler = fits[0] if fits else "ddim"
    meth = check_method(method, op, sampler, options)
    method_opts, sampler_opts = split_options(meth, sampler, options)
    y = torch.as_tensor(y)
    if dtype is None:
        dtype = y.dtype if y.is_floating_point() else torch.float32
    meas = measurement(op, y, sigma_y, dtype=dtype)
    B = meas.batch
    seeds = seeds_for(B, seed) if seeds is None else torch.as_tensor(seeds, dtype=torch.int64)
    if seeds.shape != (B,):
        raise ValueError(f"seeds must have shape ({B},), got {tuple(seeds.shape)}")
    base = guide(model, cond, guidance, batch=B)
    if ts is None:
        ts = _grid(meth, model, sde, meas, sampler, steps, nfe, spacing, seeds, method_opts,
                   sampler_opts)
    elif nfe is not None:
        raise ValueError("give either an NFE budget nfe or an explicit time grid ts, not both")
    ts = check_grid(ts, sde).to(y.device)
    start = time.perf_counter()
    x, used, info = _run(meth, base, sde, meas, sampler, ts, seeds, dtype, method_opts,
                         sampler_opts, progress, check_finite)
    info = {"method": meth.name, "operator": op.name, "sigma_y": meas.sigma_y, **info}
    if meth.project and meas.sigma_y == 0:
        svd, y_bar, _ = meas.spectral()
        c = svd.vt(x)
        x = svd.v(torch.where(svd.observed(c), y_bar.to(c), c))
    if check_finite and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise ValueError(f"{meth.name} with {sampler} produced NaN or infinite values in {bad} "
                         f"of {B} samples; try more steps, another sampler or method")
    return SampleResult(x, used, ts.cpu(), time.perf_counter() - start, sampler, info)


def _run(meth: Method, base: Model, sde: SDE, meas: Measurement, sampler: str, ts: Tensor,
         seeds: Tensor, dtype: torch.dtype, method_opts: dict[str, Any],
         sampler_opts: dict[str, Any], progress: bool, check_finite: bool
         ) -> tuple[Tensor, int, dict[str, Any]]:
    """One run on a fixed grid: ``(x, NFE, info)``."""
    shape = meas.operator.shape
    device = meas.y.device
    if meth.name == "smc":
        return smc(base, sde, meas, ts, particles=method_opts["particles"], seeds=seeds,
                   sampler=sampler, sampler_opts=sampler_opts, ess=float(method_opts["ess"]),
                   twist=method_opts["twist"], dtype=dtype, progress=progress)
    noise = NoiseSource(seeds ^ KNOWN_NOISE_SALT, shape, dtype, device) if (
        "known_noise" in method_opts) else None
    wrapped = Conditioned(base, meas, meth, method_opts, noise)
    if meth.name != "repaint" or method_opts["resample"] == 1:
        res = sample(wrapped, sde, (meas.batch, *shape), sampler, None, ts=ts, seeds=seeds,
                     dtype=dtype, device=device, progress=progress, check_finite=check_finite,
                     **sampler_opts)
        info = dict(res.info)
        if meth.gradient:
            info["backward_passes"] = wrapped.backward
        return res.x, res.nfe, info
    resample, jump = method_opts["resample"], method_opts["jump"]
    noise = NoiseSource(seeds, shape, dtype, device)
    denoiser = Denoiser(wrapped, sde)
    denoiser.precompute(ts)
    x = repaint(SAMPLERS.get(sampler), denoiser, sde, sde.prior_from_normal(noise()), ts, noise,
                resample, jump, sampler_opts, progress, desc=f"repaint {sampler}")
    return x, denoiser.nfe, {"resample": resample, "jump": jump}


def repaint(fn: Callable[..., Any], denoiser: Denoiser, sde: SDE, x: Tensor, ts: Tensor,
            noise: NoiseSource, resample: int, jump: int, opts: dict[str, Any],
            progress: bool = False, desc: str = "repaint") -> Tensor:
    """The sampler ``fn`` over segments of ``jump`` intervals of ``ts``, each run ``resample``
    times with :func:`renoise` in between (module docstring)."""
    with torch.no_grad():
        for a in tqdm(range(0, len(ts) - 1, jump), desc=desc, disable=not progress, leave=False):
            seg = ts[a: a + jump + 1]
            for r in range(resample):
                out = fn(denoiser, sde, x, seg, noise=noise, callback=lambda *_: None, **opts)
                x_s = out[0] if isinstance(out, tuple) else out
                x = renoise(sde, x_s, seg[-1], seg[0], noise()) if r < resample - 1 else x_s
    return x


def renoise(sde: SDE, x_s: Tensor, s: Tensor, t: Tensor, z: Tensor) -> Tensor:
    """A draw of ``x_t`` given ``x_s`` (``s < t``) under the forward process."""
    a_ts = sde.alpha(t) / sde.alpha(s)
    var = (sde.sigma(t) ** 2 - a_ts**2 * sde.sigma(s) ** 2).clamp_min(0)
    return a_ts.to(x_s.dtype) * x_s + var.sqrt().to(x_s.dtype) * z


def _grid(meth: Method, model: Model, sde: SDE, meas: Measurement, sampler: str,
          steps: int | None, nfe: int | None, spacing: str, seeds: Tensor,
          method_opts: dict[str, Any], sampler_opts: dict[str, Any]) -> Tensor:
    """The grid of ``steps``, or of the largest step count whose counted NFE fits ``nfe``."""
    if spacing == "tuned":
        raise ValueError("inverse problems run on the grids of time_grid; spacing='tuned' is "
                         "not supported")
    if SAMPLERS.meta(sampler)["nfe_per_step"] is None:
        if nfe is not None:
            check_plannable(sampler)
        return torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
    if nfe is None:
        if steps is None:
            raise ValueError("give steps, an NFE budget nfe, or an explicit time grid ts")
        return time_grid(sde, steps, spacing, dim=meas.operator.dim)
    per_step = check_plannable(sampler) * (method_opts.get("particles", 1) if meth.name == "smc"
                                           else method_opts.get("resample", 1)
                                           if meth.name == "repaint" else 1)
    one = Measurement(meas.operator, meas.y[:1], meas.sigma_y)
    if getattr(meas.operator, "per_sample", False):
        raise ValueError("an NFE budget with one mask per sample: give steps instead")

    def run(k: int) -> int:
        grid = time_grid(sde, k, spacing, dim=meas.operator.dim)
        grid = check_grid(grid, sde).to(meas.y.device)
        return _run(meth, guide(model, None), sde, one, sampler, grid, seeds[:1], meas.y.dtype,
                    method_opts, sampler_opts, False, False)[1]

    planned = plan_steps(count_nfe(run), nfe, per_step)
    if planned is None:
        raise ValueError(f"no step count of {meth.name} with {sampler} fits a budget of {nfe} "
                         "NFE; give a larger nfe")
    return time_grid(sde, planned, spacing, dim=meas.operator.dim)


__all__ = ["check_method", "renoise", "repaint", "solve_inverse", "split_options"]
